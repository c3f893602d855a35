//! Users, refresh tokens and registration tokens on SQLite.

use super::{insert_events, is_unique_violation, new_event, rows, ts, SqliteStore};
use crate::common::{now_micros, prepare_event};
use crate::{events, Actor, NewRegistrationToken, Result, StoreError, UserRecord, UserStore};
use async_trait::async_trait;
use canopy_api_types::auth::{RegistrationToken, Role, User};
use canopy_api_types::UserId;
use chrono::{DateTime, Utc};
use serde_json::json;

impl SqliteStore {
    async fn user_by_id_exists(&self, user: UserId) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = ?")
            .bind(user.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn count_users(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        actor: &Actor,
    ) -> Result<User> {
        let now = now_micros();
        let user = User {
            id: UserId::new(),
            username: username.to_string(),
            role,
            disabled: false,
        };
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(ts(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "username '{username}' is taken"
                )));
            }
            other => other?,
        };
        let ev = new_event(
            events::USER_CREATED,
            format!("user/{username}"),
            actor,
            None,
            json!({ "user_id": user.id, "username": username, "role": role }),
        );
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM users WHERE username = ?",
            rows::USER_COLUMNS
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::user_record).transpose()
    }

    async fn insert_refresh_token(
        &self,
        user: UserId,
        token_hash: &str,
        expires_at: DateTime<Utc>,
        session_epoch: i64,
    ) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, created_at, expires_at) \
             SELECT ?, id, ?, ? FROM users WHERE id = ? AND session_epoch = ? AND disabled_at IS NULL",
        )
        .bind(token_hash)
        .bind(ts(now_micros()))
        .bind(ts(expires_at))
        .bind(user.to_string())
        .bind(session_epoch)
        .execute(&self.pool)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict("refresh token already exists".into()))
            }
            Ok(done) if done.rows_affected() == 0 => {
                Err(match self.user_by_id_exists(user).await? {
                    false => StoreError::NotFound(format!("user {user}")),
                    true => StoreError::Conflict(crate::account_plan::SESSION_ENDED.into()),
                })
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expiry: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<UserRecord>> {
        let mut tx = self.begin_immediate().await?;
        let row = sqlx::query(&format!(
            "SELECT {} FROM refresh_tokens t JOIN users ON users.id = t.user_id \
             WHERE t.token_hash = ? AND t.revoked_at IS NULL AND t.expires_at > ? \
             AND users.disabled_at IS NULL",
            rows::USER_COLUMNS
        ))
        .bind(old_hash)
        .bind(ts(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let record = rows::user_record(&row)?;
        let user = &record.user;
        sqlx::query("UPDATE refresh_tokens SET revoked_at = ? WHERE token_hash = ?")
            .bind(ts(now))
            .bind(old_hash)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(new_hash)
        .bind(user.id.to_string())
        .bind(ts(now))
        .bind(ts(new_expiry))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(
                    "new refresh token already exists".into(),
                ));
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(Some(record))
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE token_hash = ?",
        )
        .bind(ts(now_micros()))
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_refresh_tokens(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < ? OR revoked_at < ?")
            .bind(ts(now))
            .bind(ts(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn create_registration_token(
        &self,
        new: NewRegistrationToken,
        actor: &Actor,
    ) -> Result<RegistrationToken> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO registration_tokens (id, token_hash, label, seats, seats_used, expires_at, revoked, \
             created_by, created_at, guest_id) VALUES (?, ?, ?, ?, 0, ?, 0, ?, ?, ?) RETURNING *",
        )
        .bind(new.id.to_string())
        .bind(&new.token_hash)
        .bind(&new.label)
        .bind(i64::from(new.seats))
        .bind(ts(new.expires_at))
        .bind(actor.to_string())
        .bind(ts(now))
        .bind(new.guest_id.map(|g| g.to_string()))
        .fetch_one(&mut *tx)
        .await;
        let row = match row {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(
                    "registration token already exists".into(),
                ));
            }
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                let guest = new.guest_id.map(|g| g.to_string()).unwrap_or_default();
                return Err(StoreError::NotFound(format!("guest {guest}")));
            }
            other => other?,
        };
        let token = rows::registration_token(&row)?;
        let ev = new_event(
            events::REGISTRATION_TOKEN_CREATED,
            format!("registration_token/{}", new.id),
            actor,
            None,
            json!({
                "id": new.id,
                "label": new.label,
                "seats": new.seats,
                "expires_at": token.expires_at,
                "guest_id": new.guest_id,
            }),
        );
        let ev = prepare_event(ev, None, now).with_guest(new.guest_id);
        insert_events(&mut tx, &[ev]).await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        let found = sqlx::query("SELECT * FROM registration_tokens ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::registration_token).collect()
    }
}
