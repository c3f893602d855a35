//! Cluster-wide and node endpoints: `/version`, `/cluster/status`, `/cluster/resources`,
//! `/nodes`, `/nodes/{node}/status` and `/nodes/{node}/apt/update`, shaped like
//! pve-manager's `PVE::API2::Cluster`, `API2Tools::extract_*_stats` and `API2::APT`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::Ctx;
use crate::reply::{ApiError, Num, Reply};
use crate::state::{unix_now, Guest, Node, State};

pub(super) fn version(state: &State) -> Reply {
    Reply::value(
        json!({"version": state.version, "release": state.release, "repoid": state.repoid}),
        false,
    )
}

pub(super) fn status(state: &State, listener: &str) -> Reply {
    let strs = state.quirks.numbers_as_strings;
    let mut out = Vec::new();
    if state.standalone {
        let n = &state.nodes[0];
        out.push(json!({
            "type": "node", "id": format!("node/{}", n.name), "name": n.name, "ip": n.ip,
            "local": 1, "nodeid": 0, "online": 1, "level": n.level,
        }));
        return Reply::value(Value::Array(out), strs);
    }
    out.push(json!({
        "type": "cluster", "id": "cluster", "nodes": state.nodes.len(), "version": state.config_version,
        "name": state.name, "quorate": u8::from(state.quorate()),
    }));
    for (i, n) in state.nodes.iter().enumerate() {
        out.push(json!({
            "type": "node", "id": format!("node/{}", n.name), "name": n.name, "nodeid": i + 1,
            "local": u8::from(n.name == listener), "online": u8::from(n.online), "ip": n.ip,
            "level": if n.online { n.level.as_str() } else { "" },
        }));
    }
    Reply::value(Value::Array(out), strs)
}

#[derive(Serialize)]
#[serde(untagged)]
enum Resource<'a> {
    Guest(GuestRes<'a>),
    Node(NodeRes<'a>),
    Storage(StorageRes<'a>),
    Other(Value),
}

#[derive(Serialize)]
struct GuestRes<'a> {
    id: String,
    vmid: Num,
    node: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<u8>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stats: Option<GuestStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<&'a str>,
}

#[derive(Serialize)]
struct GuestStats {
    uptime: Num,
    maxcpu: Num,
    cpu: Num,
    maxmem: Num,
    mem: Num,
    maxdisk: Num,
    disk: Num,
    netin: Num,
    netout: Num,
    diskread: Num,
    diskwrite: Num,
    #[serde(skip_serializing_if = "Option::is_none")]
    memhost: Option<Num>,
}

#[derive(Serialize)]
struct NodeRes<'a> {
    id: String,
    node: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    stats: Option<NodeStats>,
    #[serde(rename = "cgroup-mode", skip_serializing_if = "Option::is_none")]
    cgroup_mode: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssl_fingerprint: Option<&'a str>,
}

#[derive(Serialize)]
struct NodeStats {
    maxcpu: Num,
    cpu: Num,
    maxmem: Num,
    mem: Num,
    maxdisk: Num,
    disk: Num,
    uptime: Num,
}

#[derive(Serialize)]
struct StorageRes<'a> {
    id: String,
    storage: &'a str,
    node: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    plugintype: &'a str,
    status: &'static str,
    shared: u8,
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxdisk: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<Num>,
}

fn guest_res<'a>(state: &'a State, g: &'a Guest, node_online: bool, now: u64) -> GuestRes<'a> {
    let s = state.quirks.numbers_as_strings;
    let n = |v: u64| Num::int(v, s);
    let fresh = node_online || state.quirks.offline_guests_keep_stats;
    let up = g.uptime(now);
    let stats = fresh.then(|| GuestStats {
        uptime: n(up),
        maxcpu: n(u64::from(g.cores)),
        cpu: Num::float(g.cpu_used(), s),
        maxmem: n(g.memory * 1024 * 1024),
        mem: n(g.mem_used()),
        maxdisk: n(g.disk_gb * 1024 * 1024 * 1024),
        disk: n(if g.kind.as_str() == "lxc" && g.running {
            g.disk_gb * 1024 * 1024 * 1024 / 4
        } else {
            0
        }),
        netin: n(up * 1_200),
        netout: n(up * 800),
        diskread: n(if g.running {
            50_000_000 + u64::from(g.vmid) * 1_000
        } else {
            0
        }),
        diskwrite: n(if g.running {
            20_000_000 + u64::from(g.vmid) * 500
        } else {
            0
        }),
        memhost: (g.kind.as_str() == "qemu").then(|| n(g.mem_used())),
    });
    GuestRes {
        id: format!("{}/{}", g.kind.as_str(), g.vmid),
        vmid: n(u64::from(g.vmid)),
        node: &g.node,
        kind: g.kind.as_str(),
        status: if fresh { g.status_str() } else { "unknown" },
        name: fresh.then_some(g.name.as_str()),
        template: fresh.then_some(u8::from(g.template)),
        stats,
        tags: g.tags_str(),
        lock: g.lock.as_deref(),
    }
}

