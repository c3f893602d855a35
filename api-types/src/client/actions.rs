//! Actions on a selection that are neither deploys nor update operations: a scan of every
//! agent in a subtree (`POST /hosts/scan`).

use super::{Client, ClientError};
use crate::hosts::{HostScan, ScanRequest};

impl Client {
    /// Asks every agent `selector` resolves to to scan now; one line per guest, its scan
    /// queued or skipped and why.
    pub async fn scan_selection(&self, selector: &str) -> Result<Vec<HostScan>, ClientError> {
        let req = ScanRequest {
            selector: selector.to_string(),
        };
        self.post("/hosts/scan", &req).await
    }
}
