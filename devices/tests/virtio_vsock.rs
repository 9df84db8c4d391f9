//! virtio-vsock driven through its MMIO registers by a small guest-side vsock driver written
//! here, against real Unix sockets on the host side (Firecracker's protocol).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Driver;
use devices::virtio::vsock::packet::*;
use devices::virtio::vsock::{Vsock, VsockConfig, VsockError};
use vm_memory::Bytes;

const CID: u64 = 42;
const RX_BUF: usize = 4096 + HDR_LEN;
const NRX: usize = 64;
const SEC: Duration = Duration::from_secs(10);

/// The guest half: rx buffers at fixed spots, a tx area, and per-connection credit state.
struct Guest {
    d: Driver,
    rx: Vec<(u16, u64)>,
    tx_area: u64,
    tx_next: usize,
}

impl Guest {
    fn new(uds: &Path) -> Self {
        let dev = Vsock::new(VsockConfig {
            guest_cid: CID,
            uds_path: uds.to_path_buf(),
        })
        .unwrap();
        let mut d = Driver::new(dev);
        assert_eq!(d.read32(0x08), 19);
        assert_eq!(d.read_config(0, 8), CID.to_le_bytes());
        d.activate(0, 3, 256);
        let mut g = Guest {
            rx: Vec::new(),
            tx_area: 0,
            tx_next: 0,
            d,
        };
        for _ in 0..NRX {
            let b = g.d.alloc(RX_BUF);
            let head = g.d.add_chain(0, &[(b, RX_BUF as u32, true)]);
            g.rx.push((head, b));
        }
        g.tx_area = g.d.alloc(32 * (HDR_LEN + 65536));
        g.d.kick(0);
        g
    }

    fn hdr(
        op: u16,
        src_port: u32,
        dst_port: u32,
        len: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
    ) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    /// Sends one packet and waits until the device consumed it.
    fn send(&mut self, h: Header, data: &[u8]) {
        let slot = self.tx_area + (self.tx_next % 32 * (HDR_LEN + 65536)) as u64;
        self.tx_next += 1;
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(data);
        self.d
            .mem
            .write_slice(&bytes, vm_memory::GuestAddress(slot))
            .unwrap();
        self.d.add_chain(
            1,
            &[
                (slot, HDR_LEN as u32, false),
                (slot + HDR_LEN as u64, data.len() as u32, false),
            ],
        );
        self.d.kick(1);
        self.d.wait_used(1, 1, SEC);
    }

    /// Receives available packets (running the event loop once); reposts their buffers.
    fn poll(&mut self, ms: i32) -> Vec<(Header, Vec<u8>)> {
        self.d.em.run_with_timeout(ms).unwrap();
        let mut out = Vec::new();
        for (id, len) in self.d.take_used(0) {
            let pos = self
                .rx
                .iter()
                .position(|r| u32::from(r.0) == id)
                .expect("known rx buffer");
            let (_, addr) = self.rx.remove(pos);
            let bytes = self.d.read_mem(addr, len as usize);
            let h = Header::parse(bytes[..HDR_LEN].try_into().unwrap());
            assert_eq!(
                h.len as usize,
                len as usize - HDR_LEN,
                "used len matches header"
            );
            assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, CID));
            out.push((h, bytes[HDR_LEN..].to_vec()));
            let head = self.d.add_chain(0, &[(addr, RX_BUF as u32, true)]);
            self.rx.push((head, addr));
        }
        if !out.is_empty() {
            self.d.kick(0);
        }
        out
    }

    fn wait_packet(&mut self, pred: impl Fn(&Header) -> bool) -> (Header, Vec<u8>) {
        let deadline = Instant::now() + SEC;
        let mut backlog = Vec::new();
        while Instant::now() < deadline {
            for p in self.poll(10) {
                if pred(&p.0) {
                    return p;
                }
                backlog.push(p.0);
            }
        }
        panic!("no matching packet; got {backlog:?}");
    }
}

fn uds(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("v.sock")
}

