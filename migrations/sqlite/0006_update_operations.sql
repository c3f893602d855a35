-- Bulk update operations (SQLite). Paired with migrations/postgres/0006_update_operations.sql.
-- Same conventions as 0001: ids are UUID strings, timestamps TEXT (UTC, microseconds,
-- `Z`), booleans INTEGER 0/1, JSON columns TEXT.
--
-- SQLite cannot change a CHECK constraint in place, so `operations`, `operation_items` and
-- `commands` are rebuilt (create new, copy, drop old, rename; sqlite.org/lang_altertable.html
-- "other kinds of table schema changes"), as 0004 did. The store runs migrations with
-- foreign-key enforcement off, so dropping the old tables cascades nothing; the guard at the
-- end fails this migration (and rolls it back) if any reference no longer resolves.

-- Operations: an update operation plans, waits for its approval, may pause and be cancelled;
-- `detail` is its UpdateOperationDetail as JSON (options, fingerprint, approval, pause
-- reason, per-node totals), NULL for deploys and uninstalls.
CREATE TABLE operations_new (
    id          TEXT PRIMARY KEY NOT NULL,
    action      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('planning', 'awaiting_approval', 'running',
                    'paused', 'cancelling', 'succeeded', 'partial', 'failed', 'cancelled')),
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    skipped     TEXT NOT NULL DEFAULT '[]',       -- JSON array of {id, reason}
    detail      TEXT                              -- JSON UpdateOperationDetail, NULL for deploys
);
INSERT INTO operations_new (id, action, selector, state, created_by, created_at, finished_at,
    skipped)
SELECT id, action, selector, state, created_by, created_at, finished_at, skipped
FROM operations;
DROP TABLE operations;
ALTER TABLE operations_new RENAME TO operations;
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_state ON operations (state);

-- Items: one that never started because its operation was cancelled ends `cancelled`; an
-- updated guest ends `updated` (or `rolled_back` to its snapshot); `detail` is its
-- UpdateItemDetail as JSON (plan, snapshot, commands, health, steps), NULL for deploys.
CREATE TABLE operation_items_new (
    operation_id TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
    target       TEXT NOT NULL,                   -- path id of the guest
    position     INTEGER NOT NULL CHECK (position >= 0),
    guest_id     TEXT REFERENCES guests(id) ON DELETE SET NULL,
    node         TEXT NOT NULL,
    vmid         INTEGER NOT NULL CHECK (vmid >= 0),
    route        TEXT NOT NULL CHECK (route IN ('pct', 'ssh')),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                     'cancelled')),
    step         TEXT,
    outcome      TEXT CHECK (outcome IN ('installed', 'upgraded', 'repaired', 'unchanged',
                     'uninstalled', 'absent', 'updated', 'rolled_back')),
    message      TEXT,
    host_id      TEXT REFERENCES hosts(id) ON DELETE SET NULL,
    run_as       TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    detail       TEXT,                            -- JSON UpdateItemDetail, NULL for deploys
    PRIMARY KEY (operation_id, target),
    UNIQUE (operation_id, position)
);
INSERT INTO operation_items_new (operation_id, target, position, guest_id, node, vmid, route,
    state, step, outcome, message, host_id, run_as, started_at, finished_at)
SELECT operation_id, target, position, guest_id, node, vmid, route,
    state, step, outcome, message, host_id, run_as, started_at, finished_at
FROM operation_items;
DROP TABLE operation_items;
ALTER TABLE operation_items_new RENAME TO operation_items;
CREATE INDEX operation_items_guest ON operation_items (guest_id);
CREATE INDEX operation_items_host ON operation_items (host_id);

-- Commands: `health` (read-only: failed units, reboot flag, services to restart, the
-- operation's checks) joins the kinds.
CREATE TABLE commands_new (
    id             TEXT PRIMARY KEY NOT NULL,
    host_id        TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('scan', 'dry_run', 'install', 'repair',
                       'health')),
    spec           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'running', 'completed',
                       'failed', 'timed_out', 'cancelled')),
    correlation_id TEXT NOT NULL,
    caused_by      TEXT REFERENCES commands(id) ON DELETE SET NULL,
    retried_from   TEXT REFERENCES commands(id) ON DELETE SET NULL,
    confirmed_by   TEXT REFERENCES commands(id) ON DELETE SET NULL,
    timeout_secs   INTEGER NOT NULL CHECK (timeout_secs > 0),
    created_at     TEXT NOT NULL,
    sent_at        TEXT,
    started_at     TEXT,
    finished_at    TEXT,
    deadline       TEXT,
    result         TEXT,
    result_hash    TEXT,
    error          TEXT,
    overdue_at     TEXT,
    heartbeat_at   TEXT,
    late           INTEGER NOT NULL DEFAULT 0
);
INSERT INTO commands_new (id, host_id, kind, spec, status, correlation_id, caused_by,
    retried_from, confirmed_by, timeout_secs, created_at, sent_at, started_at, finished_at,
    deadline, result, result_hash, error, overdue_at, heartbeat_at, late)
SELECT id, host_id, kind, spec, status, correlation_id, caused_by,
    retried_from, confirmed_by, timeout_secs, created_at, sent_at, started_at, finished_at,
    deadline, result, result_hash, error, overdue_at, heartbeat_at, late
FROM commands;
DROP TABLE commands;
ALTER TABLE commands_new RENAME TO commands;
CREATE INDEX commands_claim ON commands (host_id, status, created_at);
CREATE INDEX commands_deadline ON commands (status, deadline);
CREATE INDEX commands_correlation ON commands (correlation_id);

-- The guard: every foreign key still resolves, or this migration fails and rolls back.
CREATE TEMP TABLE migration_0006_guard (violations INTEGER NOT NULL CHECK (violations = 0));
INSERT INTO migration_0006_guard SELECT count(*) FROM pragma_foreign_key_check;
DROP TABLE migration_0006_guard;
