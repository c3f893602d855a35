//! `cargo xtask test`: exactly what CI runs, in order, with a summary at the end.
//!
//! prereqs → check → fmt → ui (the web dashboard, which `canopy` embeds) → clippy (also the
//! dashboard for wasm32) → musl agent (exports `CANOPY_AGENT_MUSL_BIN`) → PostgreSQL
//! (exports `CANOPY_TEST_POSTGRES_URL`) → dockerd → lab up (Debian and dnf guests, a PVE node
//! stand-in with its guests, apt and RPM repositories, and with `--docker-guests` a Docker
//! registry with a rate-limiting front and the Docker guests 201–204; exports `CANOPY_LAB` and
//! `CANOPY_XTASK_BIN`, which lab tests call to publish package versions and push images) → the tests
//! (nextest when installed, else `cargo test`) → lab down and pg stop, also after a failure.
//!
//! Developers may skip steps with `--no-prereqs --no-check --no-fmt --no-ui --no-clippy --no-musl
//! --no-pg --no-docker --no-lab` (`--no-docker` implies `--no-lab`); skipping PostgreSQL or the
//! lab exports `CANOPY_SKIP_POSTGRES=1` / `CANOPY_SKIP_LAB=1` so the tests say they skipped.
//! With `CI=true` no flag is accepted and every step is mandatory.

use crate::proc::cmd;
use crate::{dockerd, lab, pg, prereqs, state};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STEPS: &[&str] = &[
    "prereqs", "check", "fmt", "ui", "clippy", "musl", "pg", "docker", "lab",
];
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// One Debian guest per lab test that enrols an agent (they run concurrently):
/// `server/tests/lab.rs` uses guests 1–3, `lab_hang.rs` guest 4, `lab_trust.rs` guests 5–7.
const LAB_GUESTS: usize = 7;

struct Step {
    name: &'static str,
    outcome: String,
    secs: f64,
}

#[derive(Default)]
struct Run {
    steps: Vec<Step>,
    env: Vec<(String, String)>,
    failed: bool,
}

impl Run {
    /// Runs one step unless an earlier step failed; records outcome and duration.
    fn step(&mut self, name: &'static str, f: impl FnOnce(&mut Self) -> Result<()>) {
        if self.failed {
            self.record(name, "not run (an earlier step failed)".into(), 0.0);
            return;
        }
        let started = Instant::now();
        eprintln!("\nxtask test: ── {name} ──");
        let outcome = match f(self) {
            Ok(()) => "ok".to_string(),
            Err(err) => {
                eprintln!("xtask test: {name} FAILED: {err:#}");
                self.failed = true;
                format!("FAILED: {}", first_line(&format!("{err:#}")))
            }
        };
        self.record(name, outcome, started.elapsed().as_secs_f64());
    }

    fn record(&mut self, name: &'static str, outcome: String, secs: f64) {
        self.steps.push(Step {
            name,
            outcome,
            secs,
        });
    }

