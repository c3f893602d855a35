//! The images the lab's Docker guests run, built here from Debian's `busybox-static` and pushed
//! to the lab registry through its HTTP API (no public registry, no engine involved):
//!
//! - layer 1: `/bin/busybox` and a symlink per applet, `/etc/passwd`, `/tmp`;
//! - layer 2: `/etc/canopy-lab-image` (`REPOSITORY VARIANT PLATFORM`: what makes v1 and v2
//!   differ), `/bin/canopy-lab-app` (the command: idles, ends at once on SIGTERM), `/healthy`
//!   except in the `broken` and `crash` variants, `/crash` in the `crash` variant (the command
//!   then exits 1 after two seconds).
//!
//! Images with a healthcheck carry it in their config (`HEALTHCHECK --interval=2s --timeout=2s
//! --retries=2 CMD test -f /healthy`), so a `broken` container turns unhealthy within seconds.
//! Single-platform images are Docker v2 manifests; a multi-platform image is an OCI index of a
//! linux/amd64 image and a linux/arm64 stand-in (one layer holding only `/etc/canopy-lab-image`:
//! no amd64 machine ever runs it). Everything is deterministic (fixed times, the tar writer in
//! `oci.rs`), so a variant has the same digest at every push.

use super::oci::{self, Blob, Client, Layer, Tar};
use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

/// An image reference the lab deploys.
pub struct LabImage {
    /// Its short name in lab.json (`docker.images.KEY`).
    pub key: &'static str,
    pub repository: &'static str,
    pub tag: &'static str,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kind {
    pub healthcheck: bool,
    pub multi_platform: bool,
}

const PLAIN_HC: Kind = Kind {
    healthcheck: true,
    multi_platform: false,
};

pub const IMAGES: &[LabImage] = &[
    LabImage {
        key: "web",
        repository: "canopy/web",
        tag: "stable",
        kind: PLAIN_HC,
    },
    LabImage {
        key: "worker",
        repository: "canopy/worker",
        tag: "stable",
        kind: Kind {
            healthcheck: false,
            multi_platform: false,
        },
    },
    LabImage {
        key: "cache",
        repository: "canopy/cache",
        tag: "1",
        kind: PLAIN_HC,
    },
    LabImage {
        key: "multi",
        repository: "canopy/multi",
        tag: "1",
        kind: Kind {
            healthcheck: true,
            multi_platform: true,
        },
    },
];

/// The kind of `repository`: a lab image's own, else a plain image with a healthcheck.
pub fn kind_of(repository: &str) -> Kind {
    IMAGES
        .iter()
        .find(|i| i.repository == repository)
        .map_or(PLAIN_HC, |i| i.kind)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Variant {
    V1,
    V2,
    Broken,
    Crash,
}

pub const VARIANTS: &[&str] = &["v1", "v2", "broken", "crash"];

impl Variant {
    pub fn parse(s: &str) -> Result<Variant> {
        Ok(match s {
            "v1" => Variant::V1,
            "v2" => Variant::V2,
            "broken" => Variant::Broken,
            "crash" => Variant::Crash,
            other => bail!("unknown variant {other:?} (one of {})", VARIANTS.join(", ")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::V1 => "v1",
            Variant::V2 => "v2",
            Variant::Broken => "broken",
            Variant::Crash => "crash",
        }
    }

    /// The image's creation time: fixed per variant, so digests are stable.
    fn created(self) -> &'static str {
        match self {
            Variant::V1 => "2025-01-01T00:00:00Z",
            Variant::V2 => "2025-02-01T00:00:00Z",
            Variant::Broken => "2025-03-01T00:00:00Z",
            Variant::Crash => "2025-04-01T00:00:00Z",
        }
    }
}

/// The command of every lab image.
const APP: &str = "#!/bin/sh\n\
# canopy lab container: idles until stopped (SIGTERM ends it at once).\n\
trap 'exit 0' TERM INT\n\
read -r what < /etc/canopy-lab-image\n\
echo \"canopy lab container: $what\"\n\
if [ -e /crash ]; then echo 'canopy lab container: crashing' >&2; sleep 2; exit 1; fi\n\
while :; do sleep 3600 & wait $!; done\n";
const BUSYBOX: &str = "/bin/busybox";

/// Layer 1 of every amd64 lab image: static busybox and its applets.
pub fn busybox_layer() -> Result<Layer> {
    let ldd = cmd("ldd", [BUSYBOX])
        .timeout(Duration::from_secs(10))
        .capture();
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} is missing (install busybox-static: `cargo xtask prereqs`)");
    }
    if let Ok(out) = ldd {
        if out.status.success() {
            bail!("{BUSYBOX} is dynamically linked (install busybox-static, not busybox)");
        }
    }
    let binary = std::fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX}"))?;
    let list = cmd(BUSYBOX, ["--list"]).output()?;
    let mut t = Tar::default();
    t.dir("bin", 0o755)?;
    t.file("bin/busybox", 0o755, &binary)?;
    for applet in list.lines().map(str::trim) {
        if !applet.is_empty()
            && applet != "busybox"
            && applet.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        {
            t.symlink(&format!("bin/{applet}"), "busybox")?;
        }
    }
    t.dir("etc", 0o755)?;
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    t.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    t.dir("root", 0o700)?;
    t.dir("tmp", 0o1777)?;
    Layer::from_tar(t.finish())
}

