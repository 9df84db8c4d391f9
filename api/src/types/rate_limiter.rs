//! Rate limiter descriptions shared by drives and network interfaces.

use serde::{Deserialize, Serialize};

/// A token bucket: `size` tokens refilled every `refill_time` milliseconds, plus an initial
/// `one_time_burst`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Capacity of the bucket in tokens (bytes or operations).
    pub size: u64,
    /// Extra tokens available once, at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket from empty to `size`.
    pub refill_time: u64,
}

/// An I/O rate limiter with independent bytes/s and ops/s buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bucket whose tokens are bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Bucket whose tokens are operations (requests or packets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// Checks that a bucket with a size also has a refill time; `field` names it in errors.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        for (name, bucket) in [("bandwidth", &self.bandwidth), ("ops", &self.ops)] {
            if let Some(b) = bucket {
                if b.size > 0 && b.refill_time == 0 {
                    return Err(format!(
                        "{field}.{name}.refill_time is 0 with size {}; give the refill time in \
                         milliseconds (> 0), or size 0 to disable the bucket",
                        b.size
                    ));
                }
            }
        }
        Ok(())
    }
}