    fn export(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        eprintln!("xtask test: export {key}={value}");
        self.env.push((key.to_string(), value));
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").to_string();
    if line.len() > 160 {
        format!(
            "{}…",
            &line[..line.char_indices().nth(157).map_or(line.len(), |(i, _)| i)]
        )
    } else {
        line
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else `cargo metadata`'s `target_directory`.
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return Ok(if dir.is_absolute() {
            dir
        } else {
            root.join(dir)
        });
    }
    let meta = cmd(&cargo(), ["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()?;
    let key = "\"target_directory\":\"";
    let start = meta
        .find(key)
        .context("cargo metadata has no target_directory")?
        + key.len();
    let end = start + meta[start..].find('"').context("bad cargo metadata")?;
    Ok(PathBuf::from(meta[start..end].replace("\\\\", "\\")))
}

/// Builds the static agent and returns the absolute path of the binary.
pub fn build_musl_agent(root: &Path) -> Result<PathBuf> {
    cmd(
        &cargo(),
        [
            "build",
            "-p",
            "canopy-agent",
            "--release",
            "--target",
            MUSL_TARGET,
        ],
    )
    .current_dir(root)
    .timeout(Duration::from_secs(40 * 60))
    .stream()?;
    let bin = target_dir(root)?
        .join(MUSL_TARGET)
        .join("release/canopy-agent");
    if !bin.is_file() {
        bail!("built the musl agent but {} is missing", bin.display());
    }
    Ok(bin)
}

pub fn run(args: &[&str]) -> Result<()> {
    let ci = state::is_ci();
    let mut skip: Vec<&str> = Vec::new();
    for arg in args {
        match arg.strip_prefix("--no-") {
            Some(step) if STEPS.contains(&step) => skip.push(step),
            _ => bail!(
                "unknown argument {arg:?}; steps can be skipped with --no-{}",
                STEPS.join(" --no-")
            ),
        }
    }
    if ci && !skip.is_empty() {
        bail!("CI=true: no step may be skipped (got {})", args.join(" "));
    }
    if skip.contains(&"docker") && !skip.contains(&"lab") {
        skip.push("lab");
    }
    let root = state::repo_root()?;
    let started = Instant::now();
    let mut run = Run::default();
    let skipped = |name: &str| skip.contains(&name);

    if skipped("prereqs") {
        run.record("prereqs", "skipped (flag)".into(), 0.0)
    } else {
        run.step("prereqs", |_| prereqs::run(ci));
    }
    if skipped("check") {
        run.record("check", "skipped (flag)".into(), 0.0)
    } else {
        run.step("check", |_| crate::check::run(&root));
    }
    if skipped("fmt") {
        run.record("fmt", "skipped (flag)".into(), 0.0)
    } else {
        run.step("fmt", |_| {
            cmd(&cargo(), ["fmt", "--all", "--", "--check"])
                .current_dir(&root)
                .stream()
        });
    }
    // Before clippy and the tests: `canopy` embeds the dashboard when it is compiled, and
    // the server's tests check that it serves the real one.
    if skipped("ui") {
        run.record("ui", "skipped (flag)".into(), 0.0)
    } else {
        run.step("ui", |_| crate::ui::build(&root).map(|_| ()));
    }
    if skipped("clippy") {
        run.record("clippy", "skipped (flag)".into(), 0.0)
    } else {
        run.step("clippy", |_| {
            cmd(
                &cargo(),
                [
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
            .current_dir(&root)
            .timeout(Duration::from_secs(45 * 60))
            .stream()?;
            // The dashboard as the browser runs it (wasm32-only code paths included).
            cmd(
                &cargo(),
                [
                    "clippy",
                    "-p",
                    "canopy-frontend",
                    "--target",
                    crate::ui::WASM_TARGET,
                    "--",
                    "-D",
                    "warnings",
                ],
            )
            .current_dir(&root)
            .timeout(Duration::from_secs(20 * 60))
            .stream()
        });
    }
    if skipped("musl") {
        run.record("musl", "skipped (flag)".into(), 0.0)
    } else {
        run.step("musl", |r| {
            let bin = build_musl_agent(&root)?;
            r.export("CANOPY_AGENT_MUSL_BIN", bin.display().to_string());
            Ok(())
        });
    }
    let mut pg_started = false;
    if skipped("pg") {
        run.record("pg", "skipped (flag)".into(), 0.0);
        run.export("CANOPY_SKIP_POSTGRES", "1");
    } else {
        run.step("pg", |r| {
            // Stop it afterwards only if this run started it (not a developer's running one).
            let (url, started) = pg::start_owned()?;
            pg_started = started;
            r.export("CANOPY_TEST_POSTGRES_URL", url);
            Ok(())
        });
    }
    let mut docker_started = false;
    if skipped("docker") {
        run.record("docker", "skipped (flag)".into(), 0.0)
    } else {
        run.step("docker", |_| {
            docker_started = dockerd::ensure()?;
            Ok(())
        });
    }
    let mut lab_started = false;
    if skipped("lab") {
        run.record("lab", "skipped (flag)".into(), 0.0);
        run.export("CANOPY_SKIP_LAB", "1");
    } else {
        run.step("lab", |r| {
            lab_started = true;
            let json = lab::up_with(LAB_GUESTS, true)?;
            if !json.is_file() {
                bail!("lab up did not write {}", json.display());
            }
            r.export("CANOPY_LAB", json.display().to_string());
            // Lab tests publish package versions and push images while they run (`lab publish`,
            // `lab image-push`).
            let me = std::env::current_exe().context("the xtask binary's path")?;
            r.export("CANOPY_XTASK_BIN", me.display().to_string());
            Ok(())
        });
    }
    run.step("tests", |r| {
        let nextest = cmd(&cargo(), ["nextest", "--version"])
            .current_dir(&root)
            .ok();
        let args: &[&str] = if nextest {
            &["nextest", "run", "--workspace", "--no-fail-fast"]
        } else {
            &["test", "--workspace", "--no-fail-fast"]
        };
        let mut c = cmd(&cargo(), args)
            .current_dir(&root)
            .timeout(Duration::from_secs(60 * 60));
        for (k, v) in &r.env {
            c = c.env(k, v);
        }
        c.stream()
    });

    // Teardown always runs, whatever failed above.
    let mut teardown_failed = false;
    if lab_started {
        let t = Instant::now();
        let outcome = match lab::down() {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                teardown_failed = true;
                format!("FAILED: {}", first_line(&format!("{e:#}")))
            }
        };
        run.record("lab down", outcome, t.elapsed().as_secs_f64());
    }
    if pg_started {
        let t = Instant::now();
        // The run's throwaway databases go with the data directory.
        let outcome = match pg::discard() {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                teardown_failed = true;
                format!("FAILED: {}", first_line(&format!("{e:#}")))
            }
        };
        run.record("pg discard", outcome, t.elapsed().as_secs_f64());
    }

    if docker_started {
        // Only an engine this run started; the lab image stays in /var/lib/docker.
        let t = Instant::now();
        let outcome = match dockerd::stop() {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                teardown_failed = true;
                format!("FAILED: {}", first_line(&format!("{e:#}")))
            }
        };
        run.record("dockerd stop", outcome, t.elapsed().as_secs_f64());
    }

    eprintln!(
        "\nxtask test: summary{}",
        if ci { " (CI=true)" } else { "" }
    );
    for s in &run.steps {
        eprintln!("  {:<12} {:>7.1}s  {}", s.name, s.secs, s.outcome);
    }
    eprintln!(
        "  {:<12} {:>7.1}s",
        "total",
        started.elapsed().as_secs_f64()
    );
    if run.failed {
        bail!("cargo xtask test failed");
    }
    if teardown_failed {
        bail!("tests passed but teardown failed");
    }
    eprintln!("xtask test: all steps passed");
    Ok(())
}
