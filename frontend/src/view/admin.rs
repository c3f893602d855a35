//! What the administration pages show and send: the sections and their addresses, the
//! add-cluster wizard's token and name (checked before anything is sent), the clusters,
//! registration tokens and users as rows. Pure functions, tested natively.

use canopy_api_types::auth::{RegistrationToken, Role, User};
use canopy_api_types::clusters::{Cluster, DiscoveryReport};
use canopy_inventory::{Kind, PathId, TreeNode};
use chrono::{DateTime, Utc};

/// One tab of the administration page (`admin/SECTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSection {
    Clusters,
    Tokens,
    Users,
    DeployKey,
}

impl AdminSection {
    pub const ALL: [AdminSection; 4] = [
        AdminSection::Clusters,
        AdminSection::Tokens,
        AdminSection::Users,
        AdminSection::DeployKey,
    ];

    /// The section an address names; empty or unknown is the first (clusters).
    pub fn parse(s: &str) -> AdminSection {
        Self::ALL
            .into_iter()
            .find(|x| x.slug() == s.trim_matches('/'))
            .unwrap_or(AdminSection::Clusters)
    }

    /// Its part of the address (`admin/SLUG`).
    pub fn slug(self) -> &'static str {
        match self {
            AdminSection::Clusters => "clusters",
            AdminSection::Tokens => "tokens",
            AdminSection::Users => "users",
            AdminSection::DeployKey => "deploy-key",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            AdminSection::Clusters => "Clusters",
            AdminSection::Tokens => "Registration tokens",
            AdminSection::Users => "Users",
            AdminSection::DeployKey => "Deploy key",
        }
    }
}

/// The `token` that `POST /clusters` takes, `USER@REALM!ID=SECRET`, from the wizard's two
/// fields; the first may hold the whole token when the second is empty.
pub fn api_token(id: &str, secret: &str) -> Result<String, String> {
    let (id, secret) = match (id.trim(), secret.trim()) {
        (id, "") => match id.split_once('=') {
            Some((i, s)) => (i.trim(), s.trim()),
            None => (id, ""),
        },
        (id, _) if id.contains('=') => {
            return Err(
                "token: the ID already holds a secret (after `=`); give it in one field only"
                    .into(),
            )
        }
        pair => pair,
    };
    let well_formed = id.split_once('@').is_some_and(|(user, rest)| {
        !user.is_empty()
            && rest
                .split_once('!')
                .is_some_and(|(realm, name)| !realm.is_empty() && !name.is_empty())
    });
    if !well_formed {
        return Err(format!(
            "token ID: {id:?} is not USER@REALM!TOKENID (for example canopy@pve!canopy)"
        ));
    }
    if secret.is_empty() {
        return Err("token secret: give the secret PVE showed when the token was made".into());
    }
    Ok(format!("{id}={secret}"))
}

/// The cluster's name: the one given, or one made from the address's host
/// (`https://pve1.lan:8006` → `pve1`, `192.168.1.10` stays whole).
pub fn cluster_name(given: &str, url: &str) -> Result<String, String> {
    let name = match given.trim() {
        "" => default_name(url),
        g => g.to_string(),
    };
    if name.is_empty() {
        return Err("name: give a name, or a URL with a host".into());
    }
    PathId::cluster(&name).map_err(|e| format!("name: {e} (letters, digits, `.`, `_`, `-`)"))?;
    Ok(name)
}

fn default_name(url: &str) -> String {
    let rest = url.trim();
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let ipv4 = !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let host = if ipv4 {
        host
    } else {
        host.split('.').next().unwrap_or("")
    };
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// One line of the clusters table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub name: String,
    pub endpoints: String,
    pub last_discovery: String,
    pub error: Option<String>,
    /// `None` when the tree did not answer.
    pub nodes: Option<u32>,
    pub guests: Option<u32>,
}

