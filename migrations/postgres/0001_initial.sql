-- Canopy initial schema (PostgreSQL). Paired with migrations/sqlite/0001_initial.sql.

CREATE TABLE users (
    id            UUID PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    user_id      UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE registration_tokens (
    id          UUID PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL DEFAULT '',
    seats       INTEGER NOT NULL CHECK (seats >= 0),
    seats_used  INTEGER NOT NULL DEFAULT 0 CHECK (seats_used >= 0),
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE hosts (
    id                    UUID PRIMARY KEY NOT NULL,
    hostname              TEXT NOT NULL,
    machine_id            TEXT NOT NULL UNIQUE,
    os_id                 TEXT NOT NULL DEFAULT '',
    os_pretty             TEXT NOT NULL DEFAULT '',
    kernel                TEXT NOT NULL DEFAULT '',
    arch                  TEXT NOT NULL DEFAULT '',
    agent_version         TEXT NOT NULL DEFAULT '',
    read_only             BOOLEAN NOT NULL DEFAULT FALSE,
    credential_hash       TEXT NOT NULL,
    registration_token_id UUID REFERENCES registration_tokens(id) ON DELETE SET NULL,
    report_hash           TEXT,
    reboot_required       BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen             TIMESTAMPTZ,
    last_report           TIMESTAMPTZ,
    registered_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX hosts_last_seen ON hosts (last_seen);

CREATE TABLE updates (
    id                UUID PRIMARY KEY NOT NULL,
    host_id           UUID NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    manager           TEXT NOT NULL CHECK (manager IN ('apt', 'dnf', 'apk', 'docker')),
    package           TEXT NOT NULL CHECK (length(package) BETWEEN 1 AND 512),
    arch              TEXT NOT NULL DEFAULT '',
    current_version   TEXT NOT NULL,
    available_version TEXT NOT NULL CHECK (length(available_version) BETWEEN 1 AND 256),
    source            TEXT,
    severity          TEXT NOT NULL CHECK (severity IN ('low', 'normal', 'important', 'security')),
    held              BOOLEAN NOT NULL DEFAULT FALSE,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'dry_run',
                          'awaiting_confirmation', 'installing', 'installed', 'failed', 'reconciled')),
    fingerprint       TEXT,
    correlation_id    UUID,
    command_id        UUID,
    first_seen        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    closed_at         TIMESTAMPTZ
);
-- One open row per (host, manager, package, arch); closed rows are history.
CREATE UNIQUE INDEX updates_open_key ON updates (host_id, manager, package, arch)
    WHERE status NOT IN ('installed', 'reconciled');
CREATE INDEX updates_host_status ON updates (host_id, status);
CREATE INDEX updates_status_severity ON updates (status, severity);
CREATE INDEX updates_command ON updates (command_id) WHERE command_id IS NOT NULL;

CREATE TABLE commands (
    id             UUID PRIMARY KEY NOT NULL,
    host_id        UUID NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('scan', 'dry_run', 'install')),
    spec           JSONB NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'running', 'completed',
                       'failed', 'timed_out', 'cancelled')),
    correlation_id UUID NOT NULL,
    caused_by      UUID REFERENCES commands(id) ON DELETE SET NULL,
    retried_from   UUID REFERENCES commands(id) ON DELETE SET NULL,
    confirmed_by   UUID REFERENCES commands(id) ON DELETE SET NULL,
    timeout_secs   INTEGER NOT NULL CHECK (timeout_secs > 0),
    created_at     TIMESTAMPTZ NOT NULL,
    sent_at        TIMESTAMPTZ,
    started_at     TIMESTAMPTZ,
    finished_at    TIMESTAMPTZ,
    deadline       TIMESTAMPTZ,
    result         JSONB,
    result_hash    TEXT,
    error          TEXT
);
-- The agent's claim: pending commands of one host, oldest first.
CREATE INDEX commands_claim ON commands (host_id, status, created_at);
-- The timeout sweep across all hosts (seed 004, F-B1-5).
CREATE INDEX commands_deadline ON commands (status, deadline);
CREATE INDEX commands_correlation ON commands (correlation_id);

CREATE TABLE update_version_history (
    id              UUID PRIMARY KEY NOT NULL,
    host_id         UUID NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    update_id       UUID NOT NULL REFERENCES updates(id) ON DELETE CASCADE,
    manager         TEXT NOT NULL,
    package         TEXT NOT NULL,
    from_version    TEXT NOT NULL,
    to_version      TEXT NOT NULL,
    command_id      UUID NOT NULL,
    correlation_id  UUID NOT NULL,
    installed_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX version_history_host ON update_version_history (host_id, installed_at);
CREATE INDEX version_history_time ON update_version_history (installed_at);

CREATE TABLE events (
    seq            BIGSERIAL PRIMARY KEY,
    id             UUID NOT NULL UNIQUE,
    ts             TIMESTAMPTZ NOT NULL,
    event_type     TEXT NOT NULL,
    subject        TEXT NOT NULL,
    host_id        UUID,
    actor          TEXT NOT NULL,
    correlation_id UUID,
    causation_id   UUID,
    payload        JSONB NOT NULL,
    checksum       TEXT NOT NULL
);
CREATE INDEX events_host ON events (host_id, seq);
CREATE INDEX events_correlation ON events (correlation_id, seq);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_type_ts ON events (event_type, ts);

-- Responses to requests that carried an Idempotency-Key, per actor.
CREATE TABLE idempotency_keys (
    actor        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response     JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (actor, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
