-- Agent delivery (SQLite). Paired with migrations/postgres/0003_deploy.sql.
-- Same conventions as 0001: ids are UUID strings, timestamps TEXT (UTC, microseconds,
-- `Z`), booleans INTEGER 0/1, JSON columns TEXT.

-- Hosts the server scans through `pct exec` without an agent (their credential can never
-- authenticate), and the user an agent runs as.
ALTER TABLE hosts ADD COLUMN agentless INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN run_as TEXT NOT NULL DEFAULT '';

-- A deploy token enrols one guest: the host registering with it is attached to that guest.
ALTER TABLE registration_tokens ADD COLUMN guest_id TEXT REFERENCES guests(id) ON DELETE CASCADE;
CREATE INDEX registration_tokens_guest ON registration_tokens (guest_id);

-- SSH host keys pinned on first use, by the `host:port` the server connects to.
CREATE TABLE ssh_host_keys (
    address     TEXT PRIMARY KEY NOT NULL,
    key_type    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  TEXT NOT NULL
);

-- Bulk operations addressed by selector (agent deploy, uninstall), one item per guest.
CREATE TABLE operations (
    id          TEXT PRIMARY KEY NOT NULL,
    action      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'partial', 'failed')),
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    skipped     TEXT NOT NULL DEFAULT '[]'        -- JSON array of {id, reason}
);
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_state ON operations (state);

CREATE TABLE operation_items (
    operation_id TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
    target       TEXT NOT NULL,                   -- path id of the guest
    position     INTEGER NOT NULL CHECK (position >= 0),
    guest_id     TEXT REFERENCES guests(id) ON DELETE SET NULL,
    node         TEXT NOT NULL,
    vmid         INTEGER NOT NULL CHECK (vmid >= 0),
    route        TEXT NOT NULL CHECK (route IN ('pct', 'ssh')),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    step         TEXT,
    outcome      TEXT CHECK (outcome IN ('installed', 'upgraded', 'repaired', 'unchanged',
                     'uninstalled', 'absent')),
    message      TEXT,
    host_id      TEXT REFERENCES hosts(id) ON DELETE SET NULL,
    run_as       TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    PRIMARY KEY (operation_id, target),
    UNIQUE (operation_id, position)
);
CREATE INDEX operation_items_guest ON operation_items (guest_id);
CREATE INDEX operation_items_host ON operation_items (host_id);
