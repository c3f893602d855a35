//! The storage conformance suite: every case runs against both backends, each on a
//! fresh database. PostgreSQL cases need `CANOPY_TEST_POSTGRES_URL` (a server URL; each
//! test creates its own `canopy_test_<random>` database); without it they fail, unless
//! `CANOPY_SKIP_POSTGRES=1` says to skip them.

#[path = "conformance/accounts.rs"]
mod accounts;
#[path = "conformance/commands.rs"]
mod commands;
#[path = "conformance/deploy_hosts.rs"]
mod deploy_hosts;
#[path = "conformance/docker.rs"]
mod docker;
#[path = "conformance/fixture.rs"]
mod fixture;
#[path = "conformance/health_commands.rs"]
mod health_commands;
#[path = "conformance/history.rs"]
mod history;
#[path = "conformance/ingest.rs"]
mod ingest;
#[path = "conformance/inventory.rs"]
mod inventory;
#[path = "conformance/inventory_guests.rs"]
mod inventory_guests;
#[path = "conformance/inventory_hosts.rs"]
mod inventory_hosts;
#[path = "conformance/listing.rs"]
mod listing;
#[path = "conformance/migrations.rs"]
mod migrations;
#[path = "conformance/operations.rs"]
mod operations;
#[path = "conformance/pipeline.rs"]
mod pipeline;
#[path = "conformance/ssh_keys.rs"]
mod ssh_keys;
#[path = "conformance/support.rs"]
mod support;
#[path = "conformance/update_operations.rs"]
mod update_operations;
#[path = "conformance/users.rs"]
mod users;

/// One `#[tokio::test]` per case that takes the store.
macro_rules! store_cases {
    ($fresh:path; $($module:ident :: $case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let Some(db) = $fresh().await else { return };
            $crate::$module::$case(db.store.clone()).await;
            db.cleanup().await;
        }
    )*};
}

/// One `#[tokio::test]` per case that runs it on both backends and compares their event logs.
macro_rules! history_cases {
    ($($module:ident :: $case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            $crate::history::same_history(stringify!($case), $crate::$module::$case).await;
        }
    )*};
}

/// One `#[tokio::test]` per case that needs the database itself (migrations).
macro_rules! db_cases {
    ($fresh:path; $($module:ident :: $case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let Some(db) = $fresh().await else { return };
            $crate::$module::$case(&db).await;
            db.cleanup().await;
        }
    )*};
}

/// Every store case, handed to `$m!` (with `$fresh` when it is given).
macro_rules! every_store_case {
    ($m:ident $(, $fresh:path)?) => {
        $m!($($fresh;)?
                users::users_create_lookup_and_conflict,
                users::refresh_tokens_rotate_refuse_and_purge,
                users::registration_token_seats_and_refusals,
                users::reenrol_same_machine_keeps_host_id,
                users::touch_host_and_report_hash,
                accounts::disable_ends_sessions_and_enable_lets_the_user_back,
                accounts::role_and_password_changes_end_sessions,
                accounts::delete_user_removes_sessions_and_keeps_history,
                accounts::the_last_enabled_admin_stays,
                accounts::concurrent_demotions_keep_one_admin,
                accounts::end_sessions_revokes_every_refresh_token,
                accounts::revoked_registration_token_refuses_registration,
                accounts::refresh_racing_a_change_never_outlives_it,
                ingest::ingest_3772_rows_in_one_call,
                ingest::ingest_duplicate_rows_are_rejected_individually,
                ingest::ingest_database_refused_rows_are_isolated,
                ingest::ingest_reconciles_rows_no_longer_reported,
                ingest::ingest_leaves_rows_in_flight,
                ingest::ingest_version_change_voids_approval,
                ingest::rescan_after_install_closes_nothing_wrongly,
                pipeline::approve_many_one_dry_run_per_host,
                pipeline::full_flow_shares_one_correlation,
                pipeline::confirm_refuses_failed_unfinished_and_repeated,
                pipeline::duplicate_result_is_duplicate_and_different_is_conflict,
                pipeline::reject_moves_only_rejectable_rows,
                commands::claim_sets_sent_once,
                commands::mark_running_rules,
                commands::expire_times_out_and_fails_rows,
                commands::overdue_is_marked_and_only_a_vanished_agent_times_out,
                commands::overdue_result_is_applied_and_marked_late,
                commands::heartbeat_rules,
                commands::commands_never_wait_forever_for_a_host_that_cannot_run_them,
                commands::late_result_after_timeout_is_kept_but_status_stays,
                commands::retry_links_and_completes,
                commands::retry_of_timed_out_install,
                commands::cancel_pending_or_sent_only,
                commands::concurrent_claims_never_hand_out_a_command_twice,
                listing::list_updates_filters_order_and_pages,
                listing::list_hosts_counts_open_and_security,
                listing::stats_one_figure_each,
                listing::events_filter_checksums_and_purge,
                listing::idempotency_keys,
                listing::approve_once_is_one_transaction,
                inventory::clusters_create_list_by_name_and_conflict,
                inventory::delete_cluster_cascades_and_keeps_hosts,
                inventory::discovery_inserts_nodes_and_guests,
                inventory_guests::moved_guest_keeps_id_first_seen_and_history,
                inventory_guests::missing_guest_is_deleted_and_its_removal_linked,
                inventory_guests::vmid_reused_with_another_kind_is_a_new_guest,
                inventory::discovery_error_keeps_tree_and_success_clears_it,
                inventory::node_updates_round_trip,
                inventory_hosts::hostname_auto_attach_only_when_unambiguous,
                inventory_hosts::attach_host_explicitly,
                inventory_hosts::guest_history_includes_the_attached_hosts_events,
                inventory_guests::five_thousand_guests_in_one_pass,
                inventory_guests::concurrent_passes_of_one_cluster_serialise,
                deploy_hosts::guest_bound_token_attaches_the_registered_host,
                deploy_hosts::token_without_guest_attaches_nothing,
                deploy_hosts::agentless_host_is_added_refreshed_and_cannot_authenticate,
                deploy_hosts::registration_turns_an_agentless_host_into_an_agent_host,
                deploy_hosts::agentless_upsert_leaves_an_agent_host_untouched,
                deploy_hosts::touch_host_stores_run_as,
                deploy_hosts::retired_hosts_keep_history_and_their_guest_goes_back_to_agentless,
                ssh_keys::pin_keeps_the_first_key,
                ssh_keys::forget_then_pin_again,
                ssh_keys::concurrent_pins_agree_on_one_key,
                operations::create_and_get_keep_item_order,
                operations::item_updates_record_progress_and_events,
                operations::list_operations_newest_first_with_items,
                operations::find_operations_under_a_path,
                operations::fail_interrupted_fails_running_operations_and_their_open_items,
                update_operations::update_operation_keeps_its_details_and_item_events,
                update_operations::update_operation_moves_through_its_states,
                update_operations::restart_resumes_update_operations_and_fails_deploys,
                health_commands::health_command_round_trip,
                docker::containers_follow_reports,
                docker::image_updates_follow_report_rules_for_docker_only,
                docker::image_checks_and_registries_round_trip,
                docker::image_updates_are_approved_planned_and_installed_with_packages,
        );
    };
}