/// Reads from a non-blocking host stream while pumping the guest.
fn host_read_exact(g: &mut Guest, s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + SEC;
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "host read timed out with {} of {n} bytes",
            out.len()
        );
        match s.read(&mut buf[..(n - out.len()).min(65536)]) {
            Ok(0) => panic!("unexpected EOF after {} bytes", out.len()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                g.poll(5);
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

/// Host-initiated connection; returns (host stream, host port).
fn host_connect(g: &mut Guest, path: &Path, port: u32, guest_buf: u32) -> (UnixStream, u32) {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    let (req, _) = g.wait_packet(|h| h.op == OP_REQUEST);
    assert_eq!(req.dst_port, port);
    g.send(
        Guest::hdr(OP_RESPONSE, port, req.src_port, 0, guest_buf, 0),
        &[],
    );
    let line = host_read_exact(g, &mut s, format!("OK {}\n", req.src_port).len());
    assert_eq!(line, format!("OK {}\n", req.src_port).as_bytes());
    (s, req.src_port)
}

#[test]
fn host_initiated_connection_carries_data_both_ways_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    let (mut s, hp) = host_connect(&mut g, &path, 52, 65536);

    s.write_all(b"ping from host").unwrap();
    let (h, data) = g.wait_packet(|h| h.op == OP_RW);
    assert_eq!((h.src_port, h.dst_port), (hp, 52));
    assert_eq!(data, b"ping from host");

    g.send(Guest::hdr(OP_RW, 52, hp, 14, 65536, 14), b"pong from gst!");
    assert_eq!(host_read_exact(&mut g, &mut s, 14), b"pong from gst!");

    // Host closes: the guest is told with SHUTDOWN, answers RST, the connection goes away.
    drop(s);
    let (h, _) = g.wait_packet(|h| h.op == OP_SHUTDOWN);
    assert_eq!(h.dst_port, 52);
    g.send(Guest::hdr(OP_RST, 52, hp, 0, 65536, 14), &[]);
    // The connection is gone: more data on it is answered with RST.
    g.send(Guest::hdr(OP_RW, 52, hp, 4, 65536, 14), b"late");
    let (h, _) = g.wait_packet(|h| h.op == OP_RST);
    assert_eq!((h.src_port, h.dst_port), (hp, 52));
}

#[test]
fn guest_initiated_connection_reaches_uds_port_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let listener = UnixListener::bind(format!("{}_1234", path.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut g = Guest::new(&path);

    g.send(Guest::hdr(OP_REQUEST, 5000, 1234, 0, 65536, 0), &[]);
    let (h, _) = g.wait_packet(|h| h.op == OP_RESPONSE || h.op == OP_RST);
    assert_eq!(h.op, OP_RESPONSE);
    assert_eq!((h.src_port, h.dst_port), (1234, 5000));
    let (mut s, _) = listener.accept().unwrap();

    g.send(Guest::hdr(OP_RW, 5000, 1234, 5, 65536, 0), b"hello");
    assert_eq!(host_read_exact(&mut g, &mut s, 5), b"hello");
    s.write_all(b"world").unwrap();
    let (h, data) = g.wait_packet(|h| h.op == OP_RW);
    assert_eq!(h.dst_port, 5000);
    assert_eq!(data, b"world");

    // Guest closes both directions: the device resets the connection, the host sees EOF.
    let mut shut = Guest::hdr(OP_SHUTDOWN, 5000, 1234, 0, 65536, 5);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(shut, &[]);
    let (h, _) = g.wait_packet(|h| h.op == OP_RST);
    assert_eq!(h.dst_port, 5000);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(SEC)).unwrap();
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b).unwrap(), 0, "host side sees EOF");

    // Nobody listening on the port: RST.
    g.send(Guest::hdr(OP_REQUEST, 5001, 9999, 0, 65536, 0), &[]);
    let (h, _) = g.wait_packet(|h| h.dst_port == 5001);
    assert_eq!(h.op, OP_RST);
}

