//! Registry checks against a real `docker-registry` (distribution 2.8) on 127.0.0.1, requests
//! counted in the registry's own access log: one manifest request per (registry, repository,
//! tag) for the whole fleet, multi-platform images compared by index and platform digest, an
//! update for exactly the containers on a re-pushed tag, and errors per image.

#[path = "common/registry.rs"]
mod support;

use canopy_server::registry::{
    CheckInput, Checker, CheckerOptions, Credentials, CycleReport, ErrorKind, ImageStatus,
};
use support::{LogLine, Nginx, Registry};

fn checker() -> Checker {
    Checker::new(CheckerOptions::default(), Credentials::new()).unwrap()
}

fn input(id: &str, reference: &str, platform: &str, repo_digests: &[String]) -> CheckInput {
    CheckInput {
        id: id.into(),
        reference: reference.into(),
        platform: platform.into(),
        repo_digests: repo_digests.to_vec(),
    }
}

fn manifest_reads(lines: &[LogLine]) -> Vec<&LogLine> {
    lines.iter().filter(|l| l.is_manifest_read()).collect()
}

fn status<'a>(report: &'a CycleReport, id: &str) -> &'a ImageStatus {
    &report
        .result(id)
        .unwrap_or_else(|| panic!("no result for {id}"))
        .status
}

fn error(report: &CycleReport, id: &str) -> (ErrorKind, String) {
    match status(report, id) {
        ImageStatus::Error { kind, message } => (*kind, message.clone()),
        other => panic!("{id}: expected an error, got {other:?}"),
    }
}

/// 20 containers on 4 guests sharing 3 references: one multi-platform index pulled by tag,
/// one single-platform image, one more index. Exactly 3 manifest requests in the registry's
/// log, all `HEAD`, every container up to date — twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_containers_three_references_three_requests() {
    let reg = Registry::start().await;
    let web = reg.push_index("canopy/web", "stable", "web v1").await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    let cache = reg.push_index("canopy/cache", "7", "cache v1").await;
    let a = &reg.addr;
    let refs = [
        (
            format!("{a}/canopy/web:stable"),
            format!("{a}/canopy/web@{}", web.index),
        ),
        (format!("{a}/canopy/db:15"), format!("{a}/canopy/db@{db}")),
        (
            format!("{a}/canopy/cache:7"),
            format!("{a}/canopy/cache@{}", cache.index),
        ),
    ];
    let inputs: Vec<CheckInput> = (0..20)
        .map(|i| {
            let (reference, digest) = &refs[i % 3];
            let id = format!("cluster/home/node/pve1/lxc/{}/docker/c{i}", 101 + i % 4);
            // Some images were also tagged for another repository: never compared.
            let other = format!("{a}/elsewhere/web@{}", cache.amd64);
            input(&id, reference, "linux/amd64", &[digest.clone(), other])
        })
        .collect();
    let checker = checker();
    for cycle in 1..=2 {
        let report = checker.check(&inputs).await;
        let log = reg.log.since_last_mark().await;
        let reads = manifest_reads(&log);
        assert_eq!(reads.len(), 3, "cycle {cycle}: {log:#?}");
        assert!(
            reads.iter().all(|l| l.method == "HEAD" && l.status == 200),
            "{reads:#?}"
        );
        let mut paths: Vec<&str> = reads.iter().map(|l| l.uri.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/v2/canopy/cache/manifests/7",
                "/v2/canopy/db/manifests/15",
                "/v2/canopy/web/manifests/stable"
            ]
        );
        assert_eq!(report.registry_requests(), 3, "{report:#?}");
        assert_eq!(report.references(), 3);
        let counts = report.registry(a).unwrap().requests;
        assert_eq!((counts.heads, counts.gets), (3, 0));
        for (i, r) in report.results.iter().enumerate() {
            let want = [&web.index, &db, &cache.index][i % 3];
            assert_eq!(
                r.status,
                ImageStatus::UpToDate {
                    remote_digest: want.clone(),
                    platform_digest: None
                },
                "{r:?}"
            );
            assert_eq!(r.id, inputs[i].id);
        }
    }
}

