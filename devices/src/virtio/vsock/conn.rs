//! One vsock stream connection between a guest port and a host Unix socket, with virtio-vsock
//! credit-based flow control (virtio spec 5.10.6.3).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use super::packet::*;

/// Bytes of guest data we buffer per connection (our `buf_alloc`).
pub const CONN_BUF_SIZE: u32 = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent (or to be sent) to the guest, waiting for RESPONSE.
    HostConnecting,
    Established,
    /// Torn down; an RST goes to the guest (if flagged) and the connection is dropped.
    Closed,
}

/// Control packets owed to the guest (at most one of each at a time).
#[derive(Clone, Copy, Debug, Default)]
pub struct Owed {
    pub request: bool,
    pub response: bool,
    pub credit_update: bool,
    pub credit_request: bool,
    pub shutdown: bool,
    pub rst: bool,
}

#[derive(Debug)]
pub struct Conn {
    pub stream: UnixStream,
    /// Event-loop token of `stream`.
    pub token: u32,
    pub host_port: u32,
    pub guest_port: u32,
    pub state: State,
    /// When a host-initiated connection started waiting for the guest's RESPONSE.
    pub connecting_since: Option<std::time::Instant>,
    pub owed: Owed,
    /// The stream may have data to read (edge-triggered hint).
    pub readable: bool,
    /// The host side hit EOF (we owe or sent SHUTDOWN).
    pub host_eof: bool,
    /// The guest will send no more data.
    pub guest_shut_send: bool,
    /// The guest will receive no more data.
    pub guest_shut_rcv: bool,
    // Our receive side (guest -> host).
    tx_buf: VecDeque<u8>,
    /// Bytes at the front of `tx_buf` that are ours (the "OK <port>\n" reply), not guest data.
    tx_prefix: usize,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    recv_cnt: Wrapping<u32>,
    // The guest's receive side (host -> guest).
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    sent_cnt: Wrapping<u32>,
    credit_requested: bool,
    write_shut: bool,
}

impl Conn {
    pub fn new(
        stream: UnixStream,
        token: u32,
        host_port: u32,
        guest_port: u32,
        state: State,
    ) -> Self {
        Self {
            stream,
            token,
            host_port,
            guest_port,
            state,
            connecting_since: (state == State::HostConnecting).then(std::time::Instant::now),
            owed: Owed::default(),
            readable: true,
            host_eof: false,
            guest_shut_send: false,
            guest_shut_rcv: false,
            tx_buf: VecDeque::new(),
            tx_prefix: 0,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            recv_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            sent_cnt: Wrapping(0),
            credit_requested: false,
            write_shut: false,
        }
    }

    /// Header for a packet from this connection's host end to the guest.
    pub fn header(&mut self, guest_cid: u64, op: u16, len: u32, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.host_port,
            dst_port: self.guest_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Records the guest's credit information carried by every packet.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    /// Bytes the guest can still take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.sent_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the connection has data it could send if it had credit and an rx buffer.
    pub fn wants_to_send(&self) -> bool {
        self.state == State::Established && self.readable && !self.host_eof && !self.guest_shut_rcv
    }

    /// No credit while data waits: ask the guest once.
    pub fn note_blocked_on_credit(&mut self) {
        if !self.credit_requested {
            self.credit_requested = true;
            self.owed.credit_request = true;
        }
    }

    /// Reads up to `buf.len()` bytes from the host socket for the guest. `Ok(0)` means EOF.
    pub fn read_host(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf) {
            Ok(n) => {
                if n == 0 {
                    self.host_eof = true;
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Accounts `n` payload bytes sent to the guest.
    pub fn sent(&mut self, n: u32) {
        self.sent_cnt += Wrapping(n);
    }

    /// Queues the "OK <port>\n" reply of the host-side handshake.
    pub fn push_reply(&mut self, line: &[u8]) {
        for &b in line.iter().rev() {
            self.tx_buf.push_front(b);
        }
        self.tx_prefix += line.len();
    }

    /// Queues guest data for the host socket; false if the guest overran our buffer (it
    /// ignored the credit we gave it).
    pub fn push_guest_data(&mut self, data: &[u8]) -> bool {
        self.recv_cnt += Wrapping(data.len() as u32);
        if self.tx_buf.len() - self.tx_prefix + data.len() > CONN_BUF_SIZE as usize {
            return false;
        }
        self.tx_buf.extend(data);
        true
    }

    pub fn has_pending_tx(&self) -> bool {
        !self.tx_buf.is_empty()
    }

    /// Writes buffered data to the host socket until it would block. Err on a dead socket.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.tx_buf.is_empty() {
            let (a, _) = self.tx_buf.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    let ours = n.min(self.tx_prefix);
                    self.tx_prefix -= ours;
                    self.fwd_cnt += Wrapping((n - ours) as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.tx_buf.is_empty() && self.guest_shut_send && !self.write_shut {
            // The guest half-closed: pass the EOF on once its data is out.
            self.write_shut = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        // Tell the guest about freed space before it runs dry: once half of our buffer has
        // been forwarded since the last fwd_cnt it heard of.
        let unacked = (self.fwd_cnt - self.last_fwd_cnt_sent).0;
        if unacked >= CONN_BUF_SIZE / 2 {
            self.owed.credit_update = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_accounting_wraps_and_clamps() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Conn::new(a, 16, 1, 2, State::Established);
        let mut h = Header {
            buf_alloc: 1000,
            fwd_cnt: u32::MAX - 10,
            ..Default::default()
        };
        c.sent_cnt = Wrapping(u32::MAX - 10);
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 1000);
        c.sent(500); // wraps past u32::MAX
        assert_eq!(c.peer_credit(), 500);
        h.fwd_cnt = h.fwd_cnt.wrapping_add(500);
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 1000);
        // A lying guest (fwd_cnt ahead of what we sent) gets no extra credit.
        h.fwd_cnt = h.fwd_cnt.wrapping_add(5000);
        c.update_peer_credit(&h);
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn overrunning_our_buffer_is_detected() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Conn::new(a, 16, 1, 2, State::Established);
        c.push_reply(b"OK 1\n");
        assert!(c.push_guest_data(&vec![0; CONN_BUF_SIZE as usize]));
        assert!(!c.push_guest_data(&[0]));
    }
}
