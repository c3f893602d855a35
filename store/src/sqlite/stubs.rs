//! Temporary stubs while the SQLite backend is written.
#![allow(unused_variables)]
use super::SqliteStore;
use crate::*;
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::auth::{RegistrationToken, Role, User};
use canopy_api_types::commands::{Command, CommandResult};
use canopy_api_types::hosts::{Event, EventFilter, Host};
use canopy_api_types::updates::{Page, Update, UpdateFilter, UpdateStats, VersionChange};
use canopy_api_types::*;
use chrono::{DateTime, Utc};


#[async_trait]
impl UserStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        unimplemented!()
    }
    async fn count_users(&self) -> Result<u64> {
        unimplemented!()
    }
    async fn create_user(&self, _username: &str, _password_hash: &str, _role: Role, _actor: &Actor) -> Result<User> {
        unimplemented!()
    }
    async fn user_by_name(&self, _username: &str) -> Result<Option<(User, String)>> {
        unimplemented!()
    }
    async fn set_password(&self, _username: &str, _password_hash: &str, _actor: &Actor) -> Result<()> {
        unimplemented!()
    }
    async fn insert_refresh_token(&self, _user: UserId, _token_hash: &str, _expires_at: DateTime<Utc>) -> Result<()> {
        unimplemented!()
    }
    async fn rotate_refresh_token(
        &self,
        _old_hash: &str,
        _new_hash: &str,
        _new_expiry: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<Option<User>> {
        unimplemented!()
    }
    async fn revoke_refresh_token(&self, _token_hash: &str) -> Result<bool> {
        unimplemented!()
    }
    async fn purge_refresh_tokens(&self, _now: DateTime<Utc>) -> Result<u64> {
        unimplemented!()
    }
    async fn create_registration_token(&self, _new: NewRegistrationToken, _actor: &Actor) -> Result<RegistrationToken> {
        unimplemented!()
    }
    async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>> {
        unimplemented!()
    }
}

#[async_trait]
impl HostStore for SqliteStore {
    async fn register_host(&self, _token_hash: &str, _new: NewHost, _now: DateTime<Utc>) -> Result<Host> {
        unimplemented!()
    }
    async fn host_credential(&self, _host: HostId) -> Result<Option<(Host, String)>> {
        unimplemented!()
    }
    async fn touch_host(&self, _host: HostId, _facts: &HostFacts, _now: DateTime<Utc>) -> Result<()> {
        unimplemented!()
    }
    async fn get_host(&self, _host: HostId) -> Result<Option<Host>> {
        unimplemented!()
    }
    async fn list_hosts(&self) -> Result<Vec<Host>> {
        unimplemented!()
    }
    async fn report_hash(&self, _host: HostId) -> Result<Option<String>> {
        unimplemented!()
    }
}

#[async_trait]
impl UpdateStore for SqliteStore {
    async fn ingest_report(&self, _host: HostId, _report: IngestReport, _actor: &Actor) -> Result<IngestOutcome> {
        unimplemented!()
    }
    async fn list_updates(&self, _filter: &UpdateFilter) -> Result<Page<Update>> {
        unimplemented!()
    }
    async fn get_update(&self, _id: UpdateId) -> Result<Option<Update>> {
        unimplemented!()
    }
    async fn approve_updates(
        &self,
        _ids: &[UpdateId],
        _correlation: CorrelationId,
        _timeout_secs: u32,
        _actor: &Actor,
    ) -> Result<ApproveOutcome> {
        unimplemented!()
    }
    async fn reject_updates(&self, _ids: &[UpdateId], _actor: &Actor) -> Result<u64> {
        unimplemented!()
    }
    async fn version_history(&self, _host: Option<HostId>, _limit: u32) -> Result<Vec<VersionChange>> {
        unimplemented!()
    }
    async fn stats(&self) -> Result<UpdateStats> {
        unimplemented!()
    }
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn enqueue_command(&self, _new: NewCommand, _actor: &Actor) -> Result<Command> {
        unimplemented!()
    }
    async fn claim_commands(&self, _host: HostId, _now: DateTime<Utc>, _limit: u32) -> Result<Vec<Command>> {
        unimplemented!()
    }
    async fn mark_running(&self, _host: HostId, _id: CommandId, _now: DateTime<Utc>) -> Result<Command> {
        unimplemented!()
    }
    async fn complete_command(
        &self,
        _host: HostId,
        _id: CommandId,
        _result: CommandResult,
        _now: DateTime<Utc>,
    ) -> Result<CompleteOutcome> {
        unimplemented!()
    }
    async fn confirm_dry_run(&self, _dry_run: CommandId, _timeout_secs: u32, _actor: &Actor) -> Result<Command> {
        unimplemented!()
    }
    async fn cancel_command(&self, _id: CommandId, _actor: &Actor) -> Result<Command> {
        unimplemented!()
    }
    async fn retry_command(&self, _id: CommandId, _actor: &Actor) -> Result<Command> {
        unimplemented!()
    }
    async fn expire_commands(&self, _now: DateTime<Utc>) -> Result<Vec<Command>> {
        unimplemented!()
    }
    async fn get_command(&self, _id: CommandId) -> Result<Option<Command>> {
        unimplemented!()
    }
    async fn list_commands(&self, _host: HostId, _limit: u32) -> Result<Vec<Command>> {
        unimplemented!()
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn events(&self, _filter: &EventFilter) -> Result<Vec<Event>> {
        unimplemented!()
    }
    async fn append_event(&self, _event: NewEvent) -> Result<Event> {
        unimplemented!()
    }
    async fn purge_events(&self, _before: DateTime<Utc>) -> Result<u64> {
        unimplemented!()
    }
    async fn idempotent_response(&self, _actor: &str, _key: &str) -> Result<Option<(String, serde_json::Value)>> {
        unimplemented!()
    }
    async fn save_idempotent_response(
        &self,
        _actor: &str,
        _key: &str,
        _request_hash: &str,
        _response: &serde_json::Value,
        _now: DateTime<Utc>,
    ) -> Result<()> {
        unimplemented!()
    }
}
