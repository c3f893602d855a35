//! Typed identifiers. Database rows get newtype IDs so a host id can never be
//! passed where a command id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An enrolled host (one agent).
    HostId
);
uuid_id!(
    /// One pending (or closed) update of one package or image on one host.
    UpdateId
);
uuid_id!(
    /// One command in the queue.
    CommandId
);
uuid_id!(
    /// A user of the web UI / CLI.
    UserId
);
uuid_id!(
    /// A registration token (its id, never its secret).
    RegistrationTokenId
);
uuid_id!(
    /// Groups every event of one user action (approve -> dry-run -> install -> re-scan).
    CorrelationId
);
uuid_id!(
    /// One event in the append-only log.
    EventId
);
uuid_id!(
    /// A Proxmox VE cluster (or standalone node) Canopy discovers.
    ClusterId
);
uuid_id!(
    /// A guest (LXC or VM) by its stable identity (cluster, vmid), whatever its node.
    GuestId
);
uuid_id!(
    /// A bulk operation (agent deploy, later updates) addressed by selector.
    OperationId
);
