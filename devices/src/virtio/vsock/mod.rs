//! virtio-vsock (virtio spec 5.10) with Firecracker's host-side Unix socket protocol.
//!
//! * Host-initiated: a host process connects to `uds_path` and writes `CONNECT <port>\n`; the
//!   device asks the guest (OP_REQUEST to `<port>`) and, once the guest accepts, replies
//!   `OK <host_port>\n` on the socket, which then carries the stream.
//! * Guest-initiated: a guest connection to host (CID 2) port `P` is connected to the Unix
//!   socket `<uds_path>_<P>`.
//!
//! Data flow obeys the guest's credit (buf_alloc/fwd_cnt); our own buffer per connection is
//! 256 KiB and a guest that overruns it is reset. Queues: rx 0, tx 1, event 2.

mod conn;
mod muxer;
pub mod packet;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::{device_type, ActivateError, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use conn::Conn;
use packet::Header;

const QUEUE_SIZE: u16 = 256;
/// Largest sun_path (108 bytes with the NUL).
const MAX_UDS_PATH: usize = 107;

/// `--vsock cid=N,uds=PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id; 0-2 are reserved.
    pub guest_cid: u64,
    /// Host Unix socket the device listens on; guest-initiated connections to port P go to
    /// `<uds_path>_<P>`.
    pub uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error(
        "vsock guest CID {0} is reserved (0 = hypervisor, 1 = local, 2 = host); use a CID of 3 \
         or more"
    )]
    ReservedCid(u64),
    #[error("vsock guest CID {0} is too large; use a CID between 3 and 4294967294")]
    CidTooLarge(u64),
    #[error("vsock socket path {0:?} is longer than 107 bytes; use a shorter path")]
    PathTooLong(PathBuf),
    #[error(
        "vsock socket path {0:?} already exists and is not a stale socket (another VM may be \
         using it); choose another path or remove it"
    )]
    PathExists(PathBuf),
    #[error("cannot listen on vsock socket {path:?}: {source}; check that its directory exists")]
    Bind { path: PathBuf, source: io::Error },
    #[error("vsock: {0}")]
    Io(#[from] io::Error),
}

impl VsockConfig {
    pub fn validate(&self) -> Result<(), VsockError> {
        if self.guest_cid < 3 {
            return Err(VsockError::ReservedCid(self.guest_cid));
        }
        if self.guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::CidTooLarge(self.guest_cid));
        }
        // Room for the longest "_<port>" suffix of guest-initiated connections.
        if self.uds_path.as_os_str().len() + 11 > MAX_UDS_PATH {
            return Err(VsockError::PathTooLong(self.uds_path.clone()));
        }
        Ok(())
    }

    /// Removes a socket left behind by a VMM that is gone (nobody accepts on it); any other
    /// existing file at `uds_path` is an error.
    fn clear_stale_socket(&self) -> Result<(), VsockError> {
        use std::os::unix::fs::FileTypeExt;
        let Ok(meta) = self.uds_path.symlink_metadata() else {
            return Ok(());
        };
        let stale = meta.file_type().is_socket()
            && matches!(UnixStream::connect(&self.uds_path),
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused);
        if !stale {
            return Err(VsockError::PathExists(self.uds_path.clone()));
        }
        tracing::info!(path = ?self.uds_path, "removing stale vsock socket");
        std::fs::remove_file(&self.uds_path)?;
        Ok(())
    }
}

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    broken: bool,
}

/// A host connection still sending its `CONNECT <port>\n` line.
struct PendingConnect {
    stream: UnixStream,
    line: Vec<u8>,
    since: std::time::Instant,
}

enum Slot {
    Pending(PendingConnect),
    Conn((u32, u32)),
}

/// A virtio vsock device.
pub struct Vsock {
    cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    queue_evts: [EventFd; 3],
    reset_evt: EventFd,
    /// Periodic while host-initiated connections wait for the guest (see
    /// [`muxer::CONNECT_TIMEOUT`]).
    sweep: TimerFd,
    sweep_armed: bool,
    /// Connections by (host port, guest port).
    conns: BTreeMap<(u32, u32), Conn>,
    slots: HashMap<u32, Slot>,
    next_token: u32,
    next_host_port: u32,
    /// RSTs answering packets for unknown connections.
    rst_queue: VecDeque<Header>,
    /// Sockets of a reset device, deregistered on the event loop thread before closing.
    zombies: Vec<UnixStream>,
    /// Where the round-robin over connections resumes.
    rr_cursor: (u32, u32),
    buf: Vec<u8>,
    active: Option<Active>,
    counters: Arc<super::counters::VsockCounters>,
}