/// Streams `n` bytes each way at once over one connection, obeying credit on both sides.
#[test]
fn streaming_both_directions_respects_credit() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    const GUEST_BUF: u32 = 64 * 1024;
    let (mut s, hp) = host_connect(&mut g, &path, 7, GUEST_BUF);
    s.set_nonblocking(true).unwrap();

    let n: usize = 8 << 20;
    let pattern = |i: usize| (i % 251) as u8 ^ (i >> 16) as u8;
    let host_out: Vec<u8> = (0..n).map(pattern).collect();
    let guest_out: Vec<u8> = (0..n).map(|i| pattern(i).wrapping_add(1)).collect();

    let (mut host_sent, mut host_got) = (0usize, Vec::with_capacity(n));
    let (mut guest_sent, mut guest_got) = (0usize, Vec::with_capacity(n));
    let mut guest_fwd: u32 = 0; // what the guest app consumed (our fwd_cnt)
    let mut guest_fwd_told: u32 = 0;
    let (mut dev_buf_alloc, mut dev_fwd) = (0u32, 0u32); // the device's credit for us
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    while host_got.len() < n || guest_got.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "stalled: host got {}, guest got {}",
            host_got.len(),
            guest_got.len()
        );
        if host_sent < n {
            match s.write(&host_out[host_sent..(host_sent + 65536).min(n)]) {
                Ok(k) => host_sent += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("EOF"),
                Ok(k) => host_got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        for (h, data) in g.poll(1) {
            assert_eq!(h.dst_port, 7);
            dev_buf_alloc = h.buf_alloc;
            dev_fwd = h.fwd_cnt;
            match h.op {
                OP_RW => {
                    guest_got.extend_from_slice(&data);
                    guest_fwd = guest_fwd.wrapping_add(data.len() as u32);
                    let in_flight = guest_got.len() as u64 - u64::from(guest_fwd_told);
                    assert!(
                        in_flight <= u64::from(GUEST_BUF),
                        "device exceeded guest credit"
                    );
                }
                OP_CREDIT_UPDATE | OP_CREDIT_REQUEST => {}
                op => panic!("unexpected op {op}"),
            }
        }
        // The guest app consumed everything: tell the device when half the buffer is free.
        if guest_fwd.wrapping_sub(guest_fwd_told) >= GUEST_BUF / 2 {
            g.send(
                Guest::hdr(OP_CREDIT_UPDATE, 7, hp, 0, GUEST_BUF, guest_fwd),
                &[],
            );
            guest_fwd_told = guest_fwd;
        }
        // Guest sends as much as the device's credit allows, 16 KiB per packet.
        let credit = dev_buf_alloc as usize - (guest_sent - dev_fwd as usize);
        let chunk = credit.min(16384).min(n - guest_sent);
        if chunk > 0 {
            let h = Guest::hdr(OP_RW, 7, hp, chunk as u32, GUEST_BUF, guest_fwd);
            let data = guest_out[guest_sent..guest_sent + chunk].to_vec();
            g.send(h, &data);
            guest_fwd_told = guest_fwd;
            guest_sent += chunk;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(host_got == guest_out, "guest->host stream corrupted");
    assert!(guest_got == host_out, "host->guest stream corrupted");
    eprintln!(
        "vsock streamed {} MiB each way in {secs:.2}s ({:.1} MiB/s per direction, {} build)",
        n >> 20,
        (n >> 20) as f64 / secs,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

#[test]
fn hostile_guest_and_bad_config_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    let (s, hp) = host_connect(&mut g, &path, 9, 65536);

    // Payload length beyond the buffer, wrong source CID, non-stream type: dropped / RST.
    let mut h = Guest::hdr(OP_RW, 9, hp, 1 << 20, 65536, 0);
    g.send(h, b"short");
    h.len = 5;
    h.src_cid = 77;
    g.send(h, b"spoof");
    h.src_cid = CID;
    h.type_ = 2;
    g.send(h, b"dgram");
    let (r, _) = g.wait_packet(|h| h.op == OP_RST);
    assert_eq!(r.dst_port, 9);
    // Packets for unknown connections get RST.
    g.send(Guest::hdr(OP_RW, 4444, 5555, 3, 65536, 0), b"abc");
    let (r, _) = g.wait_packet(|h| h.op == OP_RST);
    assert_eq!((r.src_port, r.dst_port), (5555, 4444));

    // Overrunning the device's 256 KiB credit resets the connection.
    s.set_nonblocking(true).unwrap(); // host never reads: data piles up in the device
    let big = vec![7u8; 65536];
    let mut got_rst = false;
    for i in 0..40u32 {
        g.send(Guest::hdr(OP_RW, 9, hp, 65536, 65536, 0), &big);
        if g.poll(1)
            .iter()
            .any(|p| p.0.op == OP_RST && p.0.dst_port == 9)
        {
            got_rst = i >= 4;
            break;
        }
    }
    assert!(got_rst, "credit overrun not detected");

    // A host client that does not speak the protocol is disconnected.
    let mut bad = UnixStream::connect(&path).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    bad.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + SEC;
    loop {
        g.poll(5);
        match bad.read(&mut [0u8; 4]) {
            Ok(0) => break,
            Ok(_) => panic!("got a reply to a bad handshake"),
            Err(_) => assert!(Instant::now() < deadline, "bad client not disconnected"),
        }
    }

    // Config errors name the value and the fix.
    let e = Vsock::new(VsockConfig {
        guest_cid: 2,
        uds_path: dir.path().join("x"),
    })
    .err()
    .unwrap();
    assert!(matches!(e, VsockError::ReservedCid(2)));
    assert!(e.to_string().contains("3 or more"));
    let e = Vsock::new(VsockConfig {
        guest_cid: 3,
        uds_path: path.clone(),
    })
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("already exists") && e.to_string().contains("v.sock"),
        "{e}"
    );
    // A stale socket (its listener is gone) is replaced; a regular file is not.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    Vsock::new(VsockConfig {
        guest_cid: 3,
        uds_path: stale,
    })
    .unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = Vsock::new(VsockConfig {
        guest_cid: 3,
        uds_path: file,
    })
    .err()
    .unwrap();
    assert!(matches!(e, VsockError::PathExists(_)), "{e}");
}

