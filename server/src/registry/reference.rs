//! Image references parsed the way Docker parses them (distribution's `reference` package,
//! `ParseNormalizedNamed`), so that `nginx`, `docker.io/library/nginx:latest` and
//! `index.docker.io/library/nginx` are one image, and a registry's `host:port` is never taken
//! for a tag.
//!
//! - The first path component is a registry when it holds a `.` or a `:`, is `localhost`, or
//!   has upper-case letters (Docker's rule); otherwise the registry is Docker Hub (`docker.io`)
//!   and one-component names get `library/`.
//! - A tag is what follows the last `:` after the last `/`; none means `latest`.
//! - `@sha256:…` pins the reference: it never has an update, and no request is made for it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Docker Hub's name in references and RepoDigests.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Docker's limit on a repository name with its registry.
const NAME_MAX: usize = 255;
/// Docker's limit on a tag.
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// The repository path inside the registry, `library/nginx`, `org/app`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was written. `None` only for a
    /// reference pinned by digest alone.
    pub tag: Option<String>,
    /// `algorithm:hex` when the reference is pinned.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl ImageRef {
    /// Parse `input` as Docker does (see the module documentation).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: String| ReferenceError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if input.trim() != input || input.chars().any(char::is_whitespace) {
            return Err(fail("it contains white space".into()));
        }
        if input.starts_with("sha256:") || is_hex(input, 64) {
            return Err(fail(
                "it is an image id, not a reference to an image in a registry".into(),
            ));
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(fail)?;
                (n, Some(d.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = split_tag(name_tag);
        if let Some(t) = tag {
            validate_tag(t).map_err(fail)?;
        }
        if name.is_empty() {
            return Err(fail("the repository name is empty".into()));
        }
        let (registry, path) = split_registry(name);
        validate_registry(&registry).map_err(fail)?;
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(fail(format!(
                "the repository name {path:?} must be lower-case"
            )));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        validate_path(&repository).map_err(fail)?;
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(fail(format!(
                "the name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Pinned by digest: never has an update, never checked.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The host (and port) the registry API answers on: Docker Hub's API host for
    /// `docker.io`, the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The registry and repository, `docker.io/library/nginx` (what a RepoDigest names).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker shows: `nginx:latest`, `user/app:1`, `ghcr.io/org/app:1.2`.
    pub fn familiar(&self) -> String {
        let name = match self.registry.as_str() {
            DOCKER_HUB => self
                .repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string(),
            _ => self.name(),
        };
        with_suffixes(name, self)
    }

    /// `true` when `other` names the same repository in the same registry.
    pub fn same_repository(&self, other: &ImageRef) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }
}

/// The fully qualified normalised form, `docker.io/library/nginx:latest`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&with_suffixes(self.name(), self))
    }
}

fn with_suffixes(mut s: String, r: &ImageRef) -> String {
    if let Some(t) = &r.tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &r.digest {
        s.push('@');
        s.push_str(d);
    }
    s
}

/// The API host for a registry name (`docker.io` → `registry-1.docker.io`).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// The registry name Canopy keys credentials and limits by: Docker Hub's aliases
/// (`index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`) are
/// `docker.io`; others lose a scheme and trailing `/`.
pub fn normalize_registry(name: &str) -> String {
    let bare = name
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let bare = bare.split('/').next().unwrap_or(bare);
    match bare {
        "index.docker.io" | "registry-1.docker.io" | DOCKER_HUB => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// A registry Docker talks plain HTTP to by default (its insecure registries are
/// `127.0.0.0/8`), and so does Canopy: `localhost`, `127.x.x.x`, `::1`, with any port.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host[:port]` or `[v6][:port]`, without brackets.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if registry.matches(':').count() > 1 {
        return registry; // a bare IPv6 address
    }
    registry.split(':').next().unwrap_or(registry)
}

/// `name[:tag]` → (name, tag): the tag follows the last `:` after the last `/`.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
        None => (s, None),
    }
}

/// Docker's `splitDockerDomain`.
fn split_registry(name: &str) -> (String, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (normalize_registry(first), rest)
        }
        _ => (DOCKER_HUB.to_string(), name),
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("the registry {registry:?} {why}"));
    let (host_ok, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad("has an unclosed '['");
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("is not a valid IPv6 address");
        }
        match after {
            "" => (true, None),
            a => match a.strip_prefix(':') {
                Some(p) => (true, Some(p)),
                None => return bad("has text after its IPv6 address"),
            },
        }
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        let host_ok = host.split('.').all(|c| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        });
        (host_ok, port)
    };
    if !host_ok {
        return bad("is not a valid host name");
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return bad("has a port that is not a number from 0 to 65535");
    }
    Ok(())
}

/// Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or dashes.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(format!(
                "the repository {path:?} has an empty path component"
            ));
        }
        let ok = component
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && component.starts_with(|c: char| c.is_ascii_alphanumeric())
            && component.ends_with(|c: char| c.is_ascii_alphanumeric())
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !ok {
            return Err(format!(
                "the repository path component {component:?} must be lower-case letters and \
                 digits, joined by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = tag.len() <= TAG_MAX
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else if tag.is_empty() {
        Err("the tag after ':' is empty".into())
    } else {
        Err(format!(
            "the tag {tag:?} must be at most {TAG_MAX} letters, digits, '_', '.' or '-', \
             not starting with '.' or '-'"
        ))
    }
}

/// `sha256:<64 hex>`, `sha512:<128 hex>`, or another `algorithm:hex` of at least 32 digits.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((alg, hex)) = digest.split_once(':') else {
        return Err(format!(
            "the digest {digest:?} must be algorithm:hex (sha256:…)"
        ));
    };
    let want = match alg {
        "sha256" => Some(64),
        "sha384" => Some(96),
        "sha512" => Some(128),
        _ => None,
    };
    let alg_ok = alg.starts_with(|c: char| c.is_ascii_alphabetic())
        && alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c));
    let hex_ok = match want {
        Some(n) => is_hex(hex, n),
        None => hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
    };
    if alg_ok && hex_ok {
        Ok(())
    } else {
        Err(format!(
            "the digest {digest:?} is not a valid {alg} digest{}",
            want.map(|n| format!(" ({n} lower-case hex digits)"))
                .unwrap_or_default()
        ))
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = p(s);
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn docker_hub_names_get_library_and_latest() {
        for s in [
            "nginx",
            "nginx:latest",
            "library/nginx",
            "docker.io/nginx",
            "docker.io/library/nginx:latest",
            "index.docker.io/library/nginx",
        ] {
            let r = p(s);
            assert_eq!(r.to_string(), "docker.io/library/nginx:latest", "{s}");
            assert_eq!(r.familiar(), "nginx:latest", "{s}");
            assert_eq!(r.api_host(), "registry-1.docker.io");
        }
        assert_eq!(
            parts("user/app"),
            ("docker.io".into(), "user/app".into(), some("latest"), None)
        );
        assert_eq!(p("user/app:2").familiar(), "user/app:2");
    }

    #[test]
    fn other_registries_keep_their_host_and_port() {
        assert_eq!(
            parts("ghcr.io/org/app:1.2"),
            ("ghcr.io".into(), "org/app".into(), some("1.2"), None)
        );
        assert_eq!(
            parts("127.0.0.1:5000/canopy/web:stable"),
            (
                "127.0.0.1:5000".into(),
                "canopy/web".into(),
                some("stable"),
                None
            )
        );
        // The port is not a tag; the tag is after the last '/'.
        assert_eq!(
            parts("host:5000/x"),
            ("host:5000".into(), "x".into(), some("latest"), None)
        );
        assert_eq!(
            parts("localhost/app"),
            ("localhost".into(), "app".into(), some("latest"), None)
        );
        assert_eq!(
            parts("[::1]:5000/app:v1"),
            ("[::1]:5000".into(), "app".into(), some("v1"), None)
        );
        // Without a '/', "host:5000" is Docker Hub's library/host tagged 5000, as in Docker.
        assert_eq!(
            parts("host:5000"),
            (
                "docker.io".into(),
                "library/host".into(),
                some("5000"),
                None
            )
        );
        assert_eq!(p("ghcr.io/org/app:1.2").familiar(), "ghcr.io/org/app:1.2");
        assert_eq!(p("ghcr.io/org/app").api_host(), "ghcr.io");
    }

    #[test]
    fn digests_pin_the_reference() {
        let r = p(&format!("nginx@{D}"));
        assert!(r.is_pinned());
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("docker.io/library/nginx@{D}"));
        let r = p(&format!("127.0.0.1:5000/canopy/web:stable@{D}"));
        assert!(r.is_pinned());
        assert_eq!(r.tag.as_deref(), Some("stable"));
        assert_eq!(
            r.familiar(),
            format!("127.0.0.1:5000/canopy/web:stable@{D}")
        );
        assert!(!p("nginx:1.27").is_pinned());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("Nginx", "lower-case"),
            ("docker.io/Library/nginx", "lower-case"),
            ("nginx:", "tag after ':' is empty"),
            ("nginx:-x", "the tag \"-x\""),
            ("nginx@sha256:abc", "not a valid sha256 digest"),
            ("nginx@abc", "algorithm:hex"),
            ("host:99999/x", "port"),
            ("host:abc/x", "port"),
            ("reg..io/x", "host name"),
            ("a//b", "empty path component"),
            ("a/b_-c", "path component \"b_-c\""),
            ("nginx latest", "white space"),
            (&D[7..], "image id"),
            (D, "image id"),
        ];
        for (input, needle) in cases {
            let e = ImageRef::parse(input).expect_err(input).to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.contains(&format!("{input:?}")), "{e}");
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(ImageRef::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 255"));
    }

    #[test]
    fn separators_in_paths() {
        for ok in ["a/b.c", "a/b_c", "a/b__c", "a/b-c", "a/b---c", "a1/0b"] {
            p(ok);
        }
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "ghcr.io",
            "localhost.example:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn registry_aliases_normalise() {
        for r in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ] {
            assert_eq!(normalize_registry(r), "docker.io", "{r}");
        }
        assert_eq!(normalize_registry("ghcr.io"), "ghcr.io");
    }
}
