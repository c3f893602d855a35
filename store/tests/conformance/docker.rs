//! Docker inside guests: a report's containers replace the host's (a report without keeps
//! them), image updates follow a report's rules for manager `docker` only and never touch the
//! report hash, registry checks replace per key, credentials are sealed and evented without
//! their secret.

use super::inventory::events_of_type;
use super::support::*;
use canopy_api_types::docker::{ComposeService, Container, ImageCheck, RegistryStatus};
use canopy_api_types::updates::{PackageManager, Severity, UpdateStatus};
use canopy_store::{events, RegistryCredential, StoreError};
use chrono::{SubsecRound, Utc};

pub fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        id: format!("{name:0>64}"),
        image: image.into(),
        image_id: "sha256:1111".into(),
        repo_digests: vec![format!("{image}@sha256:aaaa")],
        platform: "linux/amd64".into(),
        state: "running".into(),
        health: Some("healthy".into()),
        restart_policy: Some("unless-stopped".into()),
        compose: (name == "web").then(|| ComposeService {
            project: "shop".into(),
            service: "web".into(),
            working_dir: Some("/srv/compose/shop".into()),
            config_files: vec!["/srv/compose/shop/docker-compose.yml".into()],
        }),
    }
}

fn image_row(reference: &str, from: &str, to: &str) -> canopy_api_types::updates::PackageUpdate {
    let mut row = pkg(
        PackageManager::Docker,
        reference,
        from,
        to,
        Severity::Normal,
    );
    row.arch = None;
    row.source = Some("127.0.0.1:5000".into());
    row
}

pub async fn containers_follow_reports(store: S) {
    let h = host(&store, "docker-host").await;
    let mut r = report(vec![apt("curl", "1", "2")]);
    r.containers = Some(vec![
        container("web", "nginx"),
        container("db", "postgres:15"),
    ]);
    store.ingest_report(h.id, r, &admin()).await.unwrap();
    let names = |all: Vec<canopy_store::HostContainer>| -> Vec<(String, String)> {
        all.into_iter()
            .map(|c| (c.container.name, c.container.image))
            .collect()
    };
    let listed = store.list_containers().await.unwrap();
    assert!(listed.iter().all(|c| c.host_id == h.id));
    assert_eq!(
        listed[0].container,
        container("db", "postgres:15"),
        "as sent, by name"
    );
    assert_eq!(
        names(listed),
        vec![
            ("db".into(), "postgres:15".into()),
            ("web".into(), "nginx".into())
        ]
    );

    // A report without containers (no engine answered) keeps them.
    store
        .ingest_report(h.id, report(vec![]), &admin())
        .await
        .unwrap();
    assert_eq!(store.list_containers().await.unwrap().len(), 2);

    // One with containers replaces them.
    let mut r = report(vec![]);
    r.containers = Some(vec![container("db", "postgres:16")]);
    store.ingest_report(h.id, r, &admin()).await.unwrap();
    assert_eq!(
        names(store.list_containers().await.unwrap()),
        vec![("db".into(), "postgres:16".into())]
    );
    assert_eq!(
        store.host_containers(h.id).await.unwrap(),
        vec![container("db", "postgres:16")]
    );
    let ingested = events_of_type(&store, events::REPORT_INGESTED).await;
    let counts: Vec<_> = ingested
        .iter()
        .map(|e| e.payload["containers"].clone())
        .collect();
    assert!(counts.contains(&serde_json::json!(2)) && counts.contains(&serde_json::json!(1)));

    let mut r = report(vec![]);
    r.containers = Some(vec![]);
    store.ingest_report(h.id, r, &admin()).await.unwrap();
    assert!(
        store.list_containers().await.unwrap().is_empty(),
        "an engine without any"
    );
}

