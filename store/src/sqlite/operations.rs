//! Bulk operations ([`OperationStore`]) on SQLite: an operation row and one row per item,
//! updated as the server works through the items. Writes run in `BEGIN IMMEDIATE`; the
//! rules (what an update changes, which events follow) live in [`crate::operation_plan`].

use super::{insert_events, placeholders, rows, ts, SqliteStore};
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
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Sqlite};

/// Items per multi-row INSERT (16 binds each, below SQLite's 32,766).
const ITEM_CHUNK: usize = 1_000;
/// Operation ids per `IN (…)` list.
const ID_CHUNK: usize = 500;

/// A detail column's text: the JSON of `detail`, or NULL.
fn detail_text<T: serde::Serialize>(
    table: &'static str,
    detail: Option<&T>,
) -> Result<Option<String>> {
    Ok(plan::detail_json(table, detail)?.map(|v| v.to_string()))
}

/// The items of `ops` (one query per [`ID_CHUNK`] operations, no N+1), put under them in
/// position order.
async fn attach_all(conn: &mut SqliteConnection, ops: &mut [Operation]) -> Result<()> {
    let ids: Vec<String> = ops.iter().map(|o| o.id.to_string()).collect();
    let mut items = Vec::new();
    for chunk in ids.chunks(ID_CHUNK) {
        let sql = format!(
            "SELECT * FROM operation_items WHERE operation_id IN ({}) ORDER BY operation_id, position",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            items.push(rows::operation_item(&row)?);
        }
    }
    plan::attach_items(ops, items);
    Ok(())
}

