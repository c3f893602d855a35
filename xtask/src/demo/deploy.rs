//! The demo server's `[deploy]` config: the simulated nodes report LAN addresses
//! (192.168.1.11, …), so every one of them is mapped to 127.0.0.1 — the lab's PVE node stand-in
//! (its `pct` shim has guests 101–106) with Docker, else [`NOWHERE`]. Written as text: xtask has
//! no TOML crate.

use super::json_string_field;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where simulated nodes point without Docker: nothing listens on port 1, so a deploy fails
/// at once with "cannot connect to 127.0.0.1:1" instead of reaching for a LAN address.
pub(super) const NOWHERE: &str = "127.0.0.1:1";

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

/// The lab's PVE node stand-in, from lab.json's `pve` section.
pub(super) struct LabNode {
    pub(super) name: String,
    /// `127.0.0.1:PORT`
    pub(super) ssh: String,
    pub(super) ssh_key: String,
}

pub(super) fn lab_pve_node(lab_json: &str) -> Result<LabNode> {
    let node = || -> Option<LabNode> {
        let pve = &lab_json[lab_json.find("\"pve\"")?..];
        let node = &pve[pve.find("\"node\"")?..];
        Some(LabNode {
            name: json_string_field(node, "name")?,
            ssh: json_string_field(node, "ssh")?,
            ssh_key: json_string_field(pve, "ssh_key")?,
        })
    };
    let node = node().context("lab.json has no pve.node.name, pve.node.ssh or pve.ssh_key")?;
    if !node.ssh.starts_with("127.0.0.1:") {
        bail!("lab.json's PVE node is at {}, not on 127.0.0.1", node.ssh);
    }
    Ok(node)
}

/// Deploys into the lab: every simulated node is the lab's PVE node.
#[derive(Clone, Copy)]
pub(super) struct LabRoute<'a> {
    pub(super) node_ssh: &'a str,
    pub(super) ssh_key: &'a str,
    pub(super) agent: &'a Path,
}

/// The server's config file: a `[deploy]` table that maps every simulated node to 127.0.0.1
/// (the lab's node with `lab`, else [`NOWHERE`]); everything else comes from the environment.
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
            toml_str(lab.ssh_key)
        );
    }
    out += "\n[deploy.nodes]\n";
    let address = lab.map_or(NOWHERE, |l| l.node_ssh);
    for (cluster, nodes) in sim {
        for node in nodes {
            out += &format!(
                "{} = {}\n",
                toml_str(&format!("{cluster}/{node}")),
                toml_str(address)
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

    #[test]
    fn demo_config_routes_every_simulated_node_to_loopback() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sim/home.toml");
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
        let key = r#"/tmp/odd "dir"\lab/id_ed25519"#;
        let lab = LabRoute {
            node_ssh: "127.0.0.1:2201",
            ssh_key: key,
            agent: Path::new("/t/x86_64-unknown-linux-musl/release/canopy-agent"),
        };
        for (route, address) in [(None, NOWHERE), (Some(lab), "127.0.0.1:2201")] {
            let text = deploy_config("https://127.0.0.1:8080", &sim, route);
            let t = read_toml(&text);
            assert_eq!(t.keys().collect::<Vec<_>>(), ["deploy", "deploy.nodes"]);
            let deploy = &t["deploy"];
            assert_eq!(deploy["server_url"], "https://127.0.0.1:8080");
            assert_eq!(
                deploy.get("ssh_key_file").map(String::as_str),
                route.map(|_| key)
            );
            assert_eq!(
                deploy.get("agent_binary").is_some(),
                route.is_some(),
                "{text}"
            );
            let nodes = &t["deploy.nodes"];
            let expected: BTreeMap<String, String> = sim
                .iter()
                .flat_map(|(c, ns)| ns.iter().map(move |n| (format!("{c}/{n}"), address.into())))
                .collect();
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
        let lab = r#"{"guests": ["canopy-lab-demo-guest-1"], "dnf": {"guests": ["d"]},
          "pve": {
            "image": "canopy-lab/debian-systemd:bookworm",
            "node_image": "canopy-lab/pve-node:bookworm",
            "node": { "name": "pve1", "container": "canopy-lab-demo-pve1", "ssh": "127.0.0.1:40022",
                      "user": "root" },
            "ssh_key": "/tmp/canopy-xtask/lab-demo/ssh/id_ed25519",
            "guests": [ { "vmid": 106, "container": "c", "hostname": "ct106", "sudo": false,
                          "ssh": "127.0.0.1:40106" } ] } }"#;
        let node = lab_pve_node(lab).unwrap();
        assert_eq!(
            (node.name.as_str(), node.ssh.as_str(), node.ssh_key.as_str()),
            (
                "pve1",
                "127.0.0.1:40022",
                "/tmp/canopy-xtask/lab-demo/ssh/id_ed25519"
            )
        );
        assert!(lab_pve_node(&lab.replace("127.0.0.1:40022", "192.168.1.11:22")).is_err());
        assert!(lab_pve_node(r#"{"guests": []}"#).is_err());
    }
}
