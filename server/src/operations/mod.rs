//! The operation engine every bulk operation runs on (docs/design.md §2.5): deploys,
//! uninstalls and updates share one store model (operations with one item per guest), one
//! stream of item changes per running operation (`GET /operations/{id}/events`), one lock per
//! guest (one operation at a time works on a guest) and the retried final writes.

pub mod guest_lock;
pub mod record;

use canopy_api_types::deploy::OperationItem;
use canopy_api_types::OperationId;
use canopy_store::{Actor, ItemUpdate, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

/// What the deploy and update engines share: item streams and guest locks.
#[derive(Debug, Default)]
pub struct Engine {
    streams: Mutex<HashMap<OperationId, broadcast::Sender<OperationItem>>>,
    pub guests: guest_lock::GuestLocks,
}

impl Engine {
    /// Open the stream of a running operation (its items' changes).
    pub fn open(&self, id: OperationId) {
        let (tx, _) = broadcast::channel(256);
        self.streams.lock().expect("streams lock").insert(id, tx);
    }

    /// The operation ended: subscribers see the stream close and read the operation instead.
    pub fn close(&self, id: OperationId) {
        self.streams.lock().expect("streams lock").remove(&id);
    }

    /// Item changes of a running operation; `None` once it has finished (read it instead).
    pub fn subscribe(&self, id: OperationId) -> Option<broadcast::Receiver<OperationItem>> {
        self.streams
            .lock()
            .expect("streams lock")
            .get(&id)
            .map(|tx| tx.subscribe())
    }

    pub fn stream(&self, id: OperationId) -> Option<broadcast::Sender<OperationItem>> {
        self.streams.lock().expect("streams lock").get(&id).cloned()
    }

    /// Write an item change and publish it to the operation's stream.
    pub async fn publish(
        &self,
        store: &dyn Store,
        id: OperationId,
        target: &str,
        up: ItemUpdate,
        actor: &Actor,
    ) -> Result<OperationItem, canopy_store::StoreError> {
        publish(store, &self.stream(id), id, target, up, actor).await
    }
}

/// The concurrency limits of operations: `global` guests at once in all, `per_node` of one
/// node (deploys share one server-wide set; each update operation has its own).
#[derive(Debug)]
pub struct Slots {
    global: Arc<Semaphore>,
    per_node: usize,
    nodes: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Slots {
    pub fn new(global: usize, per_node: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global.max(1))),
            per_node: per_node.max(1),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// A slot of `node` and a global one, held while working on one guest. The node's comes
    /// first: a guest waiting for its busy node holds no global slot another node could use.
    pub async fn acquire(&self, node: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let slot = self
            .nodes
            .lock()
            .expect("slots lock")
            .entry(node.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_node)))
            .clone();
        let node = slot
            .acquire_owned()
            .await
            .expect("node slots are never closed");
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("the global slots are never closed");
        (node, global)
    }
}

/// Write an item change and send it to `stream`, logging a refused write.
pub async fn publish(
    store: &dyn Store,
    stream: &Option<broadcast::Sender<OperationItem>>,
    id: OperationId,
    target: &str,
    up: ItemUpdate,
    actor: &Actor,
) -> Result<OperationItem, canopy_store::StoreError> {
    match store.update_operation_item(id, target, up, actor).await {
        Ok(item) => {
            if let Some(tx) = stream {
                let _ = tx.send(item.clone());
            }
            Ok(item)
        }
        Err(e) => {
            tracing::error!(operation = %id, %target, error = %e, "cannot record the item's progress");
            Err(e)
        }
    }
}
