//! Pushing images to a registry through its HTTP API (distribution spec): blobs by a
//! `POST /v2/NAME/blobs/uploads/` + `PUT LOCATION&digest=…` (skipped when `HEAD` finds the blob),
//! manifests and indexes by `PUT /v2/NAME/manifests/REFERENCE`. Also the deterministic tar
//! writer the lab's image layers are made with, so a variant has the same digest every time.

use super::http;
use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use flate2::{write::GzEncoder, Compression};
use std::io::Write;
use std::time::Duration;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:HEX` of `bytes` (coreutils' `sha256sum`: xtask has no hashing crate).
pub fn sha256(bytes: &[u8]) -> Result<String> {
    let out = cmd("sha256sum", ["-"])
        .stdin(bytes.to_vec())
        .timeout(Duration::from_secs(60))
        .output()?;
    let hex = out.split_whitespace().next().unwrap_or("");
    if hex.len() != 64 {
        bail!("sha256sum printed {out:?}");
    }
    Ok(format!("sha256:{hex}"))
}

/// Content with its digest.
pub struct Blob {
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Result<Blob> {
        Ok(Blob {
            digest: sha256(&bytes)?,
            bytes,
        })
    }

    /// A descriptor (`{"mediaType", "size", "digest"}` plus `extra` fields) as JSON.
    pub fn descriptor(&self, media_type: &str, extra: &str) -> String {
        format!(
            "{{\"mediaType\":\"{media_type}\",\"size\":{},\"digest\":\"{}\"{extra}}}",
            self.bytes.len(),
            self.digest
        )
    }
}

/// A gzipped layer: the compressed blob and the digest of the tar inside (its diff id).
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

impl Layer {
    pub fn from_tar(tar: Vec<u8>) -> Result<Layer> {
        let diff_id = sha256(&tar)?;
        // flate2's header has mtime 0 and no file name: the same tar gives the same blob.
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&tar)?;
        Ok(Layer {
            blob: Blob::new(gz.finish()?)?,
            diff_id,
        })
    }
}

/// A deterministic tar: entries as added, owner root, mtime 0, ustar headers.
#[derive(Default)]
pub struct Tar {
    out: Vec<u8>,
}

impl Tar {
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.entry(
            &format!("{}/", path.trim_end_matches('/')),
            mode,
            b'5',
            "",
            &[],
        )
    }

    pub fn file(&mut self, path: &str, mode: u32, content: &[u8]) -> Result<()> {
        self.entry(path, mode, b'0', "", content)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.entry(path, 0o777, b'2', target, &[])
    }

    fn entry(&mut self, path: &str, mode: u32, kind: u8, link: &str, data: &[u8]) -> Result<()> {
        if path.len() > 99 || link.len() > 99 {
            bail!("tar entry {path:?} -> {link:?}: name too long");
        }
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0);
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0, pad));
        Ok(())
    }

    /// The archive with its two end blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0, 1024));
        self.out
    }
}

/// Zero-padded octal digits filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) {
    let n = field.len() - 1;
    let digits = format!("{value:0n$o}");
    field[..n].copy_from_slice(digits.as_bytes());
    field[n] = 0;
}

/// A registry at `127.0.0.1:PORT`.
pub struct Client<'a> {
    pub addr: &'a str,
}

impl Client<'_> {
    /// Uploads `blob` into `repo` unless it is there already.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        if http::request("HEAD", self.addr, &path, &[], &[])?.status == 200 {
            return Ok(());
        }
        let start = http::request(
            "POST",
            self.addr,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            &[],
        )?;
        if start.status != 202 {
            bail!(
                "POST /v2/{repo}/blobs/uploads/: {} {}",
                start.status,
                start.body_text()
            );
        }
        let location = start
            .header("location")
            .context("upload start without a Location")?;
        // Location is absolute (http://127.0.0.1:PORT/v2/…?_state=…) or a path.
        let target = match location.strip_prefix("http://") {
            Some(rest) => &rest[rest.find('/').unwrap_or(rest.len())..],
            None => location,
        };
        let sep = if target.contains('?') { '&' } else { '?' };
        let put = format!("{target}{sep}digest={}", blob.digest);
        let done = http::request(
            "PUT",
            self.addr,
            &put,
            &[("Content-Type", "application/octet-stream")],
            &blob.bytes,
        )?;
        if done.status != 201 {
            bail!(
                "upload of {} to {repo}: {} {}",
                blob.digest,
                done.status,
                done.body_text()
            );
        }
        Ok(())
    }

    /// `PUT /v2/REPO/manifests/REFERENCE` (a tag or a digest); returns the digest the registry
    /// gives it, checked against the content's own.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        manifest: &Blob,
    ) -> Result<String> {
        let r = http::request(
            "PUT",
            self.addr,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            &manifest.bytes,
        )?;
        if r.status != 201 {
            bail!(
                "PUT /v2/{repo}/manifests/{reference}: {} {}",
                r.status,
                r.body_text()
            );
        }
        let digest = r.header("docker-content-digest").unwrap_or("");
        if digest != manifest.digest {
            bail!(
                "the registry stored {repo}:{reference} as {digest:?}, its content is {}",
                manifest.digest
            );
        }
        Ok(manifest.digest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_ustar_with_valid_checksums() {
        let mut t = Tar::default();
        t.dir("etc", 0o755).unwrap();
        t.file("etc/x", 0o644, b"hello").unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        let tar = t.finish();
        assert_eq!(tar.len(), 512 * 4 + 1024);
        for block in [&tar[0..512], &tar[512..1024], &tar[1536..2048]] {
            assert_eq!(&block[257..263], b"ustar\0");
            let stored =
                u32::from_str_radix(std::str::from_utf8(&block[148..154]).unwrap(), 8).unwrap();
            let mut copy = block.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            assert_eq!(stored, copy.iter().map(|b| u32::from(*b)).sum::<u32>());
        }
        assert_eq!(&tar[1024..1029], b"hello");
        assert_eq!(tar[1536 + 156], b'2');
        assert!(t_name(&tar[0..512]) == "etc/");
    }

    fn t_name(block: &[u8]) -> String {
        String::from_utf8_lossy(&block[..100])
            .trim_end_matches('\0')
            .to_string()
    }
}
