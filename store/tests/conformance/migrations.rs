//! Migrations: a fresh database gets all of them, re-opening is a no-op, an older
//! database is brought forward one step at a time, and a database that does not match
//! this binary's migrations is refused.

use super::fixture::{applied, apply_first, empty, exec, Backend, Fresh};
use canopy_api_types::auth::Role;
use canopy_store::{known_migrations, Actor};

fn expected(backend: Backend) -> Vec<(i64, String, bool)> {
    known_migrations(backend.name())
        .into_iter()
        .map(|(v, d)| (v, d, true))
        .collect()
}

pub async fn fresh_database_gets_every_migration_and_reopen_is_noop(fresh: &Fresh) {
    let backend = fresh.db.backend;
    assert!(!known_migrations(backend.name()).is_empty());
    assert_eq!(applied(&fresh.db).await, expected(backend));
    fresh
        .store
        .create_user("kept", "h", Role::Viewer, &Actor::System)
        .await
        .unwrap();
    let again = canopy_store::open(&fresh.db.url).await.expect("re-open");
    assert_eq!(
        applied(&fresh.db).await,
        expected(backend),
        "re-open applies nothing"
    );
    assert!(again.user_by_name("kept").await.unwrap().is_some());
    again.ping().await.unwrap();
}

pub async fn each_migration_applies_on_top_of_the_previous_ones(fresh: &Fresh) {
    let backend = fresh.db.backend;
    let n = known_migrations(backend.name()).len();
    for k in 0..n {
        let db = empty(backend).await.expect("database");
        apply_first(&db, k).await;
        assert_eq!(applied(&db).await.len(), k);
        let store = canopy_store::open(&db.url)
            .await
            .unwrap_or_else(|e| panic!("migrating from {k} of {n} migrations: {e}"));
        store.ping().await.unwrap();
        assert_eq!(applied(&db).await, expected(backend));
    }
}

pub async fn changed_migration_is_refused(fresh: &Fresh) {
    let sql = match fresh.db.backend {
        Backend::Sqlite => "UPDATE _sqlx_migrations SET checksum = X'00'",
        Backend::Postgres => "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea",
    };
    exec(&fresh.db, sql).await.unwrap();
    let Err(err) = canopy_store::open(&fresh.db.url).await else {
        panic!("a changed migration must be refused");
    };
    assert!(err.to_string().contains("migrat"), "{err}");
}

pub async fn unknown_migration_is_refused(fresh: &Fresh) {
    let sql = match fresh.db.backend {
        Backend::Sqlite => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999999, 'from the future', 1, X'00', 0)"
        }
        Backend::Postgres => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999999, 'from the future', TRUE, '\\x00'::bytea, 0)"
        }
    };
    exec(&fresh.db, sql).await.unwrap();
    assert!(
        canopy_store::open(&fresh.db.url).await.is_err(),
        "a database with a migration this binary does not know must be refused"
    );
}

/// 0002 (inventory) on a database that already holds 0001's data: the events stay, with
/// no guest, and the new tables start empty.
pub async fn inventory_migration_keeps_existing_events(fresh: &Fresh) {
    let backend = fresh.db.backend;
    let all = known_migrations(backend.name());
    assert!(
        all.iter().any(|(v, d)| *v == 2 && d == "inventory"),
        "{all:?}"
    );
    let db = empty(backend).await.expect("database");
    apply_first(&db, 1).await;
    exec(
        &db,
        "INSERT INTO events (id, ts, event_type, subject, host_id, actor, correlation_id, causation_id, payload, checksum) \
         VALUES ('6f1c2a8e-4c1e-4f43-9d7a-0d7f5d3b2a10', '2024-05-01T12:00:00.000000Z', 'user.created', 'user/old', \
         NULL, 'system', NULL, NULL, '{\"username\":\"old\"}', 'x')",
    )
    .await
    .unwrap();
    let store = canopy_store::open(&db.url)
        .await
        .expect("migrate to the latest");
    assert_eq!(applied(&db).await, expected(backend));
    let events = store.events(&Default::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "user.created");
    assert_eq!(events[0].guest_id, None);
    let inv = store.inventory().await.unwrap();
    assert!(inv.clusters.is_empty() && inv.nodes.is_empty() && inv.guests.is_empty());
}

