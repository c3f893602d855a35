//! `cargo xtask check`: drift checks that keep the workspace honest.
//!
//! - `migrations/sqlite` and `migrations/postgres` hold the same `NNNN_name.sql` files (same
//!   numbers, same names), every name matches `^\d{4}_[a-z0-9_]+\.sql$`, no number appears
//!   twice, and no migration touches the migrator's own bookkeeping tables.
//! - Every dependency of a member crate that carries a version comes from
//!   `[workspace.dependencies]` (`foo.workspace = true` / `{ workspace = true, ... }`).
//!
//! - `hypervisor/src/generated.rs` is what progenitor makes of `hypervisor/openapi/pve.yaml`
//!   today (`cargo run -p canopy-pve-codegen -- --check`).
//! - `docs/openapi.json` is the document the server builds from its route table and the
//!   api-types today (`canopy openapi`); `cargo xtask openapi` rewrites it.
//!
//! Each problem names the offending file; any problem makes the command exit non-zero.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const DIALECTS: [&str; 2] = ["sqlite", "postgres"];
const FORBIDDEN: [&str; 2] = ["_sqlx_migrations", "schema_migrations"];

pub fn run(root: &Path) -> Result<()> {
    let mut problems = migrations(root)?;
    problems.extend(workspace_deps(root)?);
    problems.extend(generated_client(root)?);
    problems.extend(openapi_document(root)?);
    if problems.is_empty() {
        eprintln!(
            "xtask: check ok (paired migrations, workspace dependencies, PVE client, docs/openapi.json)"
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("xtask: check: {p}");
    }
    bail!(
        "{} drift problem(s): {}",
        problems.len(),
        problems.join("; ")
    )
}

/// Run the PVE client generator: `--check` compares with the committed copy, else writes it.
fn run_codegen(root: &Path, extra: &[&str]) -> Result<std::process::Output> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    std::process::Command::new(cargo)
        .args(["run", "--quiet", "-p", "canopy-pve-codegen", "--"])
        .args(extra)
        .current_dir(root)
        .env("RUST_BACKTRACE", "0")
        .env("CANOPY_HYPERVISOR_DIR", root.join("hypervisor"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("run canopy-pve-codegen")
}

/// The committed PVE client matches the API document.
fn generated_client(root: &Path) -> Result<Vec<String>> {
    let out = run_codegen(root, &["--check"])?;
    if out.status.success() {
        return Ok(Vec::new());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(vec![stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("codegen failed")
        .to_string()])
}

/// Regenerate `hypervisor/src/generated.rs` from `hypervisor/openapi/pve.yaml`.
pub fn codegen(root: &Path) -> Result<()> {
    let out = run_codegen(root, &[])?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("canopy-pve-codegen failed");
    }
    Ok(())
}

const OPENAPI: &str = "docs/openapi.json";

/// The REST API's OpenAPI document as the server builds it now (`canopy openapi`).
fn build_openapi(root: &Path) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "canopy-server",
            "--bin",
            "canopy",
            "--",
            "openapi",
        ])
        .current_dir(root)
        .env("RUST_BACKTRACE", "0")
        .env("CANOPY_HYPERVISOR_DIR", root.join("hypervisor"))
        .stdin(std::process::Stdio::null())
        .output()
        .context("run canopy openapi")?;
    if !out.status.success() {
        bail!(
            "canopy openapi failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("canopy openapi printed invalid UTF-8")
}

/// The committed `docs/openapi.json` is the document the server builds.
fn openapi_document(root: &Path) -> Result<Vec<String>> {
    let built = build_openapi(root)?;
    let committed = fs::read_to_string(root.join(OPENAPI)).unwrap_or_default();
    if built == committed {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "{OPENAPI} differs from the document the server builds from its routes and api-types: \
         run `cargo xtask openapi` and commit the result"
    )])
}

/// Rewrite `docs/openapi.json` from the server's route table and the api-types.
pub fn openapi(root: &Path) -> Result<()> {
    let built = build_openapi(root)?;
    fs::write(root.join(OPENAPI), built).with_context(|| format!("write {OPENAPI}"))?;
    eprintln!("xtask: wrote {OPENAPI}");
    Ok(())
}

