//! Registry authentication against a real `docker-registry` (distribution 2.8):
//!
//! - `auth: token`: the registry answers `401` with a `Bearer` challenge naming a token realm;
//!   the realm is [`support::TokenIssuer`], a token issuer served from the test (axum on
//!   127.0.0.1) whose signed JWTs the registry verifies itself. Anonymous tokens, tokens cached
//!   per (registry, scope) across cycles and fetched before the first request once the realm
//!   is known, basic credentials sent to the realm for a private repository, and the errors
//!   when they are missing or wrong.
//! - `auth: htpasswd`: a `Basic` challenge, answered with the configured credentials and then
//!   sent up front.

#[path = "common/registry.rs"]
mod support;

use canopy_server::registry::{
    CheckInput, Checker, CheckerOptions, Credential, Credentials, CycleReport, ErrorKind,
    ImageStatus,
};
use support::{Auth, Registry, TokenIssuer};

fn input(id: &str, reference: String, digest: &str) -> CheckInput {
    let (name, _) = reference.rsplit_once(':').unwrap();
    CheckInput {
        id: id.into(),
        repo_digests: vec![format!("{name}@{digest}")],
        reference,
        platform: "linux/amd64".into(),
    }
}

/// One check at a time, so that the request counts are exact.
fn checker(credentials: Credentials) -> Checker {
    let options = CheckerOptions {
        per_registry_concurrency: 1,
        ..CheckerOptions::default()
    };
    Checker::new(options, credentials).unwrap()
}

fn up_to_date(report: &CycleReport, id: &str) -> bool {
    matches!(
        report.result(id).unwrap().status,
        ImageStatus::UpToDate { .. }
    )
}

fn error(report: &CycleReport, id: &str) -> (ErrorKind, String) {
    match &report.result(id).unwrap().status {
        ImageStatus::Error { kind, message } => (*kind, message.clone()),
        other => panic!("{id}: expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_tokens_are_fetched_once_and_cached() {
    let issuer = TokenIssuer::start().await;
    let reg = Registry::start_with(Auth::Token(issuer.clone())).await;
    let a = reg.addr.clone();
    let web = reg.push_index("canopy/web", "stable", "web v1").await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    reg.log.since_last_mark().await;
    let pushes = issuer.issued().len();
    let inputs = vec![
        input("web", format!("{a}/canopy/web:stable"), &web.index),
        input("db", format!("{a}/canopy/db:15"), &db),
    ];
    let checker = checker(Credentials::new());

    let first = checker.check(&inputs).await;
    assert!(
        up_to_date(&first, "web") && up_to_date(&first, "db"),
        "{first:#?}"
    );
    // The first repository: 401, token, HEAD. The second: its token before its only HEAD.
    let log = reg.log.since_last_mark().await;
    let statuses: Vec<u16> = log
        .iter()
        .filter(|l| l.is_manifest_read())
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [401, 200, 200], "{log:#?}");
    let counts = first.registry(&a).unwrap().requests;
    assert_eq!((counts.heads, counts.token_requests), (3, 2), "{counts:?}");
    let mut scopes = issuer.issued()[pushes..].to_vec();
    scopes.sort();
    assert_eq!(
        scopes,
        ["repository:canopy/db:pull", "repository:canopy/web:pull"]
    );

    // Tokens are cached: one HEAD per reference, no token request.
    let second = checker.check(&inputs).await;
    assert!(up_to_date(&second, "web") && up_to_date(&second, "db"));
    let counts = second.registry(&a).unwrap().requests;
    assert_eq!((counts.heads, counts.token_requests), (2, 0), "{counts:?}");
    let log = reg.log.since_last_mark().await;
    assert_eq!(
        log.iter()
            .filter(|l| l.is_manifest_read() && l.status == 200)
            .count(),
        2
    );
    assert_eq!(issuer.issued().len(), pushes + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repositories_take_basic_credentials_at_the_token_realm() {
    let issuer = TokenIssuer::start().await;
    let reg = Registry::start_with(Auth::Token(issuer.clone())).await;
    let a = reg.addr.clone();
    let app = reg
        .push_image("private/app", "1", ("linux", "amd64"), "app v1")
        .await;
    let inputs = vec![input("app", format!("{a}/private/app:1"), &app)];

    // Anonymous: the issuer grants nothing, the registry still says 401.
    let report = checker(Credentials::new()).check(&inputs).await;
    let (kind, message) = error(&report, "app");
    assert_eq!(kind, ErrorKind::Unauthorized);
    for n in [a.as_str(), "private/app", "none are configured", "401"] {
        assert!(message.contains(n), "{n:?} missing from {message:?}");
    }

    // With the reader's credentials, sent to the realm: up to date.
    let mut creds = Credentials::new();
    creds.insert(
        &a,
        Credential::Basic {
            username: TokenIssuer::USER.into(),
            password: TokenIssuer::PASSWORD.into(),
        },
    );
    let report = checker(creds).check(&inputs).await;
    assert!(up_to_date(&report, "app"), "{report:#?}");

    // A wrong password: the realm refuses, and the error says so without the password.
    let mut wrong = Credentials::new();
    wrong.insert(
        &a,
        Credential::Basic {
            username: TokenIssuer::USER.into(),
            password: "not-the-password".into(),
        },
    );
    let report = checker(wrong).check(&inputs).await;
    let (kind, message) = error(&report, "app");
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(
        message.contains("token realm") && message.contains("refused the configured credentials"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(!format!("{report:?}").contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_challenges_take_the_configured_credentials() {
    let reg = Registry::start_with(Auth::Htpasswd(support::HTPASSWD_LINE.into())).await;
    let a = reg.addr.clone();
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    reg.log.since_last_mark().await;
    let inputs = vec![input("db", format!("{a}/canopy/db:15"), &db)];

    let report = checker(Credentials::new()).check(&inputs).await;
    let (kind, message) = error(&report, "db");
    assert_eq!(kind, ErrorKind::Unauthorized);
    assert!(
        message.contains("user name and password") && message.contains("canopy/db"),
        "{message}"
    );

    let mut creds = Credentials::new();
    creds.insert(
        &a,
        Credential::Basic {
            username: "canopy".into(),
            password: support::HTPASSWD_PASSWORD.into(),
        },
    );
    let checker = checker(creds);
    let first = checker.check(&inputs).await;
    assert!(up_to_date(&first, "db"), "{first:#?}");
    assert_eq!(
        first.registry(&a).unwrap().requests.heads,
        2,
        "401 then 200"
    );
    // Known to want Basic: sent up front, one request.
    let second = checker.check(&inputs).await;
    assert!(up_to_date(&second, "db"));
    assert_eq!(second.registry(&a).unwrap().requests.heads, 1);
    reg.log.since_last_mark().await;
}
