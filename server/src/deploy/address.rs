//! SSH addresses of PVE nodes and directly reached guests, as written in `[deploy.nodes]`,
//! `[deploy.direct]` or reported by PVE: `host`, `host:port`, an IPv4 or IPv6 address, or
//! `[IPv6]:port`; port 22 when none is given. One canonical form (`[2001:db8::10]:22`) is
//! what the server connects to, pins host keys under and shows.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A validated `host:port`; [`fmt::Display`] gives the canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SshAddress {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

const DEFAULT_PORT: u16 = 22;

impl SshAddress {
    /// Parses `host`, `host:port`, `IPv4[:port]`, a bare IPv6 address or `[IPv6][:port]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| format!("SSH address `{s}`: {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(bad(
                    "`[` without its `]` (write an IPv6 address as [ADDRESS]:PORT)",
                ));
            };
            let Ok(ip) = inside.parse::<Ipv6Addr>() else {
                return Err(bad(&format!(
                    "`{inside}` between brackets is not an IPv6 address"
                )));
            };
            let port = match after {
                "" => DEFAULT_PORT,
                _ => match after.strip_prefix(':') {
                    Some(p) => port(p).map_err(|e| bad(&e))?,
                    None => return Err(bad("only `:PORT` may follow `]`")),
                },
            };
            return Ok(Self {
                host: Host::Ip(IpAddr::V6(ip)),
                port,
            });
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) =
            match s.split_once(':') {
                None => (s, DEFAULT_PORT),
                Some((_, rest)) if rest.contains(':') => return Err(bad(
                    "not an IPv6 address; an IPv6 address with a port is written [ADDRESS]:PORT",
                )),
                Some((h, p)) => (h, port(p).map_err(|e| bad(&e))?),
            };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port,
            });
        }
        if host.is_empty()
            || host.starts_with(['-', '.'])
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(bad(&format!("`{host}` is not a host name or IP address")));
        }
        Ok(Self {
            host: Host::Name(host.to_string()),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port `{p}` is not a number from 1 to 65535")),
        Ok(n) => Ok(n),
    }
}

impl fmt::Display for SshAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

impl std::str::FromStr for SshAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SshAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<SshAddress> for String {
    fn from(a: SshAddress) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::ToSocketAddrs;

    fn canon(s: &str) -> String {
        SshAddress::parse(s).unwrap().to_string()
    }

    #[test]
    fn port_22_unless_one_is_given() {
        assert_eq!(canon("10.0.0.5"), "10.0.0.5:22");
        assert_eq!(canon("127.0.0.1:2201"), "127.0.0.1:2201");
        assert_eq!(canon("pve1.lan"), "pve1.lan:22");
        assert_eq!(canon("pve1.lan:2222"), "pve1.lan:2222");
    }

    #[test]
    fn ipv6_with_and_without_port() {
        assert_eq!(canon("[2001:db8::10]:22"), "[2001:db8::10]:22");
        assert_eq!(canon("[2001:db8::10]:2222"), "[2001:db8::10]:2222");
        assert_eq!(canon("[2001:db8::10]"), "[2001:db8::10]:22");
        // A bare IPv6 address ends in a group that looks like a port: it is not one.
        assert_eq!(canon("2001:db8::10"), "[2001:db8::10]:22");
        assert_eq!(canon("2001:DB8:0:0::10"), "[2001:db8::10]:22");
        assert_eq!(canon("::1"), "[::1]:22");
    }

    #[test]
    fn the_canonical_form_is_what_the_socket_layer_reads() {
        // Parsing only (no name lookup, no connection): IP literals resolve locally.
        let addrs: Vec<_> = canon("2001:db8::10")
            .to_socket_addrs()
            .unwrap()
            .collect::<Vec<_>>();
        assert_eq!(addrs, vec!["[2001:db8::10]:22".parse().unwrap()]);
        let addrs: Vec<_> = canon("[2001:db8::10]:2201")
            .to_socket_addrs()
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["[2001:db8::10]:2201".parse().unwrap()]);
    }

    #[test]
    fn bad_addresses_are_named() {
        for (input, says) in [
            ("", "empty"),
            ("[2001:db8::10", "without its `]`"),
            ("[pve1]:22", "not an IPv6 address"),
            ("[2001:db8::10]22", "only `:PORT`"),
            ("[2001:db8::10]:ssh", "port `ssh`"),
            ("10.0.0.5:0", "port `0`"),
            ("10.0.0.5:70000", "port `70000`"),
            ("2001:db8::zz", "[ADDRESS]:PORT"),
            ("pve 1:22", "not a host name"),
            (":22", "not a host name"),
        ] {
            let err = SshAddress::parse(input).unwrap_err();
            assert!(err.contains(says), "{input:?}: {err}");
            assert!(err.contains(input.trim()), "{input:?}: {err}");
        }
    }

    #[test]
    fn settings_files_take_every_form() {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: std::collections::BTreeMap<String, SshAddress>,
        }
        let n: Nodes = toml::from_str(
            "[nodes]\n\"home/pve1\" = \"[2001:db8::10]:22\"\n\"home/pve2\" = \"2001:db8::11\"\n\
             \"home/pve3\" = \"192.168.1.13\"\n",
        )
        .unwrap();
        let shown: Vec<String> = n.nodes.values().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            ["[2001:db8::10]:22", "[2001:db8::11]:22", "192.168.1.13:22"]
        );
        let err = toml::from_str::<Nodes>("[nodes]\n\"home/pve1\" = \"2001:db8::10:2222x\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("[ADDRESS]:PORT"), "{err}");
    }
}
