//! Facts about this machine for registration and check-in: hostname, machine-id,
//! os-release, kernel, architecture, the user the agent runs as. Read from files, never
//! from a shell.

use canopy_api_types::agent::HostFacts;
use std::collections::HashMap;
use std::path::Path;

/// The agent's version, as `--version` prints it and the facts report it. A build with
/// `CANOPY_AGENT_VERSION_OVERRIDE=X.Y.Z` in its environment claims `X.Y.Z` instead (tests
/// build an "older" agent to exercise the server's upgrade path).
pub const AGENT_VERSION: &str = match option_env!("CANOPY_AGENT_VERSION_OVERRIDE") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

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
        run_as: crate::identity::run_as_from(root),
        package_db: Vec::new(),
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
        assert!(
            !f.run_as.is_empty() && f.run_as != "unknown",
            "{}",
            f.run_as
        );
    }

    #[test]
    fn run_as_comes_from_the_gathered_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in [
            ("proc/self/status", "Name:\tcanopy-agent\nUid:\t998\t998\t998\t998\n"),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ncanopy-agent:x:998:998::/var/lib/canopy-agent:/usr/sbin/nologin\n"),
            ("etc/os-release", "ID=debian\n"),
        ] {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        let f = gather_from(dir.path(), false);
        assert_eq!(f.run_as, "canopy-agent");
        assert_eq!(f.os_id, "debian");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")
            .expect("write");
        assert_eq!(gather_from(dir.path(), false).run_as, "uid 998");
    }
}
