//! The tolerant types against payloads shaped like real PVE 7/8 output.

use super::*;
use serde_json::json;

#[test]
fn cluster_resources_with_every_quirk() {
    let body = json!([
        {"id":"node/pve1","type":"node","node":"pve1","status":"online","maxcpu":8,"uptime":"3600","level":""},
        {"id":"lxc/101","type":"lxc","node":"pve1","vmid":101,"name":"web","status":"running",
         "template":0,"tags":"prod;web","maxmem":"2147483648","diskread":1234,"netin":5},
        {"id":"lxc/900","type":"lxc","node":"pve1","vmid":"900","name":"tmpl","status":"stopped","template":1},
        {"id":"qemu/100","type":"qemu","node":"pve2","vmid":100,"name":"win","status":"unknown","tags":null},
        {"id":"sdn/pve1/localnetwork","type":"sdn","node":"pve1","status":"ok"},
        {"id":"storage/pve1/local","type":"storage","node":"pve1","status":"available","maxcpu":"1.5"}
    ]);
    let items: Vec<ClusterResource> = serde_json::from_value(body).unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(items[0].kind, ResourceType::Node);
    assert_eq!(items[0].uptime, Some(3600));
    assert_eq!(items[1].tags, vec!["prod", "web"]);
    assert_eq!(items[1].maxmem, Some(2_147_483_648));
    assert!(!items[1].template);
    assert_eq!(items[2].vmid, Some(900));
    assert!(items[2].template);
    assert!(items[3].tags.is_empty());
    assert_eq!(items[4].kind, ResourceType::Other("sdn".into()));
    assert_eq!(items[5].maxcpu, Some(1.5));
}

#[test]
fn bad_numbers_are_errors_that_name_the_value() {
    let err = serde_json::from_value::<ClusterResource>(
        json!({"id":"lxc/1","type":"lxc","vmid":"one-oh-one"}),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("\"one-oh-one\" is not a number"),
        "{err}"
    );
    let err = serde_json::from_value::<ClusterStatusEntry>(
        json!({"type":"node","name":"a","online":"maybe"}),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("\"maybe\" is not a boolean"),
        "{err}"
    );
}

#[test]
fn cluster_status_standalone_and_clustered() {
    let entries: Vec<ClusterStatusEntry> = serde_json::from_value(json!([
        {"type":"cluster","id":"cluster","name":"home","nodes":3,"quorate":1,"version":7},
        {"type":"node","id":"node/pve1","name":"pve1","nodeid":1,"ip":"10.0.0.1","online":1,"local":1,"level":""},
        {"type":"node","id":"node/pve3","name":"pve3","nodeid":"3","ip":"10.0.0.3","online":0,"local":0}
    ]))
    .unwrap();
    assert!(entries[0].quorate);
    assert_eq!(entries[0].nodes, Some(3));
    assert!(entries[1].online && entries[1].local);
    assert_eq!(entries[2].nodeid, Some(3));
    assert!(!entries[2].online);
}

#[test]
fn lxc_config_keeps_numbered_keys() {
    let cfg: LxcConfig = serde_json::from_value(json!({
        "hostname":"web","ostype":"debian","arch":"amd64","tags":"a;b",
        "net1":"name=eth1,bridge=vmbr1","net0":"name=eth0,bridge=vmbr0,ip=dhcp",
        "rootfs":"local-lvm:vm-101-disk-0,size=8G","unprivileged":1,"digest":"abc","cores":2
    }))
    .unwrap();
    assert_eq!(cfg.hostname.as_deref(), Some("web"));
    assert!(cfg.unprivileged);
    let nets = cfg.numbered("net");
    assert_eq!(nets.len(), 2);
    assert_eq!(nets[0].0, 0);
    assert!(nets[1].1.contains("vmbr1"));
}

#[test]
fn tasks_and_upids() {
    let upid = Upid("UPID:pve2:000A1B2C:0012D687:6560F00D:vzsnapshot:101:root@pam!canopy:".into());
    assert_eq!(upid.node(), Some("pve2"));
    assert_eq!(Upid("garbage".into()).node(), None);
    let done: TaskStatus = serde_json::from_value(json!({
        "status":"stopped","exitstatus":"OK","upid":upid.0,"node":"pve2","type":"vzsnapshot","id":"101",
        "pid":662316,"starttime":1700000000,"user":"root@pam!canopy"
    }))
    .unwrap();
    assert!(done.succeeded());
    let failed: TaskStatus = serde_json::from_value(json!({
        "status":"stopped","exitstatus":"snapshot feature is not available","upid":"UPID:x"
    }))
    .unwrap();
    assert!(!failed.succeeded());
    let running: TaskStatus =
        serde_json::from_value(json!({"status":"running","upid":"UPID:x"})).unwrap();
    assert!(running.is_running() && !running.succeeded());
}

#[test]
fn apt_updates_use_pve_field_names() {
    let ups: Vec<AptUpdate> = serde_json::from_value(json!([{
        "Package":"pve-manager","Title":"Proxmox Virtual Environment Management Tools",
        "OldVersion":"8.2.2","Version":"8.2.4","Origin":"Proxmox","Priority":"optional",
        "Section":"admin","Arch":"amd64","Description":"…","ChangeLogUrl":"https://…"
    }]))
    .unwrap();
    assert_eq!(ups[0].package, "pve-manager");
    assert_eq!(ups[0].version.as_deref(), Some("8.2.4"));
}

#[test]
fn tags_accept_every_separator() {
    assert_eq!(de::split_tags("prod;web"), vec!["prod", "web"]);
    assert_eq!(de::split_tags(" prod, web web ;"), vec!["prod", "web"]);
    assert!(de::split_tags("").is_empty());
}
