//! `canopy-agent`: parse the CLI, initialise tracing (stderr), run the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = canopy_agent::Cli::parse();
    let default = match cli.command {
        canopy_agent::cli::Command::Run { .. } | canopy_agent::cli::Command::Register { .. } => {
            "info"
        }
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
    match canopy_agent::dispatch(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("canopy-agent: {e:#}");
            std::process::exit(1);
        }
    }
}
