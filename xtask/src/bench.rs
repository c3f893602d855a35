//! `cargo xtask bench`: runs the benchmarks in [`BENCHES`] one after the other (release),
//! collects their `BENCH name=value` lines and appends one dated section to
//! docs/benchmarks.md with each figure next to its goal, marked met or missed. A lab it
//! starts for the benches that need one is its own and is torn down when it ends, also after a
//! failure or Ctrl-C.

use crate::proc::cmd;
use crate::state;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A goal on one figure: `(bench, figure, comparison, bound)`. A goal is never lowered after
/// a miss: the miss is recorded with its reason (docs/benchmarks.md).
const GOALS: &[(&str, &str, Cmp, f64)] = &[
    ("pipeline", "ingest_vs_raw_ratio", Cmp::AtMost, 2.0),
    ("pipeline", "checkin_vs_noop_pct", Cmp::AtLeast, 25.0),
    ("pipeline", "checkins_per_sec", Cmp::AtLeast, 1000.0),
    ("pipeline", "approve_to_command_p95_ms", Cmp::AtMost, 250.0),
    // The same, until the agent holds the server's go (the start handshake's round trip).
    ("pipeline", "approve_to_start_p95_ms", Cmp::AtMost, 250.0),
    ("selector", "selector_100k_p95_ms", Cmp::AtMost, 5.0),
    ("discovery", "discovery_5000_api_calls", Cmp::AtMost, 3.0),
    // Six fresh installs on one node in parallel vs one, the agent already on the node.
    ("deploy", "deploy_speedup", Cmp::AtLeast, 3.0),
    // Six guests updated, two per node at once, vs three rounds of the slowest guest alone.
    ("update", "update_wall_ratio", Cmp::AtMost, 1.3),
    // 30,000 guests on 650 nodes (two simulated estates), SQLite, the real server.
    ("tree", "tree_node_p95_ms", Cmp::AtMost, 20.0),
    ("tree", "tree_whole_p95_ms", Cmp::AtMost, 200.0),
    ("tree", "tree_server_rss_mb", Cmp::AtMost, 200.0),
    // 5,000 guests (examples/sim/big.toml), headless Chromium: navigation to the first
    // focusable tree rows, and one live update from the stream's message to the row's DOM.
    ("ui", "ui_ready_p95_ms", Cmp::AtMost, 1000.0),
    ("ui", "ui_update_p95_ms", Cmp::AtMost, 50.0),
    // Manifest requests in a steady check cycle ÷ distinct image references (100 containers,
    // 25 references), counted in the registry's own access log.
    (
        "registry",
        "registry_requests_per_reference",
        Cmp::AtMost,
        1.0,
    ),
];

/// Ratios against a baseline that must be a floor: below this the baseline was slower than
/// what it is the floor of, so the ratio says nothing (and is not "met").
const FLOORS: &[(&str, f64)] = &[("ingest_vs_raw_ratio", 1.0)];

/// `(package, bench target)`, run in this order. A bench that fails is recorded (its goals
/// missed) and the others still run; the command fails at the end.
const BENCHES: &[(&str, &str)] = &[
    ("canopy-server", "pipeline"),
    ("canopy-server", "discovery"),
    ("canopy-inventory", "selector"),
    ("canopy-server", "deploy"),
    ("canopy-server", "update"),
    ("canopy-server", "tree"),
    ("canopy-server", "ui"),
    ("canopy-server", "registry"),
    ("canopy-agent", "inventory"),
];

/// Benches that need the lab (its PVE node stand-in and guests) and the static agent.
const NEEDS_LAB: &[&str] = &["deploy", "update"];

#[derive(Clone, Copy)]
enum Cmp {
    AtMost,
    AtLeast,
}

impl Cmp {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Cmp::AtMost => value <= bound,
            Cmp::AtLeast => value >= bound,
        }
    }

    fn show(self, bound: f64) -> String {
        match self {
            Cmp::AtMost => format!("≤ {bound}"),
            Cmp::AtLeast => format!("≥ {bound}"),
        }
    }
}

