//! Random keys the server creates on first start and keeps in its data dir, 0600:
//! `jwt.key` (signs access tokens) and `seal.key` (encrypts PVE token secrets at rest).
//! Never printed, never returned. Replicas on PostgreSQL must share the same files.

use anyhow::{bail, Context};
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Load `dir/name`, creating it with `len` random bytes (0600) when absent.
pub fn load_or_create(dir: &Path, name: &str, len: usize) -> anyhow::Result<Vec<u8>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= len => return Ok(bytes),
        Ok(_) => bail!(
            "{} is shorter than {len} bytes; delete it to generate a new key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut key = vec![0u8; len];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok(key)
}
