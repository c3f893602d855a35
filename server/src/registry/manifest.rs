//! What a manifest answer is: the media types a check accepts, whether a `Content-Type` names
//! an index or a single manifest, and the entries of an index document (Docker manifest list
//! or OCI index).

use super::platform::Platform;
use super::report::IndexEntry;

/// Manifest types a check accepts, lists and indexes first (Docker's order).
pub const MANIFEST_TYPES: [&str; 4] = [
    DOCKER_LIST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
];
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The `Content-Type` of a manifest answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    /// A Docker manifest list or an OCI index: the digest is the index's.
    Index,
    /// A Docker v2 or OCI image manifest: the digest is the platform's.
    Manifest,
    /// Anything else (or none): only the body tells.
    Other(String),
}

impl MediaType {
    pub(crate) fn of(content_type: Option<&str>) -> Self {
        let t = content_type
            .and_then(|t| t.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        match t {
            DOCKER_LIST | OCI_INDEX => MediaType::Index,
            _ if MANIFEST_TYPES.contains(&t) => MediaType::Manifest,
            other => MediaType::Other(other.to_string()),
        }
    }
}

#[derive(serde::Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Option<Vec<IndexDocEntry>>,
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
}

#[derive(serde::Deserialize)]
struct IndexDocEntry {
    digest: String,
    #[serde(default)]
    platform: Option<IndexDocPlatform>,
}

#[derive(serde::Deserialize)]
struct IndexDocPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// An index's entries; `None` for a document that is a single manifest.
pub(crate) fn parse_index(body: &[u8]) -> Result<Option<Vec<IndexEntry>>, String> {
    let doc: IndexDoc = serde_json::from_slice(body)
        .map_err(|e| format!("sent a manifest that is not JSON: {e}"))?;
    let Some(manifests) = doc.manifests else {
        return match doc.media_type.as_deref() {
            Some(DOCKER_LIST | OCI_INDEX) => Err("sent an index without a manifests list".into()),
            _ => Ok(None),
        };
    };
    Ok(Some(
        manifests
            .into_iter()
            .map(|m| IndexEntry {
                digest: m.digest,
                platform: m
                    .platform
                    .map(|p| Platform::new(&p.os, &p.architecture, p.variant.as_deref())),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(MediaType::of(Some(OCI_INDEX)), MediaType::Index);
        assert_eq!(
            MediaType::of(Some(&format!("{DOCKER_LIST}; charset=utf-8"))),
            MediaType::Index
        );
        assert_eq!(MediaType::of(Some(MANIFEST_TYPES[2])), MediaType::Manifest);
        assert_eq!(MediaType::of(Some(MANIFEST_TYPES[3])), MediaType::Manifest);
        assert_eq!(MediaType::of(None), MediaType::Other(String::new()));
    }

    #[test]
    fn indexes_parse_and_single_manifests_are_told_apart() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":1}]}"#;
        let e = parse_index(index).unwrap().unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].platform.as_ref().unwrap().to_string(), "linux/arm64");
        assert_eq!(e[2].platform, None);
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(parse_index(manifest).unwrap(), None);
        assert!(parse_index(b"<html>").unwrap_err().contains("not JSON"));
        assert!(
            parse_index(br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#).is_err()
        );
    }
}
