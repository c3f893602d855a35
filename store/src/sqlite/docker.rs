//! [`DockerStore`] on SQLite: containers per host, registry checks and registries.

use super::{insert_events, new_event, rows, ts, SqliteStore, Tx};
use crate::common::{now_micros, prepare_event};
use crate::docker::{check_credential, credential_event};
use crate::ingest_plan::{image_update_report, Source};
use crate::{
    events, Actor, DockerStore, HostContainer, IngestOutcome, RegistryCredential, RegistryRecord,
    Result, StoreError,
};
use async_trait::async_trait;
use canopy_api_types::docker::{Container, ImageCheck, RegistryStatus};
use canopy_api_types::updates::PackageUpdate;
use canopy_api_types::HostId;
use sqlx::QueryBuilder;

/// Replace the host's containers by `containers`, inside the report's transaction.
pub(super) async fn replace_containers(
    tx: &mut Tx,
    host: HostId,
    containers: &[Container],
    now: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM docker_containers WHERE host_id = ?")
        .bind(host.to_string())
        .execute(&mut **tx)
        .await?;
    for chunk in containers.chunks(200) {
        let mut qb = QueryBuilder::new(
            "INSERT INTO docker_containers (host_id, name, image, detail, updated_at) ",
        );
        qb.push_values(chunk, |mut b, c| {
            b.push_bind(host.to_string())
                .push_bind(c.name.clone())
                .push_bind(c.image.clone())
                .push_bind(serde_json::to_string(c).expect("a container serialises"))
                .push_bind(now.to_string());
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl DockerStore for SqliteStore {
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
                    host_id: rows::id(r, T, "host_id")?,
                    container: rows::json_col(r, T, "detail")?,
                    updated_at: rows::time(r, T, "updated_at")?,
                })
            })
            .collect()
    }

    async fn host_containers(&self, host: HostId) -> Result<Vec<Container>> {
        let found =
            sqlx::query("SELECT detail FROM docker_containers WHERE host_id = ? ORDER BY name")
                .bind(host.to_string())
                .fetch_all(&self.pool)
                .await?;
        found
            .iter()
            .map(|r| rows::json_col(r, "docker_containers", "detail"))
            .collect()
    }

    async fn open_image_updates(&self, host: Option<HostId>) -> Result<Vec<(HostId, String)>> {
        const T: &str = "updates";
        let found = sqlx::query(
            "SELECT host_id, package FROM updates WHERE manager = 'docker' \
             AND status NOT IN ('installed', 'reconciled') AND (? IS NULL OR host_id = ?) \
             ORDER BY host_id, package",
        )
        .bind(host.map(|h| h.to_string()))
        .bind(host.map(|h| h.to_string()))
        .fetch_all(&self.pool)
        .await?;
        found
            .iter()
            .map(|r| Ok((rows::id(r, T, "host_id")?, rows::text(r, T, "package")?)))
            .collect()
    }

    async fn sync_image_updates(
        &self,
        host: HostId,
        rows: Vec<PackageUpdate>,
        actor: &Actor,
    ) -> Result<IngestOutcome> {
        self.ingest(host, image_update_report(rows)?, actor, Source::ImageChecks)
            .await
    }

    async fn save_image_checks(
        &self,
        checks: &[ImageCheck],
        registries: &[RegistryStatus],
    ) -> Result<()> {
        let now = ts(now_micros());
        let mut tx = self.begin_immediate().await?;
        for c in checks {
            sqlx::query(
                "INSERT INTO image_checks (registry, repository, tag, platform, detail, checked_at) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (registry, repository, tag, platform) \
                 DO UPDATE SET detail = excluded.detail, checked_at = excluded.checked_at",
            )
            .bind(&c.registry)
            .bind(&c.repository)
            .bind(&c.tag)
            .bind(&c.platform)
            .bind(serde_json::to_string(c).expect("a check serialises"))
            .bind(ts(c.checked_at))
            .execute(&mut *tx)
            .await?;
        }
        for r in registries {
            sqlx::query(
                "INSERT INTO registries (registry, status, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (registry) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
            )
            .bind(&r.registry)
            .bind(serde_json::to_string(r).expect("a status serialises"))
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
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
                let kind = rows::opt_text(r, T, "auth_kind")?;
                let secret = rows::opt_text(r, T, "secret_sealed")?;
                Ok(RegistryRecord {
                    registry: rows::text(r, T, "registry")?,
                    credential: match (kind, secret) {
                        (Some(kind), Some(secret_sealed)) => Some(RegistryCredential {
                            kind,
                            username: rows::opt_text(r, T, "username")?,
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
        let mut tx = self.begin_immediate().await?;
        match &credential {
            Some(c) => {
                sqlx::query(
                    "INSERT INTO registries (registry, auth_kind, username, secret_sealed, updated_at) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (registry) DO UPDATE SET \
                     auth_kind = excluded.auth_kind, username = excluded.username, \
                     secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
                )
                .bind(registry)
                .bind(&c.kind)
                .bind(&c.username)
                .bind(&c.secret_sealed)
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
            }
            None => {
                let n = sqlx::query(
                    "UPDATE registries SET auth_kind = NULL, username = NULL, secret_sealed = NULL, \
                     updated_at = ? WHERE registry = ? AND auth_kind IS NOT NULL",
                )
                .bind(ts(now))
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
        let ev = new_event(ty, events::registry_subject(registry), actor, None, payload);
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        tx.commit().await?;
        Ok(())
    }
}