/// What one run produced.
#[derive(Default)]
struct Outcome {
    figures: Vec<(String, String)>,
    /// `(bench, why)`: it failed or printed no figure; its goals count as missed.
    failed: Vec<(String, String)>,
    /// Benches left out on purpose, with the flag that left them out (`--no-lab`,
    /// `--only`): their goals are neither met nor missed.
    not_run: Vec<(String, &'static str)>,
}

pub fn run(args: &[&str]) -> Result<()> {
    let usage = || format!("usage: cargo xtask bench [--no-lab] [--only BENCH] (got {args:?})");
    let (mut with_lab, mut only) = (true, None);
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match *a {
            "--no-lab" => with_lab = false,
            "--only" => {
                let name = rest.next().ok_or_else(|| anyhow::anyhow!(usage()))?;
                if !BENCHES.iter().any(|(_, b)| b == name) {
                    bail!(
                        "--only {name}: no such bench (one of {:?})",
                        BENCHES.iter().map(|(_, b)| *b).collect::<Vec<_>>()
                    );
                }
                only = Some(name.to_string());
            }
            _ => bail!(usage()),
        }
    }
    let root = state::repo_root()?;
    // Taken before our own builds start: how busy the others left the machine.
    let machine = machine();
    let mut lab = None;
    let outcome = run_benches(&root, with_lab, only.as_deref(), &mut lab);
    // Whatever happened above, the lab (and an engine this run started) goes.
    let torn_down = lab.map_or(Ok(()), BenchLab::down);
    let section = section(&outcome, &date()?, &machine);
    print!("{section}");
    let path = root.join("docs/benchmarks.md");
    let mut doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    if !doc.ends_with('\n') {
        doc.push('\n');
    }
    doc.push('\n');
    doc.push_str(&section);
    std::fs::write(&path, doc).with_context(|| format!("write {}", path.display()))?;
    eprintln!("xtask: appended to {}", path.display());
    torn_down.context("tearing down the bench's lab")?;
    if !outcome.failed.is_empty() {
        let names: Vec<_> = outcome.failed.iter().map(|(b, _)| b.as_str()).collect();
        bail!(
            "benchmark(s) failed: {} (recorded as missed)",
            names.join(", ")
        );
    }
    Ok(())
}

/// Runs [`BENCHES`]; the lab, once a bench needs it, is left in `lab` for the caller to tear
/// down.
fn run_benches(
    root: &Path,
    with_lab: bool,
    only: Option<&str>,
    lab: &mut Option<BenchLab>,
) -> Outcome {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut outcome = Outcome::default();
    let mut lab_failed = None;
    for (package, bench) in BENCHES {
        let mut env = Vec::new();
        if only.is_some_and(|o| o != *bench) {
            outcome.not_run.push((bench.to_string(), "--only"));
            continue;
        }
        if NEEDS_LAB.contains(bench) {
            if !with_lab {
                outcome.not_run.push((bench.to_string(), "--no-lab"));
                continue;
            }
            if lab.is_none() && lab_failed.is_none() {
                match BenchLab::up(root) {
                    Ok(l) => *lab = Some(l),
                    Err(e) => lab_failed = Some(format!("the lab did not come up: {e:#}")),
                }
            }
            if let Some(why) = &lab_failed {
                outcome.failed.push((bench.to_string(), why.clone()));
                continue;
            }
            env = lab.as_ref().map(BenchLab::env).unwrap_or_default();
        }
        if *bench == "inventory" {
            // The agent's inventory reads a real engine's containers.
            if let Err(e) = crate::dockerd::ensure() {
                outcome
                    .failed
                    .push((bench.to_string(), format!("no Docker engine: {e:#}")));
                continue;
            }
        }
        if *bench == "ui" {
            // The server embeds the dashboard as built when it is compiled.
            if let Err(e) = crate::ui::build(root) {
                outcome.failed.push((
                    bench.to_string(),
                    format!("the dashboard did not build: {e:#}"),
                ));
                continue;
            }
        }
        eprintln!("xtask: cargo bench -p {package} --bench {bench} (release; takes a while)");
        let mut bench_cmd = cmd(&cargo, ["bench", "-p", package, "--bench", bench]);
        for (k, v) in &env {
            bench_cmd = bench_cmd.env(k, v);
        }
        let out = bench_cmd
            .current_dir(root)
            .timeout(Duration::from_secs(45 * 60))
            .capture();
        let (found, failure) = match out {
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
            Ok(out) => {
                let found = parse(&out.stdout);
                let failure = if !out.status.success() {
                    Some(format!(
                        "exited with {}: {}",
                        out.status,
                        last_line(&out.stderr)
                    ))
                } else if found.is_empty() {
                    Some("printed no `BENCH name=value` line".to_string())
                } else {
                    None
                };
                if failure.is_some() {
                    eprint!("{}", crate::proc::tail(&out.stderr, 30));
                }
                (found, failure)
            }
        };
        outcome.figures.extend(found);
        if let Some(why) = failure {
            eprintln!("xtask: benchmark {bench} failed: {why}");
            outcome.failed.push((bench.to_string(), why));
        }
    }
    outcome
}

