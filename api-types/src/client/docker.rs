//! Docker inside guests: containers with their image updates, registries and their
//! credentials, a check cycle now.

use super::{path_segment, Client, ClientError};
use crate::docker::{CheckSummary, ContainerView, RegistryLogin, RegistryStatus};

impl Client {
    /// Every container (or those `selector` selects) with its update and last check.
    pub async fn containers(
        &self,
        selector: Option<&str>,
    ) -> Result<Vec<ContainerView>, ClientError> {
        match selector {
            Some(s) => self.get_query("/containers", &[("selector", s)]).await,
            None => self.get("/containers").await,
        }
    }

    pub async fn registries(&self) -> Result<Vec<RegistryStatus>, ClientError> {
        self.get("/registries").await
    }

    pub async fn set_registry_login(
        &self,
        registry: &str,
        login: &RegistryLogin,
    ) -> Result<RegistryStatus, ClientError> {
        self.put(
            &format!("/registries/{}/credentials", path_segment(registry)),
            login,
        )
        .await
    }

    pub async fn remove_registry_login(
        &self,
        registry: &str,
    ) -> Result<RegistryStatus, ClientError> {
        self.delete(&format!(
            "/registries/{}/credentials",
            path_segment(registry)
        ))
        .await
    }

    /// One registry check cycle of every container's image, now.
    pub async fn check_images(&self) -> Result<CheckSummary, ClientError> {
        self.post("/images/check", &serde_json::json!({})).await
    }
}
