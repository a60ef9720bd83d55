//! `syspush-gateway`: the reference push gateway.
//!
//! One HTTPS port (rustls with the ring provider) serves the device link
//! (`GET /v1/device`, WebSocket, [`link`]) and the HTTP API app servers and
//! devices call ([`api`]). State lives behind [`store::Store`] (redb by default,
//! [`store_redb`]) and the device -> connection lookup behind
//! [`registry::Registry`], so a clustered backend can replace either without
//! touching the protocol. This module owns the server lifecycle: binding,
//! accepting TLS connections, handing them to hyper, and graceful shutdown.
//!
//! The wire contract is `docs/contracts.md` ("Gateway").

mod accept;
pub mod admin;
pub mod api;
pub mod config;
pub mod ids;
pub mod link;
pub mod registry;
mod state;
pub mod store;
pub mod store_redb;
#[cfg(test)]
mod store_tests;
pub mod tls;

/// The token endpoints, at their old path (`syspush_gateway::tokens`).
pub use api::tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

pub use config::Config;
use registry::{MemoryRegistry, Registry};
use state::{Shared, stopping};
use store::{SharedStore, StoreError};
use store_redb::RedbStore;

/// At shutdown, in-flight requests get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors starting a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    stopped: mpsc::Receiver<()>,
}

impl Gateway {
    /// Opens the store in `config.data_dir`, loads the TLS files, binds
    /// `config.listen` and starts serving on the current tokio runtime.
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let path = config.store_path();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&path))
            .await
            .map_err(StoreError::from)??;
        Self::start_with(config, Arc::new(store), Arc::new(MemoryRegistry::new())).await
    }

    /// Like [`Gateway::start`] with caller-provided backends (a clustered store or
    /// registry). `config.data_dir` is not used.
    pub async fn start_with(
        config: Config,
        store: SharedStore,
        registry: Arc<dyn Registry>,
    ) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let tls = tls::server_config(&config.tls_cert, &config.tls_key)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
        let (stop, shutdown) = watch::channel(false);
        let (alive, stopped) = mpsc::channel(1);
        let shared = Arc::new(Shared::new(config, store, registry, shutdown, alive));
        tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), shared));
        tracing::info!(%local_addr, "gateway listening");
        Ok(Gateway {
            local_addr,
            stop,
            stopped,
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, tells every device session to go away, finishes
    /// in-flight requests, and returns once the store is closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // Returns None once every holder of `alive` is gone.
        let _ = self.stopped.recv().await;
        tracing::info!("gateway stopped");
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let router = api::router(Arc::clone(&shared));
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let conn = serve_connection(tcp, peer, acceptor.clone(), router.clone(), Arc::clone(&shared));
                    tokio::spawn(conn);
                }
                Err(error) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stopping(&mut shutdown) => break,
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    // Both timeouts come from the config (defaults 10 s and 30 s): a client
    // that never finishes its handshake or trickles its headers (slow loris)
    // is cut off instead of pinning a task and a socket.
    let handshake_timeout = Duration::from_secs(shared.config.tls_handshake_timeout_s);
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            return;
        }
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(shared.config.header_read_timeout_s))
        // A head past this answers 431 (see api::MAX_HEAD_BYTES).
        .max_buf_size(api::MAX_HEAD_BYTES);
    let conn = builder
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            // In-flight requests finish; a client stalling one is cut off.
            match tokio::time::timeout(DRAIN_TIMEOUT, conn).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "http connection ended with an error");
    }
}