/// The last non-empty line of `s`, for a one-line reason.
fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

/// The lab the benches that need one run against: an instance of its own
/// (`CANOPY_LAB_INSTANCE=bench` unless one is set), so a lab the tests or the demo use is
/// never replaced or torn down. Everything it starts goes when the bench ends: at the end, after
/// a failure, and through a detached watchdog when xtask is interrupted (Ctrl-C).
struct BenchLab {
    json: PathBuf,
    agent: PathBuf,
    docker_started: bool,
    watchdog: Option<state::Watchdog>,
}

impl BenchLab {
    fn up(root: &Path) -> Result<BenchLab> {
        if std::env::var_os("CANOPY_LAB_INSTANCE").is_none() {
            std::env::set_var("CANOPY_LAB_INSTANCE", "bench");
        }
        let agent = crate::test::build_musl_agent(root)?;
        let docker_started = crate::dockerd::ensure()?;
        let exe = std::env::current_exe()?;
        let mut teardown = format!("'{}' lab down", exe.display());
        if docker_started {
            teardown.push_str(&format!("; '{}' dockerd stop", exe.display()));
        }
        // Armed before the lab starts: an interrupted `lab up` leaves containers too.
        let watchdog = state::Watchdog::spawn("bench", std::process::id(), &teardown)?;
        let mut lab = BenchLab {
            json: PathBuf::new(),
            agent,
            docker_started,
            watchdog: Some(watchdog),
        };
        match crate::lab::up(1) {
            Ok(json) => lab.json = json,
            Err(e) => {
                if let Err(down) = lab.down() {
                    eprintln!("xtask: tearing down the bench's lab failed too: {down:#}");
                }
                return Err(e);
            }
        }
        Ok(lab)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CANOPY_LAB".into(), self.json.display().to_string()),
            (
                "CANOPY_AGENT_MUSL_BIN".into(),
                self.agent.display().to_string(),
            ),
        ]
    }

    /// The lab down, then the engine if this run started it; the watchdog first, so the two
    /// never tear down at once.
    fn down(mut self) -> Result<()> {
        if let Some(w) = self.watchdog.take() {
            if let Err(e) = w.disarm() {
                eprintln!("xtask: cannot stop the bench's watchdog ({e:#}); tearing down anyway");
            }
        }
        let lab = crate::lab::down();
        let docker = if self.docker_started {
            crate::dockerd::stop()
        } else {
            Ok(())
        };
        lab.and(docker)
    }
}

