//! API token authentication and privilege checks, as pve-access-control does them: the
//! `PVEAPIToken` header value, PVE's built-in roles, and ACL paths where a more specific
//! path replaces what is inherited from above.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;

use crate::config::TokenSpec;

/// Privilege list of one role level.
type PrivList = &'static [&'static str];

/// Privilege groups of pve-access-control (`$privgroups`): (category, admin, user, audit).
const PRIV_GROUPS: &[(&str, PrivList, PrivList, PrivList)] = &[
    (
        "VM",
        &[
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Allocate",
            "VM.Clone",
            "VM.GuestAgent.Unrestricted",
            "VM.Migrate",
            "VM.Replicate",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ],
        &[
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.Backup",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ],
        &["VM.Audit", "VM.GuestAgent.Audit"],
    ),
    ("Sys", &["Sys.Console", "Sys.Syslog"], &[], &["Sys.Audit"]),
    (
        "Datastore",
        &["Datastore.Allocate", "Datastore.AllocateTemplate"],
        &["Datastore.AllocateSpace"],
        &["Datastore.Audit"],
    ),
    (
        "SDN",
        &["SDN.Allocate", "SDN.Audit"],
        &["SDN.Use"],
        &["SDN.Audit"],
    ),
    (
        "User",
        &["User.Modify", "Group.Allocate", "Realm.AllocateUser"],
        &[],
        &[],
    ),
    ("Pool", &["Pool.Allocate"], &["Pool.Audit"], &["Pool.Audit"]),
    (
        "Mapping",
        &["Mapping.Modify"],
        &["Mapping.Use"],
        &["Mapping.Audit"],
    ),
];

/// Privileges only `Administrator` (and root) hold.
const ROOT_PRIVS: &[&str] = &[
    "Sys.PowerMgmt",
    "Sys.Modify",
    "Sys.Incoming",
    "Sys.AccessNetwork",
    "Realm.Allocate",
    "Permissions.Modify",
];

pub(crate) type Privs = BTreeSet<&'static str>;

fn all_privs() -> Privs {
    let mut all: Privs = ROOT_PRIVS.iter().copied().collect();
    for (_, admin, user, audit) in PRIV_GROUPS {
        all.extend(admin.iter().chain(user.iter()).chain(audit.iter()).copied());
    }
    all
}

/// The privileges of a built-in role, or `None` for an unknown role name.
pub fn role_privs(role: &str) -> Option<Privs> {
    let mut out = Privs::new();
    match role {
        "Administrator" => return Some(all_privs()),
        "NoAccess" => return Some(out),
        "PVETemplateUser" => return Some(["VM.Clone", "VM.Audit"].into_iter().collect()),
        "PVEAuditor" => {
            for (_, _, _, audit) in PRIV_GROUPS {
                out.extend(audit.iter().copied());
            }
        }
        "PVEAdmin" => {
            for (_, admin, user, audit) in PRIV_GROUPS {
                out.extend(admin.iter().chain(user.iter()).chain(audit.iter()).copied());
            }
            out.remove("Mapping.Modify");
        }
        other => {
            let (cat, admin) = match other.strip_prefix("PVE") {
                Some(rest) if rest.ends_with("Admin") => (&rest[..rest.len() - 5], true),
                Some(rest) if rest.ends_with("User") => (&rest[..rest.len() - 4], false),
                _ => return None,
            };
            let (_, a, u, au) = PRIV_GROUPS.iter().find(|g| g.0 == cat)?;
            if !admin && u.is_empty() {
                return None;
            }
            if admin {
                out.extend(a.iter().copied());
            }
            out.extend(u.iter().chain(au.iter()).copied());
        }
    }
    Some(out)
}

fn resolve_privs(role: Option<&str>, privs: &[String]) -> Privs {
    let mut out = role.and_then(role_privs).unwrap_or_default();
    let all = all_privs();
    for p in privs {
        if let Some(known) = all.get(p.as_str()) {
            out.insert(known);
        }
    }
    out
}

/// A token as the simulator checks it: secret plus ACL (path → privileges).
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub id: String,
    pub secret: String,
    pub expire: Option<u64>,
    acl: BTreeMap<String, Privs>,
}

