//! Facts about this machine for registration and check-in: hostname, machine-id,
//! os-release, kernel, architecture. Read from files, never from a shell.

use canopy_api_types::agent::HostFacts;
use std::collections::HashMap;
use std::path::Path;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parse `/etc/os-release` (`KEY=value`, values optionally quoted).
pub fn parse_os_release(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Gather facts from the filesystem rooted at `root` (`/` in production).
pub fn gather_from(root: &Path, read_only: bool) -> HostFacts {
    let os = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .map(|t| parse_os_release(&t))
        .unwrap_or_default();
    HostFacts {
        hostname: read_trim(&root.join("proc/sys/kernel/hostname"))
            .or_else(|| read_trim(&root.join("etc/hostname")))
            .unwrap_or_else(|| "unknown".into()),
        machine_id: read_trim(&root.join("etc/machine-id"))
            .or_else(|| read_trim(&root.join("var/lib/dbus/machine-id")))
            .unwrap_or_default(),
        os_id: os.get("ID").cloned().unwrap_or_default(),
        os_pretty: os.get("PRETTY_NAME").cloned().unwrap_or_default(),
        kernel: read_trim(&root.join("proc/sys/kernel/osrelease")).unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        agent_version: AGENT_VERSION.to_string(),
        read_only,
    }
}

pub fn gather(read_only: bool) -> HostFacts {
    gather_from(Path::new("/"), read_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quotes() {
        let m = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n# c\nX='y'\n",
        );
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["X"], "y");
    }

    #[test]
    fn facts_of_this_machine() {
        let f = gather(true);
        assert!(!f.hostname.is_empty());
        assert!(!f.kernel.is_empty());
        assert!(f.read_only);
        assert_eq!(f.agent_version, AGENT_VERSION);
    }
}
