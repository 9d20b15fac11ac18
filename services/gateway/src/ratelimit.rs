//! Per-agency rate limits: a token bucket for each agency (and for the exchange's admin),
//! so one agency's runaway script cannot starve the others. Over the limit, the answer is 429
//! with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `who`'s bucket: `Ok` if there was room, or the seconds until
    /// there will be.
    pub fn take(&self, who: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            let wait = if self.per_second > 0.0 {
                ((1.0 - refilled) / self.per_second).ceil() as u64
            } else {
                u64::MAX
            };
            Err(wait.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_per_agency() {
        let r = RateLimiter::new(0.001, 3.0);
        for _ in 0..3 {
            assert!(r.take("a").is_ok());
        }
        assert!(r.take("a").is_err());
        assert!(r.take("b").is_ok(), "each agency has its own bucket");
    }
}
