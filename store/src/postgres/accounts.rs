//! Account lifecycle (disable, enable, role, password, delete, log out everywhere) and
//! registration-token revocation on PostgreSQL. The rules are in `account_plan`. A change
//! that could remove an admin first locks every enabled admin's row (in id order, then the
//! target's), so two admins demoting each other at once cannot both succeed.

use super::users::{reg_token, user_record};
use super::{finish, insert_events, PgStore};
use crate::account_plan::{self, Change};
use crate::common::{now_micros, prepare_event};
use crate::{events, AccountStore, Actor, NewEvent, Result, StoreError, UserRecord};
use async_trait::async_trait;
use canopy_api_types::auth::{AccountChange, RegistrationToken, Role, User};
use canopy_api_types::{RegistrationTokenId, UserId};
use sqlx::PgConnection;
use uuid::Uuid;

/// Whom a change is about.
enum Target<'a> {
    Name(&'a str),
    Id(UserId),
}

#[async_trait]
impl AccountStore for PgStore {
    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(super::users::user).collect()
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_record).transpose()
    }

    async fn set_password(
        &self,
        username: &str,
        password_hash: &str,
        actor: &Actor,
    ) -> Result<AccountChange> {
        self.change_account(
            Target::Name(username),
            Change::Password,
            Some(password_hash),
            actor,
        )
        .await
    }

    async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &Actor,
    ) -> Result<AccountChange> {
        let change = if disabled {
            Change::Disable
        } else {
            Change::Enable
        };
        self.change_account(Target::Name(username), change, None, actor)
            .await
    }

    async fn set_role(&self, username: &str, role: Role, actor: &Actor) -> Result<AccountChange> {
        self.change_account(Target::Name(username), Change::Role(role), None, actor)
            .await
    }

    async fn delete_user(&self, username: &str, actor: &Actor) -> Result<AccountChange> {
        self.change_account(Target::Name(username), Change::Delete, None, actor)
            .await
    }

    async fn end_sessions(&self, user: UserId, actor: &Actor) -> Result<AccountChange> {
        self.change_account(Target::Id(user), Change::EndSessions, None, actor)
            .await
    }

    async fn revoke_registration_token(
        &self,
        id: RegistrationTokenId,
        actor: &Actor,
    ) -> Result<RegistrationToken> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            let row = sqlx::query("SELECT * FROM registration_tokens WHERE id = $1 FOR UPDATE")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("registration token {id}")))?;
            let token = reg_token(&row)?;
            if token.revoked {
                return Ok(token);
            }
            let row = sqlx::query(
                "UPDATE registration_tokens SET revoked = TRUE, revoked_at = $1, revoked_by = $2 \
                 WHERE id = $3 RETURNING *",
            )
            .bind(now)
            .bind(actor.to_string())
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
            let token = reg_token(&row)?;
            let ev = NewEvent {
                event_type: events::REGISTRATION_TOKEN_REVOKED.into(),
                subject: format!("registration_token/{id}"),
                actor: actor.clone(),
                correlation: None,
                causation: None,
                payload: serde_json::json!({
                    "id": id,
                    "label": token.label,
                    "seats_used": token.seats_used,
                }),
            };
            let ev = prepare_event(ev, None, now).with_guest(token.guest_id);
            insert_events(&mut tx, &[ev]).await?;
            Ok(token)
        }
        .await;
        finish(tx, r).await
    }
}

impl PgStore {
    /// Apply `change` to one user in one transaction (see the module doc for the locks).
    async fn change_account(
        &self,
        target: Target<'_>,
        change: Change,
        password_hash: Option<&str>,
        actor: &Actor,
    ) -> Result<AccountChange> {
        let mut tx = self.pool.begin().await?;
        let r = change_in(&mut tx, target, change, password_hash, actor).await;
        finish(tx, r).await
    }
}

async fn change_in(
    conn: &mut PgConnection,
    target: Target<'_>,
    change: Change,
    password_hash: Option<&str>,
    actor: &Actor,
) -> Result<AccountChange> {
    let now = now_micros();
    // Admins first, in id order, then the target: every change takes its locks in this
    // order, so two changes never wait on each other in a cycle.
    let admins: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM users WHERE role = 'admin' AND disabled_at IS NULL ORDER BY id FOR UPDATE",
    )
    .fetch_all(&mut *conn)
    .await?;
    let row = match target {
        Target::Name(n) => sqlx::query("SELECT * FROM users WHERE username = $1 FOR UPDATE")
            .bind(n)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user '{n}'")))?,
        Target::Id(id) => sqlx::query("SELECT * FROM users WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?,
    };
    let record = user_record(&row)?;
    let user = record.user;
    if !change.changes(&user) {
        return Ok(AccountChange {
            user: Some(user),
            revoked_refresh_tokens: 0,
        });
    }
    let others = admins.iter().filter(|a| **a != user.id.0).count() as i64;
    account_plan::guard_last_admin(change, &user, others)?;
    let revoked = if change.ends_sessions() {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(user.id.0)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        0
    };
    let after = account_plan::after(change, &user);
    match &after {
        None => {
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(user.id.0)
                .execute(&mut *conn)
                .await?;
        }
        Some(a) => {
            sqlx::query(
                "UPDATE users SET role = $1, password_hash = $2, \
                 disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, $4) ELSE NULL END, \
                 session_epoch = session_epoch + $5 WHERE id = $6",
            )
            .bind(a.role.as_str())
            .bind(password_hash.unwrap_or(&record.password_hash))
            .bind(a.disabled)
            .bind(now)
            .bind(i64::from(change.ends_sessions()))
            .bind(user.id.0)
            .execute(&mut *conn)
            .await?;
        }
    }
    let ev = account_plan::event(change, &user, actor, revoked);
    insert_events(conn, &[prepare_event(ev, None, now)]).await?;
    Ok(AccountChange {
        user: after,
        revoked_refresh_tokens: revoked,
    })
}
