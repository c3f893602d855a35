-- Trustworthy core (PostgreSQL). Paired with migrations/sqlite/0004_trust.sql.

-- Hosts: the machine-id is a fact, not a key (clones of one template share it); a host
-- is its server-issued id plus its credential. Lifecycle state, and the agent's last check
-- of its package databases.
ALTER TABLE hosts DROP CONSTRAINT hosts_machine_id_key;
CREATE INDEX hosts_machine_id ON hosts (machine_id);
ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'archived', 'deleted'));
ALTER TABLE hosts ADD COLUMN retired_at TIMESTAMPTZ;
ALTER TABLE hosts ADD COLUMN package_db JSONB NOT NULL DEFAULT '[]';

-- Commands: `repair` (dpkg --configure -a) joins the kinds; a running command past its
-- deadline is marked overdue (never killed), its agent's heartbeats tell it is still at work,
-- and a result after the deadline is recorded as late.
ALTER TABLE commands DROP CONSTRAINT commands_kind_check;
ALTER TABLE commands ADD CONSTRAINT commands_kind_check
    CHECK (kind IN ('scan', 'dry_run', 'install', 'repair'));
ALTER TABLE commands ADD COLUMN overdue_at TIMESTAMPTZ;
ALTER TABLE commands ADD COLUMN heartbeat_at TIMESTAMPTZ;
ALTER TABLE commands ADD COLUMN late BOOLEAN NOT NULL DEFAULT FALSE;
