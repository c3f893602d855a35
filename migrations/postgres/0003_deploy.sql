-- Agent delivery (PostgreSQL). Paired with migrations/sqlite/0003_deploy.sql.

-- Hosts the server scans through `pct exec` without an agent (their credential can never
-- authenticate), and the user an agent runs as.
ALTER TABLE hosts ADD COLUMN agentless BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE hosts ADD COLUMN run_as TEXT NOT NULL DEFAULT '';

-- A deploy token enrols one guest: the host registering with it is attached to that guest.
ALTER TABLE registration_tokens ADD COLUMN guest_id UUID REFERENCES guests(id) ON DELETE CASCADE;
CREATE INDEX registration_tokens_guest ON registration_tokens (guest_id);

-- SSH host keys pinned on first use, by the `host:port` the server connects to.
CREATE TABLE ssh_host_keys (
    address     TEXT PRIMARY KEY NOT NULL,
    key_type    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL
);

-- Bulk operations addressed by selector (agent deploy, uninstall), one item per guest.
CREATE TABLE operations (
    id          UUID PRIMARY KEY NOT NULL,
    action      TEXT NOT NULL,
    selector    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'partial', 'failed')),
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    skipped     JSONB NOT NULL DEFAULT '[]'       -- array of {id, reason}
);
CREATE INDEX operations_created ON operations (created_at);
CREATE INDEX operations_state ON operations (state);

CREATE TABLE operation_items (
    operation_id UUID NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
    target       TEXT NOT NULL,                   -- path id of the guest
    position     INTEGER NOT NULL CHECK (position >= 0),
    guest_id     UUID REFERENCES guests(id) ON DELETE SET NULL,
    node         TEXT NOT NULL,
    vmid         BIGINT NOT NULL CHECK (vmid >= 0),
    route        TEXT NOT NULL CHECK (route IN ('pct', 'ssh')),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    step         TEXT,
    outcome      TEXT CHECK (outcome IN ('installed', 'upgraded', 'repaired', 'unchanged',
                     'uninstalled', 'absent')),
    message      TEXT,
    host_id      UUID REFERENCES hosts(id) ON DELETE SET NULL,
    run_as       TEXT,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    PRIMARY KEY (operation_id, target),
    UNIQUE (operation_id, position)
);
CREATE INDEX operation_items_guest ON operation_items (guest_id);
CREATE INDEX operation_items_host ON operation_items (host_id);
