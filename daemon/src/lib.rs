//! `syspushd`: the device push daemon.
//!
//! One power-saving TLS WebSocket to the gateway ([`link`], driven by the
//! sans-I/O [`session`] state machine on boot-time [`clock`]), a durable inbox
//! ([`store`]), and a local Unix socket for apps ([`appsock`], with [`policy`]
//! deciding which uid may act for which app). [`run`] wires them together on
//! the caller's current-thread tokio runtime.
//!
//! Startup order matters for supervisors: the store is opened and the app
//! socket bound before `READY=1` is sent ([`notify`]), and neither waits for
//! the network — apps can connect and read stored messages while the gateway
//! is unreachable.

pub mod appsock;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod enroll;
pub mod hub;
pub mod heartbeat;
pub mod link;
pub mod netwatch;
pub mod notify;
pub mod policy;
pub mod session;
pub mod store;
pub mod tls;
pub mod wake;

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The TLS client could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The app socket could not be bound.
    #[error(transparent)]
    AppSock(#[from] appsock::AppSockError),
    /// The link failed fatally.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// Neither stored nor configured credentials, and no enrollment key.
    #[error(
        "no device credentials: set enrollment_key (or device_id and device_secret) in the config"
    )]
    NoCredentials,
    /// A daemon task panicked.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the daemon until `shutdown` completes, then stops accepting app
/// connections, lets an in-flight commit finish, says GoAway to the gateway
/// and returns. Must run inside a tokio runtime with I/O enabled (the daemon
/// uses a current-thread one).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    config.validate()?;
    let config = Arc::new(config);
    let notifier = Arc::new(notify::Notifier::from_env());
    let store = Arc::new(store::Store::open(&config.state_dir)?);
    let have_creds = config.device_id.is_some()
        || config.enrollment_key.is_some()
        || store.credentials()?.is_some();
    if !have_creds {
        return Err(DaemonError::NoCredentials);
    }
    let tls = tls::client_config(config.ca_file.as_deref())?;
    let hub = hub::Hub::new();
    let cancel = CancellationToken::new();
    let (link, handle) = link::Link::new(
        config.clone(),
        tls,
        store.clone(),
        hub.clone(),
        notifier.clone(),
        cancel.clone(),
    )?;
    let listener = appsock::bind(&config.socket_path)?;
    let ctx = Arc::new(appsock::AppContext {
        store: store.clone(),
        hub,
        policy: policy::Policy::from_apps(&config.apps),
        link: handle,
        gateway_url: config.gateway.clone(),
        heartbeat_s: config.heartbeat_s.into(),
        device_id: config.device_id.clone(),
    });
    notifier.ready();
    tracing::info!(
        gateway = %config.gateway,
        socket = %config.socket_path.display(),
        store = %store.path().display(),
        apps = config.apps.len(),
        "syspushd ready"
    );

    let mut link_task = tokio::spawn(link.run());
    let server_task = tokio::spawn(appsock::serve(listener, ctx, cancel.clone()));
    let link_result = tokio::select! {
        _ = shutdown => None,
        r = &mut link_task => Some(r),
    };
    tracing::info!("shutting down");
    notifier.stopping();
    cancel.cancel();
    let link_result = match link_result {
        Some(r) => r,
        None => link_task.await,
    };
    server_task.await?;
    if let Err(e) = std::fs::remove_file(&config.socket_path) {
        tracing::debug!(error = %e, "cannot remove the app socket");
    }
    link_result??;
    tracing::info!("stopped");
    Ok(())
}