/// 0003 (deploy) on a database that already holds hosts and registration tokens: they stay,
/// as agent hosts with no known `run_as` and tokens bound to no guest; the new tables start
/// empty.
pub async fn deploy_migration_keeps_hosts_and_tokens(fresh: &Fresh) {
    let backend = fresh.db.backend;
    let all = known_migrations(backend.name());
    assert!(all.iter().any(|(v, d)| *v == 3 && d == "deploy"), "{all:?}");
    let db = empty(backend).await.expect("database");
    apply_first(&db, 2).await;
    exec(
        &db,
        "INSERT INTO registration_tokens (id, token_hash, label, seats, expires_at, created_by, created_at) \
         VALUES ('0b6f3c55-3d0e-4d8e-9a43-5e1e0f1c2d3a', 'old-hash', 'old', 1, '2999-01-01T00:00:00.000000Z', \
         'system', '2024-05-01T12:00:00.000000Z'); \
         INSERT INTO hosts (id, hostname, machine_id, credential_hash, registration_token_id, registered_at) \
         VALUES ('7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'old-host', 'machine-old', 'cred', \
         '0b6f3c55-3d0e-4d8e-9a43-5e1e0f1c2d3a', '2024-05-01T12:00:00.000000Z');",
    )
    .await
    .unwrap();
    let store = canopy_store::open(&db.url)
        .await
        .expect("migrate to the latest");
    assert_eq!(applied(&db).await, expected(backend));
    let hosts = store.list_hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].hostname, "old-host");
    assert_eq!((hosts[0].agentless, hosts[0].run_as.as_str()), (false, ""));
    let tokens = store.list_registration_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].guest_id, None);
    assert!(store.list_host_keys().await.unwrap().is_empty());
    assert!(store.list_operations(10).await.unwrap().is_empty());
}

/// 0004 (trust) on a database that already holds a host and its commands: SQLite rebuilds
/// both tables (with foreign-key enforcement off) and nothing is lost or cascaded; hosts are
/// active, commands not late; a second host may then share the machine-id.
pub async fn trust_migration_keeps_hosts_and_commands(fresh: &Fresh) {
    let backend = fresh.db.backend;
    let all = known_migrations(backend.name());
    assert!(all.iter().any(|(v, d)| *v == 4 && d == "trust"), "{all:?}");
    let db = empty(backend).await.expect("database");
    apply_first(&db, 3).await;
    exec(
        &db,
        "INSERT INTO hosts (id, hostname, machine_id, credential_hash, registered_at) \
         VALUES ('7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'old-host', 'machine-old', 'cred', \
         '2024-05-01T12:00:00.000000Z'); \
         INSERT INTO updates (id, host_id, manager, package, arch, current_version, available_version, \
         severity, status, command_id, first_seen, updated_at) VALUES ('1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9', \
         '7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'apt', 'curl', 'amd64', '1', '2', 'normal', 'dry_run', \
         '2c3d4e5f-6071-4829-93a4-b5c6d7e8f901', '2024-05-01T12:00:00.000000Z', '2024-05-01T12:00:00.000000Z'); \
         INSERT INTO commands (id, host_id, kind, spec, status, correlation_id, timeout_secs, created_at) \
         VALUES ('2c3d4e5f-6071-4829-93a4-b5c6d7e8f901', '7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'dry_run', \
         '{\"kind\":\"dry_run\",\"packages\":[\"curl\"]}', 'pending', '3d4e5f60-7182-4930-a4b5-c6d7e8f90123', 300, \
         '2024-05-01T12:00:00.000000Z');",
    )
    .await
    .unwrap();
    let store = canopy_store::open(&db.url)
        .await
        .expect("migrate to the latest");
    assert_eq!(applied(&db).await, expected(backend));
    let hosts = store.list_hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].state, canopy_api_types::hosts::HostState::Active);
    assert!(hosts[0].package_db.is_empty() && !hosts[0].duplicate_machine_id);
    assert_eq!(
        hosts[0].pending_updates, 1,
        "the update row survived the rebuild"
    );
    let cmds = store.list_commands(hosts[0].id, 10).await.unwrap();
    assert_eq!(cmds.len(), 1, "the command survived the rebuild");
    assert!(!cmds[0].late && cmds[0].overdue_at.is_none());
    // The machine-id is no longer unique.
    exec(
        &db,
        "INSERT INTO hosts (id, hostname, machine_id, credential_hash, registered_at) \
         VALUES ('8e1a6b2f-4c3d-4e9f-8a1b-2c3d4e5f6a7b', 'clone', 'machine-old', 'cred2', \
         '2024-05-02T12:00:00.000000Z');",
    )
    .await
    .unwrap();
    assert!(store
        .list_hosts()
        .await
        .unwrap()
        .iter()
        .all(|h| h.duplicate_machine_id));
}

