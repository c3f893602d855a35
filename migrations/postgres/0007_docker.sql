-- Docker inside guests (PostgreSQL). Paired with migrations/sqlite/0007_docker.sql.
-- Image updates themselves are `updates` rows of manager `docker` (0001 allows it):
-- `package` the image reference, versions the local and remote digests.

-- The containers each host's agent last reported (`ScanReport::containers`); a report with
-- containers replaces the host's rows, one without leaves them. `detail` is the
-- api-types `Container`.
CREATE TABLE docker_containers (
    host_id    UUID NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    image      TEXT NOT NULL,
    detail     JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host_id, name)
);
CREATE INDEX docker_containers_image ON docker_containers (image);

-- The last registry check of each (registry, repository, tag, platform), shared by the whole
-- fleet; `detail` is the api-types `ImageCheck` (digests, status, error).
CREATE TABLE image_checks (
    registry   TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    platform   TEXT NOT NULL,
    detail     JSONB NOT NULL,
    checked_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry, repository, tag, platform)
);

-- Per registry: its credentials (the secret sealed like PVE token secrets) and what it last
-- said about its rate limit (`status`: the api-types `RegistryStatus`).
CREATE TABLE registries (
    registry      TEXT PRIMARY KEY NOT NULL,   -- as in references: docker.io, ghcr.io, host:port
    auth_kind     TEXT CHECK (auth_kind IN ('basic', 'token')),
    username      TEXT,
    secret_sealed TEXT,
    status        JSONB,
    updated_at    TIMESTAMPTZ NOT NULL,
    CHECK ((auth_kind IS NULL) = (secret_sealed IS NULL))
);
