//! How to reach a cluster: the API token (`USER@REALM!TOKENID=SECRET`, never shown), the
//! endpoints a user types normalised to `https://host:8006`, trust and timeouts.

use crate::error::Error;
use canopy_tls::Trust;
use reqwest::header::HeaderValue;
use reqwest::Url;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A PVE API token, `USER@REALM!TOKENID=SECRET`. `Display`/`Debug` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    id: String,
    secret: String,
}

impl ApiToken {
    /// `USER@REALM!TOKENID`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part, for storage by the caller (never log it).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub(super) fn header(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("PVEAPIToken={}={}", self.id, self.secret))
            .expect("validated on parse");
        v.set_sensitive(true);
        v
    }
}

impl FromStr for ApiToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Config(format!(
                "the API token must look like USER@REALM!TOKENID=SECRET ({why})"
            ))
        };
        let (id, secret) = s
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("no '=' before the secret"))?;
        let (user, token_name) = id
            .split_once('!')
            .ok_or_else(|| bad("no '!' before the token id"))?;
        if !user.contains('@') || user.starts_with('@') || user.ends_with('@') {
            return Err(bad("the user needs a realm, e.g. root@pam"));
        }
        if token_name.is_empty() || secret.is_empty() {
            return Err(bad("empty token id or secret"));
        }
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("only printable ASCII without spaces"));
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}=…)", self.id)
    }
}

/// How to reach one cluster (or one standalone node).
#[derive(Clone, Debug)]
pub struct Connection {
    /// One or more node addresses: `https://pve1:8006`, `pve1`, `10.0.0.5:8006`, …
    pub endpoints: Vec<String>,
    pub token: ApiToken,
    pub trust: Trust,
    /// Per request, after the connection is up.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Connection {
    pub fn new(endpoints: Vec<String>, token: ApiToken, trust: Trust) -> Self {
        Self {
            endpoints,
            token,
            trust,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Normalise what a user types into the API origin: `https://host:8006`.
pub fn normalize_endpoint(input: &str) -> Result<Url, Error> {
    let input = input.trim().trim_end_matches('/');
    let with_scheme = if input.contains("://") {
        input.to_string()
    } else {
        format!("https://{input}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| Error::Config(format!("{input:?} is not a PVE address: {e}")))?;
    if url.scheme() != "https" {
        return Err(Error::Config(format!(
            "{input:?}: PVE is only reached over https"
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::Config(format!("{input:?} has no host")));
    }
    if url.port().is_none() {
        url.set_port(Some(8006)).ok();
    }
    url.set_path("");
    url.set_query(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_never_show_the_secret() {
        let t: ApiToken = "root@pam!canopy=3f1c-aa".parse().unwrap();
        assert_eq!(t.id(), "root@pam!canopy");
        assert_eq!(t.to_string(), "root@pam!canopy");
        assert!(!format!("{t:?}").contains("3f1c"));
        for bad in [
            "root@pam=secret",
            "root!x=s",
            "root@pam!x",
            "@pam!x=s",
            "root@pam!=s",
        ] {
            let e = bad.parse::<ApiToken>().unwrap_err().to_string();
            assert!(e.contains("USER@REALM!TOKENID=SECRET"), "{bad}: {e}");
        }
    }

    #[test]
    fn endpoints_normalise_to_https_origins() {
        let ok = |s: &str| normalize_endpoint(s).unwrap().to_string();
        assert_eq!(ok("pve1"), "https://pve1:8006/");
        assert_eq!(
            ok("https://10.0.0.5:8006/api2/json/"),
            "https://10.0.0.5:8006/"
        );
        assert_eq!(ok("127.0.0.1:9443"), "https://127.0.0.1:9443/");
        assert!(normalize_endpoint("http://pve1:8006")
            .unwrap_err()
            .to_string()
            .contains("only reached over https"));
    }
}