/// `BENCH name=value` lines, in order.
fn parse(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BENCH "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn section(outcome: &Outcome, date: &str, machine: &str) -> String {
    let mut s =
        format!("## {date} — {machine}\n\n| figure | value | goal | |\n|---|---|---|---|\n");
    for (name, value) in &outcome.figures {
        let goal = GOALS.iter().find(|(_, g, _, _)| g == name);
        let floor = FLOORS.iter().find(|(f, _)| f == name);
        let (goal, verdict) = match (goal, value.parse::<f64>()) {
            (Some((_, _, cmp, bound)), Ok(v)) => (
                cmp.show(*bound),
                match floor {
                    Some((_, min)) if v < *min => "**baseline not a floor**",
                    _ if cmp.holds(v, *bound) => "met",
                    _ => "**missed**",
                },
            ),
            (Some((_, _, cmp, bound)), Err(_)) => (cmp.show(*bound), "unreadable"),
            (None, _) => (String::new(), ""),
        };
        let _ = writeln!(s, "| {name} | {value} | {goal} | {verdict} |");
    }
    for (bench, name, cmp, bound) in GOALS {
        if outcome.figures.iter().any(|(n, _)| n == name) {
            continue;
        }
        let (value, verdict) = match outcome.not_run.iter().find(|(b, _)| b == bench) {
            Some((_, flag)) => (format!("(not run: {flag})"), "not run"),
            None => ("(not reported)".to_string(), "**missed**"),
        };
        let _ = writeln!(s, "| {name} | {value} | {} | {verdict} |", cmp.show(*bound));
    }
    for (bench, why) in &outcome.failed {
        let _ = writeln!(s, "\nBenchmark `{bench}` failed: {why}");
    }
    s
}

fn date() -> Result<String> {
    Ok(cmd("date", ["-u", "+%Y-%m-%d"])
        .output()?
        .trim()
        .to_string())
}

/// `<cpu model>, <n> cores, load <1-minute load average>`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .map(|l| format!(", load {l}"))
        .unwrap_or_default();
    format!("{model}, {cores} cores{load}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stdout: &str) -> Outcome {
        Outcome {
            figures: parse(stdout),
            ..Default::default()
        }
    }

    #[test]
    fn table_marks_goals() {
        let o = outcome("noise\nBENCH ingest_vs_raw_ratio=1.50\nBENCH checkins_per_sec=900\n");
        let s = section(&o, "2026-01-01", "cpu, 2 cores");
        assert!(s.starts_with("## 2026-01-01 — cpu, 2 cores\n"));
        assert!(s.contains("| ingest_vs_raw_ratio | 1.50 | ≤ 2 | met |"));
        assert!(s.contains("| checkins_per_sec | 900 | ≥ 1000 | **missed** |"));
        assert!(s.contains("| approve_to_command_p95_ms | (not reported) |"));
        assert!(s.contains("| selector_100k_p95_ms | (not reported) | ≤ 5 | **missed** |"));
        assert!(s.contains("| deploy_speedup | (not reported) | ≥ 3 | **missed** |"));
    }

    #[test]
    fn count_goals_compare_as_numbers() {
        let o = outcome("BENCH discovery_5000_api_calls=2\nBENCH selector_100k_p95_ms=5.001\n");
        let s = section(&o, "2026-01-01", "cpu, 2 cores");
        assert!(s.contains("| discovery_5000_api_calls | 2 | ≤ 3 | met |"));
        assert!(s.contains("| selector_100k_p95_ms | 5.001 | ≤ 5 | **missed** |"));
    }

    #[test]
    fn a_baseline_slower_than_what_it_is_the_floor_of_is_not_met() {
        let s = section(
            &outcome("BENCH ingest_vs_raw_ratio=0.66\n"),
            "2026-01-01",
            "cpu",
        );
        assert!(s.contains("| ingest_vs_raw_ratio | 0.66 | ≤ 2 | **baseline not a floor** |"));
    }

    #[test]
    fn failed_and_left_out_benches_are_recorded() {
        let mut o = outcome("BENCH discovery_5000_api_calls=4\n");
        o.failed
            .push(("discovery".into(), "exited with 101: boom".into()));
        o.not_run.push(("deploy".into(), "--no-lab"));
        let s = section(&o, "2026-01-01", "cpu");
        // A goal missed is a figure in the table, never an abort without one.
        assert!(s.contains("| discovery_5000_api_calls | 4 | ≤ 3 | **missed** |"));
        assert!(s.contains("Benchmark `discovery` failed: exited with 101: boom"));
        assert!(s.contains("| deploy_speedup | (not run: --no-lab) | ≥ 3 | not run |"));
    }
}
