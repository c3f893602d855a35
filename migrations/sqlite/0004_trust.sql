-- Trustworthy core (SQLite). Paired with migrations/postgres/0004_trust.sql.
-- Same conventions as 0001: ids are UUID strings, timestamps TEXT (UTC, microseconds,
-- `Z`), booleans INTEGER 0/1, JSON columns TEXT.
--
-- SQLite cannot drop a UNIQUE or change a CHECK constraint in place, so `hosts` and
-- `commands` are rebuilt (create new, copy, drop old, rename; sqlite.org/lang_altertable.html
-- "other kinds of table schema changes"). The store runs migrations with foreign-key
-- enforcement off, so dropping the old table cascades nothing; the guard at the end fails
-- this migration (and rolls it back) if any reference no longer resolves.

-- Hosts: the machine-id is a fact, not a key (clones of one template share it); a host
-- is its server-issued id plus its credential. Lifecycle state, and the agent's last check
-- of its package databases.
CREATE TABLE hosts_new (
    id                    TEXT PRIMARY KEY NOT NULL,
    hostname              TEXT NOT NULL,
    machine_id            TEXT NOT NULL,
    os_id                 TEXT NOT NULL DEFAULT '',
    os_pretty             TEXT NOT NULL DEFAULT '',
    kernel                TEXT NOT NULL DEFAULT '',
    arch                  TEXT NOT NULL DEFAULT '',
    agent_version         TEXT NOT NULL DEFAULT '',
    read_only             INTEGER NOT NULL DEFAULT 0,
    credential_hash       TEXT NOT NULL,
    registration_token_id TEXT REFERENCES registration_tokens(id) ON DELETE SET NULL,
    report_hash           TEXT,
    reboot_required       INTEGER NOT NULL DEFAULT 0,
    last_seen             TEXT,
    last_report           TEXT,
    registered_at         TEXT NOT NULL,
    agentless             INTEGER NOT NULL DEFAULT 0,
    run_as                TEXT NOT NULL DEFAULT '',
    state                 TEXT NOT NULL DEFAULT 'active'
                              CHECK (state IN ('active', 'archived', 'deleted')),
    retired_at            TEXT,
    package_db            TEXT NOT NULL DEFAULT '[]'    -- JSON array of PackageDbIssue
);
INSERT INTO hosts_new (id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version,
    read_only, credential_hash, registration_token_id, report_hash, reboot_required, last_seen,
    last_report, registered_at, agentless, run_as)
SELECT id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version,
    read_only, credential_hash, registration_token_id, report_hash, reboot_required, last_seen,
    last_report, registered_at, agentless, run_as
FROM hosts;
DROP TABLE hosts;
ALTER TABLE hosts_new RENAME TO hosts;
CREATE INDEX hosts_last_seen ON hosts (last_seen);
CREATE INDEX hosts_hostname ON hosts (hostname);
CREATE INDEX hosts_machine_id ON hosts (machine_id);

-- Commands: `repair` (dpkg --configure -a) joins the kinds; a running command past its
-- deadline is marked overdue (never killed), its agent's heartbeats tell it is still at work,
-- and a result after the deadline is recorded as late.
CREATE TABLE commands_new (
    id             TEXT PRIMARY KEY NOT NULL,
    host_id        TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('scan', 'dry_run', 'install', 'repair')),
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
    deadline, result, result_hash, error)
SELECT id, host_id, kind, spec, status, correlation_id, caused_by,
    retried_from, confirmed_by, timeout_secs, created_at, sent_at, started_at, finished_at,
    deadline, result, result_hash, error
FROM commands;
DROP TABLE commands;
ALTER TABLE commands_new RENAME TO commands;
CREATE INDEX commands_claim ON commands (host_id, status, created_at);
CREATE INDEX commands_deadline ON commands (status, deadline);
CREATE INDEX commands_correlation ON commands (correlation_id);

-- The guard: every foreign key still resolves, or this migration fails and rolls back.
CREATE TEMP TABLE migration_0004_guard (violations INTEGER NOT NULL CHECK (violations = 0));
INSERT INTO migration_0004_guard SELECT count(*) FROM pragma_foreign_key_check;
DROP TABLE migration_0004_guard;