/// 0005 (accounts) on a database that already holds users, their refresh tokens and
/// registration tokens: they stay, users enabled at session epoch 0, tokens not revoked;
/// the new lifecycle works on them.
pub async fn accounts_migration_keeps_users_and_sessions(fresh: &Fresh) {
    let backend = fresh.db.backend;
    let all = known_migrations(backend.name());
    assert!(
        all.iter().any(|(v, d)| *v == 5 && d == "accounts"),
        "{all:?}"
    );
    let db = empty(backend).await.expect("database");
    apply_first(&db, 4).await;
    exec(
        &db,
        "INSERT INTO users (id, username, password_hash, role, created_at) \
         VALUES ('1e0b7c4a-2f3d-4c5e-8a9b-0c1d2e3f4a5b', 'old-admin', 'old-hash', 'admin', \
         '2024-05-01T12:00:00.000000Z'), \
         ('2e0b7c4a-2f3d-4c5e-8a9b-0c1d2e3f4a5b', 'old-op', 'op-hash', 'operator', \
         '2024-05-01T12:00:00.000000Z'); \
         INSERT INTO refresh_tokens (token_hash, user_id, created_at, expires_at) \
         VALUES ('old-refresh', '2e0b7c4a-2f3d-4c5e-8a9b-0c1d2e3f4a5b', '2024-05-01T12:00:00.000000Z', \
         '2999-01-01T00:00:00.000000Z'); \
         INSERT INTO registration_tokens (id, token_hash, label, seats, expires_at, created_by, created_at) \
         VALUES ('0b6f3c55-3d0e-4d8e-9a43-5e1e0f1c2d3a', 'old-hash', 'old', 1, '2999-01-01T00:00:00.000000Z', \
         'system', '2024-05-01T12:00:00.000000Z');",
    )
    .await
    .unwrap();
    let store = canopy_store::open(&db.url)
        .await
        .expect("migrate to the latest");
    assert_eq!(applied(&db).await, expected(backend));
    let users = store.list_users().await.unwrap();
    let shown: Vec<_> = users
        .iter()
        .map(|u| (u.username.as_str(), u.role, u.disabled))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("old-admin", Role::Admin, false),
            ("old-op", Role::Operator, false)
        ]
    );
    let op = store.user_by_name("old-op").await.unwrap().unwrap();
    assert_eq!(
        (op.password_hash.as_str(), op.session_epoch),
        ("op-hash", 0)
    );
    let tokens = store.list_registration_tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(!tokens[0].revoked && tokens[0].revoked_at.is_none());
    // The old session still works until the user is disabled, which ends it.
    let change = store
        .set_user_disabled("old-op", true, &Actor::System)
        .await
        .unwrap();
    assert_eq!(change.revoked_refresh_tokens, 1);
    assert_eq!(
        store
            .user_by_name("old-op")
            .await
            .unwrap()
            .unwrap()
            .session_epoch,
        1
    );
    store
        .revoke_registration_token(tokens[0].id, &Actor::System)
        .await
        .unwrap();
}

