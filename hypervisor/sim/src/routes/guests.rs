//! Guest endpoints under `/nodes/{node}/lxc|qemu`: lists, config, current status, power
//! actions and snapshots, shaped like pve-container's `API2::LXC*` (and qemu-server's
//! equivalents). A guest is only found on the node whose config directory holds it, as in
//! PVE: asking the wrong node fails with "Configuration file … does not exist".

use serde_json::{json, Value};

use super::{parse_vmid, Ctx};
use crate::config::GuestKind;
use crate::reply::{ApiError, Reply};
use crate::state::{unix_now, Guest, State};
use crate::tasks::Action;

fn load<'a>(
    state: &'a State,
    node: &str,
    kind: GuestKind,
    id: &str,
) -> Result<&'a Guest, ApiError> {
    let vmid = parse_vmid(id)?;
    state
        .guests
        .get(&vmid)
        .filter(|g| g.kind == kind && g.node == node)
        .ok_or_else(|| {
            ApiError::die(format!(
                "Configuration file '{}' does not exist",
                Guest::conf_path(kind, node, vmid)
            ))
        })
}

/// `vmstatus` of one guest, as `/lxc` and `/qemu` lists and `status/current` return it.
fn vmstatus(g: &Guest) -> Value {
    let now = unix_now();
    let maxdisk = g.disk_gb * 1024 * 1024 * 1024;
    let up = g.uptime(now);
    let mut v = json!({
        "vmid": g.vmid, "name": g.name, "status": g.status_str(), "cpus": g.cores,
        "maxmem": g.memory * 1024 * 1024, "mem": g.mem_used(), "maxdisk": maxdisk,
        "disk": if g.kind == GuestKind::Lxc && g.running { maxdisk / 4 } else { 0 },
        "uptime": up, "cpu": g.cpu_used(), "netin": up * 1_200, "netout": up * 800,
        "diskread": if g.running { 50_000_000 + u64::from(g.vmid) * 1_000 } else { 0 },
        "diskwrite": if g.running { 20_000_000 + u64::from(g.vmid) * 500 } else { 0 },
    });
    if g.kind == GuestKind::Lxc {
        v["type"] = json!("lxc");
        v["maxswap"] = json!(512 * 1024 * 1024);
        v["swap"] = json!(0);
    } else {
        v["serial"] = json!(0);
    }
    if g.running {
        v["pid"] = json!(100_000 + g.vmid % 800_000);
    }
    if g.template {
        v["template"] = json!(1);
    }
    if let Some(tags) = g.tags_str() {
        v["tags"] = json!(tags);
    }
    if let Some(lock) = &g.lock {
        v["lock"] = json!(lock);
    }
    v
}

pub(super) fn list(state: &State, ctx: &Ctx<'_>, node: &str, kind: GuestKind) -> Reply {
    let list: Vec<Value> = state
        .guests
        .values()
        .filter(|g| g.node == node && g.kind == kind)
        .filter(|g| ctx.token.has(&format!("/vms/{}", g.vmid), "VM.Audit"))
        .map(vmstatus)
        .collect();
    Reply::value(Value::Array(list), state.quirks.numbers_as_strings)
}

pub(super) fn config(
    state: &State,
    node: &str,
    kind: GuestKind,
    id: &str,
) -> Result<Reply, ApiError> {
    let g = load(state, node, kind, id)?;
    let disk = match g.storage.as_str() {
        "local" => format!(
            "local:{}/vm-{}-disk-0.raw,size={}G",
            g.vmid, g.vmid, g.disk_gb
        ),
        s => format!("{s}:vm-{}-disk-0,size={}G", g.vmid, g.disk_gb),
    };
    let ip = g.ip.clone().unwrap_or_else(|| "dhcp".into());
    let mut v = if kind == GuestKind::Lxc {
        json!({
            "arch": "amd64", "cores": g.cores, "features": "nesting=1", "hostname": g.name,
            "memory": g.memory, "swap": 512, "ostype": g.ostype, "rootfs": disk, "unprivileged": 1,
            "net0": format!("name=eth0,bridge=vmbr0,firewall=1,hwaddr={},ip={ip},type=veth", g.hwaddr()),
        })
    } else {
        json!({
            "name": g.name, "cores": g.cores, "sockets": 1, "memory": g.memory.to_string(),
            "cpu": "x86-64-v2-AES", "ostype": g.ostype, "scsi0": format!("{disk},iothread=1"),
            "scsihw": "virtio-scsi-single", "boot": "order=scsi0;ide2;net0", "agent": "1", "numa": 0,
            "ide2": "none,media=cdrom",
            "net0": format!("virtio={},bridge=vmbr0,firewall=1", g.hwaddr()),
            "smbios1": format!("uuid=6c4f2a0e-0000-4000-8000-{:012x}", g.vmid),
            "vmgenid": format!("0b8e7a2c-0000-4000-8000-{:012x}", g.vmid),
            "meta": "creation-qemu=9.0.2,ctime=1717171717",
        })
    };
    if let Some(tags) = g.tags_str() {
        v["tags"] = json!(tags);
    }
    if g.template {
        v["template"] = json!(1);
    }
    if let Some(lock) = &g.lock {
        v["lock"] = json!(lock);
    }
    if let Some(parent) = &g.parent {
        v["parent"] = json!(parent);
    }
    v["digest"] = json!(g.digest());
    Ok(Reply::value(v, state.quirks.numbers_as_strings))
}

