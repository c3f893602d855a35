//! The demo's lab part once the server runs: the lab's node pve1 behind its own simulator
//! (cluster `lab`), agents deployed into its six LXCs with the real CLI, a wait until every one
//! of them reported its pending updates, and the banner lines that show the bulk update.

use super::deploy::{LabNode, LAB_CLUSTER};
use super::sim;
use crate::proc::{cmd, poll};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Every LXC of the lab's node, as a selector.
pub(super) fn all_lxcs(node: &LabNode) -> String {
    format!("cluster/{LAB_CLUSTER}/node/{}/lxc/*", node.name)
}

/// Starts the simulator on the lab's cluster file and adds its cluster to the server.
pub(super) fn start_sim(
    release: &Path,
    node: &LabNode,
    dir: &Path,
    canopy: &str,
    session: &Path,
) -> Result<Child> {
    let (child, clusters) = sim::start(
        &release.join("canopy-pve-sim"),
        Path::new(&node.sim_file),
        &dir.join("sim-lab-tls"),
        &dir.join("sim-lab.log"),
    )?;
    if clusters.len() != 1 || clusters[0].name != LAB_CLUSTER {
        let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "{} should serve one cluster {LAB_CLUSTER:?}, it serves {names:?}",
            node.sim_file
        );
    }
    sim::add_clusters(canopy, session, &clusters)?;
    Ok(child)
}

/// `canopy agent deploy 'cluster/lab/node/pve1/lxc/*' --yes` (progress shown), then waits up
/// to 3 minutes until each guest's agent reported updates. Returns the seconds it took.
pub(super) fn deploy_agents(canopy: &str, session: &Path, node: &LabNode) -> Result<f64> {
    let started = Instant::now();
    let selector = all_lxcs(node);
    eprintln!("xtask: demo: canopy agent deploy '{selector}' --yes");
    cmd(canopy, ["agent", "deploy", &selector, "--yes"])
        .env("CANOPY_SESSION", session)
        .timeout(Duration::from_secs(10 * 60))
        .stream()
        .context("deploying agents into the lab's LXCs")?;
    let want = node.guests.len();
    let mut have = 0;
    let mut last_err = String::new();
    let reported = poll(
        Duration::from_secs(180),
        Duration::from_secs(2),
        || match cmd(canopy, ["hosts", "--json"])
            .env("CANOPY_SESSION", session)
            .timeout(Duration::from_secs(30))
            .output()
        {
            Ok(json) => {
                have = hosts_with_updates(&json);
                have >= want
            }
            Err(e) => {
                last_err = format!("{e:#}");
                false
            }
        },
    );
    if !reported {
        eprintln!(
            "xtask: demo: warning: after 3 minutes {have} of {want} agents reported pending \
             updates{}",
            if last_err.is_empty() {
                String::new()
            } else {
                format!(" (last error: {last_err})")
            }
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// How many active hosts with an agent (not agentless) report pending updates, from
/// `canopy hosts --json` (an array of host objects).
fn hosts_with_updates(json: &str) -> usize {
    objects(json)
        .iter()
        .filter(|h| {
            number_field(h, "pending_updates").is_some_and(|n| n > 0)
                && !h.contains("\"agentless\":true")
                && !h.contains("\"agentless\": true")
                && super::json_string_field(h, "state").is_none_or(|s| s == "active")
        })
        .count()
}

/// The top-level objects of a JSON array, as text (strings with braces are skipped over).
fn objects(json: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for (i, c) in json.char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(&json[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

/// The unsigned number of the first `"key": N` in `json`.
fn number_field(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\"");
    let after = json[json.find(&pat)? + pat.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    after[..end].parse().ok()
}

/// The banner's "try" lines for the lab: the bulk update, and how to see a rollback.
pub(super) fn banner(canopy: &str, node: &LabNode) -> String {
    let selector = all_lxcs(node);
    let vmids: Vec<String> = node.guests.iter().map(|g| g.vmid.to_string()).collect();
    let breakable = node
        .guests
        .iter()
        .find(|g| g.vmid == 103)
        .or(node.guests.last())
        .map_or("CONTAINER", |g| g.container.as_str());
    format!(
        "Agents run in the lab's LXCs {} of node {} (Docker containers behind the simulated \
         cluster {LAB_CLUSTER}),\nwith updates pending. Update the whole node, a canary first, \
         a snapshot before each guest:\n  \
           {canopy} update '{selector}' --canary 1 --preview   # the plan; nothing changes\n  \
           {canopy} update '{selector}' --canary 1             # the plan, asks, then follows it\n  \
           {canopy} operation ID                 # per guest: updated / rolled_back / failed\n  \
           {canopy} operation pause|resume|cancel ID\n\
         To see a rollback, break the web service's new version in one guest first:\n  \
           docker exec {breakable} sh -c 'mkdir -p /etc/canopy-demo && touch /etc/canopy-demo/break-web'\n  \
         (canopy-demo-web 1.1 then fails to start there: the guest goes back to its snapshot)\n\
         Check a guest: docker exec {breakable} dpkg-query -W 'canopy-demo-*'",
        vmids.join(", "),
        node.name,
    )
}

#[cfg(test)]
mod tests {
    use super::{hosts_with_updates, number_field, objects};

    #[test]
    fn hosts_json() {
        let json = r#"[
          {"id": "h1", "hostname": "ct101", "pending_updates": 7, "agentless": false, "state": "active"},
          {"id": "h2", "hostname": "a } \" {", "pending_updates": 0, "agentless": false},
          {"id": "h3", "hostname": "ct103", "pending_updates": 3, "agentless": true},
          {"id": "h4", "hostname": "ct104", "pending_updates": 2, "state": "archived"},
          {"id": "h5", "hostname": "ct105", "os": {"x": 1}, "pending_updates":12}
        ]"#;
        assert_eq!(objects(json).len(), 5);
        assert_eq!(number_field(objects(json)[4], "pending_updates"), Some(12));
        assert_eq!(number_field(objects(json)[1], "missing"), None);
        assert_eq!(hosts_with_updates(json), 2);
        assert_eq!(hosts_with_updates("[]"), 0);
    }
}
