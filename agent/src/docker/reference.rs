//! Image references as written (`nginx`, `ghcr.io/org/app:1.2`, `127.0.0.1:5000/app@sha256:…`):
//! split into repository, tag and digest, and compared by repository the way the engine
//! names them (`nginx` = `docker.io/library/nginx`), so a container's reference finds its
//! image's `RepoDigests` entry.

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Everything before the tag and digest, as written (`nginx`, `127.0.0.1:5000/app`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Splits `r`; refuses what cannot be an image reference (empty, spaces, a leading `-`).
    pub fn parse(r: &str) -> Result<Self, String> {
        let ok = !r.is_empty()
            && r.len() <= 512
            && !r.starts_with('-')
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/:@._-".contains(c));
        if !ok {
            return Err(format!("{r:?} is not an image reference"));
        }
        let (name, digest) = match r.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (r, None),
        };
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(name[slash + i + 1..].to_string())),
            None => (name, None),
        };
        if repository.is_empty() || tag.as_deref() == Some("") {
            return Err(format!("{r:?} is not an image reference"));
        }
        if let Some(d) = &digest {
            check_digest(d)?;
        }
        Ok(Self {
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The tag the reference means (`latest` when none is written).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `REPOSITORY@DIGEST`: what a pinned pull asks for.
    pub fn at(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repository)
    }

    /// `REPOSITORY:TAG`.
    pub fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn check_digest(d: &str) -> Result<(), String> {
    let ok = d
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    if ok {
        Ok(())
    } else {
        Err(format!("{d:?} is not a sha256 digest (sha256:<64 hex>)"))
    }
}

/// The repository as the engine knows it: Docker Hub's implicit registry and `library/`
/// made explicit (`nginx` → `docker.io/library/nginx`).
pub fn normalize(repository: &str) -> String {
    let (first, rest) = match repository.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (repository, None),
    };
    let is_registry = first.contains('.') || first.contains(':') || first == "localhost";
    match (is_registry, rest) {
        (true, Some(_)) if first == "index.docker.io" => normalize(&repository[first.len() + 1..]),
        (true, Some(r)) if first == "docker.io" && !r.contains('/') => {
            format!("docker.io/library/{r}")
        }
        (true, Some(_)) => repository.to_string(),
        (false, Some(_)) => format!("docker.io/{repository}"),
        (_, None) => format!("docker.io/library/{repository}"),
    }
}

/// The digest of the `RepoDigests` entry (`repo@sha256:…`) of `repository`, if any.
pub fn digest_for<'a>(repo_digests: &'a [String], repository: &str) -> Option<&'a str> {
    let want = normalize(repository);
    repo_digests.iter().find_map(|rd| {
        let (repo, digest) = rd.split_once('@')?;
        (normalize(repo) == want).then_some(digest)
    })
}

/// Whether `repo_digests` has `repository@digest` (the repository compared as the engine
/// names it).
pub fn has_digest(repo_digests: &[String], repository: &str, digest: &str) -> bool {
    let want = normalize(repository);
    repo_digests.iter().any(|rd| {
        rd.split_once('@')
            .is_some_and(|(repo, d)| d == digest && normalize(repo) == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_split_into_repository_tag_and_digest() {
        let r = Reference::parse("nginx").expect("plain");
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("nginx", None));
        assert_eq!(r.tag_or_latest(), "latest");
        let r = Reference::parse("127.0.0.1:5000/team/app:v2").expect("registry with port");
        assert_eq!(r.repository, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.at(D), format!("127.0.0.1:5000/team/app@{D}"));
        let r = Reference::parse("127.0.0.1:5000/app").expect("port, no tag");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000/app", None)
        );
        let r = Reference::parse(&format!("ghcr.io/o/a:1@{D}")).expect("tag and digest");
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.with_tag("canopy-previous"), "ghcr.io/o/a:canopy-previous");
        for bad in ["", "a b", "-x", "app:", "a@sha256:12", "x;rm"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repositories_compare_as_the_engine_names_them() {
        assert_eq!(normalize("nginx"), "docker.io/library/nginx");
        assert_eq!(normalize("library/nginx"), "docker.io/library/nginx");
        assert_eq!(normalize("docker.io/nginx"), "docker.io/library/nginx");
        assert_eq!(
            normalize("index.docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(normalize("grafana/grafana"), "docker.io/grafana/grafana");
        assert_eq!(normalize("localhost/app"), "localhost/app");
        assert_eq!(normalize("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
        let digests = vec![
            format!("127.0.0.1:5000/other@{D}"),
            "nginx@sha256:1111111111111111111111111111111111111111111111111111111111111111"
                .to_string(),
        ];
        assert_eq!(
            digest_for(&digests, "docker.io/library/nginx"),
            Some("sha256:1111111111111111111111111111111111111111111111111111111111111111")
        );
        assert_eq!(digest_for(&digests, "127.0.0.1:5000/other"), Some(D));
        assert_eq!(digest_for(&digests, "127.0.0.1:5000/app"), None);
        assert!(has_digest(&digests, "127.0.0.1:5000/other", D));
        assert!(!has_digest(&digests, "127.0.0.1:5000/app", D));
        assert!(!has_digest(&digests, "docker.io/library/nginx", D));
        assert!(check_digest(D).is_ok());
        assert!(check_digest("sha256:ABC").is_err());
    }
}
