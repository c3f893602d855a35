-- Bulk update operations (PostgreSQL). Paired with migrations/sqlite/0006_update_operations.sql.

-- Operations: an update operation plans, waits for its approval, may pause and be cancelled;
-- `detail` is its UpdateOperationDetail (options, fingerprint, approval, pause reason,
-- per-node totals), NULL for deploys and uninstalls.
ALTER TABLE operations DROP CONSTRAINT operations_state_check;
ALTER TABLE operations ADD CONSTRAINT operations_state_check
    CHECK (state IN ('planning', 'awaiting_approval', 'running', 'paused', 'cancelling',
        'succeeded', 'partial', 'failed', 'cancelled'));
ALTER TABLE operations ADD COLUMN detail JSONB;

-- Items: one that never started because its operation was cancelled ends `cancelled`; an
-- updated guest ends `updated` (or `rolled_back` to its snapshot); `detail` is its
-- UpdateItemDetail (plan, snapshot, commands, health, steps), NULL for deploys.
ALTER TABLE operation_items DROP CONSTRAINT operation_items_state_check;
ALTER TABLE operation_items ADD CONSTRAINT operation_items_state_check
    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE operation_items DROP CONSTRAINT operation_items_outcome_check;
ALTER TABLE operation_items ADD CONSTRAINT operation_items_outcome_check
    CHECK (outcome IN ('installed', 'upgraded', 'repaired', 'unchanged', 'uninstalled',
        'absent', 'updated', 'rolled_back'));
ALTER TABLE operation_items ADD COLUMN detail JSONB;

-- Commands: `health` (read-only: failed units, reboot flag, services to restart, the
-- operation's checks) joins the kinds.
ALTER TABLE commands DROP CONSTRAINT commands_kind_check;
ALTER TABLE commands ADD CONSTRAINT commands_kind_check
    CHECK (kind IN ('scan', 'dry_run', 'install', 'repair', 'health'));
