//! Bulk operations ([`OperationStore`]) on PostgreSQL: an operation row and one row per
//! item, updated as the server works through the items. An item is locked
//! (`FOR NO KEY UPDATE`) between reading and writing it, so two updates of one item
//! serialise and the second sees the first's state. The rules (what an update changes,
//! which events follow) live in [`crate::operation_plan`].

use super::{finish, insert_events, rows, PgStore};
use crate::common::micros;
use crate::operation_plan::{self as plan, MAX_OPERATIONS};
use crate::{
    Actor, ItemUpdate, NewOperation, OperationFilter, OperationStore, OperationTransition, Result,
    StoreError, INTERRUPTED_MESSAGE,
};
use async_trait::async_trait;
use canopy_api_types::deploy::{Operation, OperationItem, OperationState};
use canopy_api_types::OperationId;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

/// Items per multi-row INSERT (16 binds each, below PostgreSQL's 65,535).
const ITEM_CHUNK: usize = 1_000;

/// The items of `ops` (one query, no N+1), put under them in position order.
async fn attach_all(conn: &mut PgConnection, ops: &mut [Operation]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ops.iter().map(|o| o.id.0).collect();
    let items = sqlx::query(
        "SELECT * FROM operation_items WHERE operation_id = ANY($1) ORDER BY operation_id, position",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let items = items
        .iter()
        .map(rows::operation_item)
        .collect::<Result<_>>()?;
    plan::attach_items(ops, items);
    Ok(())
}

/// The operation with its items (two queries).
async fn load(conn: &mut PgConnection, id: OperationId) -> Result<Option<Operation>> {
    let Some(row) = sqlx::query("SELECT * FROM operations WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut ops = vec![rows::operation(&row)?];
    let items =
        sqlx::query("SELECT * FROM operation_items WHERE operation_id = $1 ORDER BY position")
            .bind(id.0)
            .fetch_all(&mut *conn)
            .await?;
    let items = items
        .iter()
        .map(rows::operation_item)
        .collect::<Result<_>>()?;
    plan::attach_items(&mut ops, items);
    Ok(ops.pop())
}

/// Write every column of an item an update may change.
async fn store_item(conn: &mut PgConnection, id: OperationId, item: &OperationItem) -> Result<()> {
    sqlx::query(
        "UPDATE operation_items SET state = $1, step = $2, outcome = $3, message = $4, host_id = $5, \
         run_as = $6, started_at = $7, finished_at = $8, detail = $9 \
         WHERE operation_id = $10 AND target = $11",
    )
    .bind(item.state.as_str())
    .bind(&item.step)
    .bind(item.outcome.map(|o| o.as_str()))
    .bind(&item.message)
    .bind(item.host_id.map(|h| h.0))
    .bind(&item.run_as)
    .bind(item.started_at)
    .bind(item.finished_at)
    .bind(plan::detail_json("operation_items", item.update.as_ref())?)
    .bind(id.0)
    .bind(&item.target)
    .execute(&mut *conn)
    .await
    .map_err(|e| plan::refused(e, String::new))?;
    Ok(())
}

async fn insert_items(
    conn: &mut PgConnection,
    id: OperationId,
    items: &[OperationItem],
) -> Result<()> {
    let details = items
        .iter()
        .map(|i| plan::detail_json("operation_items", i.update.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let numbered: Vec<(usize, (&OperationItem, &Option<serde_json::Value>))> =
        items.iter().zip(&details).enumerate().collect();
    for chunk in numbered.chunks(ITEM_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO operation_items (operation_id, target, position, guest_id, node, vmid, route, \
             state, step, outcome, message, host_id, run_as, started_at, finished_at, detail) ",
        );
        q.push_values(chunk, |mut b, (pos, (i, detail))| {
            b.push_bind(id.0)
                .push_bind(i.target.clone())
                .push_bind(i32::try_from(*pos).unwrap_or(i32::MAX))
                .push_bind(i.guest_id.map(|g| g.0))
                .push_bind(i.node.clone())
                .push_bind(i64::from(i.vmid))
                .push_bind(i.route.as_str())
                .push_bind(i.state.as_str())
                .push_bind(i.step.clone())
                .push_bind(i.outcome.map(|o| o.as_str()))
                .push_bind(i.message.clone())
                .push_bind(i.host_id.map(|h| h.0))
                .push_bind(i.run_as.clone())
                .push_bind(i.started_at.map(micros))
                .push_bind(i.finished_at.map(micros))
                .push_bind((*detail).clone());
        });
        q.build()
            .execute(&mut *conn)
            .await
            .map_err(|e| plan::refused(e, || format!("operation {id} lists a target twice")))?;
    }
    Ok(())
}

#[async_trait]
impl OperationStore for PgStore {
    async fn create_operation(&self, new: NewOperation, actor: &Actor) -> Result<Operation> {
        let id = new.id;
        let detail = plan::detail_json("operations", new.update.as_ref())?;
        let mut tx = self.pool.begin().await?;
        let r: Result<Operation> = async {
            sqlx::query(
                "INSERT INTO operations (id, action, selector, state, created_by, created_at, skipped, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id.0)
            .bind(&new.action)
            .bind(&new.selector)
            .bind(new.state.as_str())
            .bind(actor.to_string())
            .bind(micros(new.created_at))
            .bind(json!(new.skipped))
            .bind(detail)
            .execute(&mut *tx)
            .await
            .map_err(|e| plan::refused(e, || format!("operation {id} already exists")))?;
            insert_items(&mut tx, id, &new.items).await?;
            let op = load(&mut tx, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            insert_events(&mut tx, &[plan::created_event(&op, actor)]).await?;
            Ok(op)
        }
        .await;
        finish(tx, r).await
    }

    async fn update_operation_item(
        &self,
        id: OperationId,
        target: &str,
        update: ItemUpdate,
        actor: &Actor,
    ) -> Result<OperationItem> {
        let mut tx = self.pool.begin().await?;
        let r: Result<OperationItem> = async {
            let row = sqlx::query(
                "SELECT i.*, o.action FROM operation_items i JOIN operations o ON o.id = i.operation_id \
                 WHERE i.operation_id = $1 AND i.target = $2 FOR NO KEY UPDATE OF i",
            )
            .bind(id.0)
            .bind(target)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("item {target} of operation {id}")))?;
            let action: String = row.try_get("action")?;
            let (_, item) = rows::operation_item(&row)?;
            let (item, evs) = plan::update_item(id, &action, &item, update, actor)?;
            store_item(&mut tx, id, &item).await?;
            insert_events(&mut tx, &evs).await?;
            Ok(item)
        }
        .await;
        finish(tx, r).await
    }

    async fn finish_operation(
        &self,
        id: OperationId,
        state: OperationState,
        now: DateTime<Utc>,
    ) -> Result<Operation> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<Operation> = async {
            // Lock the operation first: a concurrent finish waits and then sees it ended.
            sqlx::query("SELECT 1 FROM operations WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            let mut op = load(&mut tx, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            plan::check_finish(&op, state)?;
            sqlx::query("UPDATE operations SET state = $1, finished_at = $2 WHERE id = $3")
                .bind(state.as_str())
                .bind(now)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            op.state = state;
            op.finished_at = Some(now);
            let ev = plan::finished_event(&op, now);
            insert_events(&mut tx, &[ev]).await?;
            Ok(op)
        }
        .await;
        finish(tx, r).await
    }

    async fn get_operation(&self, id: OperationId) -> Result<Option<Operation>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let r = load(&mut tx, id).await;
        finish(tx, r).await
    }

    async fn find_operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>> {
        // One snapshot: the items belong to exactly the operations listed.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let r: Result<Vec<Operation>> = async {
            let found = sqlx::query(FIND_OPERATIONS)
                .bind(filter.under.as_deref())
                .bind(i64::from(filter.limit.min(MAX_OPERATIONS)))
                .fetch_all(&mut *tx)
                .await?;
            let mut ops = found
                .iter()
                .map(rows::operation)
                .collect::<Result<Vec<_>>>()?;
            attach_all(&mut tx, &mut ops).await?;
            Ok(ops)
        }
        .await;
        finish(tx, r).await
    }

    async fn transition_operation(
        &self,
        id: OperationId,
        change: OperationTransition,
        actor: &Actor,
    ) -> Result<Operation> {
        let mut tx = self.pool.begin().await?;
        let r: Result<Operation> = async {
            // Lock the operation first: a concurrent change waits and then sees this one.
            sqlx::query("SELECT 1 FROM operations WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            let op = load(&mut tx, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            let (op, ev) = plan::transition(&op, change, actor)?;
            sqlx::query(
                "UPDATE operations SET state = $1, finished_at = $2, detail = $3 WHERE id = $4",
            )
            .bind(op.state.as_str())
            .bind(op.finished_at)
            .bind(plan::detail_json("operations", op.update.as_ref())?)
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
            insert_events(&mut tx, &[ev]).await?;
            Ok(op)
        }
        .await;
        finish(tx, r).await
    }

    async fn unfinished_operations(&self, action: &str) -> Result<Vec<Operation>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let r: Result<Vec<Operation>> = async {
            let sql = format!(
                "SELECT * FROM operations WHERE action = $1 AND state NOT IN ({}) \
                 ORDER BY created_at, id",
                plan::TERMINAL_STATES_SQL
            );
            let found = sqlx::query(&sql).bind(action).fetch_all(&mut *tx).await?;
            let mut ops = found
                .iter()
                .map(rows::operation)
                .collect::<Result<Vec<_>>>()?;
            attach_all(&mut tx, &mut ops).await?;
            Ok(ops)
        }
        .await;
        finish(tx, r).await
    }

    async fn fail_interrupted_operations(&self, now: DateTime<Utc>) -> Result<u64> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<u64> = async {
            let found: Vec<(Uuid, String)> = sqlx::query_as(
                "UPDATE operations SET state = 'failed', finished_at = $1 \
                 WHERE state = 'running' AND action <> $2 RETURNING id, action",
            )
            .bind(now)
            .bind(plan::RESUMED_ACTION)
            .fetch_all(&mut *tx)
            .await?;
            let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
            let ops: Vec<(OperationId, String)> = found
                .into_iter()
                .map(|(id, action)| (OperationId(id), action))
                .collect();
            let returned = sqlx::query(
                "UPDATE operation_items SET state = 'failed', message = $1, finished_at = $2 \
                 WHERE state IN ('queued', 'running') AND operation_id = ANY($3) RETURNING *",
            )
            .bind(INTERRUPTED_MESSAGE)
            .bind(now)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
            let mut items = Vec::with_capacity(returned.len());
            for row in &returned {
                let position: i32 = row.try_get("position")?;
                let (op, item) = rows::operation_item(row)?;
                items.push((op, i64::from(position), item));
            }
            insert_events(&mut tx, &plan::interrupted_events(&ops, items, now)).await?;
            Ok(ops.len() as u64)
        }
        .await;
        finish(tx, r).await
    }
}

/// The newest operations, only those with an item at or below `$1` when it is not NULL.
const FIND_OPERATIONS: &str = "SELECT * FROM operations WHERE $1::text IS NULL OR id IN \
     (SELECT operation_id FROM operation_items WHERE target = $1::text \
      OR substr(target, 1, length($1::text) + 1) = $1::text || '/') \
     ORDER BY created_at DESC, id DESC LIMIT $2";