/// The operation with its items, inside a transaction.
async fn load(conn: &mut SqliteConnection, id: OperationId) -> Result<Option<Operation>> {
    let Some(row) = sqlx::query("SELECT * FROM operations WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut ops = vec![rows::operation(&row)?];
    let items =
        sqlx::query("SELECT * FROM operation_items WHERE operation_id = ? ORDER BY position")
            .bind(id.to_string())
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
async fn store_item(
    conn: &mut SqliteConnection,
    id: OperationId,
    item: &OperationItem,
) -> Result<()> {
    sqlx::query(
        "UPDATE operation_items SET state = ?, step = ?, outcome = ?, message = ?, host_id = ?, \
         run_as = ?, started_at = ?, finished_at = ?, detail = ? \
         WHERE operation_id = ? AND target = ?",
    )
    .bind(item.state.as_str())
    .bind(&item.step)
    .bind(item.outcome.map(|o| o.as_str()))
    .bind(&item.message)
    .bind(item.host_id.map(|h| h.to_string()))
    .bind(&item.run_as)
    .bind(item.started_at.map(ts))
    .bind(item.finished_at.map(ts))
    .bind(detail_text("operation_items", item.update.as_ref())?)
    .bind(id.to_string())
    .bind(&item.target)
    .execute(&mut *conn)
    .await
    .map_err(|e| plan::refused(e, String::new))?;
    Ok(())
}

#[async_trait]
impl OperationStore for SqliteStore {
    async fn create_operation(&self, new: NewOperation, actor: &Actor) -> Result<Operation> {
        let id = new.id;
        let detail = detail_text("operations", new.update.as_ref())?;
        let item_details = new
            .items
            .iter()
            .map(|i| detail_text("operation_items", i.update.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self.begin_immediate().await?;
        sqlx::query(
            "INSERT INTO operations (id, action, selector, state, created_by, created_at, skipped, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(&new.action)
        .bind(&new.selector)
        .bind(new.state.as_str())
        .bind(actor.to_string())
        .bind(ts(new.created_at))
        .bind(json!(new.skipped).to_string())
        .bind(detail)
        .execute(&mut *tx)
        .await
        .map_err(|e| plan::refused(e, || format!("operation {id} already exists")))?;
        let numbered: Vec<(usize, (&OperationItem, &Option<String>))> =
            new.items.iter().zip(&item_details).enumerate().collect();
        for chunk in numbered.chunks(ITEM_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO operation_items (operation_id, target, position, guest_id, node, vmid, route, \
                 state, step, outcome, message, host_id, run_as, started_at, finished_at, detail) ",
            );
            q.push_values(chunk, |mut b, (pos, (i, detail))| {
                b.push_bind(id.to_string())
                    .push_bind(i.target.clone())
                    .push_bind(*pos as i64)
                    .push_bind(i.guest_id.map(|g| g.to_string()))
                    .push_bind(i.node.clone())
                    .push_bind(i64::from(i.vmid))
                    .push_bind(i.route.as_str())
                    .push_bind(i.state.as_str())
                    .push_bind(i.step.clone())
                    .push_bind(i.outcome.map(|o| o.as_str()))
                    .push_bind(i.message.clone())
                    .push_bind(i.host_id.map(|h| h.to_string()))
                    .push_bind(i.run_as.clone())
                    .push_bind(i.started_at.map(ts))
                    .push_bind(i.finished_at.map(ts))
                    .push_bind((*detail).clone());
            });
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(|e| plan::refused(e, || format!("operation {id} lists a target twice")))?;
        }
        let op = load(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
        insert_events(&mut tx, &[plan::created_event(&op, actor)]).await?;
        tx.commit().await?;
        Ok(op)
    }

    async fn update_operation_item(
        &self,
        id: OperationId,
        target: &str,
        update: ItemUpdate,
        actor: &Actor,
    ) -> Result<OperationItem> {
        let mut tx = self.begin_immediate().await?;
        let row = sqlx::query(
            "SELECT i.*, o.action FROM operation_items i JOIN operations o ON o.id = i.operation_id \
             WHERE i.operation_id = ? AND i.target = ?",
        )
        .bind(id.to_string())
        .bind(target)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("item {target} of operation {id}")))?;
        let action = rows::text(&row, "operations", "action")?;
        let (_, item) = rows::operation_item(&row)?;
        let (item, evs) = plan::update_item(id, &action, &item, update, actor)?;
        store_item(&mut tx, id, &item).await?;
        insert_events(&mut tx, &evs).await?;
        tx.commit().await?;
        Ok(item)
    }

    async fn finish_operation(
        &self,
        id: OperationId,
        state: OperationState,
        now: DateTime<Utc>,
    ) -> Result<Operation> {
        let now = micros(now);
        let mut tx = self.begin_immediate().await?;
        let mut op = load(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
        plan::check_finish(&op, state)?;
        sqlx::query("UPDATE operations SET state = ?, finished_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(ts(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        op.state = state;
        op.finished_at = Some(now);
        insert_events(&mut tx, &[plan::finished_event(&op, now)]).await?;
        tx.commit().await?;
        Ok(op)
    }

    async fn get_operation(&self, id: OperationId) -> Result<Option<Operation>> {
        let mut tx = self.pool.begin().await?;
        let op = load(&mut tx, id).await?;
        tx.commit().await?;
        Ok(op)
    }

    async fn find_operations(&self, filter: &OperationFilter) -> Result<Vec<Operation>> {
        // One read transaction: the items belong to exactly the operations listed.
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await?;
        Ok(ops)
    }

    async fn transition_operation(
        &self,
        id: OperationId,
        change: OperationTransition,
        actor: &Actor,
    ) -> Result<Operation> {
        let mut tx = self.begin_immediate().await?;
        let op = load(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
        let (op, ev) = plan::transition(&op, change, actor)?;
        sqlx::query("UPDATE operations SET state = ?, finished_at = ?, detail = ? WHERE id = ?")
            .bind(op.state.as_str())
            .bind(op.finished_at.map(ts))
            .bind(detail_text("operations", op.update.as_ref())?)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        insert_events(&mut tx, &[ev]).await?;
        tx.commit().await?;
        Ok(op)
    }

    async fn unfinished_operations(&self, action: &str) -> Result<Vec<Operation>> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "SELECT * FROM operations WHERE action = ? AND state NOT IN ({}) \
             ORDER BY created_at, id",
            plan::TERMINAL_STATES_SQL
        );
        let found = sqlx::query(&sql).bind(action).fetch_all(&mut *tx).await?;
        let mut ops = found
            .iter()
            .map(rows::operation)
            .collect::<Result<Vec<_>>>()?;
        attach_all(&mut tx, &mut ops).await?;
        tx.commit().await?;
        Ok(ops)
    }

    async fn fail_interrupted_operations(&self, now: DateTime<Utc>) -> Result<u64> {
        let now = micros(now);
        let mut tx = self.begin_immediate().await?;
        let found: Vec<(String, String)> = sqlx::query_as(
            "UPDATE operations SET state = 'failed', finished_at = ? \
             WHERE state = 'running' AND action <> ? RETURNING id, action",
        )
        .bind(ts(now))
        .bind(plan::RESUMED_ACTION)
        .fetch_all(&mut *tx)
        .await?;
        let ops = found
            .into_iter()
            .map(|(id, action)| Ok((rows::parse("operations", "id", &id)?, action)))
            .collect::<Result<Vec<(OperationId, String)>>>()?;
        let mut items = Vec::new();
        for chunk in ops.chunks(ID_CHUNK) {
            let sql = format!(
                "UPDATE operation_items SET state = 'failed', message = ?, finished_at = ? \
                 WHERE state IN ('queued', 'running') AND operation_id IN ({}) RETURNING *",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(INTERRUPTED_MESSAGE).bind(ts(now));
            for (id, _) in chunk {
                q = q.bind(id.to_string());
            }
            for row in q.fetch_all(&mut *tx).await? {
                let position = rows::int(&row, "operation_items", "position")?;
                let (op, item) = rows::operation_item(&row)?;
                items.push((op, position, item));
            }
        }
        insert_events(&mut tx, &plan::interrupted_events(&ops, items, now)).await?;
        tx.commit().await?;
        Ok(ops.len() as u64)
    }
}

/// The newest operations, only those with an item at or below `?1` when it is not NULL.
const FIND_OPERATIONS: &str = "SELECT * FROM operations WHERE ?1 IS NULL OR id IN \
     (SELECT operation_id FROM operation_items WHERE target = ?1 \
      OR substr(target, 1, length(?1) + 1) = ?1 || '/') \
     ORDER BY created_at DESC, id DESC LIMIT ?2";