/// A local image whose RepoDigest is the amd64 (or arm64) manifest of the index, not the
/// index: up to date, found with one `GET` of the index, and no `GET` the next cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_digests_are_up_to_date_with_one_index_read() {
    let reg = Registry::start().await;
    let web = reg.push_index("canopy/web", "stable", "web v1").await;
    let a = &reg.addr;
    let reference = format!("{a}/canopy/web:stable");
    let inputs = vec![
        input(
            "amd",
            &reference,
            "linux/amd64",
            &[format!("{a}/canopy/web@{}", web.amd64)],
        ),
        input(
            "arm",
            &reference,
            "linux/arm64/v8",
            &[format!("{a}/canopy/web@{}", web.arm64)],
        ),
        // Pulled as the arm64 manifest but running on amd64 (an emulated container): the
        // amd64 manifest is what a pull would bring.
        input(
            "odd",
            &reference,
            "linux/amd64",
            &[format!("{a}/canopy/web@{}", web.arm64)],
        ),
        input(
            "s390x",
            &reference,
            "linux/s390x",
            &[format!("{a}/canopy/web@{}", web.arm64)],
        ),
    ];
    let checker = checker();

    let report = checker.check(&inputs).await;
    let log = reg.log.since_last_mark().await;
    let reads: Vec<(&str, &str)> = manifest_reads(&log)
        .iter()
        .map(|l| (l.method.as_str(), l.uri.as_str()))
        .collect();
    assert_eq!(
        reads,
        [
            ("HEAD", "/v2/canopy/web/manifests/stable"),
            ("GET", &*format!("/v2/canopy/web/manifests/{}", web.index)),
        ]
    );
    assert_eq!(
        *status(&report, "amd"),
        ImageStatus::UpToDate {
            remote_digest: web.index.clone(),
            platform_digest: Some(web.amd64.clone())
        }
    );
    assert_eq!(
        *status(&report, "arm"),
        ImageStatus::UpToDate {
            remote_digest: web.index.clone(),
            platform_digest: Some(web.arm64.clone())
        }
    );
    assert_eq!(
        *status(&report, "odd"),
        ImageStatus::UpdateAvailable {
            local_digests: vec![web.arm64.clone()],
            remote_digest: web.index.clone(),
            platform_digest: Some(web.amd64.clone())
        }
    );
    let (kind, message) = error(&report, "s390x");
    assert_eq!(kind, ErrorKind::NoPlatform);
    assert!(
        message.contains("linux/s390x") && message.contains("linux/amd64, linux/arm64"),
        "{message}"
    );
    assert_eq!(report.registry(a).unwrap().requests.gets, 1);

    // The index is cached by its digest: the next cycle is one HEAD.
    let again = checker.check(&inputs).await;
    let log = reg.log.since_last_mark().await;
    let reads = manifest_reads(&log);
    assert_eq!(reads.len(), 1, "{log:#?}");
    assert_eq!(reads[0].method, "HEAD");
    assert_eq!(again.results, report.results);
}

/// A new version pushed to one tag: an update for exactly the containers on that tag, with
/// the new index digest (what `docker pull` records) and the new platform manifest; the other
/// tag of the same repository and the other repository stay up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_version_is_an_update_for_exactly_that_tag() {
    let reg = Registry::start().await;
    let a = reg.addr.clone();
    let v1 = reg.push_index("canopy/web", "stable", "web v1").await;
    let edge = reg.push_index("canopy/web", "edge", "web edge").await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    let mut inputs = Vec::new();
    for g in 0..4 {
        let rd = |repo: &str, d: &str| format!("{a}/{repo}@{d}");
        inputs.push(input(
            &format!("g{g}/web"),
            &format!("{a}/canopy/web:stable"),
            "linux/amd64",
            &[rd("canopy/web", &v1.index)],
        ));
        inputs.push(input(
            &format!("g{g}/edge"),
            &format!("{a}/canopy/web:edge"),
            "linux/amd64",
            &[rd("canopy/web", &edge.index)],
        ));
        inputs.push(input(
            &format!("g{g}/db"),
            &format!("{a}/canopy/db:15"),
            "linux/amd64",
            &[rd("canopy/db", &db)],
        ));
    }
    let checker = checker();
    let before = checker.check(&inputs).await;
    assert!(
        before
            .results
            .iter()
            .all(|r| matches!(r.status, ImageStatus::UpToDate { .. })),
        "{before:#?}"
    );
    reg.log.since_last_mark().await;

    let v2 = reg.push_index("canopy/web", "stable", "web v2").await;
    assert_ne!(v2.index, v1.index);
    reg.log.since_last_mark().await;
    let after = checker.check(&inputs).await;
    for r in &after.results {
        if r.id.ends_with("/web") {
            assert_eq!(
                r.status,
                ImageStatus::UpdateAvailable {
                    local_digests: vec![v1.index.clone()],
                    remote_digest: v2.index.clone(),
                    platform_digest: Some(v2.amd64.clone()),
                },
                "{r:?}"
            );
        } else {
            assert!(matches!(r.status, ImageStatus::UpToDate { .. }), "{r:?}");
        }
    }
    // Three HEADs and one GET of the new index (its amd64 manifest), for 12 containers.
    let log = reg.log.since_last_mark().await;
    let reads = manifest_reads(&log);
    assert_eq!(
        reads.iter().filter(|l| l.method == "HEAD").count(),
        3,
        "{log:#?}"
    );
    let gets: Vec<&str> = reads
        .iter()
        .filter(|l| l.method == "GET")
        .map(|l| l.uri.as_str())
        .collect();
    assert_eq!(gets, [format!("/v2/canopy/web/manifests/{}", v2.index)]);
}