/// The clusters as rows, with node and guest counts from the tree listed one level deep
/// (`GET /tree?depth=1`: clusters with their nodes, each node with its `child_count`).
pub fn cluster_rows(clusters: &[Cluster], tree: Option<&[TreeNode]>) -> Vec<ClusterRow> {
    clusters
        .iter()
        .map(|c| {
            let vertex = tree.and_then(|t| {
                t.iter()
                    .find(|v| v.kind == Kind::Cluster && v.id.as_str() == c.path)
            });
            let nodes = vertex.map(|v| {
                v.child_count
                    .unwrap_or(v.children.iter().filter(|n| n.kind == Kind::Node).count() as u32)
            });
            let guests = vertex.map(|v| {
                v.children
                    .iter()
                    .filter(|n| n.kind == Kind::Node)
                    .map(|n| n.child_count.unwrap_or(n.children.len() as u32))
                    .sum()
            });
            ClusterRow {
                name: c.name.clone(),
                endpoints: c.endpoints.join(", "),
                last_discovery: c.last_discovery_at.map_or("never".into(), |t| when(&t)),
                error: c.last_error.clone(),
                nodes,
                guests,
            }
        })
        .collect()
}

/// What "Discover now" found, in one line (nodes that could not be read named with why).
pub fn discovery_line(r: &DiscoveryReport) -> String {
    if let Some(e) = &r.error {
        return format!("Discovery of {} failed: {e}", r.cluster);
    }
    let changes = match r.changes.len() {
        1 => "1 change".to_string(),
        n => format!("{n} changes"),
    };
    let mut line = format!(
        "Discovered {}: {} nodes, {} guests, {changes}",
        r.cluster, r.nodes, r.guests
    );
    if !r.node_errors.is_empty() {
        let errors: Vec<String> = r
            .node_errors
            .iter()
            .map(|e| format!("{} ({})", e.node, e.error))
            .collect();
        line.push_str(&format!("; not read: {}", errors.join(", ")));
    }
    line.push('.');
    line
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// How long a new registration token lives: the choices offered, in seconds.
pub const TOKEN_LIFETIMES: [(u64, &str); 4] = [
    (3600, "1 hour"),
    (24 * 3600, "1 day"),
    (7 * 24 * 3600, "7 days"),
    (30 * 24 * 3600, "30 days"),
];

/// One line of the registration tokens table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub label: String,
    pub uses: String,
    pub expires: String,
    /// `active`, `used up`, `expired` or `revoked`.
    pub state: &'static str,
    /// Revoking makes sense (it could still enrol an agent).
    pub revocable: bool,
}

pub fn token_row(t: &RegistrationToken, now: DateTime<Utc>) -> TokenRow {
    let state = if t.revoked {
        "revoked"
    } else if t.expires_at <= now {
        "expired"
    } else if t.seats_used >= t.seats {
        "used up"
    } else {
        "active"
    };
    TokenRow {
        label: if t.label.is_empty() {
            "(no note)".into()
        } else {
            t.label.clone()
        },
        uses: format!("{} of {}", t.seats_used, t.seats),
        expires: when(&t.expires_at),
        state,
        revocable: state == "active",
    }
}

/// The number of agents a new token may enrol, from its field.
pub fn seats(input: &str) -> Result<u32, String> {
    match input.trim().parse::<u32>() {
        Ok(n @ 1..=10_000) => Ok(n),
        _ => Err(format!(
            "uses: {:?} is not a number from 1 to 10000",
            input.trim()
        )),
    }
}

/// One line of the users table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub username: String,
    pub role: Role,
    pub state: &'static str,
    /// The button that flips the state: `Disable` or `Enable`.
    pub toggle: &'static str,
    /// This is the logged-in user (the server refuses to leave no admin anyway).
    pub me: bool,
}

pub fn user_rows(users: &[User], me: &str) -> Vec<UserRow> {
    let mut rows: Vec<UserRow> = users
        .iter()
        .map(|u| UserRow {
            username: u.username.clone(),
            role: u.role,
            state: if u.disabled { "disabled" } else { "enabled" },
            toggle: if u.disabled { "Enable" } else { "Disable" },
            me: u.username == me,
        })
        .collect();
    rows.sort_by(|a, b| a.username.cmp(&b.username));
    rows
}

pub const ROLES: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

