//! `impl Hypervisor for PveClient`: each trait method is one generated call run through
//! `PveClient::call` (auth, fail-over, error mapping).

use super::PveClient;
use crate::error::Error;
use crate::generated;
use crate::types::*;
use crate::{GuestKind, Hypervisor, PowerAction, VzdumpMode};

#[async_trait::async_trait]
impl Hypervisor for PveClient {
    async fn version(&self) -> Result<Version, Error> {
        self.call("GET /version", |c| async move { c.version().await })
            .await
            .map(|r| r.data.unwrap_or_default())
    }

    async fn cluster_status(&self) -> Result<Vec<ClusterStatusEntry>, Error> {
        self.call("GET /cluster/status", |c| async move {
            c.cluster_status().await
        })
        .await
        .map(|r| r.data)
    }

    async fn resources(&self) -> Result<Vec<ClusterResource>, Error> {
        self.call("GET /cluster/resources", |c| async move {
            c.cluster_resources(None).await
        })
        .await
        .map(|r| r.data)
    }

    async fn nodes(&self) -> Result<Vec<NodeListEntry>, Error> {
        self.call("GET /nodes", |c| async move { c.nodes().await })
            .await
            .map(|r| r.data)
    }

    async fn node_apt_updates(&self, node: &str) -> Result<Vec<AptUpdate>, Error> {
        let what = format!("GET /nodes/{node}/apt/update");
        self.call(&what, |c| async move { c.node_apt_updates(node).await })
            .await
            .map(|r| r.data)
    }

    async fn guests(&self, node: &str, kind: GuestKind) -> Result<Vec<GuestListEntry>, Error> {
        let what = format!("GET /nodes/{node}/{}", kind.path());
        self.call(&what, |c| async move {
            match kind {
                GuestKind::Lxc => c.lxc_list(node).await,
                GuestKind::Qemu => c.qemu_list(node).await,
            }
        })
        .await
        .map(|r| r.data)
    }

    async fn lxc_config(&self, node: &str, vmid: u32) -> Result<LxcConfig, Error> {
        let what = format!("GET /nodes/{node}/lxc/{vmid}/config");
        self.call(&what, |c| async move { c.lxc_config(node, vmid).await })
            .await
            .map(|r| r.data.unwrap_or_default())
    }

