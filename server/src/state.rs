//! `AppState`: every dependency of a handler, injected once (no globals).

use crate::auth::jwt::JwtKeys;
use crate::auth::rate_limit::RateLimiter;
use crate::auth::sealed::Sealer;
use crate::deploy::Deployer;
use crate::discovery::Discovery;
use crate::http::client_ip::TrustedProxies;
use crate::images::Images;
use crate::operations::Engine;
use crate::settings::Settings;
use crate::tls::Served;
use crate::update::Updater;
use canopy_api_types::HostId;
use canopy_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    pub jwt: JwtKeys,
    pub wakeups: Arc<Wakeups>,
    /// Login attempts per client address.
    pub login_limiter: Arc<RateLimiter>,
    /// Login attempts per user name (a name attacked from many addresses).
    pub login_name_limiter: Arc<RateLimiter<String>>,
    /// Failed agent registrations per client address.
    pub register_limiter: Arc<RateLimiter>,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Proxmox discovery and the in-memory tree.
    pub discovery: Arc<Discovery>,
    /// Agent delivery over SSH (operations, agentless scans).
    pub deployer: Arc<Deployer>,
    /// Bulk update operations.
    pub updater: Arc<Updater>,
    /// Registry checks of every container's image, and the image updates they find.
    pub images: Arc<Images>,
    /// What every operation shares: item streams and guest locks.
    pub engine: Arc<Engine>,
    /// The certificate served; `None` for plain HTTP.
    pub tls: Option<Arc<Served>>,
    /// Set when the server stops: held requests answer at once.
    pub shutdown: Shutdown,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        jwt: JwtKeys,
        sealer: Sealer,
        tls: Option<Served>,
    ) -> Self {
        let per_minute = settings.auth_attempts_per_minute;
        let discovery = Arc::new(Discovery::new(store.clone(), sealer, &settings));
        // `Settings::load` refused a bad list; one built in code that does not parse
        // trusts nobody.
        let trusted_proxies = Arc::new(settings.trusted_proxies().unwrap_or_default());
        let fingerprint = tls.as_ref().map(|t| t.identity.fingerprint());
        let engine = Arc::new(Engine::default());
        let wakeups = Arc::new(Wakeups::default());
        let images = Arc::new(
            Images::new(
                store.clone(),
                discovery.clone(),
                settings.image_check_interval_secs,
            )
            .expect("the registry client builds (rustls with the WebPKI roots)"),
        );
        Self {
            images,
            deployer: Arc::new(Deployer::new(
                store.clone(),
                discovery.clone(),
                &settings,
                fingerprint,
                engine.clone(),
            )),
            updater: Arc::new(Updater::new(
                store.clone(),
                discovery.clone(),
                wakeups.clone(),
                engine.clone(),
                &settings,
            )),
            engine,
            tls: tls.map(Arc::new),
            shutdown: Shutdown::default(),
            discovery,
            store,
            settings: Arc::new(settings),
            jwt,
            wakeups,
            login_limiter: Arc::new(RateLimiter::new(per_minute)),
            login_name_limiter: Arc::new(RateLimiter::new(per_minute)),
            register_limiter: Arc::new(RateLimiter::new(per_minute)),
            trusted_proxies,
        }
    }
}

/// Wakes the long-polling check-in of a host when a command is queued for it.
///
/// In-process only: with several replicas on PostgreSQL an agent held by another
/// replica notices the command at its next check-in (at most `checkin_max_wait_secs`).
#[derive(Debug, Default)]
pub struct Wakeups {
    hosts: Mutex<HashMap<HostId, Arc<Notify>>>,
}

impl Wakeups {
    pub fn handle(&self, host: HostId) -> Arc<Notify> {
        self.hosts
            .lock()
            .expect("wakeups lock")
            .entry(host)
            .or_default()
            .clone()
    }

    /// Wake the host's check-in; a permit is stored if none is waiting yet.
    pub fn wake(&self, host: HostId) {
        self.handle(host).notify_one();
    }
}

/// The server is stopping. Long polls (held check-ins) select on [`Shutdown::wait`] and
/// answer at once, so a graceful shutdown does not wait out their hold.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`Shutdown::trigger`] was called (at once if it was already).
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }
}
