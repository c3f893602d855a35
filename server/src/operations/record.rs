//! The last writes of an operation: an item's result and the operation's end. A database that
//! refuses a write for a moment (locked by a backup, a PostgreSQL fail-over, a full disk
//! being freed) must not leave an operation `running` for ever, so these writes are retried
//! a bounded number of times. What still cannot be written stays `running` in the store, and
//! the next server start fails it with its unfinished items
//! ([`canopy_store::OperationStore::fail_interrupted_operations`]).

use super::publish;
use canopy_api_types::deploy::{OperationItem, OperationState};
use canopy_api_types::OperationId;
use canopy_store::{Actor, ItemUpdate, Store, StoreError};
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::sync::broadcast;

/// The pauses between attempts of a final write (about 8 s in all).
const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// After the `n`th failure (from 0), the pause before the next attempt, or `None` to give up.
pub(crate) type Pause<'a> =
    dyn FnMut(usize, &StoreError) -> Option<BoxFuture<'static, ()>> + Send + 'a;

/// [`RETRY_DELAYS`], each failure logged.
pub(crate) fn backoff(
    what: &'static str,
) -> impl FnMut(usize, &StoreError) -> Option<BoxFuture<'static, ()>> + Send {
    move |n, e| {
        let delay = *RETRY_DELAYS.get(n)?;
        tracing::warn!(error = %e, attempt = n + 1, retry_in_ms = delay.as_millis() as u64, "{what} could not be recorded; retrying");
        Some(Box::pin(tokio::time::sleep(delay)))
    }
}