/// 0006 (update operations) on a database that already holds an operation, its items and
/// commands: SQLite rebuilds `operations`, `operation_items` and `commands` (foreign-key
/// enforcement off) and nothing is lost or cascaded; the old rows have no detail. The new
/// states, outcomes and the `health` kind are accepted afterwards, unknown values still
/// refused.
pub async fn update_operations_migration_keeps_operations_and_commands(fresh: &Fresh) {
    use canopy_api_types::deploy::{DeployOutcome, ItemState, OperationState};
    let backend = fresh.db.backend;
    let all = known_migrations(backend.name());
    assert!(
        all.iter().any(|(v, d)| *v == 6 && d == "update operations"),
        "{all:?}"
    );
    let db = empty(backend).await.expect("database");
    apply_first(&db, 5).await;
    exec(
        &db,
        "INSERT INTO hosts (id, hostname, machine_id, credential_hash, registered_at) \
         VALUES ('7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'old-host', 'machine-old', 'cred', \
         '2024-05-01T12:00:00.000000Z'); \
         INSERT INTO commands (id, host_id, kind, spec, status, correlation_id, timeout_secs, created_at) \
         VALUES ('2c3d4e5f-6071-4829-93a4-b5c6d7e8f901', '7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'scan', \
         '{\"kind\":\"scan\"}', 'pending', '3d4e5f60-7182-4930-a4b5-c6d7e8f90123', 300, \
         '2024-05-01T12:00:00.000000Z'); \
         INSERT INTO operations (id, action, selector, state, created_by, created_at, finished_at) \
         VALUES ('4e5f6071-8293-4a4b-b5c6-d7e8f9012345', 'deploy', 'cluster/home', 'partial', \
         'user:admin', '2024-05-01T12:00:00.000000Z', '2024-05-01T12:05:00.000000Z'); \
         INSERT INTO operation_items (operation_id, target, position, node, vmid, route, state, \
         outcome, host_id, finished_at) VALUES \
         ('4e5f6071-8293-4a4b-b5c6-d7e8f9012345', 'cluster/home/node/pve1/lxc/101', 0, 'pve1', 101, \
         'pct', 'succeeded', 'installed', '7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', \
         '2024-05-01T12:01:00.000000Z'), \
         ('4e5f6071-8293-4a4b-b5c6-d7e8f9012345', 'cluster/home/node/pve1/lxc/102', 1, 'pve1', 102, \
         'ssh', 'failed', NULL, NULL, '2024-05-01T12:02:00.000000Z');",
    )
    .await
    .unwrap();
    let store = canopy_store::open(&db.url)
        .await
        .expect("migrate to the latest");
    assert_eq!(applied(&db).await, expected(backend));
    let ops = store.list_operations(10).await.unwrap();
    assert_eq!(ops.len(), 1, "the operation survived the rebuild");
    assert_eq!(
        (ops[0].state, ops[0].update.as_ref()),
        (OperationState::Partial, None)
    );
    let items: Vec<_> = ops[0]
        .items
        .iter()
        .map(|i| (i.vmid, i.state, i.outcome, i.update.is_some()))
        .collect();
    assert_eq!(
        items,
        vec![
            (
                101,
                ItemState::Succeeded,
                Some(DeployOutcome::Installed),
                false
            ),
            (102, ItemState::Failed, None, false),
        ],
        "its items survived the rebuild, in order"
    );
    let host = store.list_hosts().await.unwrap()[0].id;
    assert_eq!(ops[0].items[0].host_id, Some(host));
    let cmds = store.list_commands(host, 10).await.unwrap();
    assert_eq!(cmds.len(), 1, "the command survived the rebuild");

    // New values are accepted…
    exec(
        &db,
        "INSERT INTO operations (id, action, selector, state, created_by, created_at, detail) \
         VALUES ('5f607182-93a4-4b5c-86d7-e8f901234567', 'update', 'cluster/home', 'awaiting_approval', \
         'user:admin', '2024-05-02T12:00:00.000000Z', '{\"options\":{},\"fingerprint\":\"fp\"}'); \
         INSERT INTO operation_items (operation_id, target, position, node, vmid, route, state, outcome, detail) \
         VALUES ('5f607182-93a4-4b5c-86d7-e8f901234567', 'cluster/home/node/pve1/lxc/101', 0, 'pve1', 101, \
         'pct', 'cancelled', 'rolled_back', '{\"canary\":true}'); \
         INSERT INTO commands (id, host_id, kind, spec, status, correlation_id, timeout_secs, created_at) \
         VALUES ('6071a293-a4b5-4c6d-97e8-f90123456789', '7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'health', \
         '{\"kind\":\"health\"}', 'pending', '3d4e5f60-7182-4930-a4b5-c6d7e8f90123', 60, \
         '2024-05-02T12:00:00.000000Z');",
    )
    .await
    .unwrap();
    let op = store
        .unfinished_operations("update")
        .await
        .unwrap()
        .pop()
        .expect("the update operation");
    assert_eq!(op.state, OperationState::AwaitingApproval);
    assert_eq!(op.update.and_then(|d| d.fingerprint).as_deref(), Some("fp"));
    assert_eq!(
        (op.items[0].state, op.items[0].outcome),
        (ItemState::Cancelled, Some(DeployOutcome::RolledBack))
    );
    assert!(op.items[0].update.as_ref().is_some_and(|d| d.canary));
    assert_eq!(store.list_commands(host, 10).await.unwrap().len(), 2);
    // …unknown ones still refused.
    for bad in [
        "UPDATE operations SET state = 'exploded'",
        "UPDATE operation_items SET state = 'skipped'",
        "UPDATE operation_items SET outcome = 'reinstalled'",
        "UPDATE commands SET kind = 'reboot'",
    ] {
        assert!(exec(&db, bad).await.is_err(), "{bad} must be refused");
    }
    if backend == Backend::Sqlite {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let mut indexes: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN ('operations', 'operation_items', 'commands') ORDER BY name",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        indexes.sort();
        let names: Vec<_> = indexes.iter().map(|(n,)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "commands_claim",
                "commands_correlation",
                "commands_deadline",
                "operation_items_guest",
                "operation_items_host",
                "operations_created",
                "operations_state",
            ],
            "the rebuilt tables have their indexes again"
        );
    }
}