/// The shell line that adds the deploy key to a PVE node's (or an LXC's) `authorized_keys`.
pub fn authorized_keys_line(public_key: &str) -> String {
    format!(
        "echo '{}' >> /root/.ssh/authorized_keys",
        public_key.trim().replace('\'', "")
    )
}

/// The nodes a token saw, in words: "no node", "node pve1", "2 nodes: pve1, pve2".
pub fn node_list(nodes: &[String]) -> String {
    match nodes {
        [] => "no node (check the token's permissions: PVEAuditor on /)".into(),
        [one] => format!("node {one}"),
        many => format!("{} nodes: {}", many.len(), many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_a_token_sees_read_as_words() {
        assert!(node_list(&[]).starts_with("no node"));
        assert_eq!(node_list(&["pve1".into()]), "node pve1");
        assert_eq!(
            node_list(&["alpha".into(), "beta".into()]),
            "2 nodes: alpha, beta"
        );
    }
    use canopy_api_types::{RegistrationTokenId, UserId};

    #[test]
    fn every_section_reads_back_from_its_address_and_unknown_is_clusters() {
        for s in AdminSection::ALL {
            assert_eq!(AdminSection::parse(s.slug()), s);
        }
        assert_eq!(AdminSection::parse(""), AdminSection::Clusters);
        assert_eq!(AdminSection::parse("nonsense"), AdminSection::Clusters);
        assert_eq!(AdminSection::parse("users/"), AdminSection::Users);
    }

    #[test]
    fn the_token_comes_from_two_fields_or_one() {
        assert_eq!(
            api_token(" canopy@pve!home ", " s3cret "),
            Ok("canopy@pve!home=s3cret".into())
        );
        assert_eq!(
            api_token("canopy@pve!home=s3cret", ""),
            Ok("canopy@pve!home=s3cret".into())
        );
        let e = api_token("canopy@pve!home=s3cret", "other").unwrap_err();
        assert!(e.contains("one field"), "{e}");
        let e = api_token("canopy@pve", "s").unwrap_err();
        assert!(
            e.starts_with("token ID:") && e.contains("USER@REALM!TOKENID"),
            "{e}"
        );
        let e = api_token("@pve!x", "s").unwrap_err();
        assert!(e.starts_with("token ID:"), "{e}");
        let e = api_token("canopy@pve!home", "").unwrap_err();
        assert!(e.starts_with("token secret:"), "{e}");
    }

    #[test]
    fn a_missing_name_comes_from_the_host() {
        assert_eq!(cluster_name("", "https://pve1.lan:8006"), Ok("pve1".into()));
        assert_eq!(cluster_name("", "pve1.lan"), Ok("pve1".into()));
        assert_eq!(
            cluster_name("", "https://192.168.1.10:8006/"),
            Ok("192.168.1.10".into())
        );
        assert_eq!(
            cluster_name("", "https://[fd00::1]:8006"),
            Ok("fd00--1".into())
        );
        assert_eq!(cluster_name(" home ", "https://x"), Ok("home".into()));
        let e = cluster_name("my lab", "https://x").unwrap_err();
        assert!(e.starts_with("name:"), "{e}");
        let e = cluster_name("", "").unwrap_err();
        assert!(e.starts_with("name:"), "{e}");
    }

    fn cluster(name: &str, error: Option<&str>) -> Cluster {
        Cluster {
            id: canopy_api_types::ClusterId::new(),
            name: name.into(),
            path: format!("cluster/{name}"),
            endpoints: vec!["https://127.0.0.1:8006".into()],
            token_id: "canopy@pve!x".into(),
            fingerprints: vec![],
            uses_ca: false,
            interval_secs: 3600,
            standalone: false,
            created_at: Utc::now(),
            last_discovery_at: DateTime::from_timestamp(1_800_000_000, 0),
            last_error: error.map(String::from),
        }
    }

    fn vertex(id: &str, kind: Kind, child_count: Option<u32>, children: Vec<TreeNode>) -> TreeNode {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": kind, "name": id.rsplit('/').next().unwrap(),
            "child_count": child_count, "children": children,
        }))
        .unwrap()
    }

    #[test]
    fn clusters_show_their_nodes_and_guests_when_the_tree_answers() {
        let tree = vec![vertex(
            "cluster/home",
            Kind::Cluster,
            None,
            vec![
                vertex("cluster/home/node/pve1", Kind::Node, Some(2), vec![]),
                vertex("cluster/home/node/pve2", Kind::Node, Some(3), vec![]),
            ],
        )];
        let clusters = [
            cluster("home", None),
            cluster("lab", Some("401 authentication failed")),
        ];
        let rows = cluster_rows(&clusters, Some(&tree));
        assert_eq!(rows[0].nodes, Some(2));
        assert_eq!(rows[0].guests, Some(5));
        assert_eq!(rows[0].last_discovery, "2027-01-15 08:00 UTC");
        assert_eq!(
            rows[1].nodes, None,
            "a cluster the tree lacks has no counts"
        );
        assert_eq!(rows[1].error.as_deref(), Some("401 authentication failed"));
        let rows = cluster_rows(&clusters, None);
        assert_eq!((rows[0].nodes, rows[0].guests), (None, None));
    }

    #[test]
    fn a_discovery_in_one_line() {
        let mut r = DiscoveryReport {
            cluster: "home".into(),
            nodes: 2,
            guests: 3,
            changes: vec!["guest_added cluster/home/node/pve1/lxc/101".into()],
            ..Default::default()
        };
        assert_eq!(
            discovery_line(&r),
            "Discovered home: 2 nodes, 3 guests, 1 change."
        );
        r.node_errors.push(canopy_api_types::clusters::NodeError {
            node: "pve2".into(),
            error: "HTTP 403".into(),
        });
        assert_eq!(
            discovery_line(&r),
            "Discovered home: 2 nodes, 3 guests, 1 change; not read: pve2 (HTTP 403)."
        );
        r.error = Some("authentication failed".into());
        assert_eq!(
            discovery_line(&r),
            "Discovery of home failed: authentication failed"
        );
    }

    fn token(seats: u32, used: u32, revoked: bool, expires_in: i64) -> RegistrationToken {
        RegistrationToken {
            id: RegistrationTokenId::new(),
            label: String::new(),
            seats,
            seats_used: used,
            expires_at: DateTime::from_timestamp(1_800_000_000 + expires_in, 0).unwrap(),
            revoked,
            revoked_at: None,
            guest_id: None,
        }
    }

    #[test]
    fn tokens_say_whether_they_still_enrol() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let row = token_row(&token(3, 1, false, 60), now);
        assert_eq!(
            (row.state, row.revocable, row.uses.as_str()),
            ("active", true, "1 of 3")
        );
        assert_eq!(row.label, "(no note)");
        assert_eq!(token_row(&token(1, 1, false, 60), now).state, "used up");
        assert_eq!(token_row(&token(1, 0, false, 0), now).state, "expired");
        let revoked = token_row(&token(1, 0, true, 60), now);
        assert_eq!((revoked.state, revoked.revocable), ("revoked", false));
        assert_eq!(seats(" 5 "), Ok(5));
        assert!(seats("0").unwrap_err().starts_with("uses:"));
        assert!(seats("many").is_err());
    }

    #[test]
    fn users_sorted_with_the_button_that_flips_them() {
        let user = |name: &str, role, disabled| User {
            id: UserId::new(),
            username: name.into(),
            role,
            disabled,
        };
        let rows = user_rows(
            &[
                user("vera", Role::Viewer, true),
                user("admin", Role::Admin, false),
            ],
            "admin",
        );
        assert_eq!(rows[0].username, "admin");
        assert!(rows[0].me);
        assert_eq!((rows[0].state, rows[0].toggle), ("enabled", "Disable"));
        assert_eq!((rows[1].state, rows[1].toggle), ("disabled", "Enable"));
        assert!(!rows[1].me);
    }

    #[test]
    fn the_deploy_key_line_appends_to_authorized_keys() {
        assert_eq!(
            authorized_keys_line("ssh-ed25519 AAAA canopy@server\n"),
            "echo 'ssh-ed25519 AAAA canopy@server' >> /root/.ssh/authorized_keys"
        );
    }
}
