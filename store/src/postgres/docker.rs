//! [`DockerStore`] on PostgreSQL: containers per host, registry checks and registries.

use super::{finish, insert_events, rows, PgStore};
use crate::common::{now_micros, prepare_event};
use crate::docker::{check_credential, credential_event};
use crate::ingest_plan::{image_update_report, Source};
use crate::{
    events, Actor, DockerStore, HostContainer, IngestOutcome, NewEvent, RegistryCredential,
    RegistryRecord, Result, StoreError,
};
use async_trait::async_trait;
use canopy_api_types::docker::{Container, ImageCheck, RegistryStatus};
use canopy_api_types::updates::PackageUpdate;
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, QueryBuilder, Row};

/// Replace the host's containers by `containers`, inside the report's transaction.
pub(super) async fn replace_containers(
    conn: &mut PgConnection,
    host: HostId,
    containers: &[Container],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("DELETE FROM docker_containers WHERE host_id = $1")
        .bind(host.0)
        .execute(&mut *conn)
        .await?;
    for chunk in containers.chunks(200) {
        let mut qb = QueryBuilder::new(
            "INSERT INTO docker_containers (host_id, name, image, detail, updated_at) ",
        );
        qb.push_values(chunk, |mut b, c| {
            b.push_bind(host.0)
                .push_bind(c.name.clone())
                .push_bind(c.image.clone())
                .push_bind(serde_json::to_value(c).expect("a container serialises"))
                .push_bind(now);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl DockerStore for PgStore {
    async fn list_containers(&self) -> Result<Vec<HostContainer>> {
        const T: &str = "docker_containers";
        let found = sqlx::query(
            "SELECT c.host_id, c.detail, c.updated_at FROM docker_containers c \
             JOIN hosts h ON h.id = c.host_id WHERE h.state = 'active' ORDER BY c.host_id, c.name",
        )
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| {
                Ok(HostContainer {
                    host_id: HostId(r.try_get("host_id")?),
                    container: rows::json_col(r, T, "detail")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn host_containers(&self, host: HostId) -> Result<Vec<Container>> {
        let found =
            sqlx::query("SELECT detail FROM docker_containers WHERE host_id = $1 ORDER BY name")
                .bind(host.0)
                .fetch_all(&self.pool)
                .await?;
        found
            .iter()
            .map(|r| rows::json_col(r, "docker_containers", "detail"))
            .collect()
    }

    async fn open_image_updates(&self, host: Option<HostId>) -> Result<Vec<(HostId, String)>> {
        let found = sqlx::query(
            "SELECT host_id, package FROM updates WHERE manager = 'docker' \
             AND status NOT IN ('installed', 'reconciled') AND ($1::uuid IS NULL OR host_id = $1) \
             ORDER BY host_id, package",
        )
        .bind(host.map(|h| h.0))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| Ok((HostId(r.try_get("host_id")?), r.try_get("package")?)))
            .collect()
    }

    async fn sync_image_updates(
        &self,
        host: HostId,
        rows: Vec<PackageUpdate>,
        actor: &Actor,
    ) -> Result<IngestOutcome> {
        let report = image_update_report(rows)?;
        let mut tx = self.pool.begin().await?;
        let r = super::ingest::ingest(&mut tx, host, report, actor, Source::ImageChecks).await;
        finish(tx, r).await
    }

    async fn save_image_checks(
        &self,
        checks: &[ImageCheck],
        registries: &[RegistryStatus],
    ) -> Result<()> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<()> = async {
        for c in checks {
            sqlx::query(
                "INSERT INTO image_checks (registry, repository, tag, platform, detail, checked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (registry, repository, tag, platform) \
                 DO UPDATE SET detail = excluded.detail, checked_at = excluded.checked_at",
            )
            .bind(&c.registry)
            .bind(&c.repository)
            .bind(&c.tag)
            .bind(&c.platform)
            .bind(serde_json::to_value(c).expect("a check serialises"))
            .bind(c.checked_at)
            .execute(&mut *tx)
            .await?;
        }
        for r in registries {
            sqlx::query(
                "INSERT INTO registries (registry, status, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (registry) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            )
            .bind(&r.registry)
            .bind(serde_json::to_value(r).expect("a status serialises"))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
        }
        .await;
        finish(tx, r).await
    }

    async fn list_image_checks(&self) -> Result<Vec<ImageCheck>> {
        let found = sqlx::query(
            "SELECT detail FROM image_checks ORDER BY registry, repository, tag, platform",
        )
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| rows::json_col(r, "image_checks", "detail"))
            .collect()
    }

    async fn list_registries(&self) -> Result<Vec<RegistryRecord>> {
        const T: &str = "registries";
        let found = sqlx::query("SELECT * FROM registries ORDER BY registry")
            .fetch_all(&self.pool)
            .await?;
        found
            .iter()
            .map(|r| {
                let kind = r.try_get::<Option<String>, _>("auth_kind")?;
                let secret = r.try_get::<Option<String>, _>("secret_sealed")?;
                Ok(RegistryRecord {
                    registry: r.try_get("registry")?,
                    credential: match (kind, secret) {
                        (Some(kind), Some(secret_sealed)) => Some(RegistryCredential {
                            kind,
                            username: r.try_get("username")?,
                            secret_sealed,
                        }),
                        _ => None,
                    },
                    status: rows::opt_json_col(r, T, "status")?,
                })
            })
            .collect()
    }

    async fn set_registry_credential(
        &self,
        registry: &str,
        credential: Option<RegistryCredential>,
        actor: &Actor,
    ) -> Result<()> {
        if let Some(c) = &credential {
            check_credential(c)?;
        }
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<()> = async {
        match &credential {
            Some(c) => {
                sqlx::query(
                    "INSERT INTO registries (registry, auth_kind, username, secret_sealed, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (registry) DO UPDATE SET \
                     auth_kind = excluded.auth_kind, username = excluded.username, \
                     secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
                )
                .bind(registry)
                .bind(&c.kind)
                .bind(&c.username)
                .bind(&c.secret_sealed)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                let n = sqlx::query(
                    "UPDATE registries SET auth_kind = NULL, username = NULL, secret_sealed = NULL, \
                     updated_at = $1 WHERE registry = $2 AND auth_kind IS NOT NULL",
                )
                .bind(now)
                .bind(registry)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!(
                        "credentials for registry {registry}"
                    )));
                }
            }
        }
        let (ty, payload) = credential_event(registry, credential.as_ref());
        let ev = NewEvent {
            event_type: ty.into(),
            subject: events::registry_subject(registry),
            actor: actor.clone(),
            correlation: None,
            causation: None,
            payload,
        };
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        Ok(())
        }
        .await;
        finish(tx, r).await
    }
}