/// Used memory per node: the host's own 2 GiB plus its running guests (one pass).
fn node_mem_used(state: &State) -> HashMap<&str, u64> {
    let mut used: HashMap<&str, u64> = state
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), 2 << 30))
        .collect();
    for g in state.guests.values() {
        if let Some(u) = used.get_mut(g.node.as_str()) {
            *u += g.mem_used();
        }
    }
    used
}

fn node_res<'a>(
    state: &'a State,
    n: &'a Node,
    used_mem: u64,
    can_audit: bool,
    with_fp: bool,
) -> NodeRes<'a> {
    let s = state.quirks.numbers_as_strings;
    let num = |v: u64| Num::int(v, s);
    let now = unix_now();
    NodeRes {
        id: format!("node/{}", n.name),
        node: &n.name,
        kind: "node",
        status: if n.online { "online" } else { "offline" },
        level: n.online.then_some(n.level.as_str()),
        stats: (n.online && can_audit).then(|| NodeStats {
            maxcpu: num(u64::from(n.cpus)),
            cpu: Num::float(0.021 + f64::from(n.cpus % 5) / 100.0, s),
            maxmem: num(n.memory),
            mem: num(used_mem.min(n.memory)),
            maxdisk: num(n.disk),
            disk: num(n.disk / 5),
            uptime: num(now.saturating_sub(n.boot_unix)),
        }),
        cgroup_mode: (n.online && !with_fp).then_some(2),
        ssl_fingerprint: with_fp.then_some(n.fingerprint.as_str()),
    }
}

const RESOURCE_TYPES: &[&str] = &["vm", "storage", "node", "sdn"];

pub(super) fn resources(state: &State, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let filter = ctx.params.get("type");
    if let Some(t) = filter {
        if !RESOURCE_TYPES.contains(&t) {
            let enumeration = RESOURCE_TYPES.join(", ");
            return Err(ApiError::param(&[(
                "type",
                format!("value '{t}' does not have a value in the enumeration '{enumeration}'"),
            )]));
        }
    }
    let want = |t: &str| filter.is_none_or(|f| f == t);
    let now = unix_now();
    let token = ctx.token;
    let mut out: Vec<Resource<'_>> = Vec::with_capacity(state.guests.len() + state.nodes.len() * 4);
    if want("vm") {
        // PVE sorts vmids as strings (`sort keys %$idlist`).
        let mut ids: Vec<&Guest> = state.guests.values().collect();
        ids.sort_by_cached_key(|g| g.vmid.to_string());
        for g in ids {
            if !token.has(&format!("/vms/{}", g.vmid), "VM.Audit") {
                continue;
            }
            let online = state.node(&g.node).is_some_and(|n| n.online);
            out.push(Resource::Guest(guest_res(state, g, online, now)));
        }
    }
    if want("node") {
        let used = node_mem_used(state);
        for n in &state.nodes {
            let audit = token.has(&format!("/nodes/{}", n.name), "Sys.Audit");
            let mem = used.get(n.name.as_str()).copied().unwrap_or_default();
            out.push(Resource::Node(node_res(state, n, mem, audit, false)));
        }
    }
    if want("storage") {
        for st in &state.storages {
            if !token.has(&format!("/storage/{}", st.name), "Datastore.Audit") {
                continue;
            }
            for n in &state.nodes {
                let size = st.size_gb * 1024 * 1024 * 1024;
                let num = |v: u64| Some(Num::int(v, state.quirks.numbers_as_strings));
                out.push(Resource::Storage(StorageRes {
                    id: format!("storage/{}/{}", n.name, st.name),
                    storage: &st.name,
                    node: &n.name,
                    kind: "storage",
                    plugintype: &st.plugintype,
                    status: if n.online { "available" } else { "unknown" },
                    shared: u8::from(st.shared),
                    content: &st.content,
                    maxdisk: if n.online { num(size) } else { None },
                    disk: if n.online { num(size / 3) } else { None },
                }));
            }
        }
    }
    if want("sdn") && token.has("/sdn/zones/localnetwork", "SDN.Audit") {
        for n in state.nodes.iter().filter(|n| n.online) {
            out.push(Resource::Other(json!({
                "id": format!("sdn/{}/localnetwork", n.name), "sdn": "localnetwork",
                "node": n.name, "type": "sdn", "status": "ok",
            })));
        }
    }
    Ok(Reply::serialize(&out))
}

