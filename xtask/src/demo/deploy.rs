//! The demo server's `[deploy]` config. The simulated estate of examples/sim/home.toml reports
//! LAN addresses (192.168.1.11, …), so each of its nodes is mapped to [`NOWHERE`] on 127.0.0.1;
//! with the lab, the lab's cluster `lab` (its simulator file, `pve.sim_file` in lab.json) has its
//! node `pve1` mapped to the lab's PVE node stand-in (whose `pct` shim has guests 101–106) and
//! guest 106 reached straight over its own sshd. Written as text: xtask has no TOML crate.

use super::json_string_field;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where simulated nodes without a lab behind them point: nothing listens on port 1, so a
/// deploy fails at once with "cannot connect to 127.0.0.1:1" instead of reaching for a LAN
/// address.
pub(super) const NOWHERE: &str = "127.0.0.1:1";

/// The cluster name of the lab's simulator file (`xtask/src/lab/sim.rs`).
pub(super) const LAB_CLUSTER: &str = "lab";

/// Each `[[clusters]]` of the simulator's file with the names of its `[[clusters.nodes]]`, in
/// file order. Reads only `name = "…"` lines (the file's plain strings); no TOML parser here.
pub(super) fn sim_nodes(text: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut table = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            table = line;
            if table == "[[clusters]]" {
                out.push((String::new(), Vec::new()));
            }
            continue;
        }
        let Some(value) = line
            .split_once('=')
            .filter(|(key, _)| key.trim() == "name")
            .map(|(_, v)| v.trim())
        else {
            continue;
        };
        let name = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains(['"', '\\']))
            .with_context(|| format!("line {}: name is not a plain string", i + 1))?;
        match (table, out.last_mut()) {
            ("[[clusters]]", Some(c)) => c.0 = name.to_string(),
            ("[[clusters.nodes]]", Some(c)) => c.1.push(name.to_string()),
            _ => {}
        }
    }
    if out.is_empty() {
        bail!("no [[clusters]]");
    }
    if let Some((name, _)) = out
        .iter()
        .find(|(n, nodes)| n.is_empty() || nodes.is_empty())
    {
        bail!("cluster {name:?} has no name or no [[clusters.nodes]]");
    }
    Ok(out)
}

/// The lab's PVE node stand-in and its guests, from lab.json's `pve` section.
pub(super) struct LabNode {
    pub(super) name: String,
    /// `127.0.0.1:PORT`
    pub(super) ssh: String,
    pub(super) ssh_key: String,
    /// The simulator cluster file for this node (cluster [`LAB_CLUSTER`]).
    pub(super) sim_file: String,
    pub(super) guests: Vec<LabGuest>,
}

/// One of the node's LXC stand-ins.
pub(super) struct LabGuest {
    pub(super) vmid: u32,
    pub(super) container: String,
    /// Its own sshd (`127.0.0.1:PORT`), if it runs one.
    pub(super) ssh: Option<String>,
}

pub(super) fn lab_pve_node(lab_json: &str) -> Result<LabNode> {
    let pve = &lab_json[lab_json
        .find("\"pve\"")
        .context("lab.json has no pve section")?..];
    let node = || -> Option<LabNode> {
        let node = &pve[pve.find("\"node\"")?..];
        Some(LabNode {
            name: json_string_field(node, "name")?,
            ssh: json_string_field(node, "ssh")?,
            ssh_key: json_string_field(pve, "ssh_key")?,
            sim_file: json_string_field(pve, "sim_file")?,
            guests: Vec::new(),
        })
    };
    let mut node = node().context(
        "lab.json has no pve.node.name, pve.node.ssh, pve.ssh_key or pve.sim_file \
         (a lab from before the simulator file: run `cargo xtask lab up` again)",
    )?;
    if !node.ssh.starts_with("127.0.0.1:") {
        bail!("lab.json's PVE node is at {}, not on 127.0.0.1", node.ssh);
    }
    // Each guest is one `{ "vmid": N, "container": "…", …, "ssh": "…" | null }` line.
    let guests = &pve[pve
        .find("\"guests\"")
        .context("lab.json has no pve.guests")?..];
    for entry in guests.split("{ \"vmid\":").skip(1) {
        let entry = &entry[..entry.find('}').unwrap_or(entry.len())];
        let vmid = entry
            .split(',')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("lab.json: a pve guest without a vmid: {entry}"))?;
        let container = json_string_field(entry, "container")
            .with_context(|| format!("lab.json: pve guest {vmid} has no container"))?;
        let ssh = json_string_field(entry, "ssh");
        if let Some(ssh) = ssh.as_ref().filter(|s| !s.starts_with("127.0.0.1:")) {
            bail!("lab.json's guest {vmid} has its sshd at {ssh}, not on 127.0.0.1");
        }
        node.guests.push(LabGuest {
            vmid,
            container,
            ssh,
        });
    }
    if node.guests.is_empty() {
        bail!("lab.json lists no pve guests");
    }
    Ok(node)
}

