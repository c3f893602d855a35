-- The Proxmox estate (PostgreSQL). Paired with migrations/sqlite/0002_inventory.sql.

-- A PVE cluster (or standalone node) Canopy discovers; the API token secret is sealed
-- by the server before it gets here.
CREATE TABLE clusters (
    id                  UUID PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL UNIQUE,
    endpoints           JSONB NOT NULL,           -- array of https://host:port origins
    token_id            TEXT NOT NULL,
    token_secret_sealed TEXT NOT NULL,
    fingerprints        JSONB NOT NULL,           -- array of pinned SHA-256 fingerprints
    ca_pem              TEXT,
    interval_secs       BIGINT NOT NULL CHECK (interval_secs >= 0),
    standalone          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TIMESTAMPTZ NOT NULL,
    last_discovery_at   TIMESTAMPTZ,
    last_error          TEXT
);

-- Nodes as the last discovery pass saw them, with the node's own apt updates cached.
CREATE TABLE pve_nodes (
    cluster_id     UUID NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,
    ip             TEXT,
    error          TEXT,
    updated_at     TIMESTAMPTZ NOT NULL,
    apt_updates    JSONB,                         -- array, as PVE lists them
    apt_checked_at TIMESTAMPTZ,
    apt_error      TEXT,
    PRIMARY KEY (cluster_id, name)
);

-- Guests by their stable identity (cluster, vmid): a migration to another node keeps
-- the row, its id, its attached host and its history.
CREATE TABLE guests (
    id          UUID PRIMARY KEY NOT NULL,
    cluster_id  UUID NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('lxc', 'vm')),
    vmid        BIGINT NOT NULL CHECK (vmid >= 0),
    node        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    template    BOOLEAN NOT NULL DEFAULT FALSE,
    tags        JSONB NOT NULL DEFAULT '[]',      -- array of strings
    os          TEXT,
    host_id     UUID REFERENCES hosts(id) ON DELETE SET NULL,
    first_seen  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    UNIQUE (cluster_id, vmid)
);
CREATE INDEX guests_host ON guests (host_id);
-- The hostname auto-attach matches guests and hosts by name.
CREATE INDEX guests_name ON guests (name);
CREATE INDEX hosts_hostname ON hosts (hostname);

-- Events about a guest carry its id (no foreign key: the log outlives the guest).
ALTER TABLE events ADD COLUMN guest_id UUID;
CREATE INDEX events_guest ON events (guest_id, seq);
