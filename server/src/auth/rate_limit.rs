//! Keyed token buckets for the unauthenticated routes: login per client address and per
//! user name (two limiters, so that one attacker can lock out neither everyone behind a
//! proxy nor a user from elsewhere for long), registration per client address.
//!
//! Two ways to spend a bucket: [`RateLimiter::check`] takes a token up front (login: an
//! argon2 verification is expensive, so attempts in flight are bounded) and
//! [`RateLimiter::refund`] gives it back when the attempt succeeded; a [`FailureGuard`]
//! only looks before and charges when the attempt failed (registration: a deploy enrols
//! many guests at once from one address, and only failures count).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before idle ones are dropped.
const MAX_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    per_minute: u32,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn cap(&self) -> f64 {
        f64::from(self.per_minute)
    }

    /// Runs `f` on `key`'s bucket, refilled up to `now`.
    fn with_bucket<T>(&self, key: &K, now: Instant, f: impl FnOnce(&mut f64) -> T) -> T {
        let cap = self.cap();
        let refill_per_sec = cap / 60.0;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > MAX_KEYS {
            buckets.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(120));
        }
        let (tokens, last) = buckets.entry(key.clone()).or_insert((cap, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * refill_per_sec)
            .min(cap);
        *last = now;
        f(tokens)
    }

    fn wait(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((1.0 - tokens).max(0.0) / (self.cap() / 60.0))
    }

    /// Take one token for `key` at `now`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |tokens| {
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait(*tokens))
            }
        })
    }

    /// `Err(wait)` when `key`'s bucket is empty; takes nothing.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |tokens| {
            if *tokens >= 1.0 {
                Ok(())
            } else {
                Err(self.wait(*tokens))
            }
        })
    }

    /// Take one token for `key` if there is one (a failure that must count).
    pub fn charge(&self, key: &K, now: Instant) {
        self.with_bucket(key, now, |tokens| *tokens = (*tokens - 1.0).max(0.0));
    }

    /// Give back the token [`check`](Self::check) took (the attempt succeeded).
    pub fn refund(&self, key: &K, now: Instant) {
        let cap = self.cap();
        self.with_bucket(key, now, |tokens| *tokens = (*tokens + 1.0).min(cap));
    }

    /// Looks at `key`'s bucket now (`Err(wait)` when it is empty) and returns a guard that
    /// charges it when dropped, unless [`FailureGuard::succeeded`] was called.
    pub fn failures(&self, key: K) -> Result<FailureGuard<'_, K>, Duration> {
        self.peek(&key, Instant::now())?;
        Ok(FailureGuard {
            limiter: self,
            key: Some(key),
        })
    }
}

/// Charges its bucket on drop: every early return with an error counts as a failure.
#[derive(Debug)]
pub struct FailureGuard<'a, K: Hash + Eq + Clone> {
    limiter: &'a RateLimiter<K>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> FailureGuard<'_, K> {
    /// The attempt succeeded: nothing is charged.
    pub fn succeeded(mut self) {
        self.key = None;
    }
}

impl<K: Hash + Eq + Clone> Drop for FailureGuard<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.charge(&key, Instant::now());
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
            rl.check(&ip, t0).unwrap();
        }
        assert!(rl.check(&ip, t0).is_err());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        rl.check(&other, t0).unwrap();
        rl.check(&ip, t0 + Duration::from_secs(21)).unwrap();
    }

    #[test]
    fn refund_gives_the_token_back() {
        let rl: RateLimiter<String> = RateLimiter::new(2);
        let k = "alice".to_string();
        let t0 = Instant::now();
        for _ in 0..10 {
            rl.check(&k, t0).unwrap();
            rl.refund(&k, t0);
        }
        rl.check(&k, t0).unwrap();
        rl.check(&k, t0).unwrap();
        assert!(rl.check(&k, t0).is_err());
    }

    #[test]
    fn only_failures_count_with_a_guard() {
        let rl = RateLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..20 {
            rl.failures(ip).unwrap().succeeded();
        }
        drop(rl.failures(ip).unwrap());
        drop(rl.failures(ip).unwrap());
        let wait = rl.failures(ip).unwrap_err();
        assert!(wait > Duration::ZERO, "{wait:?}");
    }
}