/// Deploys into the lab: cluster [`LAB_CLUSTER`]'s node goes to the stand-in's sshd, guests
/// with an sshd of their own are reached straight.
#[derive(Clone, Copy)]
pub(super) struct LabRoute<'a> {
    pub(super) node: &'a LabNode,
    pub(super) agent: &'a Path,
}

/// The server's config file: a `[deploy]` table that maps every simulated node of `sim` to
/// [`NOWHERE`] and, with `lab`, the lab's node and direct guests to their sshd on 127.0.0.1;
/// everything else comes from the environment.
pub(super) fn deploy_config(
    server_url: &str,
    sim: &[(String, Vec<String>)],
    lab: Option<LabRoute<'_>>,
) -> String {
    let mut out = String::from(
        "# Written by `cargo xtask demo`. The simulated nodes report LAN addresses; the demo's\n\
         # deploys go to 127.0.0.1 instead.\n[deploy]\n",
    );
    out += &format!("server_url = {}\n", toml_str(server_url));
    if let Some(lab) = lab {
        out += &format!(
            "agent_binary = {}\nssh_key_file = {}\n",
            toml_str(&lab.agent.to_string_lossy()),
            toml_str(&lab.node.ssh_key)
        );
    }
    out += "\n[deploy.nodes]\n";
    for (cluster, nodes) in sim {
        for node in nodes {
            out += &format!(
                "{} = {}\n",
                toml_str(&format!("{cluster}/{node}")),
                toml_str(NOWHERE)
            );
        }
    }
    let Some(lab) = lab else { return out };
    out += &format!(
        "{} = {}\n",
        toml_str(&format!("{LAB_CLUSTER}/{}", lab.node.name)),
        toml_str(&lab.node.ssh)
    );
    for g in &lab.node.guests {
        if let Some(ssh) = &g.ssh {
            out += &format!(
                "\n[deploy.direct.{}]\naddress = {}\nuser = \"root\"\n",
                toml_str(&format!("{LAB_CLUSTER}/{}", g.vmid)),
                toml_str(ssh)
            );
        }
    }
    out
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if c.is_control() => out += &format!("\\u{:04X}", u32::from(c)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{deploy_config, lab_pve_node, sim_nodes, LabRoute, NOWHERE};
    use std::collections::BTreeMap;
    use std::path::Path;

    type Tables = BTreeMap<String, BTreeMap<String, String>>;

    /// Reads the TOML subset `deploy_config` writes (comments, `[table]`, `key = "string"` with
    /// bare or quoted keys), failing on anything else and on repeated keys.
    fn read_toml(text: &str) -> Tables {
        fn basic(s: &str) -> (String, &str) {
            let mut chars = s.strip_prefix('"').expect("a basic string").char_indices();
            let mut out = String::new();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return (out, &s[i + 2..]),
                    '\\' => match chars.next().expect("an escape").1 {
                        'u' => {
                            let hex: String = (0..4).map(|_| chars.next().unwrap().1).collect();
                            out.push(
                                char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap(),
                            );
                        }
                        e @ ('"' | '\\') => out.push(e),
                        e => panic!("escape \\{e} is not written"),
                    },
                    c => {
                        assert!(!c.is_control(), "raw control character in {s:?}");
                        out.push(c);
                    }
                }
            }
            panic!("unterminated string {s:?}");
        }
        let mut tables = Tables::new();
        let mut table = String::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = t.to_string();
                assert!(
                    tables.insert(table.clone(), BTreeMap::new()).is_none(),
                    "[{t}] twice"
                );
                continue;
            }
            let (key, rest) = if line.starts_with('"') {
                basic(line)
            } else {
                let end = line.find(' ').expect("key = value");
                let key = &line[..end];
                assert!(
                    key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{key}"
                );
                (key.to_string(), &line[end..])
            };
            let (value, tail) = basic(rest.strip_prefix(" = ").expect("key = value"));
            assert!(tail.is_empty(), "trailing {tail:?} in {line:?}");
            let t = tables.get_mut(&table).expect("a key before any table");
            assert!(
                t.insert(key.clone(), value).is_none(),
                "{key} twice in [{table}]"
            );
        }
        tables
    }

    const LAB_JSON: &str = r#"{"guests": [], "dnf": {"guests": ["d"]},
      "pve": {
        "image": "canopy-lab/debian-systemd:bookworm",
        "node_image": "canopy-lab/pve-node:bookworm",
        "node": { "name": "pve1", "container": "canopy-lab-demo-pve1", "ssh": "127.0.0.1:40022", "user": "root" },
        "ssh_key": "/tmp/odd \"dir\"\\lab/id_ed25519",
        "dnf_vmid": 120,
        "openrc_vmid": 108,
        "sim_file": "/w/.lab/sim-pve1-demo.toml",
        "guests": [
          { "vmid": 101, "container": "canopy-lab-demo-pve1-ct101", "hostname": "ct101", "sudo": true, "ssh": null },
          { "vmid": 106, "container": "canopy-lab-demo-pve1-ct106", "hostname": "ct106", "sudo": false, "ssh": "127.0.0.1:40106" }
        ]
      } }"#;

    #[test]
    fn demo_config_routes_every_simulated_node_to_loopback() {
        let file =
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
                .join("../examples/sim/home.toml");
        let sim = sim_nodes(&std::fs::read_to_string(file).unwrap()).unwrap();
        let names: Vec<(&str, Vec<&str>)> = sim
            .iter()
            .map(|(c, n)| (c.as_str(), n.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("home", vec!["pve1", "pve2", "pve3"]),
                ("edge", vec!["edge"])
            ]
        );
        let node = lab_pve_node(LAB_JSON).unwrap();
        let lab = LabRoute {
            node: &node,
            agent: Path::new("/t/x86_64-unknown-linux-musl/release/canopy-agent"),
        };
        for route in [None, Some(lab)] {
            let text = deploy_config("https://127.0.0.1:8080", &sim, route);
            let t = read_toml(&text);
            let tables: Vec<&str> = t.keys().map(String::as_str).collect();
            if route.is_some() {
                assert_eq!(
                    tables,
                    ["deploy", "deploy.direct.\"lab/106\"", "deploy.nodes"],
                    "{text}"
                );
                let direct = &t["deploy.direct.\"lab/106\""];
                assert_eq!(direct["address"], "127.0.0.1:40106");
                assert_eq!(direct["user"], "root");
                assert_eq!(direct.len(), 2, "{text}");
            } else {
                assert_eq!(tables, ["deploy", "deploy.nodes"], "{text}");
            }
            let deploy = &t["deploy"];
            assert_eq!(deploy["server_url"], "https://127.0.0.1:8080");
            assert_eq!(
                deploy.get("ssh_key_file").map(String::as_str),
                route.map(|_| r#"/tmp/odd "dir"\lab/id_ed25519"#)
            );
            assert_eq!(
                deploy.get("agent_binary").is_some(),
                route.is_some(),
                "{text}"
            );
            let nodes = &t["deploy.nodes"];
            let mut expected: BTreeMap<String, String> = sim
                .iter()
                .flat_map(|(c, ns)| ns.iter().map(move |n| (format!("{c}/{n}"), NOWHERE.into())))
                .collect();
            if route.is_some() {
                expected.insert("lab/pve1".into(), "127.0.0.1:40022".into());
            }
            assert_eq!(nodes, &expected, "{text}");
            assert!(nodes.values().all(|a| a.starts_with("127.0.0.1:")));
        }
    }

    #[test]
    fn sim_file_shapes() {
        let bad = "[[clusters]]\nname = \"a\"\n[[clusters.guests]]\nname = \"g\"\n";
        assert!(sim_nodes(bad).is_err(), "a cluster without nodes");
        let ok = "[[clusters]]\nname = \"a\" # c\n[clusters.quirks]\n[[clusters.nodes]]\n\
                  name = \"n1\"\nip = \"192.168.1.11\"\n[[clusters.guests]]\nname = \"g\"\n";
        assert_eq!(
            sim_nodes(ok).unwrap(),
            [("a".to_string(), vec!["n1".to_string()])]
        );
    }

    #[test]
    fn lab_node_from_lab_json() {
        let node = lab_pve_node(LAB_JSON).unwrap();
        assert_eq!(
            (node.name.as_str(), node.ssh.as_str(), node.ssh_key.as_str()),
            (
                "pve1",
                "127.0.0.1:40022",
                r#"/tmp/odd "dir"\lab/id_ed25519"#
            )
        );
        assert_eq!(node.sim_file, "/w/.lab/sim-pve1-demo.toml");
        let guests: Vec<(u32, &str, Option<&str>)> = node
            .guests
            .iter()
            .map(|g| (g.vmid, g.container.as_str(), g.ssh.as_deref()))
            .collect();
        assert_eq!(
            guests,
            [
                (101, "canopy-lab-demo-pve1-ct101", None),
                (106, "canopy-lab-demo-pve1-ct106", Some("127.0.0.1:40106"))
            ]
        );
        assert!(lab_pve_node(&LAB_JSON.replace("127.0.0.1:40022", "192.168.1.11:22")).is_err());
        assert!(lab_pve_node(&LAB_JSON.replace("127.0.0.1:40106", "10.0.0.6:22")).is_err());
        assert!(lab_pve_node(&LAB_JSON.replace("\"sim_file\"", "\"x\"")).is_err());
        assert!(lab_pve_node(r#"{"guests": []}"#).is_err());
    }
}
