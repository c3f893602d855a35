-- Docker inside guests (SQLite). Paired with migrations/postgres/0007_docker.sql.
-- Same conventions as 0001: ids are UUID strings, timestamps TEXT (UTC, microseconds, `Z`),
-- JSON columns TEXT. Image updates themselves are `updates` rows of manager `docker`
-- (0001 allows it): `package` the image reference, versions the local and remote digests.

-- The containers each host's agent last reported (`ScanReport::containers`); a report with
-- containers replaces the host's rows, one without leaves them. `detail` is the
-- api-types `Container` as JSON.
CREATE TABLE docker_containers (
    host_id    TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    image      TEXT NOT NULL,
    detail     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (host_id, name)
);
CREATE INDEX docker_containers_image ON docker_containers (image);

-- The last registry check of each (registry, repository, tag, platform), shared by the whole
-- fleet; `detail` is the api-types `ImageCheck` as JSON (digests, status, error).
CREATE TABLE image_checks (
    registry   TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    platform   TEXT NOT NULL,
    detail     TEXT NOT NULL,
    checked_at TEXT NOT NULL,
    PRIMARY KEY (registry, repository, tag, platform)
);

-- Per registry: its credentials (the secret sealed like PVE token secrets) and what it last
-- said about its rate limit (`detail`: the api-types `RegistryStatus` as JSON).
CREATE TABLE registries (
    registry      TEXT PRIMARY KEY NOT NULL,   -- as in references: docker.io, ghcr.io, host:port
    auth_kind     TEXT CHECK (auth_kind IN ('basic', 'token')),
    username      TEXT,
    secret_sealed TEXT,
    status        TEXT,
    updated_at    TEXT NOT NULL,
    CHECK ((auth_kind IS NULL) = (secret_sealed IS NULL))
);