/// Layer 2: what tells the variants apart.
fn app_layer(repository: &str, variant: Variant, platform: &str) -> Result<Layer> {
    let mut t = Tar::default();
    t.dir("bin", 0o755)?;
    t.file("bin/canopy-lab-app", 0o755, APP.as_bytes())?;
    t.dir("etc", 0o755)?;
    let what = format!("{repository} {} {platform}\n", variant.name());
    t.file("etc/canopy-lab-image", 0o644, what.as_bytes())?;
    match variant {
        Variant::V1 | Variant::V2 => t.file("healthy", 0o644, b"")?,
        Variant::Broken => {}
        Variant::Crash => t.file("crash", 0o644, b"")?,
    }
    Layer::from_tar(t.finish())
}

/// The arm64 stand-in's only layer.
fn stand_in_layer(repository: &str, variant: Variant) -> Result<Layer> {
    let mut t = Tar::default();
    t.dir("etc", 0o755)?;
    let what = format!(
        "{repository} {} linux/arm64 (a stand-in: no binaries)\n",
        variant.name()
    );
    t.file("etc/canopy-lab-image", 0o644, what.as_bytes())?;
    Layer::from_tar(t.finish())
}

/// The image config (Docker's, which OCI configs extend): platform, command, healthcheck,
/// labels, the layers' diff ids.
fn config(
    repository: &str,
    variant: Variant,
    kind: Kind,
    arch: &str,
    layers: &[&Layer],
) -> Result<Blob> {
    let created = variant.created();
    let health = if kind.healthcheck {
        ",\"Healthcheck\":{\"Test\":[\"CMD-SHELL\",\"test -f /healthy\"],\"Interval\":2000000000,\"Timeout\":2000000000,\"Retries\":2}"
    } else {
        ""
    };
    let arch_variant = if arch == "arm64" {
        ",\"variant\":\"v8\""
    } else {
        ""
    };
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("\"{}\"", l.diff_id))
        .collect();
    let history: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            format!(
                "{{\"created\":\"{created}\",\"created_by\":\"canopy lab: {repository} {} layer {}\"}}",
                variant.name(),
                i + 1
            )
        })
        .collect();
    let json = format!(
        "{{\"architecture\":\"{arch}\"{arch_variant},\"os\":\"linux\",\"created\":\"{created}\",\
         \"config\":{{\"Env\":[\"PATH=/bin\"],\"Cmd\":[\"/bin/canopy-lab-app\"],\"StopSignal\":\"SIGTERM\"{health},\
         \"Labels\":{{\"org.opencontainers.image.title\":\"{repository}\",\"org.opencontainers.image.version\":\"{}\"}}}},\
         \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}},\"history\":[{}]}}",
        variant.name(),
        diff_ids.join(","),
        history.join(","),
    );
    Blob::new(json.into_bytes())
}