impl Token {
    pub fn from_spec(spec: &TokenSpec) -> Self {
        let mut acl: BTreeMap<String, Privs> = BTreeMap::new();
        if spec.role.is_some() || !spec.privs.is_empty() {
            acl.entry("/".into())
                .or_default()
                .extend(resolve_privs(spec.role.as_deref(), &spec.privs));
        }
        for entry in &spec.acl {
            acl.entry(normalize_path(&entry.path))
                .or_default()
                .extend(resolve_privs(entry.role.as_deref(), &entry.privs));
        }
        Self {
            id: spec.id.clone(),
            secret: spec.secret.clone(),
            expire: spec.expire,
            acl,
        }
    }

    /// Effective privileges on `path`: the deepest ACL entry on the way down wins.
    pub fn privs_at(&self, path: &str) -> Option<&Privs> {
        let mut found = self.acl.get("/");
        let mut prefix = String::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(seg);
            if let Some(p) = self.acl.get(&prefix) {
                found = Some(p);
            }
        }
        found
    }

    pub fn has(&self, path: &str, privilege: &str) -> bool {
        self.privs_at(path).is_some_and(|p| p.contains(privilege))
    }

    /// PVE's `check`: the first missing privilege makes the error text.
    pub fn check(&self, path: &str, privs: &[&str]) -> Result<(), String> {
        match privs.iter().find(|p| !self.has(path, p)) {
            Some(missing) => Err(format!("{path}, {missing}")),
            None => Ok(()),
        }
    }

    /// PVE's `check_any`: the error names all alternatives joined by `|`.
    pub fn check_any(&self, path: &str, privs: &[&str]) -> Result<(), String> {
        if privs.iter().any(|p| self.has(path, p)) {
            Ok(())
        } else {
            Err(format!("{path}, {}", privs.join("|")))
        }
    }
}

fn normalize_path(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

/// Splits `user@realm!tokenid` the way `PVE::AccessControl::split_tokenid` validates it.
pub fn split_token_id(id: &str) -> anyhow::Result<(&str, &str)> {
    let Some((user, token)) = id.split_once('!') else {
        bail!("'{id}' is not a valid token ID - not able to split into user and token parts");
    };
    let Some((name, realm)) = user.rsplit_once('@') else {
        bail!("'{id}' is not a valid token ID - not able to split into user and token parts");
    };
    let token_ok = token.len() >= 2
        && token.as_bytes()[0].is_ascii_alphabetic()
        && token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    let realm_ok = realm.len() >= 2
        && realm.as_bytes()[0].is_ascii_alphabetic()
        && realm
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    let name_ok = !name.is_empty() && !name.contains([':', '/', '!']);
    if !(token_ok && realm_ok && name_ok) {
        bail!("'{id}' is not a valid token ID - not able to split into user and token parts");
    }
    Ok((user, token))
}

/// Why authentication failed; the text is the 401 reason phrase real PVE sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No ticket and no (non-empty) API token.
    NoTicket,
    /// Any token problem: malformed, unknown, expired or wrong secret.
    Failed,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::NoTicket => "No ticket",
            AuthError::Failed => "Authentication failed!",
        }
    }
}

