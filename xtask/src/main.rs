//! `cargo xtask`: developer and CI tasks for the Canopy workspace.
//!
//! Plain `std` + `anyhow` so that it compiles first and fast in CI. Every subcommand lives in
//! its own module; this file only parses the command line and dispatches.

mod bench;
mod check;
mod demo;
mod dockerd;
mod lab;
mod pg;
mod prereqs;
mod proc;
mod state;
mod test;
mod ui;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  prereqs                 install what the tests need (apt packages, rustup targets)
  check                   drift checks (paired migrations, workspace dependencies, PVE client,
                          docs/openapi.json)
  codegen                 regenerate hypervisor/src/generated.rs from hypervisor/openapi/pve.yaml
  openapi                 regenerate docs/openapi.json (the REST API document) from the server
  pg start|stop|url|reset throwaway PostgreSQL 15 on 127.0.0.1 (prints its URL; reset starts it empty)
  dockerd [start|stop]    ensure a Docker engine runs (bridge-less, host networking only)
  lab up [--lab-guests N] [--docker-guests]
                          build the guest image and apt repo, start guests, write .lab/lab.json;
                          --docker-guests adds a Docker registry (and a rate-limiting front)
                          on 127.0.0.1 and Docker guests 201-204 with containers and compose
                          projects (cluster `dock`, .lab/sim-dock.toml)
  lab down|status         remove the guests and stop the lab's servers | print .lab/lab.json
  lab publish SUITE PKG VERSION
                          publish a package version into the running lab's apt repository
  lab image-push REPOSITORY TAG v1|v2|broken|crash [--multi-platform] [--no-healthcheck]
                          push a version of an image to the running lab registry, print its digest
  test [--no-STEP ...]    the whole suite, exactly what CI runs (steps: prereqs check fmt
                          clippy musl pg docker lab; skipping is refused when CI=true)
  ui [--watch]            build the web dashboard into frontend/dist (embedded by canopy);
                          --watch rebuilds on change (serve it with CANOPY_UI_DIR=frontend/dist)
  demo [--no-lab]         start a local Canopy on its own lab with agents in six LXCs
                          (--no-lab, alias --no-docker: no Docker, a read-only local agent)
  bench [--no-lab] [--only BENCH]  benchmarks (see docs/benchmarks.md); the lab it starts goes after

environment:
  CI=true                 missing prerequisites are hard failures
  CANOPY_XTASK_STATE      state dir for pg/dockerd/lab runtime files (default /tmp/canopy-xtask)
  CANOPY_LAB_CACHE        cache dir for lab images (default $HOME/.cache/canopy-lab)
  CARGO_TARGET_DIR        honoured by every build step
";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["prereqs"] => prereqs::run(state::is_ci()),
        ["check"] => check::run(&state::repo_root()?),
        ["codegen"] => check::codegen(&state::repo_root()?),
        ["openapi"] => check::openapi(&state::repo_root()?),
        ["pg", "start"] => {
            println!("{}", pg::start()?);
            Ok(())
        }
        ["pg", "stop"] => pg::stop(),
        ["pg", "reset"] => {
            pg::discard()?;
            println!("{}", pg::start()?);
            Ok(())
        }
        ["pg", "url"] => {
            println!("{}", pg::url()?);
            Ok(())
        }
        ["dockerd"] | ["dockerd", "start"] => dockerd::ensure().map(|_| ()),
        ["dockerd", "stop"] => dockerd::stop(),
        ["lab", "up", rest @ ..] => {
            let (guests, docker) = parse_up(rest)?;
            lab::up_with(guests, docker).map(|_| ())
        }
        ["lab", "down"] => lab::down(),
        ["lab", "status"] => lab::status(),
        ["lab", "publish", rest @ ..] => lab::publish(rest),
        ["lab", "image-push", rest @ ..] => lab::image_push(rest),
        // The PVE simulator's action hook for the lab's node pve1 (not for people).
        ["lab", "pve-action", rest @ ..] => lab::pve_action(rest),
        ["test", rest @ ..] => test::run(rest),
        ["ui", rest @ ..] => ui::run(rest),
        ["demo", rest @ ..] => demo::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        [] | ["help"] | ["--help"] | ["-h"] => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {:?}\n\n{USAGE}", other.join(" ")),
    }
}

/// `lab up` arguments: `--lab-guests N` or `--lab-guests=N` (default 1), `--docker-guests`.
pub fn parse_up(args: &[&str]) -> Result<(usize, bool)> {
    let mut guests = 1;
    let mut docker = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if *arg == "--docker-guests" {
            docker = true;
            continue;
        }
        let value = match arg.strip_prefix("--lab-guests") {
            Some("") => it.next().copied(),
            Some(v) if v.starts_with('=') => Some(&v[1..]),
            _ => bail!("unknown argument {arg:?} (expected --lab-guests N, --docker-guests)"),
        };
        let value = value.ok_or_else(|| anyhow::anyhow!("--lab-guests needs a number"))?;
        guests = value
            .parse()
            .map_err(|_| anyhow::anyhow!("--lab-guests: {value:?} is not a number"))?;
        if guests == 0 || guests > 32 {
            bail!("--lab-guests must be between 1 and 32");
        }
    }
    Ok((guests, docker))
}
