//! Users, refresh tokens and registration tokens on PostgreSQL.

use super::{insert_events, is_foreign_key_violation, unique_to_conflict, PgStore};
use crate::common::{micros, now_micros, prepare_event};
use crate::{
    events, Actor, NewEvent, NewRegistrationToken, Result, StoreError, UserRecord, UserStore,
};
use async_trait::async_trait;
use canopy_api_types::auth::{RegistrationToken, Role, User};
use canopy_api_types::{GuestId, RegistrationTokenId, UserId};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

/// A user from a `users` row.
pub(super) fn user(row: &PgRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: UserId(row.try_get("id")?),
        username: row.try_get("username")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::corrupt("users", format!("unknown role '{role}'")))?,
        disabled: row
            .try_get::<Option<DateTime<Utc>>, _>("disabled_at")?
            .is_some(),
    })
}

/// A user with hash and session epoch from a `users` row.
pub(super) fn user_record(row: &PgRow) -> Result<UserRecord> {
    Ok(UserRecord {
        user: user(row)?,
        password_hash: row.try_get("password_hash")?,
        session_epoch: row.try_get("session_epoch")?,
    })
}

pub(super) fn reg_token(row: &PgRow) -> Result<RegistrationToken> {
    Ok(RegistrationToken {
        id: RegistrationTokenId(row.try_get("id")?),
        label: row.try_get("label")?,
        seats: u32::try_from(row.try_get::<i32, _>("seats")?).unwrap_or(0),
        seats_used: u32::try_from(row.try_get::<i32, _>("seats_used")?).unwrap_or(0),
        expires_at: row.try_get("expires_at")?,
        revoked: row.try_get("revoked")?,
        revoked_at: row.try_get("revoked_at")?,
        guest_id: row.try_get::<Option<Uuid>, _>("guest_id")?.map(GuestId),
    })
}

fn user_event(
    event_type: &str,
    username: &str,
    actor: &Actor,
    payload: serde_json::Value,
) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        subject: format!("user/{username}"),
        actor: actor.clone(),
        correlation: None,
        causation: None,
        payload,
    }
}

#[async_trait]
impl UserStore for PgStore {
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
        let id = UserId::new();
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            sqlx::query("INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.0)
                .bind(username)
                .bind(password_hash)
                .bind(role.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| unique_to_conflict(e, || format!("username '{username}' is taken")))?;
            let payload = serde_json::json!({ "user_id": id, "username": username, "role": role });
            let ev = user_event(events::USER_CREATED, username, actor, payload);
            insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
            Ok(User {
                id,
                username: username.into(),
                role,
                disabled: false,
            })
        }
        .await;
        super::finish(tx, r).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_record).transpose()
    }

    async fn insert_refresh_token(
        &self,
        user: UserId,
        token_hash: &str,
        expires_at: DateTime<Utc>,
        session_epoch: i64,
    ) -> Result<()> {
        // FOR SHARE waits for a change holding the user's row and then reads its result, so
        // a token is never inserted behind the back of a change that ended the sessions.
        let n = sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, created_at, expires_at) \
             SELECT $1, id, $2, $3 FROM users \
             WHERE id = $4 AND session_epoch = $5 AND disabled_at IS NULL FOR SHARE",
        )
        .bind(token_hash)
        .bind(now_micros())
        .bind(micros(expires_at))
        .bind(user.0)
        .bind(session_epoch)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, || "refresh token already exists".into()))?
        .rows_affected();
        if n == 0 {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
                    .bind(user.0)
                    .fetch_one(&self.pool)
                    .await?;
            return Err(if exists {
                StoreError::Conflict(crate::account_plan::SESSION_ENDED.into())
            } else {
                StoreError::NotFound(format!("user {user}"))
            });
        }
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expiry: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<UserRecord>> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            // The user's row first (shared): a change to the user holds it exclusively, so
            // rotation either runs before the change (whose revocation then sees the new
            // token) or after it (and finds the old token revoked). Every account change
            // takes the user row before the tokens too, so the two never wait in a cycle.
            let row = sqlx::query(
                "SELECT u.* FROM users u JOIN refresh_tokens t ON t.user_id = u.id \
                 WHERE t.token_hash = $1 FOR SHARE OF u",
            )
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let record = user_record(&row)?;
            if record.user.disabled {
                return Ok(None);
            }
            // The UPDATE locks the token: of two concurrent rotations only one sees it unrevoked.
            let n = sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 \
                 WHERE token_hash = $2 AND revoked_at IS NULL AND expires_at > $1",
            )
            .bind(now)
            .bind(old_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(None);
            }
            sqlx::query("INSERT INTO refresh_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(new_hash)
                .bind(record.user.id.0)
                .bind(now)
                .bind(micros(new_expiry))
                .execute(&mut *tx)
                .await
                .map_err(|e| unique_to_conflict(e, || "new refresh token already exists".into()))?;
            Ok(Some(record))
        }
        .await;
        super::finish(tx, r).await
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now_micros())
            .bind(token_hash)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn purge_refresh_tokens(&self, now: DateTime<Utc>) -> Result<u64> {
        let n = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)")
            .bind(micros(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn create_registration_token(
        &self,
        new: NewRegistrationToken,
        actor: &Actor,
    ) -> Result<RegistrationToken> {
        let now = now_micros();
        let expires_at = micros(new.expires_at);
        let seats = i32::try_from(new.seats).map_err(|_| {
            StoreError::Conflict(format!(
                "{} seats is more than a token can carry",
                new.seats
            ))
        })?;
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            sqlx::query(
                "INSERT INTO registration_tokens (id, token_hash, label, seats, seats_used, expires_at, revoked, \
                 created_by, created_at, guest_id) VALUES ($1, $2, $3, $4, 0, $5, FALSE, $6, $7, $8)",
            )
            .bind(new.id.0)
            .bind(&new.token_hash)
            .bind(&new.label)
            .bind(seats)
            .bind(expires_at)
            .bind(actor.to_string())
            .bind(now)
            .bind(new.guest_id.map(|g| g.0))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    let guest = new.guest_id.map(|g| g.to_string()).unwrap_or_default();
                    StoreError::NotFound(format!("guest {guest}"))
                } else {
                    unique_to_conflict(e, || "registration token already exists".into())
                }
            })?;
            let ev = NewEvent {
                event_type: events::REGISTRATION_TOKEN_CREATED.into(),
                subject: format!("registration_token/{}", new.id),
                actor: actor.clone(),
                correlation: None,
                causation: None,
                payload: serde_json::json!({
                    "id": new.id,
                    "label": new.label,
                    "seats": new.seats,
                    "expires_at": expires_at,
                    "guest_id": new.guest_id,
                }),
            };
            let ev = prepare_event(ev, None, now).with_guest(new.guest_id);
            insert_events(&mut tx, &[ev]).await?;
            Ok(RegistrationToken {
                id: new.id,
                label: new.label,
                seats: new.seats,
                seats_used: 0,
                expires_at,
                revoked: false,
                revoked_at: None,
                guest_id: new.guest_id,
            })
        }
        .await;
        super::finish(tx, r).await
    }

    async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        let rows = sqlx::query("SELECT * FROM registration_tokens ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(reg_token).collect()
    }
}