pub async fn image_updates_follow_report_rules_for_docker_only(store: S) {
    let h = host(&store, "image-host").await;
    let first = report(vec![apt("curl", "1", "2")]);
    let hash = first.report_hash.clone();
    store.ingest_report(h.id, first, &admin()).await.unwrap();

    let web = "127.0.0.1:5000/canopy/web:stable";
    let out = store
        .sync_image_updates(
            h.id,
            vec![image_row(web, "sha256:a1", "sha256:b2")],
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!((out.accepted, out.discovered, out.reconciled), (1, 1, 0));
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let open = vec![(h.id, web.to_string())];
    assert_eq!(store.open_image_updates(Some(h.id)).await.unwrap(), open);
    assert_eq!(store.open_image_updates(None).await.unwrap(), open);
    let image = rows
        .iter()
        .find(|r| r.manager == PackageManager::Docker)
        .unwrap();
    assert_eq!(
        (
            image.package.as_str(),
            image.current_version.as_str(),
            image.available_version.as_str(),
            image.status
        ),
        (web, "sha256:a1", "sha256:b2", UpdateStatus::Pending)
    );
    assert_eq!(
        store.report_hash(h.id).await.unwrap().as_deref(),
        Some(hash.as_str()),
        "the agent's report hash is not the server's business here"
    );

    // An agent report (apt scanned) never closes image rows.
    store
        .ingest_report(h.id, report(vec![apt("curl", "1", "2")]), &admin())
        .await
        .unwrap();
    let open = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(open
        .iter()
        .any(|r| r.manager == PackageManager::Docker && r.status == UpdateStatus::Pending));

    // The registry moved on: the same row, its new digest.
    store
        .sync_image_updates(
            h.id,
            vec![image_row(web, "sha256:a1", "sha256:c3")],
            &admin(),
        )
        .await
        .unwrap();
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    let image: Vec<_> = rows
        .iter()
        .filter(|r| r.manager == PackageManager::Docker)
        .collect();
    assert_eq!(image.len(), 1);
    assert_eq!(image[0].available_version, "sha256:c3");

    // Up to date again: the image row is reconciled, the package row stays.
    let out = store
        .sync_image_updates(h.id, vec![], &admin())
        .await
        .unwrap();
    assert_eq!(out.reconciled, 1);
    assert!(store.open_image_updates(None).await.unwrap().is_empty());
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    let open: Vec<_> = rows.iter().filter(|r| !r.status.is_closed()).collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].package, "curl");

    let checked = events_of_type(&store, events::IMAGE_UPDATES_CHECKED).await;
    assert_eq!(checked.len(), 3);
    assert_eq!(checked[0].subject, format!("host/{}", h.id));

    match store
        .sync_image_updates(h.id, vec![apt("curl", "1", "3")], &admin())
        .await
    {
        Err(StoreError::ReportRefused { reason, .. }) => {
            assert!(reason.contains("manager docker"), "{reason}")
        }
        other => panic!("a package row is not an image update: {other:?}"),
    }
}