    async fn power(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        action: PowerAction,
    ) -> Result<Upid, Error> {
        let what = format!(
            "POST /nodes/{node}/{}/{vmid}/status/{}",
            kind.path(),
            action.as_str()
        );
        let k = guest_type(kind);
        self.call(&what, |c| async move {
            match action {
                PowerAction::Start => c.guest_start(node, k, vmid).await,
                PowerAction::Shutdown => {
                    let body = generated::types::ShutdownParams::default();
                    c.guest_shutdown(node, k, vmid, &body).await
                }
                PowerAction::Reboot => c.guest_reboot(node, k, vmid).await,
            }
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn snapshots(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
    ) -> Result<Vec<Snapshot>, Error> {
        let what = format!("GET /nodes/{node}/{}/{vmid}/snapshot", kind.path());
        let k = guest_type(kind);
        self.call(
            &what,
            |c| async move { c.guest_snapshots(node, k, vmid).await },
        )
        .await
        .map(|r| r.data)
    }

    async fn can_snapshot(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<bool, Error> {
        let what = format!(
            "GET /nodes/{node}/{}/{vmid}/feature?feature=snapshot",
            kind.path()
        );
        let k = guest_type(kind);
        self.call(&what, |c| async move {
            c.guest_feature(
                node,
                k,
                vmid,
                generated::types::GuestFeatureFeature::Snapshot,
            )
            .await
        })
        .await
        .map(|r| r.data.unwrap_or_default().has_feature)
    }

    async fn snapshot_create(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        name: &str,
        description: &str,
    ) -> Result<Upid, Error> {
        let what = format!("POST /nodes/{node}/{}/{vmid}/snapshot", kind.path());
        let body = generated::types::SnapshotParams {
            snapname: name.to_string(),
            description: Some(description.to_string()).filter(|d| !d.is_empty()),
        };
        let (body, k) = (&body, guest_type(kind));
        self.call(&what, |c| async move {
            c.guest_snapshot_create(node, k, vmid, body).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn snapshot_rollback(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        name: &str,
    ) -> Result<Upid, Error> {
        let what = format!(
            "POST /nodes/{node}/{}/{vmid}/snapshot/{name}/rollback",
            kind.path()
        );
        let k = guest_type(kind);
        self.call(&what, |c| async move {
            c.guest_snapshot_rollback(node, k, vmid, name).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn snapshot_delete(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        name: &str,
    ) -> Result<Upid, Error> {
        let what = format!(
            "DELETE /nodes/{node}/{}/{vmid}/snapshot/{name}",
            kind.path()
        );
        let k = guest_type(kind);
        self.call(&what, |c| async move {
            c.guest_snapshot_delete(node, k, vmid, name).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn vzdump(
        &self,
        node: &str,
        vmid: u32,
        mode: VzdumpMode,
        storage: Option<&str>,
        notes: &str,
    ) -> Result<Upid, Error> {
        use generated::types::VzdumpParamsMode as M;
        let what = format!("POST /nodes/{node}/vzdump");
        let body = generated::types::VzdumpParams {
            vmid: vmid.to_string(),
            mode: Some(match mode {
                VzdumpMode::Snapshot => M::Snapshot,
                VzdumpMode::Suspend => M::Suspend,
                VzdumpMode::Stop => M::Stop,
            }),
            storage: storage.map(str::to_string),
            compress: Some("zstd".into()),
            notes_template: Some(notes.into()),
        };
        let body = &body;
        self.call(&what, |c| async move { c.vzdump(node, body).await })
            .await
            .and_then(|r| task_upid(r.data, &what))
    }

    async fn backups(
        &self,
        node: &str,
        storage: &str,
        vmid: u32,
    ) -> Result<Vec<StorageVolume>, Error> {
        let what =
            format!("GET /nodes/{node}/storage/{storage}/content?content=backup&vmid={vmid}");
        self.call(&what, |c| async move {
            c.storage_content(node, storage, Some("backup"), Some(vmid))
                .await
        })
        .await
        .map(|r| r.data)
    }

    async fn volume_delete(&self, node: &str, storage: &str, volid: &str) -> Result<Upid, Error> {
        let what = format!("DELETE /nodes/{node}/storage/{storage}/content/{volid}");
        self.call(&what, |c| async move {
            c.storage_content_delete(node, storage, volid).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn restore(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        volid: &str,
        storage: Option<&str>,
    ) -> Result<Upid, Error> {
        let what = format!(
            "POST /nodes/{node}/{} (restore {vmid} from {volid})",
            kind.path()
        );
        match kind {
            GuestKind::Lxc => {
                let body = generated::types::LxcRestoreParams {
                    vmid,
                    ostemplate: volid.into(),
                    restore: Some(1),
                    force: Some(1),
                    storage: storage.map(str::to_string),
                    start: None,
                };
                let body = &body;
                self.call(&what, |c| async move { c.lxc_restore(node, body).await })
                    .await
            }
            GuestKind::Qemu => {
                let body = generated::types::QemuRestoreParams {
                    vmid,
                    archive: volid.into(),
                    force: Some(1),
                    storage: storage.map(str::to_string),
                    start: None,
                };
                let body = &body;
                self.call(&what, |c| async move { c.qemu_restore(node, body).await })
                    .await
            }
        }
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error> {
        let node = upid_node(upid)?;
        let what = format!("GET /nodes/{node}/tasks/{{upid}}/status");
        let id = upid.0.as_str();
        self.call(&what, |c| async move { c.task_status(node, id).await })
            .await?
            .data
            .ok_or_else(|| Error::InvalidResponse {
                endpoint: self.current_endpoint().to_string(),
                what,
                reason: "no task status in the answer".into(),
            })
    }

    async fn task_log(&self, upid: &Upid) -> Result<Vec<String>, Error> {
        let node = upid_node(upid)?;
        let what = format!("GET /nodes/{node}/tasks/{{upid}}/log");
        let id = upid.0.as_str();
        let mut lines = self
            .call(&what, |c| async move {
                c.task_log(node, id, Some(5000), None).await
            })
            .await?
            .data;
        lines.sort_by_key(|l| l.n);
        Ok(lines.into_iter().map(|l| l.t).collect())
    }
}

fn guest_type(kind: GuestKind) -> generated::types::GuestType {
    match kind {
        GuestKind::Lxc => generated::types::GuestType::Lxc,
        GuestKind::Qemu => generated::types::GuestType::Qemu,
    }
}

fn upid_node(upid: &Upid) -> Result<&str, Error> {
    upid.node()
        .ok_or_else(|| Error::Config(format!("{:?} is not a PVE task id (UPID:node:…)", upid.0)))
}

fn task_upid(data: Option<Upid>, what: &str) -> Result<Upid, Error> {
    data.filter(|u| u.node().is_some())
        .ok_or_else(|| Error::InvalidResponse {
            endpoint: String::new(),
            what: what.to_string(),
            reason: "expected a task UPID in data".into(),
        })
}