pub(super) fn status(
    state: &State,
    node: &str,
    kind: GuestKind,
    id: &str,
) -> Result<Reply, ApiError> {
    let g = load(state, node, kind, id)?;
    let mut v = vmstatus(g);
    v["ha"] = json!({"managed": 0});
    if kind == GuestKind::Qemu {
        v["qmpstatus"] = json!(g.status_str());
        v["agent"] = json!(1);
        if g.running {
            v["running-machine"] = json!("pc-i440fx-9.0+pve0");
            v["running-qemu"] = json!("9.0.2");
        }
    }
    Ok(Reply::value(v, state.quirks.numbers_as_strings))
}

pub(super) fn action(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    id: &str,
    action: &str,
) -> Result<Reply, ApiError> {
    let g = load(state, node, kind, id)?;
    let (vmid, running) = (g.vmid, g.running);
    let word = if kind == GuestKind::Lxc { "CT" } else { "VM" };
    let action = match action {
        "start" => {
            if running {
                return Err(ApiError::die(format!("{word} {vmid} already running")));
            }
            if !state.standalone && !state.quorate() {
                return Err(ApiError::die("cluster not ready - no quorum?"));
            }
            Action::Start
        }
        "reboot" if !running => return Err(ApiError::die(format!("VM {vmid} not running"))),
        "reboot" => Action::Reboot,
        "stop" if !running => return Err(ApiError::die(format!("{word} {vmid} not running"))),
        "stop" => Action::Stop,
        _ if !running => return Err(ApiError::die(format!("{word} {vmid} not running"))),
        _ => Action::Shutdown,
    };
    let upid = state.spawn_task(node, Some((vmid, kind)), &ctx.token.id, action, None);
    Ok(Reply::value(json!(upid), false))
}

pub(super) fn snapshots(
    state: &State,
    node: &str,
    kind: GuestKind,
    id: &str,
) -> Result<Reply, ApiError> {
    let g = load(state, node, kind, id)?;
    let mut snaps: Vec<_> = g.snapshots.iter().collect();
    snaps.sort_by_key(|s| s.snaptime);
    let mut out: Vec<Value> = snaps
        .into_iter()
        .map(|s| {
            let mut v =
                json!({"name": s.name, "snaptime": s.snaptime, "description": s.description});
            if let Some(p) = &s.parent {
                v["parent"] = json!(p);
            }
            if kind == GuestKind::Qemu {
                v["vmstate"] = json!(0);
            }
            v
        })
        .collect();
    let mut current = json!({
        "name": "current", "digest": g.digest(), "running": u8::from(g.running),
        "description": "You are here!",
    });
    if let Some(p) = &g.parent {
        current["parent"] = json!(p);
    }
    out.push(current);
    Ok(Reply::value(
        Value::Array(out),
        state.quirks.numbers_as_strings,
    ))
}

/// `GET …/feature?feature=snapshot|clone|copy`: `{"hasFeature": 0|1, "nodes": […]}`.
pub(super) fn feature(
    state: &State,
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    id: &str,
) -> Result<Reply, ApiError> {
    let g = load(state, node, kind, id)?;
    let feature = ctx.params.required("feature")?;
    if !matches!(feature, "snapshot" | "clone" | "copy") {
        let why = format!(
            "value '{feature}' does not have a value in the enumeration 'snapshot, clone, copy'"
        );
        return Err(ApiError::param(&[("feature", why)]));
    }
    // Clones and copies work on any storage here; a directory cannot snapshot.
    let has = feature != "snapshot" || g.can_snapshot();
    Ok(Reply::value(
        json!({"hasFeature": u8::from(has), "nodes": [node]}),
        false,
    ))
}

/// `pve-snapshot-name`: the `pve-configid` format, at most 40 characters.
fn check_snapname(name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
    if !ok {
        return Err(ApiError::param(&[(
            "snapname",
            format!("invalid format - invalid configuration ID '{name}'\n"),
        )]));
    }
    if name.len() > 40 {
        return Err(ApiError::param(&[(
            "snapname",
            "value may only be 40 characters long".into(),
        )]));
    }
    Ok(())
}

pub(super) fn snapshot_create(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    id: &str,
) -> Result<Reply, ApiError> {
    let vmid = load(state, node, kind, id)?.vmid;
    let name = ctx.params.required("snapname")?;
    check_snapname(name)?;
    if name == "current" || name == "vzdump" {
        return Err(ApiError::die(format!(
            "unable to use snapshot name '{name}' (reserved name)"
        )));
    }
    let action = Action::Snapshot {
        name: name.into(),
        description: ctx.params.get("description").unwrap_or_default().into(),
    };
    let upid = state.spawn_task(node, Some((vmid, kind)), &ctx.token.id, action, None);
    Ok(Reply::value(json!(upid), false))
}

pub(super) fn snapshot_rollback(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    id: &str,
    snap: &str,
) -> Result<Reply, ApiError> {
    let vmid = load(state, node, kind, id)?.vmid;
    check_snapname(snap)?;
    let start = ctx.params.flag("start")?;
    let action = Action::Rollback {
        name: snap.into(),
        start,
    };
    let upid = state.spawn_task(node, Some((vmid, kind)), &ctx.token.id, action, None);
    Ok(Reply::value(json!(upid), false))
}

pub(super) fn snapshot_delete(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    id: &str,
    snap: &str,
) -> Result<Reply, ApiError> {
    let vmid = load(state, node, kind, id)?.vmid;
    check_snapname(snap)?;
    ctx.params.flag("force")?;
    let action = Action::DelSnapshot { name: snap.into() };
    let upid = state.spawn_task(node, Some((vmid, kind)), &ctx.token.id, action, None);
    Ok(Reply::value(json!(upid), false))
}