/// Errors are per image: a missing tag, an unreachable registry, a registry that answers
/// garbage or content that does not match its digest, a reference that does not parse and a
/// local image without a RepoDigest; the others are still checked. A pinned reference makes
/// no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_per_image_and_the_others_succeed() {
    let reg = Registry::start().await;
    let nginx = Nginx::start(&reg.addr).await;
    let a = reg.addr.clone();
    let web = reg.push_index("canopy/web", "stable", "web v1").await;
    reg.log.since_last_mark().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let ok_digest = [format!("{a}/canopy/web@{}", web.index)];
    let b = &nginx.broken_addr;
    let other = format!("sha256:{}", "2".repeat(64));
    let inputs = vec![
        input(
            "ok",
            &format!("{a}/canopy/web:stable"),
            "linux/amd64",
            &ok_digest,
        ),
        input(
            "missing-tag",
            &format!("{a}/canopy/web:nope"),
            "linux/amd64",
            &[format!("{a}/canopy/web@{other}")],
        ),
        input(
            "missing-repo",
            &format!("{a}/canopy/gone:1"),
            "linux/amd64",
            &[format!("{a}/canopy/gone@{other}")],
        ),
        input(
            "unreachable",
            &format!("{closed}/canopy/web:stable"),
            "linux/amd64",
            &[format!("{closed}/canopy/web@{other}")],
        ),
        input(
            "garbage",
            &format!("{b}/garbage/app:1"),
            "linux/amd64",
            &[format!("{b}/garbage/app@{other}")],
        ),
        input(
            "liar",
            &format!("{b}/liar/app:1"),
            "linux/amd64",
            &[format!("{b}/liar/app@{other}")],
        ),
        input("bad-ref", "Canopy/Web:stable", "linux/amd64", &[]),
        input(
            "local-build",
            &format!("{a}/canopy/web:stable"),
            "linux/amd64",
            &[],
        ),
        input(
            "pinned",
            &format!("{a}/canopy/web:stable@{}", web.index),
            "linux/amd64",
            &[],
        ),
    ];
    let report = checker().check(&inputs).await;
    assert_eq!(
        *status(&report, "ok"),
        ImageStatus::UpToDate {
            remote_digest: web.index.clone(),
            platform_digest: None
        }
    );
    let cases = [
        (
            "missing-tag",
            ErrorKind::NotFound,
            vec![a.as_str(), "canopy/web", "nope", "404"],
        ),
        (
            "missing-repo",
            ErrorKind::NotFound,
            vec![a.as_str(), "canopy/gone", "404"],
        ),
        (
            "unreachable",
            ErrorKind::Unreachable,
            vec![closed.as_str(), "canopy/web", "cannot connect"],
        ),
        (
            "garbage",
            ErrorKind::BadAnswer,
            vec![b.as_str(), "garbage/app", "without a Docker-Content-Digest"],
        ),
        (
            "liar",
            ErrorKind::BadAnswer,
            vec![
                b.as_str(),
                "liar/app",
                support::LIAR_DIGEST,
                "sent content whose digest is",
            ],
        ),
        (
            "bad-ref",
            ErrorKind::InvalidReference,
            vec!["Canopy/Web:stable", "lower-case"],
        ),
        (
            "local-build",
            ErrorKind::NoLocalDigest,
            vec![a.as_str(), "canopy/web", "no RepoDigest"],
        ),
    ];
    for (id, kind, needles) in cases {
        let (got, message) = error(&report, id);
        assert_eq!(got, kind, "{id}: {message}");
        for n in needles {
            assert!(message.contains(n), "{id}: {n:?} missing from {message:?}");
        }
    }
    assert_eq!(
        *status(&report, "pinned"),
        ImageStatus::Pinned {
            digest: web.index.clone()
        }
    );
    // One HEAD each for stable, nope and gone: "local-build" shares stable's, "pinned" asks
    // nothing.
    let log = reg.log.since_last_mark().await;
    let reads = manifest_reads(&log);
    assert_eq!(reads.len(), 3, "{log:#?}");
    assert!(reads.iter().all(|l| l.method == "HEAD"));
    assert_eq!(reads.iter().filter(|l| l.status == 404).count(), 2);
}