pub async fn image_checks_and_registries_round_trip(store: S) {
    let now = Utc::now().trunc_subsecs(6);
    let check = |tag: &str, digest: &str| ImageCheck {
        registry: "127.0.0.1:5000".into(),
        repository: "canopy/web".into(),
        tag: tag.into(),
        platform: "linux/amd64".into(),
        remote_digest: Some(digest.into()),
        platform_digest: None,
        error: None,
        retry_after: None,
        checked_at: now,
    };
    let status = RegistryStatus {
        registry: "127.0.0.1:5000".into(),
        remaining: Some(99),
        limit: Some(100),
        window_secs: Some(21600),
        heads: 3,
        ..RegistryStatus::default()
    };
    store
        .save_image_checks(
            &[check("stable", "sha256:1"), check("1", "sha256:9")],
            std::slice::from_ref(&status),
        )
        .await
        .unwrap();
    store
        .save_image_checks(&[check("stable", "sha256:2")], &[])
        .await
        .unwrap();
    let checks = store.list_image_checks().await.unwrap();
    assert_eq!(
        checks,
        vec![check("1", "sha256:9"), check("stable", "sha256:2")]
    );

    let sealed = RegistryCredential {
        kind: "basic".into(),
        username: Some("homelab".into()),
        secret_sealed: "sealed-secret-bytes".into(),
    };
    assert!(
        !format!("{sealed:?}").contains("sealed-secret"),
        "never in Debug output"
    );
    store
        .set_registry_credential("127.0.0.1:5000", Some(sealed.clone()), &admin())
        .await
        .unwrap();
    store
        .set_registry_credential("ghcr.io", Some(sealed.clone()), &admin())
        .await
        .unwrap();
    // A later cycle's status keeps the credentials.
    store
        .save_image_checks(&[], std::slice::from_ref(&status))
        .await
        .unwrap();
    let regs = store.list_registries().await.unwrap();
    assert_eq!(regs.len(), 2);
    assert_eq!(
        (
            regs[0].registry.as_str(),
            regs[0].credential.as_ref(),
            regs[0].status.as_ref()
        ),
        ("127.0.0.1:5000", Some(&sealed), Some(&status))
    );
    assert_eq!(
        (regs[1].registry.as_str(), regs[1].status.as_ref()),
        ("ghcr.io", None)
    );

    store
        .set_registry_credential("ghcr.io", None, &admin())
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_registry_credential("ghcr.io", None, &admin())
            .await,
        Err(StoreError::NotFound(_))
    ));
    let bad = RegistryCredential {
        kind: "oauth".into(),
        ..sealed.clone()
    };
    assert!(store
        .set_registry_credential("quay.io", Some(bad), &admin())
        .await
        .is_err());
    let set = events_of_type(&store, events::REGISTRY_CREDENTIALS_SET).await;
    assert_eq!(set.len(), 2);
    assert_eq!(set[0].subject, "registry/127.0.0.1:5000");
    assert_eq!(set[0].payload["username"], "homelab");
    assert!(!set[0].payload.to_string().contains("sealed-secret"));
    let removed = events_of_type(&store, events::REGISTRY_CREDENTIALS_REMOVED).await;
    assert_eq!(removed.len(), 1);
    let regs = store.list_registries().await.unwrap();
    assert!(regs
        .iter()
        .all(|r| r.registry != "ghcr.io" || r.credential.is_none()));
}

/// An approval of a package and an image update: one dry-run carrying the package and the
/// image target; its confirmation pins both (the image by digest) and installs neither
/// reference as a package; the result closes both rows.
pub async fn image_updates_are_approved_planned_and_installed_with_packages(store: S) {
    use canopy_api_types::commands::CommandSpec;
    use canopy_api_types::docker::ImageTarget;
    use canopy_api_types::CorrelationId;
    let h = host(&store, "both").await;
    store
        .ingest_report(h.id, report(vec![apt("curl", "1", "2")]), &admin())
        .await
        .unwrap();
    let web = "127.0.0.1:5000/canopy/web:stable";
    store
        .sync_image_updates(
            h.id,
            vec![image_row(web, "sha256:a1", "sha256:b2")],
            &admin(),
        )
        .await
        .unwrap();
    let ids: Vec<_> = store
        .list_updates(&by_host(h.id))
        .await
        .unwrap()
        .items
        .iter()
        .map(|u| u.id)
        .collect();
    let out = store
        .approve_updates(&ids, CorrelationId::new(), 600, &admin())
        .await
        .unwrap();
    assert_eq!(out.commands.len(), 1, "one dry-run for the host");
    let dry = &out.commands[0];
    assert_eq!(
        dry.spec,
        CommandSpec::DryRun {
            packages: vec!["curl".into()],
            images: vec![ImageTarget {
                reference: web.into(),
                to_digest: "sha256:b2".into()
            }],
        }
    );
    let mut image = planned(web, true);
    image.manager = Some(PackageManager::Docker);
    image.from_version = Some("sha256:a1".into());
    image.to_version = "sha256:b2".into();
    image.containers = vec!["web (compose shop/web)".into()];
    run(
        &store,
        h.id,
        dry.id,
        ok(vec![planned("curl", true), image.clone()]),
    )
    .await;
    let install = store.confirm_dry_run(dry.id, 600, &admin()).await.unwrap();
    let CommandSpec::Install { packages, pinned } = &install.spec else {
        panic!("an install: {:?}", install.spec)
    };
    assert_eq!(packages, &["curl"], "the reference is not an apt package");
    assert!(pinned.contains(&image), "{pinned:?}");
    run(&store, h.id, install.id, ok(vec![])).await;
    let rows = store.list_updates(&by_host(h.id)).await.unwrap().items;
    assert!(
        rows.iter().all(|r| r.status == UpdateStatus::Installed),
        "{rows:?}"
    );
}