/// A `detail` column whose JSON is not the detail it should be is `Corrupt`, naming the
/// table and the column, never silently dropped.
pub async fn corrupt_detail_is_named(fresh: &Fresh) {
    use canopy_api_types::deploy::{OperationItem, OperationState, Route};
    use canopy_store::{NewOperation, StoreError};
    let id = canopy_api_types::OperationId::new();
    fresh
        .store
        .create_operation(
            NewOperation {
                id,
                action: "update".into(),
                state: OperationState::Planning,
                update: Some(Default::default()),
                selector: "cluster/home".into(),
                items: vec![OperationItem::queued(
                    "cluster/home/node/pve1/lxc/101",
                    None,
                    "pve1",
                    101,
                    Route::Pct,
                )],
                skipped: Vec::new(),
                created_at: chrono::Utc::now(),
            },
            &Actor::System,
        )
        .await
        .unwrap();
    for (sql, table) in [
        (
            "UPDATE operation_items SET detail = '{\"canary\":\"yes\"}'",
            "operation_items",
        ),
        (
            "UPDATE operations SET detail = '{\"options\":7}'",
            "operations",
        ),
    ] {
        exec(&fresh.db, sql).await.unwrap();
        match fresh.store.get_operation(id).await {
            Err(StoreError::Corrupt { table: t, detail }) => {
                assert_eq!(t, table);
                assert!(detail.contains("column detail"), "{detail}");
            }
            other => panic!("{sql}: expected Corrupt, got {other:?}"),
        }
        assert!(fresh.store.list_operations(10).await.is_err());
    }
}

/// 0007 (Docker) on a database that already holds a host with update rows: the host's
/// containers, image updates of manager docker and registries can be stored afterwards;
/// deleting the host takes its containers along; the credential pair check holds.
pub async fn docker_migration_adds_its_tables_to_a_populated_database(fresh: &Fresh) {
    use super::docker::container;
    let backend = fresh.db.backend;
    let all = known_migrations(backend.name());
    assert!(all.iter().any(|(v, d)| *v == 7 && d == "docker"), "{all:?}");
    let db = empty(backend).await.expect("database");
    apply_first(&db, 6).await;
    exec(
        &db,
        "INSERT INTO hosts (id, hostname, machine_id, credential_hash, registered_at) \
         VALUES ('7d0c8e1a-6b2f-4c3d-8e9f-0a1b2c3d4e5f', 'old-host', 'machine-old', 'cred', \
         '2024-05-01T12:00:00.000000Z');",
    )
    .await
    .unwrap();
    let store = canopy_store::open(&db.url)
        .await
        .expect("migrate to the latest");
    assert_eq!(applied(&db).await, expected(backend));
    let host = store.list_hosts().await.unwrap()[0].id;
    let mut report = super::support::report(vec![]);
    report.containers = Some(vec![container("web", "nginx")]);
    store
        .ingest_report(host, report, &Actor::System)
        .await
        .unwrap();
    assert_eq!(store.list_containers().await.unwrap().len(), 1);
    assert!(
        exec(&db, "UPDATE registries SET auth_kind = 'basic'")
            .await
            .is_ok(),
        "no rows yet"
    );
    exec(
        &db,
        "INSERT INTO registries (registry, updated_at) VALUES ('ghcr.io', '2024-05-01T12:00:00.000000Z')",
    )
    .await
    .unwrap();
    assert!(
        exec(&db, "UPDATE registries SET auth_kind = 'basic'")
            .await
            .is_err(),
        "a credential kind without its sealed secret is refused"
    );
    exec(&db, "DELETE FROM hosts").await.unwrap();
    assert!(
        store.list_containers().await.unwrap().is_empty(),
        "cascaded"
    );
}
