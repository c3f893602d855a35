//! The client's address: the TCP peer, or — when the peer is one of the `trusted_proxies`
//! — the right-most `X-Forwarded-For` address that is not itself a trusted proxy. Anyone
//! can send the header, so it is believed only from the proxies the settings name. The
//! address feeds the request log, the login events and the rate limits.

use crate::auth::rate_limit::RateLimiter;
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// One `trusted_proxies` entry: an address (`10.0.0.2`, `::1`) or a network
/// (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("'{s}' is not an address or CIDR network: {why}");
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| bad(&format!("prefix length must be 0-{max}")))?,
        };
        Ok(Self { net, len })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The parsed `trusted_proxies` setting (empty: `X-Forwarded-For` is never believed).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses the setting; the error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client behind `peer` given the request's headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // A hop we cannot read: believe nothing left of it.
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// The client's address of a request (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| Error::internal("the server was started without peer addresses"))?;
        Ok(Self(state.trusted_proxies.client(peer, &parts.headers)))
    }
}

/// Take one attempt from `key`'s bucket, or 429 naming `who` and the wait.
pub fn limit<K: Hash + Eq + Clone>(limiter: &RateLimiter<K>, key: &K, who: &str) -> Result<()> {
    limiter
        .check(key, std::time::Instant::now())
        .map_err(|wait| too_many(who, wait))
}

/// The 429 for `who` ("from 203.0.113.5", "for user alice").
pub fn too_many(who: &str, wait: std::time::Duration) -> Error {
    Error::RateLimited(format!(
        "too many attempts {who}; try again in {} s",
        wait.as_secs().max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_match_and_name_bad_entries() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.200.1.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers match");
        let one: Cidr = "192.168.1.5".parse().unwrap();
        assert!(one.contains(ip("192.168.1.5")) && !one.contains(ip("192.168.1.6")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.0/33", "proxy.lan", "10.0.0/8", "::1/129"] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&["203.0.113.5"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        assert_eq!(
            t.client(ip("192.0.2.7"), &h),
            ip("192.0.2.7"),
            "untrusted peer"
        );
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &h),
            ip("127.0.0.1"),
            "nothing trusted by default"
        );
        assert_eq!(
            t.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        // A client's spoofed entry on the left does not win: the proxies appended the rest.
        let h = headers(&["1.1.1.1, 203.0.113.5, 10.0.0.3"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        // Several header lines are one list, in order.
        let h = headers(&["1.1.1.1", "203.0.113.5:4711", "10.0.0.3"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("203.0.113.5"));
        let h = headers(&["[2001:db8::7]:443, 10.1.1.1"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("2001:db8::7"));
        // Every hop a trusted proxy: the left-most one.
        let h = headers(&["10.9.9.9, 10.0.0.3"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("10.9.9.9"));
        // Garbage stops the walk at the last proxy believed.
        let h = headers(&["203.0.113.5, garbage, 10.0.0.3"]);
        assert_eq!(t.client(ip("127.0.0.1"), &h), ip("10.0.0.3"));
    }
}
