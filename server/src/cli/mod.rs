//! The `canopy` command line: `serve`, `admin …` (direct database access) and the
//! user commands that talk to a running server through the typed client.

mod accounts;
mod admin;
mod agent;
pub mod cluster;
pub mod discover;
mod docker;
mod hosts;
mod password;
mod remote;
mod session;
mod trust;
mod update;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "canopy",
    version,
    about = "Canopy: update manager for Proxmox homelabs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ServerOpts {
    /// TOML settings file (see `canopy default-config`).
    #[arg(long, short = 'c', env = "CANOPY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `listen` / CANOPY_LISTEN.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Overrides `database_url` / CANOPY_DATABASE_URL.
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServerOpts),
    /// Print the example configuration file.
    DefaultConfig,
    /// Print the REST API's OpenAPI document (the one committed as docs/openapi.json).
    Openapi,
    /// Administration with direct database access.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Proxmox clusters on the server: add, list, remove, discover now, node updates.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Agents in the guests: deploy over SSH, uninstall, agentless scans, SSH keys.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// An operation (or the recent ones), per guest; `operation pause|resume|cancel ID`
    /// controls an update operation.
    Operation(agent::OperationArgs),
    /// Update every guest a selector resolves to, as one operation: plan (the blast radius),
    /// approve, snapshot, canary, health check, rollback.
    Update(update::UpdateArgs),
    /// The inventory tree (cluster → node → guest), whole or by selector; --preview shows
    /// what an action would touch.
    Tree(cluster::TreeArgs),
    /// One host: delete it, or repair its package database.
    #[command(subcommand)]
    Host(hosts::HostCommand),
    /// Docker containers in the guests, with their image updates and last registry check.
    Containers(docker::ContainersArgs),
    /// Registry checks of every container's image: `images check` runs one now.
    #[command(subcommand)]
    Images(docker::ImagesCommand),
    /// Container registries: budgets and rate limits (`registry list`), credentials
    /// (`registry login REGISTRY --username U`, `registry logout REGISTRY`).
    #[command(subcommand)]
    Registry(docker::RegistryCommand),
    /// One-shot discovery of a PVE cluster: prints its tree, no server or database needed.
    Discover(discover::DiscoverArgs),
    /// Log in to a server and keep the session (0600) for the other commands.
    Login(remote::LoginArgs),
    /// End this session, or with --all every session of your user.
    Logout(accounts::LogoutArgs),
    #[command(flatten)]
    Remote(remote::RemoteCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A command whose reader went away (`canopy tree | head -1`) ends as `cat` does,
        // killed by SIGPIPE (status 141 in the shell), quietly: Rust ignores SIGPIPE, so every
        // print would otherwise panic with "failed printing to stdout: Broken pipe". The
        // server keeps ignoring it: a client hanging up must never stop it.
        sigpipe::reset();
    }
    crate::telemetry::init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.chain().find_map(canopy_tls::pin_mismatch) {
                // A changed server certificate: both fingerprints first, then what to do.
                Some(m) => {
                    eprintln!(
                    "error: the server presents a certificate with the SHA-256 fingerprint {}, \
                     but {} is pinned. If its certificate was replaced on purpose, log in again \
                     with --fingerprint {} (or set CANOPY_SERVER_FINGERPRINT).\n({e:#})",
                    m.presented,
                    m.pinned.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" or "),
                    m.presented
                )
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn load_settings(opts: &ServerOpts) -> anyhow::Result<crate::settings::Settings> {
    let mut s = crate::settings::Settings::load(opts.config.as_deref())?;
    if let Some(l) = opts.listen {
        s.listen = l;
    }
    if let Some(u) = &opts.database_url {
        s.database_url = u.clone();
    }
    Ok(s)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(opts) => serve(opts).await,
        Command::DefaultConfig => {
            print!("{}", crate::settings::example_toml());
            Ok(())
        }
        Command::Openapi => {
            print!("{}", crate::http::openapi::pretty());
            Ok(())
        }
        Command::Admin(cmd) => admin::run(cmd).await,
        Command::Cluster(cmd) => cluster::run(cmd).await,
        Command::Tree(args) => cluster::tree(args).await,
        Command::Agent(cmd) => agent::run(cmd).await,
        Command::Operation(args) => agent::operation(args).await,
        Command::Update(args) => update::run(args).await,
        Command::Discover(args) => discover::run(args).await,
        Command::Host(cmd) => hosts::run(cmd).await,
        Command::Containers(args) => docker::containers(args).await,
        Command::Images(cmd) => docker::images(cmd).await,
        Command::Registry(cmd) => docker::registry(cmd).await,
        Command::Login(args) => remote::login(args).await,
        Command::Logout(args) => accounts::logout(args).await,
        Command::Remote(cmd) => remote::run(cmd).await,
    }
}

async fn serve(opts: ServerOpts) -> anyhow::Result<()> {
    use anyhow::Context;
    let settings = load_settings(&opts)?;
    let listen = settings.listen;
    let state = crate::prepare(settings).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    match &state.tls {
        None => eprintln!("Canopy is listening on http://{addr}"),
        Some(tls) => {
            let fp = tls.identity.fingerprint();
            eprintln!("Canopy is listening on https://{addr}");
            eprintln!("TLS certificate SHA-256 fingerprint: {fp}");
            if tls.self_signed {
                eprintln!(
                    "  self-signed, {} {}; pin it with `canopy login --server https://{addr} --fingerprint {fp}` \
                     and `canopy-agent register --server URL --fingerprint {fp} …`",
                    if tls.generated { "generated now in" } else { "from" },
                    tls.cert_file.display()
                );
            }
        }
    }
    crate::serve(state, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
