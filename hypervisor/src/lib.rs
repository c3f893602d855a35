//! Proxmox VE access. The discovery issue (#4) fills this crate: the curated OpenAPI
//! subset, the progenitor client, `trait Hypervisor`, TLS pinning and the simulator.
