//! The Canopy server as a library: `launch_with_listener` runs it on a bound
//! listener (tests bind port 0 first, then spawn); the `canopy` binary is a thin CLI.

pub mod auth;
pub mod cli;
pub mod deploy;
pub mod discovery;
pub mod error;
pub mod http;
pub mod images;
pub mod operations;
pub mod pipeline;
pub mod registry;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod update;
pub mod webui;

use anyhow::Context;
use settings::Settings;
use state::AppState;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest start-up may spend opening and migrating the database.
pub const STARTUP_DB_TIMEOUT: Duration = Duration::from_secs(8);

/// Open the database and apply migrations, or fail with the reason.
pub async fn open_store(
    settings: &Settings,
) -> anyhow::Result<std::sync::Arc<dyn canopy_store::Store>> {
    let url = canopy_store::url_without_password(&settings.database_url);
    match tokio::time::timeout(
        STARTUP_DB_TIMEOUT,
        canopy_store::open(&settings.database_url),
    )
    .await
    {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("database start-up failed")),
        Err(_) => anyhow::bail!(
            "database start-up failed: opening {url} took longer than {} s",
            STARTUP_DB_TIMEOUT.as_secs()
        ),
    }
}

/// Longest a stopping server waits for open requests (an SSE stream, a slow upload) after
/// the held check-ins were answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything up to serving: TLS certificate, store, migrations, first admin, keys, state.
/// Settings that must not serve (plain HTTP on the network) fail here, before anything is
/// opened or bound.
pub async fn prepare(settings: Settings) -> anyhow::Result<AppState> {
    let tls = tls::identity(&settings)?;
    let store = open_store(&settings).await?;
    pipeline::bootstrap::ensure_admin(store.as_ref(), &settings)
        .await
        .context("creating the first admin failed")?;
    let jwt = auth::jwt::JwtKeys::load_or_create(&settings.data_dir)?;
    let sealer = auth::sealed::Sealer::load_or_create(&settings.data_dir)?;
    let state = AppState::new(store, settings, jwt, sealer, tls);
    state
        .discovery
        .rebuild()
        .await
        .context("cannot build the inventory tree from the database")?;
    let interrupted = state
        .store
        .fail_interrupted_operations(chrono::Utc::now())
        .await
        .context("cannot close the operations a previous run left unfinished")?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "operations left running by the previous run marked failed"
        );
    }
    // Update operations pick up where they were (every step is recorded before it starts).
    state
        .updater
        .resume_unfinished()
        .await
        .context("cannot resume the update operations a previous run left unfinished")?;
    Ok(state)
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn launch_with_listener(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = prepare(settings).await?;
    serve(state, listener, shutdown).await
}

/// Serve an already prepared state (benchmarks and tests reuse the state), over HTTPS when
/// the state has a certificate. When `shutdown` resolves, held check-ins answer at once and
/// open connections get [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let _jobs = pipeline::jobs::spawn(state.clone());

    let addr = listener.local_addr()?;
    let stopping = state.shutdown.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: answering held check-ins");
        stopping.trigger();
    };
    let app = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = async {
        match &state.tls {
            Some(tls) => {
                tracing::info!(%addr, backend = state.store.backend(), fingerprint = %tls.identity.fingerprint(), "canopy serving HTTPS");
                let listener =
                    tls::listener::TlsListener::new(listener, tls.identity.server_config())
                        // `tap_io` gives the listener axum's ConnectInfo<SocketAddr> (the TCP peer).
                        .tap_io(|_| {});
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
            }
            None => {
                tracing::info!(%addr, backend = state.store.backend(), "canopy serving plain HTTP");
                axum::serve(listener, app)
                    .with_graceful_shutdown(signal)
                    .await
            }
        }
    };
    let overdue = async {
        state.shutdown.wait().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = served => r.context("server stopped with an error"),
        _ = overdue => {
            tracing::warn!(grace_secs = SHUTDOWN_GRACE.as_secs(), "requests still open after the grace period; stopping anyway");
            Ok(())
        }
    }
}
