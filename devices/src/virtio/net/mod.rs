//! virtio-net on a host TAP (virtio spec 5.1): one rx and one tx queue, MAC in config space, no
//! offloads (frames carry a zeroed 12-byte virtio_net_hdr_v1), optional rate limits.
//!
//! rx: the TAP is watched edge-triggered; frames are read while the guest has rx buffers. When
//! it has none, the frame in hand is kept and reading stops until the guest posts buffers (rx
//! queue notification). tx: each chain is one frame, written to the TAP as is.

pub mod tap;

use std::io;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::chain::{self, Popped};
use super::counters::{self, NetCounters};
use super::rate_limiter::{RateLimiter, RateLimiterConfig, RateLimiterError};
use super::{device_type, ActivateError, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
pub use tap::{Tap, TapError, VNET_HDR_LEN};

const QUEUE_SIZE: u16 = 256;
/// Largest frame accepted: vnet header + 64 KiB (no offloads, so real frames are MTU-sized).
const MAX_FRAME: usize = VNET_HDR_LEN + 65536;
const RX: usize = 0;
const TX: usize = 1;
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `--net tap=NAME[,mac=..]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub tap_name: String,
    /// Guest MAC; offered with VIRTIO_NET_F_MAC. Without it the guest picks a random one.
    pub mac: Option<[u8; 6]>,
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("invalid MAC address {0:?}; write six hex bytes like 06:00:ac:10:00:02")]
    BadMac(String),
    #[error("TAP {tap:?}: {source}")]
    RateLimiter {
        tap: String,
        source: RateLimiterError,
    },
    #[error("TAP {tap:?}: {source}")]
    Io { tap: String, source: io::Error },
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let bad = || NetError::BadMac(s.to_string());
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
    broken: bool,
}

/// Counters, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_dropped: u64,
}

/// A virtio network device.
pub struct Net {
    tap: Tap,
    config: [u8; 6],
    features: u64,
    queue_evts: [EventFd; 2],
    rx_limiter: Option<RateLimiter>,
    tx_limiter: Option<RateLimiter>,
    rx_buf: Vec<u8>,
    /// Length of a frame in `rx_buf` waiting for a guest buffer.
    rx_pending: Option<usize>,
    tx_buf: Vec<u8>,
    stats: NetStats,
    counters: Arc<NetCounters>,
    active: Option<Active>,
}

const EV_RXQ: u32 = 0;
const EV_TXQ: u32 = 1;
const EV_TAP: u32 = 2;
const EV_RX_LIMIT: u32 = 3;
const EV_TX_LIMIT: u32 = 4;

impl Net {
    pub fn new(cfg: NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&cfg.tap_name)?;
        // Always limiters (unlimited without a config), so their timers are registered at
        // boot and PATCH /network-interfaces can set limits later.
        let limiter = |c: Option<RateLimiterConfig>| {
            RateLimiter::new(c.unwrap_or_default())
                .map(Some)
                .map_err(|source| NetError::RateLimiter {
                    tap: cfg.tap_name.clone(),
                    source,
                })
        };
        let evt = || {
            EventFd::new(EFD_NONBLOCK).map_err(|source| NetError::Io {
                tap: cfg.tap_name.clone(),
                source,
            })
        };
        let mut features = VIRTIO_F_VERSION_1;
        if cfg.mac.is_some() {
            features |= 1 << VIRTIO_NET_F_MAC;
        }
        Ok(Self {
            tap,
            config: cfg.mac.unwrap_or_default(),
            features,
            queue_evts: [evt()?, evt()?],
            rx_limiter: limiter(cfg.rx_rate_limiter)?,
            tx_limiter: limiter(cfg.tx_rate_limiter)?,
            rx_buf: vec![0; MAX_FRAME],
            rx_pending: None,
            tx_buf: vec![0; MAX_FRAME],
            stats: NetStats::default(),
            counters: Arc::default(),
            active: None,
        })
    }

    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    /// Replaces the buckets the given configs name (size 0 turns a limit off).
    pub fn update_rate_limiters(
        &mut self,
        rx: Option<RateLimiterConfig>,
        tx: Option<RateLimiterConfig>,
    ) -> Result<(), NetError> {
        let tap = self.tap.name().to_string();
        for (l, c) in [(&mut self.rx_limiter, rx), (&mut self.tx_limiter, tx)] {
            if let (Some(l), Some(c)) = (l.as_mut(), c) {
                l.update(c).map_err(|source| NetError::RateLimiter {
                    tap: tap.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// The device's counters (shared; keep a clone before wrapping the device).
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    fn fail(a: &mut Active, e: chain::QueueError) {
        tracing::warn!("virtio-net: {e}");
        a.broken = true;
        a.interrupt.set_needs_reset();
    }

    fn process_rx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut used = false;
        while !a.broken {
            let len = match self.rx_pending {
                Some(n) => n,
                None => match self.tap.read_frame(&mut self.rx_buf) {
                    Ok(n) if n >= VNET_HDR_LEN => n,
                    Ok(_) => continue, // runt: skip
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!("virtio-net {}: TAP read: {e}", self.tap.name());
                        break;
                    }
                },
            };
            self.rx_pending = Some(len);
            if self
                .rx_limiter
                .as_ref()
                .is_some_and(RateLimiter::is_blocked)
            {
                break;
            }
            let popped = match chain::pop(&mut a.queues[RX], &a.mem) {
                Ok(Some(p)) => p,
                Ok(None) => break, // no rx buffers: wait for the guest's notification
                Err(e) => {
                    Self::fail(a, e);
                    break;
                }
            };
            let (head, written) = match popped {
                Popped::Bad { head, error } => {
                    tracing::warn!("virtio-net: rx buffer dropped: {error}");
                    (head, 0)
                }
                Popped::Chain(c) => {
                    if let Some(l) = self.rx_limiter.as_mut() {
                        if !l.consume(len as u64) {
                            counters::add(&self.counters.rate_limited, 1);
                            chain::unpop(&mut a.queues[RX]);
                            break;
                        }
                    }
                    self.rx_pending = None;
                    let frame = &mut self.rx_buf[..len];
                    // No offloads: keep only DATA_VALID, zero GSO fields, one buffer.
                    frame[0] &= VIRTIO_NET_HDR_F_DATA_VALID;
                    frame[1..10].fill(0);
                    frame[10..12].copy_from_slice(&1u16.to_le_bytes());
                    if c.writable_len() < len {
                        tracing::debug!("virtio-net: rx buffer too small for {len}-byte frame");
                        self.stats.rx_dropped += 1;
                        counters::add(&self.counters.dropped, 1);
                        (c.head, 0)
                    } else if let Err(e) = c.write_at(&a.mem, 0, frame) {
                        tracing::warn!("virtio-net: rx write: {e}");
                        self.stats.rx_dropped += 1;
                        counters::add(&self.counters.dropped, 1);
                        (c.head, 0)
                    } else {
                        self.stats.rx_frames += 1;
                        counters::add(&self.counters.rx_packets, 1);
                        counters::add(
                            &self.counters.rx_bytes,
                            len.saturating_sub(VNET_HDR_LEN) as u64,
                        );
                        (c.head, len as u32)
                    }
                }
            };
            if let Err(e) = chain::complete(&mut a.queues[RX], &a.mem, head, written) {
                Self::fail(a, e);
                break;
            }
            used = true;
        }
        if used {
            chain::notify_used(&mut a.queues[RX], &a.mem, &a.interrupt);
        }
    }

    fn process_tx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut used = false;
        while !a.broken {
            if self
                .tx_limiter
                .as_ref()
                .is_some_and(RateLimiter::is_blocked)
            {
                break;
            }
            let popped = match chain::pop(&mut a.queues[TX], &a.mem) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    Self::fail(a, e);
                    break;
                }
            };
            let head = match popped {
                Popped::Bad { head, error } => {
                    tracing::warn!("virtio-net: tx chain dropped: {error}");
                    self.stats.tx_dropped += 1;
                    counters::add(&self.counters.dropped, 1);
                    head
                }
                Popped::Chain(c) => {
                    let len = c.readable_len();
                    if let Some(l) = self.tx_limiter.as_mut() {
                        if !l.consume(len as u64) {
                            counters::add(&self.counters.rate_limited, 1);
                            chain::unpop(&mut a.queues[TX]);
                            break;
                        }
                    }
                    if !(VNET_HDR_LEN..=MAX_FRAME).contains(&len) {
                        tracing::debug!("virtio-net: tx frame of {len} bytes dropped");
                        self.stats.tx_dropped += 1;
                        counters::add(&self.counters.dropped, 1);
                    } else if let Err(e) = c.read_at(&a.mem, 0, &mut self.tx_buf[..len]) {
                        tracing::warn!("virtio-net: tx read: {e}");
                        self.stats.tx_dropped += 1;
                        counters::add(&self.counters.dropped, 1);
                    } else {
                        // No offloads were negotiated: the header must say "nothing to do".
                        self.tx_buf[..VNET_HDR_LEN].fill(0);
                        match self.tap.write_frame(&self.tx_buf[..len]) {
                            Ok(_) => {
                                self.stats.tx_frames += 1;
                                counters::add(&self.counters.tx_packets, 1);
                                counters::add(&self.counters.tx_bytes, (len - VNET_HDR_LEN) as u64);
                            }
                            Err(e) => {
                                tracing::debug!("virtio-net: TAP write: {e}");
                                self.stats.tx_dropped += 1;
                                counters::add(&self.counters.dropped, 1);
                            }
                        }
                    }
                    c.head
                }
            };
            if let Err(e) = chain::complete(&mut a.queues[TX], &a.mem, head, 0) {
                Self::fail(a, e);
                break;
            }
            used = true;
        }
        if used {
            chain::notify_used(&mut a.queues[TX], &a.mem, &a.interrupt);
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.features
    }

    fn set_acked_features(&mut self, _acked: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
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
        ActivateError::check(self.active.is_some(), &queues, 2)?;
        self.rx_pending = None;
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
        self.rx_pending = None;
    }

    fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |e: Events| {
            if let Err(err) = ops.add(e) {
                tracing::error!("virtio-net: cannot watch fd {}: {err}", e.fd());
            }
        };
        add(Events::with_data(
            &self.queue_evts[RX],
            EV_RXQ,
            EventSet::IN,
        ));
        add(Events::with_data(
            &self.queue_evts[TX],
            EV_TXQ,
            EventSet::IN,
        ));
        add(Events::with_data(
            &self.tap,
            EV_TAP,
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        ));
        if let Some(l) = &self.rx_limiter {
            add(Events::with_data_raw(
                l.timer_fd(),
                EV_RX_LIMIT,
                EventSet::IN,
            ));
        }
        if let Some(l) = &self.tx_limiter {
            add(Events::with_data_raw(
                l.timer_fd(),
                EV_TX_LIMIT,
                EventSet::IN,
            ));
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            EV_RXQ => {
                let _ = self.queue_evts[RX].read();
                self.process_rx();
            }
            EV_TXQ => {
                let _ = self.queue_evts[TX].read();
                self.process_tx();
                // Frames the guest sent may have been answered already.
                self.process_rx();
            }
            EV_TAP => self.process_rx(),
            EV_RX_LIMIT => {
                if let Some(l) = self.rx_limiter.as_mut() {
                    l.on_timer();
                }
                self.process_rx();
            }
            EV_TX_LIMIT => {
                if let Some(l) = self.tx_limiter.as_mut() {
                    l.on_timer();
                }
                self.process_tx();
            }
            d => tracing::warn!("virtio-net: unexpected event data {d}"),
        }
    }
}
