//! Accounts, sessions and registration tokens through the real `canopy` binary: the
//! commands a homelab owner types, on a real terminal where a password is asked.

mod common;

use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::auth::RegistrationToken;
use common::cli::{Cli, CliOutput};
use common::*;

fn ok(out: &CliOutput) -> &str {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    &out.stdout
}

fn failed(out: &CliOutput) -> &str {
    assert!(!out.status.success(), "expected a failure:\n{}", out.stdout);
    &out.stderr
}

/// A CLI logged in as `name` (password `{name}-password`) to `app`.
fn cli_as(app: &TestApp, name: &str) -> Cli {
    let cli = Cli::new();
    let out = cli.run(
        &["login", "--server", &app.base, "--username", name],
        &format!("{name}-password\n"),
    );
    ok(&out);
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_and_revoked_from_the_cli() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let cli = Cli::new().login(&app.base);
    let secret = ok(&cli.run(&["token", "create", "--seats", "2", "--label", "rack"], ""))
        .trim()
        .to_string();
    assert!(secret.starts_with("canopy-reg-"), "{secret}");
    let table = cli.run(&["token", "list"], "");
    assert!(
        ok(&table).contains("rack") && table.stdout.contains("valid"),
        "{}",
        table.stdout
    );
    let listed: Vec<RegistrationToken> =
        serde_json::from_str(ok(&cli.run(&["token", "list", "--json"], ""))).unwrap();
    let id = listed[0].id.to_string();
    let out = cli.run(&["token", "revoke", &id], "");
    assert!(ok(&out).contains("revoked"), "{}", out.stdout);
    assert!(ok(&cli.run(&["token", "list"], "")).contains("revoked"));
    let err = app
        .anon
        .register(&RegisterRequest {
            registration_token: secret,
            facts: facts("late"),
            current_token: None,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let out = cli.run(&["token", "revoke", "not-an-id"], "");
    assert!(failed(&out).contains("not-an-id"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_from_the_cli() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let admin = Cli::new().login(&app.base);
    let out = admin.run(
        &["user", "create", "olive", "--role", "operator"],
        "olive-password\n",
    );
    assert!(
        ok(&out).contains("created olive (operator)"),
        "{}",
        out.stdout
    );
    let out = admin.run(&["user", "list"], "");
    assert!(ok(&out).contains("olive"), "{}", out.stdout);
    let olive = cli_as(&app, "olive");
    ok(&olive.run(&["hosts"], ""));

    ok(&admin.run(&["user", "disable", "olive"], ""));
    let out = olive.run(&["hosts"], "");
    assert!(failed(&out).contains("olive is disabled"), "{}", out.stderr);
    ok(&admin.run(&["user", "enable", "olive"], ""));
    let olive = cli_as(&app, "olive");

    let out = admin.run(&["user", "role", "olive", "viewer"], "");
    assert!(ok(&out).contains("1 session(s) ended"), "{}", out.stdout);
    let out = olive.run(&["hosts"], "");
    assert!(failed(&out).contains("canopy login"), "{}", out.stderr);

    let out = admin.run(&["user", "disable", "admin"], "");
    assert!(
        failed(&out).contains("admin is the last enabled admin"),
        "{}",
        out.stderr
    );
    ok(&admin.run(&["user", "delete", "olive"], ""));
    let out = admin.run(&["user", "list", "--json"], "");
    assert!(!ok(&out).contains("olive"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_ends_every_session_of_the_user() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let here = Cli::new().login(&app.base);
    let there = Cli::new().login(&app.base);
    ok(&there.run(&["hosts"], ""));
    let out = here.run(&["logout", "--all"], "");
    assert!(ok(&out).is_empty() && out.stderr.contains("logged out everywhere"));
    let out = there.run(&["hosts"], "");
    assert!(failed(&out).contains("canopy login"), "{}", out.stderr);
    let out = here.run(&["hosts"], "");
    assert!(failed(&out).contains("canopy login"), "{}", out.stderr);
    // Plain logout ends only its own session.
    let one = Cli::new().login(&app.base);
    let two = Cli::new().login(&app.base);
    ok(&one.run(&["logout"], ""));
    ok(&two.run(&["hosts"], ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_typed_on_a_terminal_are_not_echoed() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let cli = Cli::new();
    let (success, screen) = cli.run_on_terminal(
        &["login", "--server", &app.base, "--username", "admin"],
        &[("password for admin: ", ADMIN_PASSWORD)],
    );
    assert!(success, "{screen}");
    assert!(screen.contains("logged in as admin"), "{screen}");
    assert!(
        !screen.contains(ADMIN_PASSWORD),
        "the password was echoed:\n{screen}"
    );

    // A new password is asked twice, neither shown.
    let (success, screen) = cli.run_on_terminal(
        &["user", "create", "tess", "--role", "viewer"],
        &[
            ("password for tess: ", "tess-secret-1"),
            ("the same password again: ", "tess-secret-1"),
        ],
    );
    assert!(success, "{screen}");
    assert!(!screen.contains("tess-secret-1"), "echoed:\n{screen}");
    app.anon.login("tess", "tess-secret-1").await.unwrap();

    // Changing one's own password: current, new, new again; the session goes on.
    let tess = Cli::new();
    let (success, screen) = tess.run_on_terminal(
        &["login", "--server", &app.base, "--username", "tess"],
        &[("password for tess: ", "tess-secret-1")],
    );
    assert!(success, "{screen}");
    let (success, screen) = tess.run_on_terminal(
        &["user", "password"],
        &[
            ("current password: ", "tess-secret-1"),
            ("new password: ", "tess-secret-2"),
            ("the same password again: ", "tess-secret-2"),
        ],
    );
    assert!(success, "{screen}");
    assert!(!screen.contains("tess-secret"), "echoed:\n{screen}");
    ok(&tess.run(&["hosts"], ""));
    app.anon.login("tess", "tess-secret-2").await.unwrap();
}
