//! `cargo xtask bench --only registry`: registry checks for 100 containers over 25 image
//! references in a real `docker-registry` (distribution 2.8) on 127.0.0.1, through the
//! server's own `registry::Checker`.
//!
//! The fleet: 10 guests; 5 repositories with a multi-platform OCI index under 3 tags each and
//! 5 with a single-platform image under 2 tags (25 references). Most containers were pulled by
//! tag (their RepoDigest is the index digest); every fifth container on an index holds its
//! amd64 manifest digest instead; some run the version before a re-push (an update).
//!
//! 1. First cycle: nothing cached, so the indexes whose digest no RepoDigest matches are read
//!    (one `GET` each, the index cache's cold start).
//! 2. Steady cycles (`STEADY_RUNS`): the check the server repeats every interval.
//!
//! Requests are counted in the registry's own access log and by the checker; the bench
//! aborts when they disagree. `registry_requests_per_reference` is the most manifest requests
//! any steady cycle made ÷ the 25 references (goal ≤ 1.0). Times are wall clock for the whole
//! cycle. The registry is on loopback, so the times are Canopy's work and the registry's, not a
//! network's: Cup's figure (58 images in 3.7 s on a Raspberry Pi 5) is against Docker Hub.
//!
//! Prints one `BENCH name=value` line per figure for xtask to record.

#[path = "../tests/common/registry.rs"]
mod support;

use canopy_server::registry::{CheckInput, Checker, CheckerOptions, Credentials, ImageStatus};
use std::time::{Duration, Instant};
use support::Registry;

const STEADY_RUNS: usize = 20;
const CONTAINERS: usize = 100;
const GUESTS: usize = 10;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    ms(v[((v.len() as f64 - 1.0) * q).round() as usize])
}

/// One reference and the RepoDigests containers on it may hold.
struct Reference {
    name: String,
    /// What a pull by tag recorded (index or manifest digest).
    pulled: String,
    /// The amd64 manifest (an index's entry), if multi-platform.
    platform: Option<String>,
    /// The digest before the last push, for containers that were not updated.
    old: Option<String>,
}

async fn fleet(reg: &Registry) -> Vec<Reference> {
    let a = &reg.addr;
    let mut refs = Vec::new();
    for r in 0..5 {
        let repo = format!("bench/multi{r}");
        for tag in ["stable", "edge", "1.0"] {
            let v1 = reg
                .push_index(&repo, tag, &format!("{repo}:{tag} v1"))
                .await;
            // One tag of two repositories moved on after some containers were created.
            let (now, old) = if tag == "stable" && r < 2 {
                let v2 = reg
                    .push_index(&repo, tag, &format!("{repo}:{tag} v2"))
                    .await;
                (v2, Some(v1.index))
            } else {
                (v1, None)
            };
            refs.push(Reference {
                name: format!("{a}/{repo}:{tag}"),
                pulled: format!("{a}/{repo}@{}", now.index),
                platform: Some(format!("{a}/{repo}@{}", now.amd64)),
                old: old.map(|d| format!("{a}/{repo}@{d}")),
            });
        }
    }
    for r in 0..5 {
        let repo = format!("bench/single{r}");
        for tag in ["latest", "2"] {
            let d = reg
                .push_image(&repo, tag, ("linux", "amd64"), &format!("{repo}:{tag}"))
                .await;
            refs.push(Reference {
                name: format!("{a}/{repo}:{tag}"),
                pulled: format!("{a}/{repo}@{d}"),
                platform: None,
                old: None,
            });
        }
    }
    refs
}

fn inputs(refs: &[Reference]) -> Vec<CheckInput> {
    (0..CONTAINERS)
        .map(|i| {
            let r = &refs[i % refs.len()];
            let digest = match (&r.old, &r.platform) {
                (Some(old), _) if i % 2 == 0 => old.clone(),
                (_, Some(p)) if i % 5 == 0 => p.clone(),
                _ => r.pulled.clone(),
            };
            CheckInput {
                id: format!(
                    "cluster/home/node/pve1/lxc/{}/docker/c{i}",
                    100 + i % GUESTS
                ),
                reference: r.name.clone(),
                platform: "linux/amd64".into(),
                repo_digests: vec![digest],
            }
        })
        .collect()
}

async fn bench() {
    let reg = Registry::start().await;
    let refs = fleet(&reg).await;
    let inputs = inputs(&refs);
    reg.log.since_last_mark().await;
    let checker = Checker::new(CheckerOptions::default(), Credentials::new()).unwrap();

    // Counted twice: by the checker and in the registry's access log.
    let cycle = async || {
        let t = Instant::now();
        let report = checker.check(&inputs).await;
        let took = t.elapsed();
        let logged = reg
            .log
            .since_last_mark()
            .await
            .iter()
            .filter(|l| l.is_manifest_read())
            .count() as u64;
        assert_eq!(
            logged,
            report.registry_requests(),
            "the registry's log and the checker disagree"
        );
        let errors: Vec<_> = report
            .results
            .iter()
            .filter(|r| {
                matches!(
                    r.status,
                    ImageStatus::Error { .. } | ImageStatus::RateLimited { .. }
                )
            })
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        (report, took)
    };

    let (first, first_took) = cycle().await;
    let references = first.references();
    assert_eq!(references, refs.len());
    let updates = first
        .results
        .iter()
        .filter(|r| matches!(r.status, ImageStatus::UpdateAvailable { .. }))
        .count();
    let first_counts = first.registries[0].requests;

    let mut times = Vec::new();
    let mut most = 0;
    for _ in 0..STEADY_RUNS {
        let (report, took) = cycle().await;
        assert_eq!(
            report.results, first.results,
            "a steady cycle changed a verdict"
        );
        most = most.max(report.registry_requests());
        times.push(took);
    }

    println!("BENCH registry_containers={CONTAINERS}");
    println!("BENCH registry_references={references}");
    println!("BENCH registry_updates_found={updates}");
    println!("BENCH registry_first_cycle_heads={}", first_counts.heads);
    println!("BENCH registry_first_cycle_gets={}", first_counts.gets);
    println!(
        "BENCH registry_first_cycle_requests_per_reference={:.2}",
        first.registry_requests() as f64 / references as f64
    );
    println!(
        "BENCH registry_requests_per_reference={:.2}",
        most as f64 / references as f64
    );
    println!("BENCH registry_check_100_first_ms={:.1}", ms(first_took));
    println!(
        "BENCH registry_check_100_p50_ms={:.1}",
        quantile(&mut times, 0.5)
    );
    println!(
        "BENCH registry_check_100_p95_ms={:.1}",
        quantile(&mut times, 0.95)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}
