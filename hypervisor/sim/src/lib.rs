//! A Proxmox VE API simulator (filled by the simulator work of issue #4).
