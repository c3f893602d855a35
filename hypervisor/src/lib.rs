//! Proxmox VE access for Canopy.
//!
//! - `openapi/pve.yaml`: the curated subset of the PVE API we call, written by hand from the
//!   official API viewer; `generated.rs` is progenitor's client for it (`cargo xtask codegen`).
//! - `types`: hand-written tolerant item types (0/1 booleans, numbers as strings, `a;b` tags).
//! - TLS trust (fingerprint or CA pinning, never accept-invalid) comes from `canopy-tls`.
//! - `client::PveClient`: the one implementation of [`Hypervisor`], with fail-over between
//!   a cluster's nodes.
//!
//! Callers use [`Hypervisor`] and `types`; nothing outside this crate sees generated code.

mod client;
pub mod error;
#[allow(clippy::all, clippy::pedantic)]
#[rustfmt::skip]
mod generated;
pub mod types;

pub use canopy_tls::{Fingerprint, Trust};
pub use client::{normalize_endpoint, probe_fingerprint, ApiToken, Connection, PveClient};
pub use error::Error;

use types::*;

/// LXC power actions Canopy performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    Shutdown,
    Reboot,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Shutdown => "shutdown",
            Self::Reboot => "reboot",
        }
    }
}

/// vzdump backup modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VzdumpMode {
    Snapshot,
    Suspend,
    Stop,
}

/// The two guest families PVE lists per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    Lxc,
    Qemu,
}

impl GuestKind {
    pub fn path(self) -> &'static str {
        match self {
            Self::Lxc => "lxc",
            Self::Qemu => "qemu",
        }
    }
}

/// What Canopy asks of a PVE cluster or standalone node.
///
/// Discovery needs only `cluster_status` and `resources` (one call each, whatever the
/// number of guests); the rest serve updates, snapshots and power actions.
#[async_trait::async_trait]
pub trait Hypervisor: Send + Sync {
    async fn version(&self) -> Result<Version, Error>;
    /// The cluster entry (absent on a standalone node) and one entry per node.
    async fn cluster_status(&self) -> Result<Vec<ClusterStatusEntry>, Error>;
    /// Every node, guest and storage visible to the token.
    async fn resources(&self) -> Result<Vec<ClusterResource>, Error>;
    async fn nodes(&self) -> Result<Vec<NodeListEntry>, Error>;
    /// The node's own pending package updates (read-only, from its apt cache).
    async fn node_apt_updates(&self, node: &str) -> Result<Vec<AptUpdate>, Error>;
    async fn guests(&self, node: &str, kind: GuestKind) -> Result<Vec<GuestListEntry>, Error>;
    async fn lxc_config(&self, node: &str, vmid: u32) -> Result<LxcConfig, Error>;
    /// Start, shut down or reboot a container or VM.
    async fn power(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        action: PowerAction,
    ) -> Result<Upid, Error>;
    async fn snapshots(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
    ) -> Result<Vec<Snapshot>, Error>;
    /// Whether the guest's storage allows a snapshot now (`…/feature?feature=snapshot`).
    async fn can_snapshot(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<bool, Error>;
    async fn snapshot_create(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        name: &str,
        description: &str,
    ) -> Result<Upid, Error>;
    async fn snapshot_rollback(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        name: &str,
    ) -> Result<Upid, Error>;
    async fn snapshot_delete(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        name: &str,
    ) -> Result<Upid, Error>;
    /// Backs one guest up; `notes` is the backup's notes template (`{{guestname}}` expands).
    async fn vzdump(
        &self,
        node: &str,
        vmid: u32,
        mode: VzdumpMode,
        storage: Option<&str>,
        notes: &str,
    ) -> Result<Upid, Error>;
    /// One guest's backup archives on a storage, as the storage lists them.
    async fn backups(
        &self,
        node: &str,
        storage: &str,
        vmid: u32,
    ) -> Result<Vec<StorageVolume>, Error>;
    async fn volume_delete(&self, node: &str, storage: &str, volid: &str) -> Result<Upid, Error>;
    /// Restores guest `vmid` from backup `volid` over the existing (stopped) one, its disks
    /// on `storage` (`None`: where the backup says they were; VMs only, a container's root
    /// disk would go to `local`).
    async fn restore(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        volid: &str,
        storage: Option<&str>,
    ) -> Result<Upid, Error>;
    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error>;
    async fn task_log(&self, upid: &Upid) -> Result<Vec<String>, Error>;
}
