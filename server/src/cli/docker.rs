//! `canopy containers`, `canopy images check`, `canopy registry …`: Docker inside guests
//! from the command line (docs/design.md §7.1).

use super::remote::{print, Common};
use super::session;
use canopy_api_types::docker::{ContainerView, RegistryLogin, RegistryStatus};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ContainersArgs {
    #[command(flatten)]
    common: Common,
    /// Only the containers this selector selects (`'cluster/home/**[image=nginx]'`).
    selector: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Check every container's image against its registry now (one HEAD per registry,
    /// repository and tag) and show what was asked and found.
    Check(#[command(flatten)] Common),
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Registries with their announced budget, a 429's wait and the last cycle's requests.
    List(#[command(flatten)] Common),
    /// Store credentials for a registry (admin); the secret is read without echo, from
    /// --secret-file, or one line of standard input.
    Login {
        #[command(flatten)]
        common: Common,
        /// `docker.io`, `ghcr.io`, `registry.lan:5000`.
        registry: String,
        /// The user name (basic credentials: password or access token as the secret).
        #[arg(long)]
        username: Option<String>,
        /// Send the secret as a bearer token as it is (no user name).
        #[arg(long)]
        token: bool,
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
    /// Remove a registry's credentials (admin).
    Logout {
        #[command(flatten)]
        common: Common,
        registry: String,
    },
}

pub async fn containers(args: ContainersArgs) -> anyhow::Result<()> {
    let list = session::client(args.common.server.as_deref())
        .await?
        .containers(args.selector.as_deref())
        .await?;
    print(args.common.json, &list, |list| {
        for c in list {
            println!("{}", container_line(c));
        }
        if list.is_empty() {
            println!("no containers");
        }
    })
}

fn container_line(c: &ContainerView) -> String {
    let place =
        c.id.clone()
            .unwrap_or_else(|| format!("{} (host {})", c.container.name, c.hostname));
    let state = match &c.container.health {
        Some(h) => format!("{} ({h})", c.container.state),
        None => c.container.state.clone(),
    };
    let image = match (&c.update, &c.check) {
        (Some(u), _) => format!(
            "update {} → {} ({})",
            short(&u.from_digest),
            short(&u.to_digest),
            u.status.as_str()
        ),
        (None, Some(check)) => match &check.error {
            Some(e) => format!("check failed: {e}"),
            None => "up to date".into(),
        },
        (None, None) => "not checked yet".into(),
    };
    let compose = c
        .container
        .compose
        .as_ref()
        .map(|s| format!(" [compose {}/{}]", s.project, s.service))
        .unwrap_or_default();
    format!("{place}  {}  {state}  {image}{compose}", c.container.image)
}

/// `sha256:0123456789ab…` → `sha256:0123456789ab`.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

fn registry_line(r: &RegistryStatus) -> String {
    let mut parts = vec![r.registry.clone()];
    if let Some(n) = r.remaining {
        let of = r.limit.map(|l| format!(" of {l}")).unwrap_or_default();
        let window = r
            .window_secs
            .map(|w| format!(" per {} h", w / 3600))
            .unwrap_or_default();
        parts.push(format!("{n}{of} pulls left{window}"));
    }
    if let Some(t) = r.retry_after.filter(|t| *t > chrono::Utc::now()) {
        parts.push(format!("rate limited: waiting until {t}"));
    }
    parts.push(format!("last cycle {} HEAD, {} GET", r.heads, r.gets));
    if r.authenticated {
        parts.push("credentials stored".into());
    }
    parts.join("  ")
}

pub async fn images(cmd: ImagesCommand) -> anyhow::Result<()> {
    match cmd {
        ImagesCommand::Check(common) => {
            let s = session::client(common.server.as_deref())
                .await?
                .check_images()
                .await?;
            print(common.json, &s, |s| {
                println!(
                    "{} containers, {} images checked with {} HEAD and {} GET: {} containers behind, {} checks failed",
                    s.containers, s.references, s.heads, s.gets, s.updates, s.errors
                );
                for r in &s.registries {
                    println!("  {}", registry_line(r));
                }
            })
        }
    }
}

pub async fn registry(cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::List(common) => {
            let list = session::client(common.server.as_deref())
                .await?
                .registries()
                .await?;
            print(common.json, &list, |list| {
                for r in list {
                    println!("{}", registry_line(r));
                }
            })
        }
        RegistryCommand::Login {
            common,
            registry,
            username,
            token,
            secret_file,
        } => {
            anyhow::ensure!(
                token != username.is_some(),
                "give --username USER (basic credentials) or --token (a bearer token), not both"
            );
            let secret =
                super::password::read(&format!("secret for {registry}: "), secret_file.as_deref())?;
            let login = RegistryLogin {
                kind: if token { "token" } else { "basic" }.into(),
                username,
                secret,
            };
            let r = session::client(common.server.as_deref())
                .await?
                .set_registry_login(&registry, &login)
                .await?;
            print(common.json, &r, |r| {
                println!("credentials stored for {}", r.registry)
            })
        }
        RegistryCommand::Logout { common, registry } => {
            let r = session::client(common.server.as_deref())
                .await?
                .remove_registry_login(&registry)
                .await?;
            print(common.json, &r, |r| {
                println!("credentials removed for {}", r.registry)
            })
        }
    }
}