/// The whole suite for one backend: `conformance_tests!(module_name, fresh_fn)`.
macro_rules! conformance_tests {
    ($backend:ident, $fresh:path) => {
        mod $backend {
            every_store_case!(store_cases, $fresh);
            db_cases!($fresh;
                migrations::fresh_database_gets_every_migration_and_reopen_is_noop,
                migrations::each_migration_applies_on_top_of_the_previous_ones,
                migrations::changed_migration_is_refused,
                migrations::unknown_migration_is_refused,
                migrations::inventory_migration_keeps_existing_events,
                migrations::deploy_migration_keeps_hosts_and_tokens,
                migrations::trust_migration_keeps_hosts_and_commands,
                migrations::accounts_migration_keeps_users_and_sessions,
                migrations::update_operations_migration_keeps_operations_and_commands,
                migrations::docker_migration_adds_its_tables_to_a_populated_database,
                migrations::corrupt_detail_is_named,
            );
        }
    };
}

conformance_tests!(sqlite, crate::fixture::fresh_sqlite);
conformance_tests!(postgres, crate::fixture::fresh_postgres);

/// Every store case once more, on both backends, comparing their event logs.
mod same_history {
    every_store_case!(history_cases);
}

/// Both backends carry the same migrations: same numbers, same names.
#[test]
fn migrations_are_paired() {
    let sqlite = canopy_store::known_migrations("sqlite");
    let postgres = canopy_store::known_migrations("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres);
}

/// SQLite only: an unopenable path fails (fast) instead of hanging; memory works.
#[tokio::test]
async fn sqlite_unopenable_path_is_an_error() {
    let Err(err) = canopy_store::open("sqlite:///nonexistent-canopy-dir/sub/canopy.db").await
    else {
        panic!("opening a file in a missing directory must fail");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("nonexistent-canopy-dir"),
        "the error names the database: {msg}"
    );
}

#[tokio::test]
async fn sqlite_memory_database_works() {
    let store = canopy_store::open("sqlite::memory:")
        .await
        .expect("memory database");
    store
        .create_user(
            "m",
            "h",
            canopy_api_types::auth::Role::Admin,
            &canopy_store::Actor::System,
        )
        .await
        .unwrap();
    assert_eq!(store.count_users().await.unwrap(), 1);
    let h = support::host(&store, "mem").await;
    store
        .ingest_report(
            h.id,
            support::report(support::many("m", 10)),
            &canopy_store::Actor::Agent(h.id),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .list_updates(&support::by_host(h.id))
            .await
            .unwrap()
            .total,
        10
    );
}
