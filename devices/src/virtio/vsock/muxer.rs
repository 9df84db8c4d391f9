//! Moving packets between the virtqueues and the connections' Unix sockets.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events};

use super::conn::{Conn, State};
use super::packet::*;
use super::{PendingConnect, Slot, Vsock};
use crate::virtio::chain::{self, Chain, Popped};
use crate::virtio::counters::add;

/// Largest payload in one packet (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;
/// How long a host-initiated connection waits for the guest to accept it (generous: a guest
/// kernel on nested virtualization can take hundreds of milliseconds to answer).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SWEEP_PERIOD: Duration = Duration::from_millis(250);
const MAX_CONNS: usize = 1024;
const MAX_PENDING: usize = 64;
const MAX_CONNECT_LINE: usize = 32;
const MAX_RST_QUEUE: usize = 1024;
const RX: usize = 0;
const TX: usize = 1;

fn conn_events(stream: &UnixStream, token: u32) -> Events {
    Events::with_data(
        stream,
        token,
        EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
    )
}

impl Vsock {
    fn token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token = self.next_token.checked_add(1).unwrap_or(super::FIRST_TOKEN);
        t
    }

    /// Accepts host connections; they must first send `CONNECT <port>\n`.
    pub(super) fn accept_all(&mut self, ops: &mut EventOps) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("virtio-vsock: accept: {e}");
                    return;
                }
            };
            let pending = self
                .slots
                .values()
                .filter(|s| matches!(s, Slot::Pending(_)))
                .count();
            if self.active.is_none()
                || pending >= MAX_PENDING
                || stream.set_nonblocking(true).is_err()
            {
                tracing::debug!("virtio-vsock: host connection refused (driver not ready or busy)");
                continue; // dropping closes it: the client sees EOF instead of "OK"
            }
            let token = self.token();
            let ev = Events::with_data(
                &stream,
                token,
                EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
            );
            if let Err(e) = ops.add(ev) {
                tracing::warn!("virtio-vsock: cannot watch host connection: {e}");
                continue;
            }
            self.slots.insert(
                token,
                Slot::Pending(PendingConnect {
                    stream,
                    line: Vec::new(),
                    since: std::time::Instant::now(),
                }),
            );
            self.arm_sweep();
            self.read_connect_line(token, ops);
        }
    }

    /// Reads the handshake byte by byte (so no stream data is consumed by mistake).
    fn read_connect_line(&mut self, token: u32, ops: &mut EventOps) {
        let Some(Slot::Pending(p)) = self.slots.get_mut(&token) else {
            return;
        };
        let port = loop {
            let mut b = [0u8];
            match p.stream.read(&mut b) {
                Ok(1) if b[0] == b'\n' => break parse_connect(&p.line),
                Ok(1) if p.line.len() < MAX_CONNECT_LINE => p.line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break None, // EOF, error or an over-long line
            }
        };
        let Some(Slot::Pending(p)) = self.slots.remove(&token) else {
            return;
        };
        let Some(port) = port.filter(|_| self.active.is_some() && self.conns.len() < MAX_CONNS)
        else {
            tracing::debug!(
                "virtio-vsock: bad CONNECT line {:?}",
                String::from_utf8_lossy(&p.line)
            );
            let _ = ops.remove(Events::empty(&p.stream));
            return;
        };
        let host_port = self.alloc_host_port(port);
        if let Err(e) = ops.modify(conn_events(&p.stream, token)) {
            tracing::warn!("virtio-vsock: cannot watch host connection: {e}");
            let _ = ops.remove(Events::empty(&p.stream));
            return;
        }
        let mut c = Conn::new(p.stream, token, host_port, port, State::HostConnecting);
        c.owed.request = true;
        self.slots.insert(token, Slot::Conn((host_port, port)));
        self.conns.insert((host_port, port), c);
        add(&self.counters.conns_added, 1);
        self.arm_sweep();
    }

    fn arm_sweep(&mut self) {
        if !self.sweep_armed {
            match self.sweep.reset(SWEEP_PERIOD, Some(SWEEP_PERIOD)) {
                Ok(()) => self.sweep_armed = true,
                Err(e) => tracing::warn!("virtio-vsock: cannot arm connect timer: {e}"),
            }
        }
    }

    /// Gives up on host-initiated connections the guest did not accept in time (the host
    /// client sees EOF instead of "OK", the guest gets an RST for the stale request), and on
    /// host clients that do not send their CONNECT line in time.
    pub(super) fn sweep_connecting(&mut self, ops: &mut EventOps) {
        let _ = self.sweep.wait();
        let expired: Vec<u32> = self
            .slots
            .iter()
            .filter_map(|(t, s)| match s {
                Slot::Pending(p) if p.since.elapsed() >= CONNECT_TIMEOUT => Some(*t),
                _ => None,
            })
            .collect();
        for t in expired {
            if let Some(Slot::Pending(p)) = self.slots.remove(&t) {
                tracing::debug!("virtio-vsock: host client sent no CONNECT line in time");
                let _ = ops.remove(Events::empty(&p.stream));
            }
        }
        let mut waiting = self.slots.values().any(|s| matches!(s, Slot::Pending(_)));
        for c in self.conns.values_mut() {
            let Some(since) = c
                .connecting_since
                .filter(|_| c.state == State::HostConnecting)
            else {
                continue;
            };
            if since.elapsed() >= CONNECT_TIMEOUT {
                tracing::debug!(
                    "virtio-vsock: guest port {} did not accept in time",
                    c.guest_port
                );
                close_with_rst(c);
            } else {
                waiting = true;
            }
        }
        if !waiting && self.sweep.clear().is_ok() {
            self.sweep_armed = false;
        }
    }

    fn alloc_host_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let p = self.next_host_port;
            self.next_host_port = self.next_host_port.wrapping_add(1).max(1 << 30);
            if !self.conns.contains_key(&(p, guest_port)) {
                return p;
            }
        }
    }

    pub(super) fn socket_event(&mut self, token: u32, set: EventSet, ops: &mut EventOps) {
        let key = match self.slots.get(&token) {
            Some(Slot::Pending(_)) => return self.read_connect_line(token, ops),
            Some(Slot::Conn(k)) => *k,
            None => return,
        };
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
            c.readable = true;
        }
        if set.intersects(EventSet::OUT | EventSet::ERROR) && c.has_pending_tx() {
            if let Err(e) = c.flush() {
                tracing::debug!("virtio-vsock: host socket write: {e}");
                close_with_rst(c);
            }
        }
    }

    /// Guest -> host: handles every packet on the tx queue.
    pub(super) fn process_tx(&mut self, ops: &mut EventOps) {
        let mut used = false;
        while let Some(a) = self.active.as_mut().filter(|a| !a.broken) {
            let popped = match chain::pop(&mut a.queues[TX], &a.mem) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("virtio-vsock: {e}");
                    a.broken = true;
                    a.interrupt.set_needs_reset();
                    break;
                }
            };
            let (head, pkt) = match popped {
                Popped::Bad { head, error } => {
                    tracing::warn!("virtio-vsock: tx packet dropped: {error}");
                    (head, None)
                }
                Popped::Chain(c) => (c.head, read_packet(&c, &a.mem, &mut self.buf)),
            };
            if let Err(e) = chain::complete(&mut a.queues[TX], &a.mem, head, 0) {
                tracing::warn!("virtio-vsock: {e}");
                a.broken = true;
                a.interrupt.set_needs_reset();
                break;
            }
            used = true;
            if let Some((h, len)) = pkt {
                let data = std::mem::take(&mut self.buf);
                self.handle_packet(h, &data[..len], ops);
                self.buf = data;
            }
        }
        if let Some(a) = self.active.as_mut().filter(|_| used) {
            chain::notify_used(&mut a.queues[TX], &a.mem, &a.interrupt);
        }
    }

    fn queue_rst(&mut self, h: &Header) {
        if h.op == OP_RST || self.rst_queue.len() >= MAX_RST_QUEUE {
            return;
        }
        self.rst_queue.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Default::default()
        });
    }

    fn handle_packet(&mut self, h: Header, data: &[u8], ops: &mut EventOps) {
        if h.src_cid != self.cid || h.dst_cid != HOST_CID {
            tracing::debug!("virtio-vsock: packet {}->{} dropped", h.src_cid, h.dst_cid);
            return;
        }
        if h.type_ != TYPE_STREAM {
            return self.queue_rst(&h);
        }
        let key = (h.dst_port, h.src_port);
        let Some(c) = self.conns.get_mut(&key) else {
            match h.op {
                OP_REQUEST => self.connect_to_host(&h, ops),
                _ => self.queue_rst(&h),
            }
            return;
        };
        c.update_peer_credit(&h);
        match (h.op, c.state) {
            (_, State::Closed) => {}
            (OP_RESPONSE, State::HostConnecting) => {
                c.state = State::Established;
                c.push_reply(format!("OK {}\n", c.host_port).as_bytes());
                if c.flush().is_err() {
                    close_with_rst(c);
                }
            }
            (OP_RST, _) => c.state = State::Closed,
            (OP_RW, State::Established) if !c.guest_shut_send => {
                add(&self.counters.tx_bytes, data.len() as u64);
                if !c.push_guest_data(data) {
                    tracing::warn!("virtio-vsock: guest port {} overran its credit", h.src_port);
                    close_with_rst(c);
                } else if let Err(e) = c.flush() {
                    tracing::debug!("virtio-vsock: host socket write: {e}");
                    close_with_rst(c);
                }
            }
            (OP_SHUTDOWN, State::Established) => {
                c.guest_shut_rcv |= h.flags & SHUTDOWN_RCV != 0;
                c.guest_shut_send |= h.flags & SHUTDOWN_SEND != 0;
                if c.guest_shut_send && (c.guest_shut_rcv || c.host_eof) {
                    let _ = c.flush(); // best effort: deliver what the guest sent
                    close_with_rst(c);
                } else if c.flush().is_err() {
                    close_with_rst(c);
                }
            }
            (OP_CREDIT_UPDATE, _) => {}
            (OP_CREDIT_REQUEST, State::Established) => c.owed.credit_update = true,
            _ => close_with_rst(c),
        }
    }

    /// Guest-initiated connection to host port P: connect to `<uds_path>_<P>`.
    fn connect_to_host(&mut self, h: &Header, ops: &mut EventOps) {
        if self.conns.len() >= MAX_CONNS {
            return self.queue_rst(h);
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", h.dst_port));
        let stream = match UnixStream::connect(&path) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            r => {
                tracing::debug!("virtio-vsock: guest connect to {path:?}: {:?}", r.err());
                return self.queue_rst(h);
            }
        };
        let token = self.token();
        if let Err(e) = ops.add(conn_events(&stream, token)) {
            tracing::warn!("virtio-vsock: cannot watch {path:?}: {e}");
            return self.queue_rst(h);
        }
        let key = (h.dst_port, h.src_port);
        let mut c = Conn::new(stream, token, h.dst_port, h.src_port, State::Established);
        c.update_peer_credit(h);
        c.owed.response = true;
        self.slots.insert(token, Slot::Conn(key));
        self.conns.insert(key, c);
        add(&self.counters.conns_added, 1);
    }

    /// Host -> guest: fills rx buffers with owed control packets and stream data.
    pub(super) fn process_rx(&mut self) {
        let mut used = false;
        loop {
            if !self.has_rx_work() {
                break;
            }
            let Some(a) = self.active.as_mut().filter(|a| !a.broken) else {
                break;
            };
            let c = match chain::pop(&mut a.queues[RX], &a.mem) {
                Ok(Some(Popped::Chain(c))) if c.writable_len() >= HDR_LEN => c,
                Ok(Some(Popped::Chain(Chain { head, .. })))
                | Ok(Some(Popped::Bad { head, .. })) => {
                    tracing::warn!("virtio-vsock: unusable rx buffer dropped");
                    if chain::complete(&mut a.queues[RX], &a.mem, head, 0).is_err() {
                        a.broken = true;
                        a.interrupt.set_needs_reset();
                    }
                    used = true;
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("virtio-vsock: {e}");
                    a.broken = true;
                    a.interrupt.set_needs_reset();
                    break;
                }
            };
            let room = (c.writable_len() - HDR_LEN).min(MAX_PKT_PAYLOAD);
            let mut data = std::mem::take(&mut self.buf);
            let pkt = self.next_packet(&mut data[..room]);
            self.buf = data;
            let a = self.active.as_mut().expect("checked above");
            let Some((h, n)) = pkt else {
                chain::unpop(&mut a.queues[RX]);
                break;
            };
            let written = c
                .write_at(&a.mem, 0, &h.to_bytes())
                .and_then(|()| c.write_at(&a.mem, HDR_LEN, &self.buf[..n]));
            let len = match written {
                Ok(()) => (HDR_LEN + n) as u32,
                Err(e) => {
                    tracing::warn!("virtio-vsock: rx write: {e}");
                    0
                }
            };
            if let Err(e) = chain::complete(&mut a.queues[RX], &a.mem, c.head, len) {
                tracing::warn!("virtio-vsock: {e}");
                a.broken = true;
                a.interrupt.set_needs_reset();
                break;
            }
            used = true;
        }
        if let Some(a) = self.active.as_mut().filter(|_| used) {
            chain::notify_used(&mut a.queues[RX], &a.mem, &a.interrupt);
        }
    }

    fn has_rx_work(&self) -> bool {
        !self.rst_queue.is_empty()
            || self.conns.values().any(|c| {
                let o = c.owed;
                o.request
                    || o.response
                    || o.rst
                    || o.shutdown
                    || o.credit_update
                    || o.credit_request
                    || c.wants_to_send()
            })
    }

    /// The next packet for the guest, its payload read into `data`: RSTs for unknown
    /// connections first, then one packet per connection, round-robin.
    fn next_packet(&mut self, data: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.rst_queue.pop_front() {
            return Some((h, 0));
        }
        let cid = self.cid;
        let start = self.rr_cursor;
        let order = self
            .conns
            .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .chain(self.conns.range(..=start))
            .map(|(k, _)| *k)
            .collect::<Vec<_>>();
        for key in order {
            let c = self.conns.get_mut(&key).expect("key from the map");
            if let Some(p) = conn_packet(c, cid, data) {
                add(&self.counters.rx_bytes, p.1 as u64);
                self.rr_cursor = key;
                return Some(p);
            }
        }
        None
    }

    /// Drops connections that are closed and owe the guest nothing more.
    pub(super) fn reap(&mut self, ops: &mut EventOps) {
        let dead: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Closed && !c.owed.rst)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            if let Some(c) = self.conns.remove(&k) {
                add(&self.counters.conns_removed, 1);
                let _ = ops.remove(Events::empty(&c.stream));
                self.slots.remove(&c.token);
            }
        }
    }
}

