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

/// A goal on one figure: `(name, comparison, bound)`.
const GOALS: &[(&str, Cmp, f64)] = &[
    ("ingest_vs_raw_ratio", Cmp::AtMost, 2.0),
    ("checkin_vs_noop_pct", Cmp::AtLeast, 25.0),
    ("checkins_per_sec", Cmp::AtLeast, 1000.0),
    ("approve_to_command_p95_ms", Cmp::AtMost, 250.0),
    ("selector_100k_p95_ms", Cmp::AtMost, 5.0),
    ("discovery_5000_api_calls", Cmp::AtMost, 3.0),
    // Six fresh installs on one node in parallel vs one. A deploy is CPU-bound once the
    // agent checks in at once (its first scan, sshd, pct), so on 2 cores the parallel run
    // must at least use both: ≥ 2.
    ("deploy_speedup", Cmp::AtLeast, 2.0),
];

/// `(package, bench target)`, run in this order; a failing one stops the run.
const BENCHES: &[(&str, &str)] = &[
    ("canopy-server", "pipeline"),
    ("canopy-server", "discovery"),
    ("canopy-inventory", "selector"),
    ("canopy-server", "deploy"),
];

/// Benches that need the lab (its PVE node stand-in and guests) and the static agent.
const NEEDS_LAB: &[&str] = &["deploy"];

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

pub fn run(args: &[&str]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("cargo xtask bench takes no arguments (got {arg:?})");
    }
    let root = state::repo_root()?;
    // Taken before our own builds start: how busy the others left the machine.
    let machine = machine();
    let mut lab = None;
    let figures = run_benches(&root, &mut lab);
    // Whatever happened above, the lab (and an engine this run started) goes.
    let torn_down = lab.map_or(Ok(()), BenchLab::down);
    let figures = figures?;
    torn_down?;
    let section = section(&figures, &date()?, &machine);
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
    Ok(())
}

/// Runs [`BENCHES`]; the lab, once a bench needs it, is left in `lab` for the caller to tear
/// down.
fn run_benches(root: &Path, lab: &mut Option<BenchLab>) -> Result<Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut figures = Vec::new();
    for (package, bench) in BENCHES {
        let mut env = Vec::new();
        if NEEDS_LAB.contains(bench) {
            if lab.is_none() {
                *lab = Some(BenchLab::up(root)?);
            }
            env = lab.as_ref().map(BenchLab::env).unwrap_or_default();
        }
        eprintln!("xtask: cargo bench -p {package} --bench {bench} (release; takes a while)");
        let mut bench_cmd = cmd(&cargo, ["bench", "-p", package, "--bench", bench]);
        for (k, v) in &env {
            bench_cmd = bench_cmd.env(k, v);
        }
        let out = bench_cmd
            .current_dir(root)
            .timeout(Duration::from_secs(45 * 60))
            .output()?;
        let found = parse(&out);
        if found.is_empty() {
            bail!(
                "benchmark {bench} printed no `BENCH name=value` line:\n{}",
                crate::proc::tail(&out, 20)
            );
        }
        figures.extend(found);
    }
    Ok(figures)
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

fn section(figures: &[(String, String)], date: &str, machine: &str) -> String {
    let mut s =
        format!("## {date} — {machine}\n\n| figure | value | goal | |\n|---|---|---|---|\n");
    for (name, value) in figures {
        let goal = GOALS.iter().find(|(g, _, _)| g == name);
        let (goal, verdict) = match (goal, value.parse::<f64>()) {
            (Some((_, cmp, bound)), Ok(v)) => (
                cmp.show(*bound),
                if cmp.holds(v, *bound) {
                    "met"
                } else {
                    "**missed**"
                },
            ),
            (Some((_, cmp, bound)), Err(_)) => (cmp.show(*bound), "unreadable"),
            (None, _) => (String::new(), ""),
        };
        let _ = writeln!(s, "| {name} | {value} | {goal} | {verdict} |");
    }
    for (name, cmp, bound) in GOALS {
        if !figures.iter().any(|(n, _)| n == name) {
            let _ = writeln!(
                s,
                "| {name} | (not reported) | {} | **missed** |",
                cmp.show(*bound)
            );
        }
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

    #[test]
    fn table_marks_goals() {
        let figures = parse("noise\nBENCH ingest_vs_raw_ratio=1.50\nBENCH checkins_per_sec=900\n");
        let s = section(&figures, "2026-01-01", "cpu, 2 cores");
        assert!(s.starts_with("## 2026-01-01 — cpu, 2 cores\n"));
        assert!(s.contains("| ingest_vs_raw_ratio | 1.50 | ≤ 2 | met |"));
        assert!(s.contains("| checkins_per_sec | 900 | ≥ 1000 | **missed** |"));
        assert!(s.contains("| approve_to_command_p95_ms | (not reported) |"));
        assert!(s.contains("| selector_100k_p95_ms | (not reported) | ≤ 5 | **missed** |"));
    }

    #[test]
    fn count_goals_compare_as_numbers() {
        let figures = parse("BENCH discovery_5000_api_calls=2\nBENCH selector_100k_p95_ms=5.001\n");
        let s = section(&figures, "2026-01-01", "cpu, 2 cores");
        assert!(s.contains("| discovery_5000_api_calls | 2 | ≤ 3 | met |"));
        assert!(s.contains("| selector_100k_p95_ms | 5.001 | ≤ 5 | **missed** |"));
    }
}
