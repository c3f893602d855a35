//! The add-cluster wizard's two checks through the API (`POST /clusters/probe`), against the
//! PVE simulator over HTTPS: the certificate an address presents, then a token signing in
//! over a connection pinned to the fingerprint the user confirmed. A wrong secret and a
//! certificate other than the confirmed one are refused by name, and nothing is stored.

mod common;

use canopy_api_types::client::ClientError;
use common::*;

const ESTATE: &str = r#"
[[clusters]]
name = "lab"
[[clusters.tokens]]
id = "canopy@pve!lab"
secret = "9d2c4b1a-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
role = "PVEAuditor"
[[clusters.nodes]]
name = "alpha"
[[clusters.nodes]]
name = "beta"
"#;
const TOKEN: &str = "canopy@pve!lab=9d2c4b1a-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

fn refused(e: ClientError) -> String {
    match e {
        ClientError::Api { status, error } => {
            assert_eq!(status, 400, "{}", error.message);
            error.message
        }
        other => panic!("expected a 400, got {other}"),
    }
}

#[tokio::test]
async fn the_certificate_first_then_the_token_over_the_pinned_connection() {
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let sim = start_sim(ESTATE).await;

    let seen = app.admin.probe_cluster(&sim.url()).await.unwrap();
    assert_eq!(seen.fingerprint, sim.fingerprint());
    assert_eq!(seen.nodes, None, "no token, no sign-in");

    let ok = app
        .admin
        .check_cluster_token(&sim.url(), TOKEN, &seen.fingerprint)
        .await
        .unwrap();
    assert_eq!(
        ok.nodes,
        Some(vec!["alpha".to_string(), "beta".to_string()])
    );

    let wrong = "canopy@pve!lab=00000000-0000-0000-0000-000000000000";
    let e = refused(
        app.admin
            .check_cluster_token(&sim.url(), wrong, &seen.fingerprint)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("authentication"), "{e}");

    // Another certificate than the one confirmed: the token is not sent to it.
    let other = seen
        .fingerprint
        .split(':')
        .map(|b| if b == "00" { "11" } else { "00" })
        .collect::<Vec<_>>()
        .join(":");
    let e = refused(
        app.admin
            .check_cluster_token(&sim.url(), TOKEN, &other)
            .await
            .unwrap_err(),
    );
    assert!(e.to_lowercase().contains("fingerprint"), "{e}");

    assert!(
        app.admin.clusters().await.unwrap().is_empty(),
        "a check stores nothing"
    );
}
