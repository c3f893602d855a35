//! Listeners: one HTTPS port on 127.0.0.1 per node (like each node's pveproxy on :8006),
//! all sharing the cluster's state. An offline node closes its socket (connections are
//! refused) and re-binds the same port when it comes back. Every HTTP request that reaches
//! a listener is recorded before anything else happens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::state::State;

/// One HTTP request as it reached a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Full path, e.g. `/api2/json/cluster/resources` (without the query string).
    pub path: String,
    /// The node whose listener received it.
    pub listener_node: String,
    pub query: Option<String>,
}

/// What every listener and connection of a cluster shares.
pub(crate) struct Shared {
    state: Mutex<State>,
    log: Mutex<Vec<RequestRecord>>,
    count: AtomicUsize,
    /// Per node: is its listener up?
    pub online: BTreeMap<String, watch::Sender<bool>>,
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(state: State) -> Self {
        let online = state
            .nodes
            .iter()
            .map(|n| (n.name.clone(), watch::Sender::new(n.online)))
            .collect();
        Self {
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            online,
            shutdown: watch::Sender::new(false),
        }
    }

    /// The state; a panicked holder cannot leave it half-written in a way we care about.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, method: &str, path: &str, listener: &str, query: Option<String>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(RequestRecord {
            method: method.into(),
            path: path.into(),
            listener_node: listener.into(),
            query,
        });
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn request_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn reset_requests(&self) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.clear();
        self.count.store(0, Ordering::SeqCst);
    }
}

/// Binds 127.0.0.1:`port` (0 = any free port).
pub(crate) async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// Serves `node` on `addr` until shutdown, following the node's online flag.
pub(crate) fn spawn_listener(
    shared: Arc<Shared>,
    node: String,
    listener: TcpListener,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let acceptor = TlsAcceptor::from(tls);
        let Some(mut online) = shared.online.get(&node).map(watch::Sender::subscribe) else {
            return;
        };
        let mut shutdown = shared.shutdown.subscribe();
        let node: Arc<str> = node.into();
        let mut listener = Some(listener);
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !*online.borrow_and_update() {
                listener = None;
                tokio::select! {
                    _ = online.changed() => continue,
                    _ = shutdown.changed() => break,
                }
            }
            let Some(l) = listener.as_ref() else {
                match TcpListener::bind(addr).await {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::warn!(%addr, node = %node, "re-binding listener failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            };
            tokio::select! {
                accepted = l.accept() => match accepted {
                    Ok((tcp, _)) => {
                        tokio::spawn(serve_connection(shared.clone(), node.clone(), tcp, acceptor.clone()));
                    }
                    Err(e) => tracing::debug!(node = %node, "accept failed: {e}"),
                },
                _ = online.changed() => {}
                _ = shutdown.changed() => break,
            }
        }
    })
}

async fn serve_connection(
    shared: Arc<Shared>,
    node: Arc<str>,
    tcp: TcpStream,
    acceptor: TlsAcceptor,
) {
    let _ = tcp.set_nodelay(true);
    let Some(mut online) = shared.online.get(&*node).map(watch::Sender::subscribe) else {
        return;
    };
    let mut shutdown = shared.shutdown.subscribe();
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(node = %node, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let svc_shared = shared.clone();
    let svc_node = node.clone();
    let service =
        service_fn(move |req| crate::pipeline::handle(svc_shared.clone(), svc_node.clone(), req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(node = %node, "connection ended: {e}");
            }
        }
        _ = online.wait_for(|up| !*up) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