const EV_RXQ: u32 = 0;
const EV_TXQ: u32 = 1;
const EV_EVQ: u32 = 2;
const EV_LISTENER: u32 = 3;
const EV_RESET: u32 = 4;
const EV_SWEEP: u32 = 5;
const FIRST_TOKEN: u32 = 16;

impl Vsock {
    /// Validates the config and starts listening on `uds_path`.
    pub fn new(cfg: VsockConfig) -> Result<Self, VsockError> {
        cfg.validate()?;
        cfg.clear_stale_socket()?;
        let listener = UnixListener::bind(&cfg.uds_path).map_err(|source| VsockError::Bind {
            path: cfg.uds_path.clone(),
            source,
        })?;
        listener.set_nonblocking(true)?;
        let evt = || EventFd::new(EFD_NONBLOCK);
        Ok(Self {
            cid: cfg.guest_cid,
            uds_path: cfg.uds_path,
            listener,
            queue_evts: [evt()?, evt()?, evt()?],
            reset_evt: evt()?,
            sweep: TimerFd::new().map_err(|e| io::Error::from_raw_os_error(e.errno()))?,
            sweep_armed: false,
            conns: BTreeMap::new(),
            slots: HashMap::new(),
            next_token: FIRST_TOKEN,
            next_host_port: 1 << 30,
            rst_queue: VecDeque::new(),
            zombies: Vec::new(),
            rr_cursor: (0, 0),
            buf: vec![0; muxer::MAX_PKT_PAYLOAD],
            active: None,
            counters: Arc::default(),
        })
    }

    /// The device's counters (shared; keep a clone before wrapping the device).
    pub fn counters(&self) -> Arc<super::counters::VsockCounters> {
        self.counters.clone()
    }

    pub fn guest_cid(&self) -> u64 {
        self.cid
    }

    /// Number of open connections (for tests and metrics).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, _acked: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        super::read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        ActivateError::check(self.active.is_some(), &queues, 3)?;
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
            broken: false,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.rst_queue.clear();
        for (_, c) in std::mem::take(&mut self.conns) {
            self.zombies.push(c.stream);
        }
        for (_, s) in std::mem::take(&mut self.slots) {
            if let Slot::Pending(p) = s {
                self.zombies.push(p.stream);
            }
        }
        if !self.zombies.is_empty() {
            let _ = self.reset_evt.write(1);
        }
    }

    fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

impl MutEventSubscriber for Vsock {
    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |e: Events| {
            if let Err(err) = ops.add(e) {
                tracing::error!("virtio-vsock: cannot watch fd {}: {err}", e.fd());
            }
        };
        add(Events::with_data(&self.queue_evts[0], EV_RXQ, EventSet::IN));
        add(Events::with_data(&self.queue_evts[1], EV_TXQ, EventSet::IN));
        add(Events::with_data(&self.queue_evts[2], EV_EVQ, EventSet::IN));
        add(Events::with_data(
            &self.listener,
            EV_LISTENER,
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        ));
        add(Events::with_data(&self.reset_evt, EV_RESET, EventSet::IN));
        add(Events::with_data(&self.sweep, EV_SWEEP, EventSet::IN));
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        for z in std::mem::take(&mut self.zombies) {
            let _ = ops.remove(Events::empty(&z));
        }
        match events.data() {
            EV_RXQ => {
                let _ = self.queue_evts[0].read();
            }
            EV_TXQ => {
                let _ = self.queue_evts[1].read();
                self.process_tx(ops);
            }
            EV_EVQ => {
                let _ = self.queue_evts[2].read();
            }
            EV_LISTENER => self.accept_all(ops),
            EV_RESET => {
                let _ = self.reset_evt.read();
            }
            EV_SWEEP => self.sweep_connecting(ops),
            token => self.socket_event(token, events.event_set(), ops),
        }
        self.process_rx();
        self.reap(ops);
    }
}
