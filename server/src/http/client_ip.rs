//! Per-address rate limiting for the unauthenticated routes.

use crate::auth::rate_limit::RateLimiter;
use crate::error::{Error, Result};
use std::net::SocketAddr;

pub fn limit(limiter: &RateLimiter, addr: SocketAddr) -> Result<()> {
    limiter
        .check(addr.ip(), std::time::Instant::now())
        .map_err(|wait| {
            Error::RateLimited(format!(
                "too many attempts from {}; try again in {} s",
                addr.ip(),
                wait.as_secs().max(1)
            ))
        })
}