/// A manifest of `config` and `layers` in the Docker v2 or the OCI format.
fn manifest(oci: bool, config: &Blob, layers: &[&Layer]) -> Result<Blob> {
    let (mt, cmt, lmt) = if oci {
        (oci::OCI_MANIFEST, oci::OCI_CONFIG, oci::OCI_LAYER)
    } else {
        (oci::DOCKER_MANIFEST, oci::DOCKER_CONFIG, oci::DOCKER_LAYER)
    };
    let layers: Vec<String> = layers.iter().map(|l| l.blob.descriptor(lmt, "")).collect();
    Blob::new(
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{mt}\",\"config\":{},\"layers\":[{}]}}",
            config.descriptor(cmt, ""),
            layers.join(",")
        )
        .into_bytes(),
    )
}

/// What a push left in the registry.
pub struct Pushed {
    /// The tag's digest (the index's, for a multi-platform image).
    pub digest: String,
    pub media_type: &'static str,
    /// `("linux/amd64", digest)`, … for a multi-platform image; empty otherwise.
    pub platforms: Vec<(String, String)>,
}

/// Pushes `variant` as `repository:tag`: blobs, manifests, and for a multi-platform image the
/// platform manifests by digest and the index by tag. `base` is [`busybox_layer`].
pub fn push(
    reg: &Client<'_>,
    base: &Layer,
    repository: &str,
    tag: &str,
    variant: Variant,
    kind: Kind,
) -> Result<Pushed> {
    let app = app_layer(repository, variant, "linux/amd64")?;
    let amd64_layers = [base, &app];
    let amd64_config = config(repository, variant, kind, "amd64", &amd64_layers)?;
    for blob in [&base.blob, &app.blob, &amd64_config] {
        reg.push_blob(repository, blob)?;
    }
    let amd64 = manifest(kind.multi_platform, &amd64_config, &amd64_layers)?;
    if !kind.multi_platform {
        let digest = reg.push_manifest(repository, tag, oci::DOCKER_MANIFEST, &amd64)?;
        return Ok(Pushed {
            digest,
            media_type: oci::DOCKER_MANIFEST,
            platforms: Vec::new(),
        });
    }
    let arm = stand_in_layer(repository, variant)?;
    let arm_config = config(repository, variant, kind, "arm64", &[&arm])?;
    reg.push_blob(repository, &arm.blob)?;
    reg.push_blob(repository, &arm_config)?;
    let arm64 = manifest(true, &arm_config, &[&arm])?;
    let mut entries = Vec::new();
    let mut platforms = Vec::new();
    for (m, arch, extra) in [
        (&amd64, "amd64", ""),
        (&arm64, "arm64", ",\"variant\":\"v8\""),
    ] {
        reg.push_manifest(repository, &m.digest, oci::OCI_MANIFEST, m)?;
        entries.push(m.descriptor(
            oci::OCI_MANIFEST,
            &format!(",\"platform\":{{\"architecture\":\"{arch}\",\"os\":\"linux\"{extra}}}"),
        ));
        platforms.push((format!("linux/{arch}"), m.digest.clone()));
    }
    let index = Blob::new(
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"manifests\":[{}]}}",
            oci::OCI_INDEX,
            entries.join(",")
        )
        .into_bytes(),
    )?;
    let digest = reg.push_manifest(repository, tag, oci::OCI_INDEX, &index)?;
    Ok(Pushed {
        digest,
        media_type: oci::OCI_INDEX,
        platforms,
    })
}

/// A repository name as the distribution spec allows it (lower-case path components).
pub fn check_repository(name: &str) -> Result<()> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if name.len() > 200 || !name.split('/').all(component_ok) {
        bail!("repository {name:?}: use lower-case letters, digits, '.', '_', '-' and '/'");
    }
    Ok(())
}

/// A tag as the distribution spec allows it.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.as_bytes()[0] != b'.'
        && tag.as_bytes()[0] != b'-'
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        bail!("tag {tag:?}: use letters, digits, '.', '_' and '-' (not first), at most 128");
    }
    Ok(())
}
