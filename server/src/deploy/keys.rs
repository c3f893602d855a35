//! The deploy key (an ed25519 SSH key the server generates on first use, 0600) and the agent
//! binary the server pushes.

use super::steps::AgentBinary;
use crate::settings::DeploySettings;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub fn key_file(settings: &DeploySettings, data_dir: &Path) -> PathBuf {
    settings
        .ssh_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("ssh").join("id_ed25519"))
}

/// Creates an ed25519 key at `path` (0600, its directory 0700) unless one is there.
pub fn ensure_key(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .context("generating the deploy key")?;
    let pem = key
        .to_openssh(ssh_key::LineEnding::LF)
        .context("encoding the deploy key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated the SSH deploy key");
    Ok(())
}

/// The public half of the deploy key, one `authorized_keys` line (generated when missing).
pub fn public_key(settings: &DeploySettings, data_dir: &Path) -> Result<String> {
    let path = key_file(settings, data_dir);
    ensure_key(&path)?;
    let key = ssh_key::PrivateKey::read_openssh_file(&path)
        .with_context(|| format!("reading the deploy key {}", path.display()))?;
    let mut public = key.public_key().clone();
    public.set_comment("canopy-deploy");
    public.to_openssh().context("encoding the public key")
}

/// The static agent to push: `deploy.agent_binary`, else `canopy-agent` beside this binary.
pub fn agent_binary(settings: &DeploySettings) -> Result<AgentBinary> {
    let path = match &settings.agent_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating the canopy binary")?
            .with_file_name("canopy-agent"),
    };
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the agent binary {} (set deploy.agent_binary or CANOPY_DEPLOY_AGENT_BINARY \
             to the static canopy-agent)",
            path.display()
        )
    })?;
    if bytes.get(..4) != Some(b"\x7fELF") {
        bail!("{} is not an ELF executable", path.display());
    }
    Ok(AgentBinary {
        sha256: hex::encode(Sha256::digest(&bytes)),
        version: format!("canopy-agent {}", env!("CARGO_PKG_VERSION")),
        arch: elf_arch(&bytes).unwrap_or("unknown").to_string(),
        path,
    })
}

/// `uname -m` name of an ELF file's machine (e_machine at offset 18, little-endian).
fn elf_arch(bytes: &[u8]) -> Option<&'static str> {
    let m = u16::from_le_bytes([*bytes.get(18)?, *bytes.get(19)?]);
    Some(match m {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0x03 => "i686",
        0x28 => "armv7l",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DeploySettings {
            ssh_key_file: Some(dir.path().join("k/id_ed25519")),
            ..DeploySettings::default()
        };
        let public = public_key(&settings, dir.path()).unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        assert!(public.ends_with(" canopy-deploy"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k/id_ed25519"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Stable across calls: the key is not regenerated.
        assert_eq!(public_key(&settings, dir.path()).unwrap(), public);
    }

    #[test]
    fn agent_arch_comes_from_the_elf_header() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_arch(&exe), Some(std::env::consts::ARCH));
    }
}
