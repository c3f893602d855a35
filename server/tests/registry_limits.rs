//! A registry that answers `429` with `Retry-After` (nginx's `limit_req` in front of a real
//! `docker-registry`, 30 requests a minute, no burst): the images are reported rate limited
//! with the time, the budget the answers announced is recorded, nothing is sent to the
//! registry before that time (nginx's own access log), and the next cycle after it checks
//! again.

#[path = "common/registry.rs"]
mod support;

use canopy_server::registry::{CheckInput, Checker, CheckerOptions, Credentials, ImageStatus};
use chrono::Utc;
use std::time::{Duration, Instant};
use support::{Nginx, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_registries_are_left_alone_until_retry_after() {
    let reg = Registry::start().await;
    let nginx = Nginx::start(&reg.addr).await;
    let web = reg.push_index("canopy/web", "stable", "web v1").await;
    let front = nginx.addr.clone();
    let inputs: Vec<CheckInput> = (0..3)
        .map(|i| CheckInput {
            id: format!("c{i}"),
            reference: format!("{front}/canopy/web:stable"),
            platform: "linux/amd64".into(),
            repo_digests: vec![format!("{front}/canopy/web@{}", web.index)],
        })
        .collect();
    let checker = Checker::new(CheckerOptions::default(), Credentials::new()).unwrap();

    // The first request in the window passes and announces the budget.
    let first = checker.check(&inputs).await;
    assert!(
        first
            .results
            .iter()
            .all(|r| matches!(r.status, ImageStatus::UpToDate { .. })),
        "{first:#?}"
    );
    let budget = first
        .registry(&front)
        .unwrap()
        .budget
        .clone()
        .expect("a budget");
    assert_eq!(
        (budget.remaining, budget.limit, budget.window_secs),
        (1, Some(30), Some(60))
    );
    nginx.log.since_last_mark().await;

    // Cycles until nginx refuses (the next one normally does: one request per 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let limited = loop {
        let report = checker.check(&inputs).await;
        if report
            .results
            .iter()
            .any(|r| matches!(r.status, ImageStatus::RateLimited { .. }))
        {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "nginx never answered 429: {report:#?}"
        );
    };
    let retry_after = limited.retry_at.expect("the report says when to come back");
    for r in &limited.results {
        assert_eq!(
            r.status,
            ImageStatus::RateLimited {
                registry: front.clone(),
                retry_after
            },
            "{r:?}"
        );
    }
    // Retry-After: 2 (seconds) from the 429.
    let asked = limited.finished_at - retry_after + chrono::Duration::seconds(2);
    assert!(
        asked >= chrono::Duration::zero() && asked <= chrono::Duration::seconds(2),
        "{limited:#?}"
    );
    let reg_report = limited.registry(&front).unwrap();
    assert_eq!(reg_report.backoff_until, Some(retry_after));
    assert_eq!(
        reg_report.budget.as_ref().unwrap().remaining,
        0,
        "{reg_report:?}"
    );
    let refused = nginx.log.since_last_mark().await;
    let last = refused.iter().rfind(|l| l.is_manifest_read()).unwrap();
    assert_eq!(last.status, 429, "{refused:#?}");

    // Until retry_after: no request at all (nginx's log), the images still rate limited.
    // After it: one HEAD, and the images are up to date again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held_cycles = 0;
    let recovered = loop {
        let report = checker.check(&inputs).await;
        let lines = nginx.log.since_last_mark().await;
        let reads: Vec<_> = lines.iter().filter(|l| l.is_manifest_read()).collect();
        if report.finished_at < retry_after {
            assert!(
                reads.is_empty(),
                "a request before {retry_after}: {reads:#?}"
            );
            let counts = report.registry(&front).unwrap().requests;
            assert_eq!((counts.heads, counts.held_back), (0, 1), "{counts:?}");
            assert!(matches!(
                report.results[0].status,
                ImageStatus::RateLimited { .. }
            ));
            held_cycles += 1;
        }
        if report
            .results
            .iter()
            .all(|r| matches!(r.status, ImageStatus::UpToDate { .. }))
        {
            assert!(report.started_at >= retry_after, "{report:#?}");
            assert_eq!(reads.len(), 1, "{reads:#?}");
            assert_eq!((reads[0].method.as_str(), reads[0].status), ("HEAD", 200));
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "never checked again: {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(held_cycles > 0, "no cycle ran during the back-off");
    assert!(Utc::now() >= retry_after);
    let r = recovered.registry(&front).unwrap();
    assert_eq!(r.backoff_until, None);
    assert_eq!(r.budget.as_ref().unwrap().remaining, 1);
    assert_eq!(recovered.retry_at, None);
}
