//! Token-bucket I/O rate limiting (bandwidth and operations), with a `TimerFd` that wakes the
//! device's event loop when a throttled device may continue.
//!
//! The parameters follow Firecracker's API: a bucket holds `size` tokens and refills completely
//! every `refill_time_ms`; `one_time_burst` extra tokens are available once at start. A bucket
//! with `size == 0` is unlimited. A single request larger than `size` is let through when the
//! bucket is full and leaves it in debt, so oversized requests are slowed, never stuck.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// One bucket's parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucketConfig {
    /// Tokens (bytes or operations) per `refill_time_ms`; 0 disables the bucket.
    pub size: u64,
    /// Extra tokens usable once, before the regular budget.
    pub one_time_burst: u64,
    /// Milliseconds to refill `size` tokens from empty.
    pub refill_time_ms: u64,
}

/// Limits for one direction of a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimiterConfig {
    /// Bytes.
    pub bandwidth: Option<TokenBucketConfig>,
    /// Requests (block) or frames (net).
    pub ops: Option<TokenBucketConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimiterError {
    #[error(
        "rate limiter bucket of size {size} has refill_time_ms 0; give a refill time in \
         milliseconds > 0 (or size 0 for no limit)"
    )]
    ZeroRefillTime { size: u64 },
    #[error("cannot create rate limiter timer: {0}")]
    Timer(String),
}

#[derive(Debug)]
struct TokenBucket {
    size: f64,
    refill_ns: f64,
    budget: f64,
    burst: u64,
    last: Instant,
}

impl TokenBucket {
    fn new(c: TokenBucketConfig) -> Result<Option<Self>, RateLimiterError> {
        if c.size == 0 {
            return Ok(None);
        }
        if c.refill_time_ms == 0 {
            return Err(RateLimiterError::ZeroRefillTime { size: c.size });
        }
        Ok(Some(Self {
            size: c.size as f64,
            refill_ns: c.refill_time_ms as f64 * 1e6,
            budget: c.size as f64,
            burst: c.one_time_burst,
            last: Instant::now(),
        }))
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let ns = now.duration_since(self.last).as_nanos() as f64;
        self.last = now;
        self.budget = (self.budget + ns * self.size / self.refill_ns).min(self.size);
    }

    /// Takes `n` tokens, or says how long until it could.
    fn take(&mut self, n: u64) -> Result<(), Duration> {
        if self.burst >= n {
            self.burst -= n;
            return Ok(());
        }
        self.refill();
        let need = (n as f64).min(self.size);
        if self.budget >= need {
            self.budget -= n as f64;
            return Ok(());
        }
        let wait_ns = (need - self.budget) * self.refill_ns / self.size;
        Err(Duration::from_nanos(wait_ns.ceil().max(1.0) as u64))
    }

    fn give_back(&mut self, n: u64) {
        self.budget = (self.budget + n as f64).min(self.size);
    }
}

/// A bandwidth bucket and an ops bucket sharing one wake-up timer.
#[derive(Debug)]
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    blocked: bool,
}

impl RateLimiter {
    pub fn new(config: RateLimiterConfig) -> Result<Self, RateLimiterError> {
        Ok(Self {
            bandwidth: config
                .bandwidth
                .map(TokenBucket::new)
                .transpose()?
                .flatten(),
            ops: config.ops.map(TokenBucket::new).transpose()?.flatten(),
            timer: TimerFd::new().map_err(|e| RateLimiterError::Timer(e.to_string()))?,
            blocked: false,
        })
    }

    /// Replaces the buckets `config` gives (a bucket of size 0 turns that limit off) and keeps
    /// the others; the timer (registered with the event loop) stays the same. A wait already
    /// armed ends as planned.
    pub fn update(&mut self, config: RateLimiterConfig) -> Result<(), RateLimiterError> {
        if let Some(b) = config.bandwidth {
            self.bandwidth = TokenBucket::new(b)?;
        }
        if let Some(o) = config.ops {
            self.ops = TokenBucket::new(o)?;
        }
        Ok(())
    }

    /// Accounts one operation of `bytes`; false (and the timer armed) if it must wait.
    pub fn consume(&mut self, bytes: u64) -> bool {
        if self.blocked {
            return false;
        }
        let mut wait = None;
        if let Some(ops) = &mut self.ops {
            if let Err(d) = ops.take(1) {
                wait = Some(d);
            }
        }
        if wait.is_none() {
            if let Some(bw) = &mut self.bandwidth {
                if let Err(d) = bw.take(bytes) {
                    if let Some(ops) = &mut self.ops {
                        ops.give_back(1);
                    }
                    wait = Some(d);
                }
            }
        }
        match wait {
            None => true,
            Some(d) => {
                self.blocked = true;
                if let Err(e) = self.timer.reset(d, None) {
                    tracing::error!("rate limiter: cannot arm timer: {e}; not throttling");
                    self.blocked = false;
                    return true;
                }
                false
            }
        }
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Call when [`RateLimiter::timer_fd`] is readable: the wait is over.
    pub fn on_timer(&mut self) {
        if let Err(e) = self.timer.wait() {
            tracing::warn!("rate limiter: timer read failed: {e}");
        }
        self.blocked = false;
    }

    /// The fd to poll for readability.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_then_releases_after_refill() {
        let cfg = RateLimiterConfig {
            bandwidth: Some(TokenBucketConfig {
                size: 1000,
                one_time_burst: 0,
                refill_time_ms: 100,
            }),
            ops: None,
        };
        let mut rl = RateLimiter::new(cfg).unwrap();
        assert!(rl.consume(600));
        assert!(
            !rl.consume(600),
            "second 600 bytes exceed the 1000-byte bucket"
        );
        assert!(rl.is_blocked());
        let t = Instant::now();
        rl.on_timer(); // blocks until the timer fires
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(15),
            "waited only {waited:?}"
        );
        assert!(rl.consume(600));
    }

    #[test]
    fn oversized_request_passes_when_full_and_leaves_debt() {
        let cfg = RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig {
                size: 2,
                one_time_burst: 1,
                refill_time_ms: 1000,
            }),
        };
        let mut rl = RateLimiter::new(cfg).unwrap();
        assert!(rl.consume(1) && rl.consume(1) && rl.consume(1)); // burst + 2
        assert!(!rl.consume(1));
    }

    #[test]
    fn update_replaces_given_buckets_only() {
        let mut rl = RateLimiter::new(RateLimiterConfig::default()).unwrap();
        assert!((0..100).all(|_| rl.consume(1 << 20)), "no limits at first");
        let ops = TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 200,
        };
        rl.update(RateLimiterConfig {
            bandwidth: None,
            ops: Some(ops),
        })
        .unwrap();
        assert!(rl.consume(1));
        assert!(!rl.consume(1), "one op per 200 ms after the update");
        rl.on_timer();
        // Turning the ops limit off (size 0) while keeping bandwidth unlimited.
        rl.update(RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig::default()),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!((0..10).all(|_| rl.consume(1)));
    }

    #[test]
    fn zero_refill_time_is_rejected_with_fix() {
        let cfg = RateLimiterConfig {
            bandwidth: Some(TokenBucketConfig {
                size: 5,
                one_time_burst: 0,
                refill_time_ms: 0,
            }),
            ops: None,
        };
        let e = RateLimiter::new(cfg).unwrap_err();
        assert!(e.to_string().contains("refill_time_ms 0"), "{e}");
    }
}