/// `^\d{4}_[a-z0-9_]+\.sql$` without a regex crate.
fn valid_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".sql") else {
        return false;
    };
    let bytes = stem.as_bytes();
    bytes.len() > 5
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'_'
        && bytes[5..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

fn migrations(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut sets: Vec<BTreeSet<String>> = Vec::new();
    for dialect in DIALECTS {
        let dir = root.join("migrations").join(dialect);
        let mut names = BTreeSet::new();
        let mut numbers: BTreeMap<String, String> = BTreeMap::new();
        let entries = fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let shown = format!("migrations/{dialect}/{name}");
            if !valid_name(&name) {
                problems.push(format!(
                    "{shown}: name must match ^\\d{{4}}_[a-z0-9_]+\\.sql$"
                ));
                continue;
            }
            if let Some(other) = numbers.insert(name[..4].to_string(), name.clone()) {
                problems.push(format!(
                    "{shown}: number {} also used by {other}",
                    &name[..4]
                ));
            }
            let sql = fs::read_to_string(entry.path()).with_context(|| format!("read {shown}"))?;
            let lower = sql.to_ascii_lowercase();
            for table in FORBIDDEN {
                if lower.contains(table) {
                    problems.push(format!("{shown}: mentions {table} (the migrator owns it)"));
                }
            }
            names.insert(name);
        }
        sets.push(names);
    }
    for (i, dialect) in DIALECTS.iter().enumerate() {
        let other = DIALECTS[1 - i];
        for name in sets[i].difference(&sets[1 - i]) {
            problems.push(format!(
                "migrations/{dialect}/{name}: no migrations/{other}/{name}"
            ));
        }
    }
    Ok(problems)
}

/// Member directories from the root manifest's `members = [...]`.
fn members(root: &Path) -> Result<Vec<PathBuf>> {
    let text = fs::read_to_string(root.join("Cargo.toml")).context("read Cargo.toml")?;
    let start = text
        .find("members")
        .context("Cargo.toml has no workspace members")?;
    let open = start + text[start..].find('[').context("members is not a list")?;
    let close = open
        + text[open..]
            .find(']')
            .context("members list is not closed")?;
    Ok(text[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
        .map(|s| root.join(s))
        .collect())
}

/// Classifies a TOML table header: `(true, None)` for a dependency table such as
/// `[dev-dependencies]`, `(false, Some(name))` for `[dependencies.name]`, else `(false, None)`.
fn dep_table(header: &str) -> (bool, Option<String>) {
    let h = header.trim_matches(|c| c == '[' || c == ']').trim();
    for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if h == kind || h.ends_with(&format!(".{kind}")) {
            return (true, None);
        }
        if let Some(name) = h.strip_prefix(&format!("{kind}.")) {
            return (false, Some(name.trim_matches('"').to_string()));
        }
        if let Some(pos) = h.find(&format!(".{kind}.")) {
            return (
                false,
                Some(h[pos + kind.len() + 2..].trim_matches('"').to_string()),
            );
        }
    }
    (false, None)
}

fn workspace_deps(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for dir in members(root)? {
        let manifest = dir.join("Cargo.toml");
        let shown = manifest
            .strip_prefix(root)
            .unwrap_or(&manifest)
            .display()
            .to_string();
        let text = fs::read_to_string(&manifest).with_context(|| format!("read {shown}"))?;
        let (mut in_deps, mut single): (bool, Option<String>) = (false, None);
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.starts_with('[') {
                (in_deps, single) = dep_table(line);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if let Some(dep) = &single {
                if key == "version" {
                    problems.push(format!(
                        "{shown}:{}: dependency {dep} has its own version; use {dep}.workspace = true",
                        n + 1
                    ));
                }
                continue;
            }
            if !in_deps || key.ends_with(".workspace") {
                continue;
            }
            let versioned = value.starts_with('"')
                || (value.starts_with('{')
                    && !value.contains("workspace")
                    && value.contains("version"));
            if versioned {
                let dep = key.trim_matches('"');
                problems.push(format!(
                    "{shown}:{}: dependency {dep} = {value} is not a workspace dependency; \
                     add it to [workspace.dependencies] and write {dep}.workspace = true",
                    n + 1
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("0001_initial.sql"));
        assert!(valid_name("0012_agent_tokens_v2.sql"));
        assert!(!valid_name("001_initial.sql"));
        assert!(!valid_name("0001-initial.sql"));
        assert!(!valid_name("0001_Initial.sql"));
        assert!(!valid_name("0001_.sql"));
        assert!(!valid_name("0001_initial.SQL"));
    }

    #[test]
    fn dep_tables() {
        assert_eq!(dep_table("[dependencies]"), (true, None));
        assert_eq!(
            dep_table("[target.'cfg(unix)'.dev-dependencies]"),
            (true, None)
        );
        assert_eq!(
            dep_table("[dependencies.tokio]"),
            (false, Some("tokio".into()))
        );
        assert_eq!(dep_table("[features]"), (false, None));
    }
}
