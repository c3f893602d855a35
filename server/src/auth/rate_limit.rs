//! A keyed token bucket for login and registration attempts (per client address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `ip` at `now`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let cap = f64::from(self.per_minute);
        let refill_per_sec = cap / 60.0;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(120));
        }
        let (tokens, last) = buckets.entry(ip).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * refill_per_sec).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / refill_per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check(ip, t0).unwrap();
        }
        assert!(rl.check(ip, t0).is_err());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        rl.check(other, t0).unwrap();
        rl.check(ip, t0 + Duration::from_secs(21)).unwrap();
    }
}