pub(super) fn nodes(state: &State, ctx: &Ctx<'_>) -> Reply {
    let used = node_mem_used(state);
    let list: Vec<NodeRes<'_>> = state
        .nodes
        .iter()
        .map(|n| {
            let audit = ctx.token.has(&format!("/nodes/{}", n.name), "Sys.Audit");
            node_res(
                state,
                n,
                used.get(n.name.as_str()).copied().unwrap_or_default(),
                audit,
                true,
            )
        })
        .collect();
    Reply::serialize(&list)
}

pub(super) fn node_status(state: &State, node: &str) -> Reply {
    let Some(n) = state.node(node) else {
        return Reply::value(Value::Null, false);
    };
    let uptime = unix_now().saturating_sub(n.boot_unix);
    let used: u64 = state
        .guests
        .values()
        .filter(|g| g.node == n.name)
        .map(Guest::mem_used)
        .sum::<u64>()
        + 2 * 1024 * 1024 * 1024;
    let used = used.min(n.memory);
    let kernel = "6.8.12-9-pve";
    Reply::value(
        json!({
            "uptime": uptime, "idle": 0, "cpu": 0.0312, "wait": 0.0004,
            "loadavg": ["0.21", "0.18", "0.15"],
            "kversion": format!("Linux {kernel} #1 SMP PREEMPT_DYNAMIC PMX {kernel} (2025-03-18T08:23Z)"),
            "current-kernel": {"sysname": "Linux", "release": kernel, "machine": "x86_64",
                "version": format!("#1 SMP PREEMPT_DYNAMIC PMX {kernel} (2025-03-18T08:23Z)")},
            "boot-info": {"mode": "efi", "secureboot": 0},
            "cpuinfo": {"cpus": n.cpus, "cores": n.cpus / 2, "sockets": 1, "model": "AMD Ryzen 7 5800U",
                "mhz": "1896.000", "hvm": "1", "flags": "fpu vme de pse tsc msr pae mce", "user_hz": 100},
            "memory": {"total": n.memory, "used": used, "free": n.memory - used, "available": n.memory - used},
            "swap": {"total": 8_589_930_496_u64, "used": 0, "free": 8_589_930_496_u64},
            "ksm": {"shared": 0},
            "rootfs": {"total": n.disk, "used": n.disk / 5, "avail": n.disk / 5 * 4, "free": n.disk / 5 * 4},
            "pveversion": format!("pve-manager/{}/{}", state.version, state.repoid),
        }),
        state.quirks.numbers_as_strings,
    )
}

pub(super) fn apt_updates(state: &State, node: &str) -> Reply {
    let list: Vec<Value> = state
        .node(node)
        .map(|n| n.updates.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|u| {
            let mut v = json!({
                "Package": u.package,
                "Title": u.title.clone().unwrap_or_else(|| format!("{} package", u.package)),
                "Description": u.description.clone().unwrap_or_else(|| format!("The {} package.", u.package)),
                "Version": u.version, "Origin": u.origin, "Priority": u.priority,
                "Section": u.section, "Arch": u.arch,
            });
            if let Some(old) = &u.old_version {
                v["OldVersion"] = json!(old);
            }
            v
        })
        .collect();
    Reply::value(Value::Array(list), false)
}