/// pve-http-server's `extract_auth_value($header, 'PVEAPIToken')`: the value after
/// `PVEAPIToken=` or `PVEAPIToken ` up to `;`, URI-unescaped.
pub(crate) fn extract_api_token(header: &str) -> Option<String> {
    const KEY: &str = "PVEAPIToken";
    let mut from = 0;
    while let Some(pos) = header[from..].find(KEY) {
        let start = from + pos;
        let boundary = start == 0 || header.as_bytes()[start - 1].is_ascii_whitespace();
        let rest = &header[start + KEY.len()..];
        if boundary && (rest.starts_with('=') || rest.starts_with(' ')) {
            let value = rest[1..].split(';').next().unwrap_or("");
            return Some(
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        from = start + KEY.len();
    }
    None
}

/// `PVE::AccessControl::verify_token`: split at the last `=`, then id and secret must match.
pub(crate) fn authenticate<'a>(
    header: Option<&str>,
    tokens: &'a [Token],
    now_unix: u64,
) -> Result<&'a Token, AuthError> {
    let value = header.and_then(extract_api_token).unwrap_or_default();
    if value.is_empty() {
        // A `PVEAuthCookie` ticket would be tried here; the simulator knows none.
        let has_ticket = header.is_some_and(|h| h.contains("PVEAuthCookie="));
        return Err(if has_ticket {
            AuthError::Failed
        } else {
            AuthError::NoTicket
        });
    }
    let (id, secret) = value.rsplit_once('=').ok_or(AuthError::Failed)?;
    split_token_id(id).map_err(|_| AuthError::Failed)?;
    let token = tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or(AuthError::Failed)?;
    if token.expire.is_some_and(|e| e < now_unix) || token.secret != secret {
        return Err(AuthError::Failed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: &str) -> Token {
        Token::from_spec(&TokenSpec {
            id: "root@pam!canopy".into(),
            secret: "s3cret".into(),
            role: Some(role.into()),
            privs: vec![],
            acl: vec![],
            expire: None,
        })
    }

    #[test]
    fn header_forms_match_pve() {
        assert_eq!(
            extract_api_token("PVEAPIToken=a@pam!t=x").as_deref(),
            Some("a@pam!t=x")
        );
        assert_eq!(
            extract_api_token("PVEAPIToken a@pam!t=x").as_deref(),
            Some("a@pam!t=x")
        );
        assert_eq!(extract_api_token("Bearer x"), None);
        let t = [token("Administrator")];
        assert!(authenticate(Some("PVEAPIToken=root@pam!canopy=s3cret"), &t, 0).is_ok());
        assert!(authenticate(Some("PVEAPIToken=root@pam%21canopy=s3cret"), &t, 0).is_ok());
        // `:` is not a separator for PVE: the whole value lacks `=`.
        let colon = authenticate(Some("PVEAPIToken=root@pam!canopy:s3cret"), &t, 0);
        assert_eq!(colon.unwrap_err(), AuthError::Failed);
        assert_eq!(authenticate(None, &t, 0).unwrap_err(), AuthError::NoTicket);
        assert_eq!(
            authenticate(Some("PVEAPIToken="), &t, 0).unwrap_err(),
            AuthError::NoTicket
        );
    }

    #[test]
    fn roles_and_acl_paths() {
        let auditor = token("PVEAuditor");
        assert!(auditor.has("/vms/101", "VM.Audit"));
        assert!(!auditor.has("/nodes/pve1", "Sys.Modify"));
        assert_eq!(
            auditor.check("/vms/101", &["VM.Snapshot"]),
            Err("/vms/101, VM.Snapshot".into())
        );
        assert!(token("Administrator").has("/nodes/pve1", "Sys.Modify"));
        assert!(role_privs("PVEVMAdmin").unwrap().contains("VM.Snapshot"));
        assert!(role_privs("PVESysUser").is_none());
        let mut spec = TokenSpec {
            id: "ops@pve!one".into(),
            secret: "x".into(),
            role: Some("PVEAuditor".into()),
            privs: vec![],
            acl: vec![crate::config::AclSpec {
                path: "/vms/101".into(),
                role: Some("PVEVMAdmin".into()),
                privs: vec![],
            }],
            expire: None,
        };
        let t = Token::from_spec(&spec);
        assert!(t.has("/vms/101", "VM.Snapshot"));
        assert!(!t.has("/vms/102", "VM.Snapshot"));
        spec.acl[0].role = Some("NoAccess".into());
        assert!(!Token::from_spec(&spec).has("/vms/101", "VM.Audit"));
    }
}
