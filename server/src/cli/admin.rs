//! `canopy admin …`: works on the database directly (no running server needed).

use super::ServerOpts;
use crate::pipeline::bootstrap;
use canopy_api_types::auth::Role;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user. The password is read from --password-file, the terminal (typed
    /// without echo, twice) or one line of stdin.
    CreateUser {
        username: String,
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerOpts,
    },
    /// Set a user's password (for an admin who lost theirs); ends every session of the
    /// user. The password is read like create-user's.
    SetPassword {
        username: String,
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
            let password = super::password::read_new(
                &format!("password for {username}: "),
                password_file.as_deref(),
            )?;
            let settings = super::load_settings(&server)?;
            let store = crate::open_store(&settings).await?;
            let user = bootstrap::create_user(
                store.as_ref(),
                &username,
                password,
                role,
                &canopy_store::Actor::System,
            )
            .await?;
            println!("created {} ({})", user.username, user.role.as_str());
            Ok(())
        }
        AdminCommand::SetPassword {
            username,
            password_file,
            server,
        } => {
            let password = super::password::read_new(
                &format!("new password for {username}: "),
                password_file.as_deref(),
            )?;
            let hash = crate::auth::password::hash(password).await?;
            let settings = super::load_settings(&server)?;
            let store = crate::open_store(&settings).await?;
            let change = store
                .set_password(&username, &hash, &canopy_store::Actor::System)
                .await?;
            println!(
                "password of {username} set; {} session(s) ended",
                change.revoked_refresh_tokens
            );
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