fn close_with_rst(c: &mut Conn) {
    c.state = State::Closed;
    c.owed = Default::default();
    c.owed.rst = true;
}

/// One packet owed by `c`, if any.
fn conn_packet(c: &mut Conn, cid: u64, data: &mut [u8]) -> Option<(Header, usize)> {
    let o = &mut c.owed;
    let op = if std::mem::take(&mut o.rst) {
        OP_RST
    } else if std::mem::take(&mut o.request) {
        OP_REQUEST
    } else if std::mem::take(&mut o.response) {
        OP_RESPONSE
    } else if std::mem::take(&mut o.shutdown) {
        return Some((c.header(cid, OP_SHUTDOWN, 0, SHUTDOWN_SEND), 0));
    } else if std::mem::take(&mut o.credit_update) {
        OP_CREDIT_UPDATE
    } else if std::mem::take(&mut o.credit_request) {
        OP_CREDIT_REQUEST
    } else if c.wants_to_send() {
        let credit = c.peer_credit() as usize;
        if credit == 0 {
            c.note_blocked_on_credit();
            return std::mem::take(&mut c.owed.credit_request)
                .then(|| (c.header(cid, OP_CREDIT_REQUEST, 0, 0), 0));
        }
        let max = credit.min(data.len());
        return match c.read_host(&mut data[..max]) {
            Ok(0) => {
                // Host closed its sending side.
                if c.guest_shut_send {
                    close_with_rst(c);
                    c.owed.rst = false;
                    return Some((c.header(cid, OP_RST, 0, 0), 0));
                }
                Some((c.header(cid, OP_SHUTDOWN, 0, SHUTDOWN_SEND), 0))
            }
            Ok(n) => {
                c.sent(n as u32);
                Some((c.header(cid, OP_RW, n as u32, 0), n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                tracing::debug!("virtio-vsock: host socket read: {e}");
                close_with_rst(c);
                c.owed.rst = false;
                Some((c.header(cid, OP_RST, 0, 0), 0))
            }
        };
    } else {
        return None;
    };
    Some((c.header(cid, op, 0, 0), 0))
}

/// Reads a tx packet: header, then `len` payload bytes into `buf`.
fn read_packet(
    c: &Chain,
    mem: &vm_memory::GuestMemoryMmap,
    buf: &mut [u8],
) -> Option<(Header, usize)> {
    let mut hb = [0u8; HDR_LEN];
    if c.read_at(mem, 0, &mut hb).is_err() {
        tracing::warn!("virtio-vsock: tx packet shorter than its header");
        return None;
    }
    let h = Header::parse(&hb);
    let len = h.len as usize;
    if len > MAX_PKT_PAYLOAD || len > c.readable_len() - HDR_LEN {
        tracing::warn!("virtio-vsock: tx packet claims {len} payload bytes; dropped");
        return None;
    }
    c.read_at(mem, HDR_LEN, &mut buf[..len]).ok()?;
    Some((h, len))
}

/// Parses `CONNECT <port>`.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let port = s.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_connect;

    #[test]
    fn connect_line_parsing() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT x"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }
}
