-- Accounts (PostgreSQL). Paired with migrations/sqlite/0005_accounts.sql.

-- Users: a disabled user is refused at login, at refresh and on every request. The
-- session epoch is carried in each access JWT and compared with this column on every
-- request (one read by primary key); disabling, a role or password change and "log out
-- everywhere" bump it, so that access tokens issued before stop working at once.
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

-- Registration tokens: when and by whom a token was revoked (`revoked` stays the flag).
ALTER TABLE registration_tokens ADD COLUMN revoked_at TIMESTAMPTZ;
ALTER TABLE registration_tokens ADD COLUMN revoked_by TEXT;