#[test]
fn reset_drops_connections_and_listener_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    let (mut s, _) = host_connect(&mut g, &path, 3, 65536);
    // Driver resets the device: host connection is closed.
    g.d.write32(0x70, 0);
    g.d.pump(Duration::from_millis(30));
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(SEC)).unwrap();
    assert_eq!(s.read(&mut [0u8; 4]).unwrap(), 0);
    // Re-initialised, it accepts new connections again.
    g.d.activate(0, 3, 256);
    g.rx.clear();
    g.d.reset_data();
    for _ in 0..8 {
        let b = g.d.alloc(RX_BUF);
        let head = g.d.add_chain(0, &[(b, RX_BUF as u32, true)]);
        g.rx.push((head, b));
    }
    g.tx_area = g.d.alloc(32 * (HDR_LEN + 65536));
    g.d.kick(0);
    let (_s2, _) = host_connect(&mut g, &path, 4, 65536);
}

#[test]
fn host_connect_times_out_when_the_guest_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONNECT 77\n").unwrap();
    let start = Instant::now();
    let (req, _) = g.wait_packet(|h| h.op == OP_REQUEST);
    assert_eq!(req.dst_port, 77);
    // The guest stays silent: the device gives up, cancels with RST, and closes the client.
    let (rst, _) = g.wait_packet(|h| h.op == OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (req.src_port, 77));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 8];
    let deadline = Instant::now() + SEC;
    loop {
        g.poll(5);
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => panic!("unexpected reply {:?}", &b[..n]),
            Err(_) => assert!(Instant::now() < deadline, "client not closed"),
        }
    }
}

/// Several host-initiated connections stream to the guest at once; each stream arrives intact
/// and in order, the device never exceeds any connection's credit, and all make progress.
#[test]
fn concurrent_streams_are_independent_and_fair() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    const BUF: u32 = 32 * 1024;
    const N: usize = 4;
    const LEN: usize = 1 << 20;
    let mut conns: Vec<(UnixStream, u32)> = (0..N)
        .map(|i| host_connect(&mut g, &path, 100 + i as u32, BUF))
        .collect();
    for (s, _) in &conns {
        s.set_nonblocking(true).unwrap();
    }
    let data = |i: usize| -> Vec<u8> { (0..LEN).map(|j| (j * (i + 3) % 251) as u8).collect() };
    let out: Vec<Vec<u8>> = (0..N).map(data).collect();
    let mut sent = [0usize; N];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); N];
    let mut told = [0u32; N];
    let start = Instant::now();
    let mut first_done: Option<usize> = None;
    while got.iter().any(|v| v.len() < LEN) {
        assert!(start.elapsed() < Duration::from_secs(60), "stalled");
        for (i, (s, _)) in conns.iter_mut().enumerate() {
            if sent[i] < LEN {
                if let Ok(k) = s.write(&out[i][sent[i]..(sent[i] + 65536).min(LEN)]) {
                    sent[i] += k;
                }
            }
        }
        for (h, payload) in g.poll(1) {
            let i = (h.dst_port - 100) as usize;
            if h.op != OP_RW {
                continue;
            }
            got[i].extend_from_slice(&payload);
            assert!(
                got[i].len() as u64 - u64::from(told[i]) <= u64::from(BUF),
                "credit exceeded"
            );
            if got[i].len() == LEN && first_done.is_none() {
                first_done = Some(i);
            }
        }
        for (i, (_, hp)) in conns.iter().enumerate() {
            let consumed = got[i].len() as u32;
            if consumed - told[i] >= BUF / 2 {
                g.send(
                    Guest::hdr(OP_CREDIT_UPDATE, 100 + i as u32, *hp, 0, BUF, consumed),
                    &[],
                );
                told[i] = consumed;
            }
        }
        // Fairness: when the first stream completes, every other one is well under way.
        if let Some(f) = first_done.take() {
            for (i, v) in got.iter().enumerate() {
                assert!(
                    v.len() >= LEN / 4,
                    "stream {i} starved ({} bytes) when {f} finished",
                    v.len()
                );
            }
            first_done = Some(usize::MAX);
        }
    }
    for i in 0..N {
        assert!(got[i] == out[i], "stream {i} corrupted");
    }
    eprintln!(
        "vsock: {N} concurrent streams x {} MiB in {:.2}s",
        LEN >> 20,
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn silent_host_clients_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = uds(&dir);
    let mut g = Guest::new(&path);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"CONN").unwrap(); // never finishes the line
    s.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        g.poll(10);
        match s.read(&mut [0u8; 8]) {
            Ok(0) => break,
            Ok(_) => panic!("reply to an unfinished handshake"),
            Err(_) => assert!(start.elapsed() < SEC, "silent client never dropped"),
        }
    }
    assert!(
        start.elapsed() >= Duration::from_millis(4900),
        "{:?}",
        start.elapsed()
    );
    // The device still serves well-behaved clients.
    host_connect(&mut g, &path, 5, 65536);
}
