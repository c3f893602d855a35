//! Account lifecycle (disable, enable, role, password, delete, log out everywhere) and
//! registration-token revocation on SQLite. The rules are in `account_plan`; each change
//! runs in one `BEGIN IMMEDIATE` transaction, so the last-admin check and the write see
//! the same users.

use super::{insert_events, new_event, rows, ts, SqliteStore};
use crate::account_plan::{self, Change};
use crate::common::{now_micros, prepare_event};
use crate::{events, AccountStore, Actor, Result, StoreError, UserRecord};
use async_trait::async_trait;
use canopy_api_types::auth::{AccountChange, RegistrationToken, Role, User};
use canopy_api_types::{RegistrationTokenId, UserId};
use serde_json::json;

/// Whom a change is about.
enum Target<'a> {
    Name(&'a str),
    Id(UserId),
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn list_users(&self) -> Result<Vec<User>> {
        let found = sqlx::query(&format!(
            "SELECT {} FROM users ORDER BY username",
            rows::USER_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::user).collect()
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM users WHERE id = ?",
            rows::USER_COLUMNS
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::user_record).transpose()
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
        let mut tx = self.begin_immediate().await?;
        let row = sqlx::query("SELECT * FROM registration_tokens WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("registration token {id}")))?;
        let token = rows::registration_token(&row)?;
        if token.revoked {
            return Ok(token);
        }
        let row = sqlx::query(
            "UPDATE registration_tokens SET revoked = 1, revoked_at = ?, revoked_by = ? \
             WHERE id = ? RETURNING *",
        )
        .bind(ts(now))
        .bind(actor.to_string())
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let token = rows::registration_token(&row)?;
        let ev = new_event(
            events::REGISTRATION_TOKEN_REVOKED,
            format!("registration_token/{id}"),
            actor,
            None,
            json!({ "id": id, "label": token.label, "seats_used": token.seats_used }),
        );
        let ev = prepare_event(ev, None, now).with_guest(token.guest_id);
        insert_events(&mut tx, &[ev]).await?;
        tx.commit().await?;
        Ok(token)
    }
}

impl SqliteStore {
    /// Apply `change` to one user in one transaction: read the user, check the
    /// last-admin rule, revoke their refresh tokens and bump their session epoch when
    /// the change ends sessions, write the row and the event.
    async fn change_account(
        &self,
        target: Target<'_>,
        change: Change,
        password_hash: Option<&str>,
        actor: &Actor,
    ) -> Result<AccountChange> {
        let now = now_micros();
        let mut tx = self.begin_immediate().await?;
        let (clause, key, shown) = match target {
            Target::Name(n) => ("username", n.to_string(), format!("user '{n}'")),
            Target::Id(id) => ("id", id.to_string(), format!("user {id}")),
        };
        let row = sqlx::query(&format!(
            "SELECT {} FROM users WHERE {clause} = ?",
            rows::USER_COLUMNS
        ))
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound(shown))?;
        let record = rows::user_record(&row)?;
        let user = record.user;
        if !change.changes(&user) {
            return Ok(AccountChange {
                user: Some(user),
                revoked_refresh_tokens: 0,
            });
        }
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL AND id <> ?",
        )
        .bind(user.id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        account_plan::guard_last_admin(change, &user, others)?;
        let revoked = if change.ends_sessions() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = ? \
                 WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?",
            )
            .bind(ts(now))
            .bind(user.id.to_string())
            .bind(ts(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            0
        };
        let after = account_plan::after(change, &user);
        match &after {
            None => {
                sqlx::query("DELETE FROM users WHERE id = ?")
                    .bind(user.id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            Some(a) => {
                sqlx::query(
                    "UPDATE users SET role = ?, password_hash = ?, \
                     disabled_at = CASE WHEN ? THEN COALESCE(disabled_at, ?) ELSE NULL END, \
                     session_epoch = session_epoch + ? WHERE id = ?",
                )
                .bind(a.role.as_str())
                .bind(password_hash.unwrap_or(&record.password_hash))
                .bind(a.disabled)
                .bind(ts(now))
                .bind(i64::from(change.ends_sessions()))
                .bind(user.id.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        let ev = account_plan::event(change, &user, actor, revoked);
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        tx.commit().await?;
        Ok(AccountChange {
            user: after,
            revoked_refresh_tokens: revoked,
        })
    }
}
