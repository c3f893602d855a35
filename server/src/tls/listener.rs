//! `TlsListener`: an `axum::serve` listener that hands axum finished TLS connections.
//!
//! Handshakes run in tasks of their own (bounded in number and time), so one client that
//! opens a connection and says nothing cannot hold up the others. A client that speaks plain
//! HTTP to the HTTPS port gets a plain-text 400 saying to use `https://`, instead of a reset.
//! The client's address is the TCP peer's, as for plain HTTP (rate limiting uses it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;
/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                // axum's accept for TcpListener retries on errors (e.g. out of file descriptors).
                (tcp, addr) = axum::serve::Listener::accept(&mut self.tcp), if room => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(handshake(acceptor, tcp, addr));
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    mut tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    let _ = tcp.set_nodelay(true);
    let work = async {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE {
            if first[0].is_ascii_uppercase() {
                tracing::debug!(%addr, "plain HTTP on the HTTPS port; answering 400");
                let body = "This Canopy server speaks HTTPS: use https:// in the URL.\n";
                let reply = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
                let _ = tcp.shutdown().await;
            }
            return None;
        }
        match acceptor.accept(tcp).await {
            Ok(tls) => Some((tls, addr)),
            Err(e) => {
                tracing::debug!(%addr, "TLS handshake failed: {e}");
                None
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            tracing::debug!(%addr, "TLS handshake timed out");
            None
        })
}
