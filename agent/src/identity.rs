//! Who the agent process runs as. The server may deploy the agent as an unprivileged
//! user (`canopy-agent`) with a sudoers rule for its root helper; then [`crate::helper::call`]
//! goes through `sudo -n` for what needs root, and the host facts say which user it is.
//! Read from `/proc/self/status` and `/etc/passwd`, without unsafe code or libc.

use std::path::Path;

/// The effective uid from the text of `/proc/PID/status`
/// (`Uid:\treal\teffective\tsaved\tfilesystem`).
pub fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

/// The effective uid of this process as seen under `root` (`/` in production).
pub fn effective_uid_from(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join("proc/self/status"))
        .ok()
        .and_then(|s| parse_effective_uid(&s))
}

/// Whether this process runs as root. When the uid cannot be read (no `/proc`), the agent
/// acts as root: commands then run directly and fail with their own message if it is not.
pub fn is_root() -> bool {
    effective_uid_from(Path::new("/")).is_none_or(|uid| uid == 0)
}

/// The user name of `uid` in the text of an `/etc/passwd` (`name:x:uid:gid:…`).
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// The user the agent runs as, looked up in `root`'s `/etc/passwd`: its name, else
/// `uid N`, else `unknown` when the uid cannot be read.
pub fn run_as_from(root: &Path) -> String {
    let Some(uid) = effective_uid_from(root) else {
        return "unknown".into();
    };
    std::fs::read_to_string(root.join("etc/passwd"))
        .ok()
        .and_then(|p| user_name(&p, uid))
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status =
            "Name:\tcanopy-agent\nUmask:\t0022\nUid:\t1000\t998\t998\t998\nGid:\t1\t2\t3\t4\n";
        assert_eq!(parse_effective_uid(status), Some(998));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t5\n"), None);
    }

    #[test]
    fn this_process_has_a_uid() {
        assert!(effective_uid_from(Path::new("/")).is_some());
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken\ncanopy-agent:x:998:998::/var/lib/canopy-agent:/usr/sbin/nologin\n";
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 998).as_deref(), Some("canopy-agent"));
        assert_eq!(user_name(passwd, 1000), None);
    }

    #[test]
    fn run_as_reads_the_given_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(run_as_from(dir.path()), "unknown");
        std::fs::create_dir_all(dir.path().join("proc/self")).expect("mkdir");
        std::fs::write(
            dir.path().join("proc/self/status"),
            "Uid:\t998\t998\t998\t998\n",
        )
        .expect("write");
        assert_eq!(run_as_from(dir.path()), "uid 998", "no passwd");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ncanopy-agent:x:998:998::/var/lib/canopy-agent:/sbin/nologin\n",
        )
        .expect("write");
        assert_eq!(run_as_from(dir.path()), "canopy-agent");
    }
}
