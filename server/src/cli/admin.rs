//! `canopy admin …`: works on the database directly (no running server needed).

use super::ServerOpts;
use crate::pipeline::bootstrap;
use anyhow::Context;
use canopy_api_types::auth::Role;
use clap::Subcommand;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user. The password is read from --password-file, or one line of stdin.
    CreateUser {
        username: String,
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerOpts,
    },
    /// Open the database, apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        server: ServerOpts,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("role must be viewer, operator or admin, not '{s}'"))
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::CreateUser {
            username,
            role,
            password_file,
            server,
        } => {
            let password = match password_file {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                None => {
                    eprintln!("password for {username}: (one line on stdin)");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            let settings = super::load_settings(&server)?;
            let store = crate::open_store(&settings).await?;
            let user = bootstrap::create_user(store.as_ref(), &username, password, role).await?;
            println!("created {} ({})", user.username, user.role.as_str());
            Ok(())
        }
        AdminCommand::Migrate { server } => {
            let settings = super::load_settings(&server)?;
            let store = crate::open_store(&settings).await?;
            let applied = canopy_store::known_migrations(store.backend());
            println!(
                "database {} is at migration {} ({} known)",
                canopy_store::url_without_password(&settings.database_url),
                applied.last().map(|m| m.0).unwrap_or(0),
                applied.len()
            );
            Ok(())
        }
    }
}
