//! One operation at a time per guest. Two operations started together on one guest (a deploy
//! and an uninstall, two deploys, a deploy and an agentless scan) would otherwise race inside
//! it: two `pct push`es of the agent, two registrations, a scan recording the guest agentless
//! while the agent enrols. The second one's item waits until the first one's item has ended.
//! The lock is per server process, keyed by `CLUSTER/VMID` (a guest's identity that survives
//! a migration to another node).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// The step an item shows while another operation holds its guest.
pub const WAITING_STEP: &str = "waiting: another operation is working on this guest";

#[derive(Debug, Default)]
pub struct GuestLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while working on one guest; the next waiting item starts once it is dropped.
pub struct GuestGuard {
    _guard: OwnedMutexGuard<()>,
}

/// A guest held by another operation; [`GuestWait::wait`] for it.
pub struct GuestWait {
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl GuestLocks {
    /// The guest `key` if it is free, else the way to wait for it (first come, first served).
    pub fn try_lock(&self, key: &str) -> Result<GuestGuard, GuestWait> {
        let lock = {
            let mut locks = self.locks.lock().expect("guest locks");
            // Forget guests nobody holds or waits for, so the map stays as small as the work.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        match lock.clone().try_lock_owned() {
            Ok(guard) => Ok(GuestGuard { _guard: guard }),
            Err(_) => Err(GuestWait { lock }),
        }
    }
}

impl GuestWait {
    pub async fn wait(self) -> GuestGuard {
        GuestGuard {
            _guard: self.lock.lock_owned().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_operation_on_a_guest_waits_for_the_first_one_other_guests_do_not() {
        let locks = GuestLocks::default();
        let log = Arc::new(Mutex::new(Vec::<&str>::new()));
        let free = |key: &str| {
            locks
                .try_lock(key)
                .unwrap_or_else(|_| panic!("{key} is free"))
        };
        let first = free("home/101");
        let Err(wait) = locks.try_lock("home/101") else {
            panic!("a held guest is not free");
        };
        let second = tokio::spawn({
            let log = log.clone();
            async move {
                let _g = wait.wait().await;
                log.lock().unwrap().push("second starts");
            }
        });
        // Another guest is not held up by this one.
        drop(free("home/102"));
        tokio::task::yield_now().await;
        assert!(log.lock().unwrap().is_empty(), "the second one waits");
        log.lock().unwrap().push("first ends");
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second one starts once the first ended")
            .unwrap();
        assert_eq!(*log.lock().unwrap(), ["first ends", "second starts"]);
        // Released and unheld, the guest's entry goes.
        drop(free("home/103"));
        assert_eq!(locks.locks.lock().unwrap().len(), 1, "only home/103 stays");
    }
}