/// `write` until it succeeds, fails for a reason no retry changes (the item already ended,
/// the operation is gone), or `pause` gives up.
async fn retried<T, F>(mut write: impl FnMut() -> F, pause: &mut Pause<'_>) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut failures = 0;
    loop {
        match write().await {
            Ok(v) => return Ok(v),
            Err(e @ StoreError::Database(_)) => match pause(failures, &e) {
                Some(p) => {
                    p.await;
                    failures += 1;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// What [`item_end`] could write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Result,
    /// Not the result, only that it failed because the result could not be written.
    Failure,
}

/// Records the item's result; when that cannot be written, that it failed for that reason.
/// `None` when neither could be written: the item is still `running` in the store.
pub(crate) async fn item_end(
    store: &dyn Store,
    stream: &Option<broadcast::Sender<OperationItem>>,
    id: OperationId,
    target: &str,
    up: ItemUpdate,
    actor: &Actor,
    pause: &mut Pause<'_>,
) -> Option<Written> {
    let Err(e) = retried(
        || publish(store, stream, id, target, up.clone(), actor),
        pause,
    )
    .await
    else {
        return Some(Written::Result);
    };
    let lost = ItemUpdate::failed(
        format!("the result could not be recorded: {e}"),
        chrono::Utc::now(),
    );
    publish(store, stream, id, target, lost, actor)
        .await
        .ok()
        .map(|_| Written::Failure)
}

/// Ends the operation with `state`; false when that could not be written.
pub(crate) async fn operation_end(
    store: &dyn Store,
    id: OperationId,
    state: OperationState,
    pause: &mut Pause<'_>,
) -> bool {
    let at = chrono::Utc::now();
    match retried(|| store.finish_operation(id, state, at), pause).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(operation = %id, error = %e, "cannot record the end of the operation; the next start fails it");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::deploy::{ItemState, Route};
    use canopy_store::NewOperation;
    use sqlx::Connection;
    use std::sync::Arc;

    const TARGET: &str = "cluster/home/node/pve1/lxc/101";

    /// A real SQLite store in a file with one running operation of one running item.
    async fn running_operation() -> (tempfile::TempDir, String, Arc<dyn Store>, OperationId) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("canopy.db").display());
        let store = canopy_store::open(&url).await.unwrap();
        let id = OperationId::new();
        let item = OperationItem::queued(TARGET, None, "pve1", 101, Route::Pct);
        store
            .create_operation(
                NewOperation {
                    id,
                    action: "deploy".into(),
                    selector: TARGET.into(),
                    items: vec![item],
                    skipped: vec![],
                    created_at: chrono::Utc::now(),
                    state: canopy_api_types::deploy::OperationState::Running,
                    update: None,
                },
                &Actor::System,
            )
            .await
            .unwrap();
        let up = ItemUpdate::running("connect", chrono::Utc::now());
        store
            .update_operation_item(id, TARGET, up, &Actor::System)
            .await
            .unwrap();
        (dir, url, store, id)
    }

    /// Runs `sql` on a connection of its own: another process's view of the same file.
    async fn sql(url: String, sql: &'static str) {
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }

    /// SQLite itself refuses these writes, as it does when its disk is full or read-only.
    const REFUSE_ENDS: &str = "CREATE TRIGGER refuse_op BEFORE UPDATE ON operations \
        BEGIN SELECT RAISE(ABORT, 'injected: the database refuses writes'); END; \
        CREATE TRIGGER refuse_item BEFORE UPDATE ON operation_items \
        WHEN NEW.state IN ('succeeded', 'failed') \
        BEGIN SELECT RAISE(ABORT, 'injected: the database refuses writes'); END;";
    const ACCEPT: &str = "DROP TRIGGER refuse_op; DROP TRIGGER refuse_item;";

    fn succeeded() -> ItemUpdate {
        ItemUpdate {
            state: ItemState::Succeeded,
            step: None,
            outcome: Some(canopy_api_types::deploy::DeployOutcome::Installed),
            message: None,
            host_id: None,
            run_as: None,
            at: chrono::Utc::now(),
            event: None,
            update: None,
        }
    }

    #[tokio::test]
    async fn final_writes_refused_for_a_moment_are_retried_until_recorded() {
        let (_dir, url, store, id) = running_operation().await;
        sql(url.clone(), REFUSE_ENDS).await;
        // The first attempt of each write is refused; the database accepts writes again
        // during the pause before the second.
        let mut failures = Vec::new();
        let mut fix_on_first_failure = |n: usize, e: &StoreError| {
            failures.push(e.to_string());
            (n < 3).then(|| -> BoxFuture<'static, ()> {
                Box::pin(sql(url.clone(), if n == 0 { ACCEPT } else { "SELECT 1" }))
            })
        };
        let recorded = item_end(
            store.as_ref(),
            &None,
            id,
            TARGET,
            succeeded(),
            &Actor::System,
            &mut fix_on_first_failure,
        )
        .await;
        assert_eq!(recorded, Some(Written::Result));
        sql(url.clone(), REFUSE_ENDS).await;
        let ended = operation_end(
            store.as_ref(),
            id,
            OperationState::Succeeded,
            &mut fix_on_first_failure,
        )
        .await;
        assert!(ended);
        assert_eq!(failures.len(), 2, "one refusal per write: {failures:?}");
        assert!(failures[0].contains("injected"), "{failures:?}");
        let op = store.get_operation(id).await.unwrap().unwrap();
        assert_eq!(op.state, OperationState::Succeeded);
        assert_eq!(op.items[0].state, ItemState::Succeeded);
    }

    #[tokio::test]
    async fn an_operation_whose_end_cannot_be_recorded_is_failed_at_the_next_start() {
        let (dir, url, store, id) = running_operation().await;
        sql(url.clone(), REFUSE_ENDS).await;
        let mut attempts = 0;
        let mut three_tries = |n: usize, _: &StoreError| {
            attempts += 1;
            (n < 2).then(|| -> BoxFuture<'static, ()> { Box::pin(async {}) })
        };
        let recorded = item_end(
            store.as_ref(),
            &None,
            id,
            TARGET,
            succeeded(),
            &Actor::System,
            &mut three_tries,
        )
        .await;
        assert_eq!(recorded, None, "nothing could be written");
        assert_eq!(attempts, 3, "bounded: three attempts, then it gives up");
        let mut three_tries = |n: usize, _: &StoreError| {
            (n < 2).then(|| -> BoxFuture<'static, ()> { Box::pin(async {}) })
        };
        let ended = operation_end(
            store.as_ref(),
            id,
            OperationState::Succeeded,
            &mut three_tries,
        )
        .await;
        assert!(!ended);
        let op = store.get_operation(id).await.unwrap().unwrap();
        assert_eq!(op.state, OperationState::Running, "left running");
        assert_eq!(op.items[0].state, ItemState::Running);
        drop(store);

        // The disk is fixed and the server starts again on the same database.
        sql(url.clone(), ACCEPT).await;
        let settings = crate::settings::Settings {
            database_url: url,
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        let state = crate::prepare(settings).await.unwrap();
        let op = state.store.get_operation(id).await.unwrap().unwrap();
        assert_eq!(op.state, OperationState::Failed);
        assert_eq!(op.items[0].state, ItemState::Failed);
        assert_eq!(
            op.items[0].message.as_deref(),
            Some(canopy_store::INTERRUPTED_MESSAGE)
        );
    }
}
