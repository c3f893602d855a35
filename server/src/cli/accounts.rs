//! `canopy user …`, `canopy token …` and `canopy logout [--all]`: accounts, registration
//! tokens and sessions on a running server. Passwords are never taken on the command line:
//! a file (`--password-file`), the terminal without echo, or one line of standard input.

use super::password;
use super::remote::{print, Common};
use super::session;
use anyhow::Context;
use canopy_api_types::auth::{AccountChange, CreateRegistrationToken, CreateUserRequest, Role};
use canopy_api_types::RegistrationTokenId;
use clap::{Args, Subcommand};
use std::path::PathBuf;

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("role must be viewer, operator or admin, not '{s}'"))
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users with their role and whether they are disabled (admin).
    List(#[command(flatten)] Common),
    /// Create a user (admin). The password comes from --password-file, the terminal or
    /// one line of stdin.
    Create {
        #[command(flatten)]
        common: Common,
        username: String,
        #[arg(long, default_value = "viewer", value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Disable a user: they cannot log in, and their sessions end at once (admin).
    Disable {
        #[command(flatten)]
        common: Common,
        username: String,
    },
    /// Enable a disabled user again (admin).
    Enable {
        #[command(flatten)]
        common: Common,
        username: String,
    },
    /// Delete a user; their history stays (admin).
    Delete {
        #[command(flatten)]
        common: Common,
        username: String,
    },
    /// Give a user another role: viewer, operator or admin; their sessions end (admin).
    Role {
        #[command(flatten)]
        common: Common,
        username: String,
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Change a password: your own without USERNAME (the current one is asked first), or
    /// another user's as an admin. Every session of that user ends; yours is renewed.
    Password {
        #[command(flatten)]
        common: Common,
        username: Option<String>,
        /// The new password, from this file.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Your current password, from this file (changing your own).
        #[arg(long)]
        current_password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a registration token (the secret is printed once).
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        seats: u32,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        expires: u64,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List registration tokens: seats used, expiry, revoked, the guest a deploy bound it to.
    List(#[command(flatten)] Common),
    /// Revoke a registration token: no agent can register with it any more. Hosts it
    /// enrolled keep their own credentials.
    Revoke {
        #[command(flatten)]
        common: Common,
        id: RegistrationTokenId,
    },
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Revoke every session of your user (all refresh tokens, every access token), not
    /// only this one.
    #[arg(long)]
    all: bool,
    /// Server root URL (default: the saved session's).
    #[arg(long)]
    server: Option<String>,
}

fn show_change(what: &str, username: &str, c: &AccountChange) {
    println!(
        "{username}: {what}; {} session(s) ended",
        c.revoked_refresh_tokens
    );
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::List(c) => {
            let users = session::client(c.server.as_deref()).await?.users().await?;
            print(c.json, &users, |us| {
                println!("{:<24} {:<9} STATE", "USERNAME", "ROLE");
                for u in us {
                    let state = if u.disabled { "disabled" } else { "enabled" };
                    println!("{:<24} {:<9} {state}", u.username, u.role.as_str());
                }
            })
        }
        UserCommand::Create {
            common,
            username,
            role,
            password_file,
        } => {
            let client = session::client(common.server.as_deref()).await?;
            let password = password::read_new(
                &format!("password for {username}: "),
                password_file.as_deref(),
            )?;
            let u = client
                .create_user(&CreateUserRequest {
                    username,
                    password,
                    role,
                })
                .await?;
            print(common.json, &u, |u| {
                println!("created {} ({})", u.username, u.role.as_str())
            })
        }
        UserCommand::Disable { common, username } => {
            let c = session::client(common.server.as_deref())
                .await?
                .disable_user(&username)
                .await?;
            print(common.json, &c, |c| show_change("disabled", &username, c))
        }
        UserCommand::Enable { common, username } => {
            let c = session::client(common.server.as_deref())
                .await?
                .enable_user(&username)
                .await?;
            print(common.json, &c, |_| println!("{username}: enabled"))
        }
        UserCommand::Delete { common, username } => {
            let c = session::client(common.server.as_deref())
                .await?
                .delete_user(&username)
                .await?;
            print(common.json, &c, |c| show_change("deleted", &username, c))
        }
        UserCommand::Role {
            common,
            username,
            role,
        } => {
            let c = session::client(common.server.as_deref())
                .await?
                .set_role(&username, role)
                .await?;
            print(common.json, &c, |c| {
                show_change(&format!("role {}", role.as_str()), &username, c)
            })
        }
        UserCommand::Password {
            common,
            username: Some(username),
            password_file,
            ..
        } => {
            let client = session::client(common.server.as_deref()).await?;
            let password = password::read_new(
                &format!("new password for {username}: "),
                password_file.as_deref(),
            )?;
            let c = client.set_password(&username, &password).await?;
            print(common.json, &c, |c| {
                show_change("password changed", &username, c)
            })
        }
        UserCommand::Password {
            common,
            username: None,
            password_file,
            current_password_file,
        } => {
            let client = session::client(common.server.as_deref()).await?;
            let current = password::read("current password: ", current_password_file.as_deref())?;
            let new = password::read_new("new password: ", password_file.as_deref())?;
            let pair = client.change_own_password(&current, &new).await?;
            // Every session of the user ended; keep this one going with the new pair.
            if let Some(mut s) = session::load().filter(|s| s.username == pair.user.username) {
                s.access_token = pair.access_token.clone();
                s.refresh_token = pair.refresh_token.clone();
                session::save(&s)?;
            }
            print(common.json, &pair.user, |u| {
                println!(
                    "{}: password changed; your other sessions ended",
                    u.username
                )
            })
        }
    }
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            common,
            seats,
            expires,
            label,
        } => {
            let t = session::client(common.server.as_deref())
                .await?
                .create_registration_token(&CreateRegistrationToken {
                    label,
                    seats,
                    expires_in_secs: expires,
                })
                .await?;
            print(common.json, &t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "{} seat(s), expires {}; revoke it with `canopy token revoke {}`",
                    t.info.seats,
                    t.info.expires_at.to_rfc3339(),
                    t.info.id
                );
            })
        }
        TokenCommand::List(c) => {
            let tokens = session::client(c.server.as_deref())
                .await?
                .registration_tokens()
                .await?;
            print(c.json, &tokens, |ts| {
                println!(
                    "{:<36}  {:<20} {:>5} {:<25} {:<8} GUEST",
                    "ID", "LABEL", "SEATS", "EXPIRES", "STATE"
                );
                let now = chrono::Utc::now();
                for t in ts {
                    let state = if t.revoked {
                        "revoked"
                    } else if t.expires_at <= now {
                        "expired"
                    } else if t.seats_used >= t.seats {
                        "used up"
                    } else {
                        "valid"
                    };
                    println!(
                        "{:<36}  {:<20} {:>5} {:<25} {:<8} {}",
                        t.id,
                        t.label,
                        format!("{}/{}", t.seats_used, t.seats),
                        t.expires_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        state,
                        t.guest_id.map(|g| g.to_string()).unwrap_or_default()
                    );
                }
            })
        }
        TokenCommand::Revoke { common, id } => {
            let t = session::client(common.server.as_deref())
                .await?
                .revoke_registration_token(id)
                .await?;
            print(common.json, &t, |t| {
                println!(
                    "revoked {} ({} of {} seat(s) used); agents can no longer register with it",
                    t.id, t.seats_used, t.seats
                )
            })
        }
    }
}

/// End this session (its refresh token revoked, the session file removed), or with
/// `--all` every session of the user.
pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    if args.all {
        let c = session::client(args.server.as_deref())
            .await?
            .logout_all()
            .await?;
        session::forget()?;
        eprintln!(
            "logged out everywhere: {} session(s) ended",
            c.revoked_refresh_tokens
        );
        return Ok(());
    }
    let s = session::load().context("not logged in: there is no saved session")?;
    let base = args.server.unwrap_or_else(|| s.server.clone());
    let pin = super::trust::from_env()?.or_else(|| s.pin());
    canopy_api_types::client::Client::new(super::trust::http(pin.as_ref())?, base)
        .logout(&s.refresh_token)
        .await?;
    session::forget()?;
    eprintln!(
        "logged out {} (other sessions stay; --all ends them)",
        s.username
    );
    Ok(())
}
