-- The Proxmox estate (SQLite). Paired with migrations/postgres/0002_inventory.sql.
-- Same conventions as 0001: ids are UUID strings, timestamps TEXT (UTC, microseconds,
-- `Z`), booleans INTEGER 0/1, JSON columns TEXT.

-- A PVE cluster (or standalone node) Canopy discovers; the API token secret is sealed
-- by the server before it gets here.
CREATE TABLE clusters (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL UNIQUE,
    endpoints           TEXT NOT NULL,            -- JSON array of https://host:port origins
    token_id            TEXT NOT NULL,
    token_secret_sealed TEXT NOT NULL,
    fingerprints        TEXT NOT NULL,            -- JSON array of pinned SHA-256 fingerprints
    ca_pem              TEXT,
    interval_secs       INTEGER NOT NULL CHECK (interval_secs >= 0),
    standalone          INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    last_discovery_at   TEXT,
    last_error          TEXT
);

-- Nodes as the last discovery pass saw them, with the node's own apt updates cached.
CREATE TABLE pve_nodes (
    cluster_id     TEXT NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,
    ip             TEXT,
    error          TEXT,
    updated_at     TEXT NOT NULL,
    apt_updates    TEXT,                          -- JSON array, as PVE lists them
    apt_checked_at TEXT,
    apt_error      TEXT,
    PRIMARY KEY (cluster_id, name)
);

-- Guests by their stable identity (cluster, vmid): a migration to another node keeps
-- the row, its id, its attached host and its history.
CREATE TABLE guests (
    id          TEXT PRIMARY KEY NOT NULL,
    cluster_id  TEXT NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('lxc', 'vm')),
    vmid        INTEGER NOT NULL CHECK (vmid >= 0),
    node        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    template    INTEGER NOT NULL DEFAULT 0,
    tags        TEXT NOT NULL DEFAULT '[]',       -- JSON array of strings
    os          TEXT,
    host_id     TEXT REFERENCES hosts(id) ON DELETE SET NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    UNIQUE (cluster_id, vmid)
);
CREATE INDEX guests_host ON guests (host_id);
-- The hostname auto-attach matches guests and hosts by name.
CREATE INDEX guests_name ON guests (name);
CREATE INDEX hosts_hostname ON hosts (hostname);

-- Events about a guest carry its id (no foreign key: the log outlives the guest).
ALTER TABLE events ADD COLUMN guest_id TEXT;
CREATE INDEX events_guest ON events (guest_id, seq);
