//! `syspushd`: the device push daemon.
//!
//! One power-saving TLS WebSocket to the gateway, a durable inbox, and a
//! local Unix socket for apps. [`run`] wires them together on the caller's
//! current-thread tokio runtime.
//!
//! Where each concern lives:
//!
//! | concern                                              | module                  |
//! |------------------------------------------------------|-------------------------|
//! | wiring, startup order, stop                          | this file ([`run`])     |
//! | command line, runtime, signals                       | `main.rs`               |
//! | configuration: parsed and checked once on load      | [`config`] (gateway URL: [`endpoint`]; CA and pins: [`tls::Trust`]) |
//! | logs (journald / logcat)                             | [`logging`]             |
//! | readiness and watchdog (`sd_notify`)                 | [`notify`]              |
//! | the app socket: inherited from init, or bound        | [`activation`]          |
//! | serving apps: connections, requests, caps, stop      | [`appsock`]             |
//! | diagnostics: settings, doctor, test push, journal    | [`appsock`] (`diag.rs`, `journal.rs`) |
//! | which uid may act for which app                      | [`policy`], [`packages_list`] |
//! | what is shown (display decision), user settings      | [`display`], [`settings`] |
//! | commit fan-out from the link to connections          | [`hub`]                 |
//! | the durable inbox (tables, inbox, identity, extras)  | [`store`]               |
//! | the gateway connection: select loop, timer, flush    | [`link`] (`driver.rs`)  |
//! | dialing: credentials, enrollment, TCP+TLS+WS         | [`link`] (`connect.rs`), [`enroll`] |
//! | what session events do: commit, ack, fan-out, wake   | [`link`] (`effects.rs`) |
//! | typed transport failures (what doctor reports)       | [`link::error`]         |
//! | protocol decisions (sans-I/O): two output queues     | [`session`] (`poll_driver_event`, `poll_event`) |
//! | heartbeat learning, reconnect backoff (sans-I/O)     | [`heartbeat`], [`backoff`] |
//! | boot-time timers, the gateway's wall clock           | [`clock`]               |
//! | TLS client config, dial, SPKI pins                   | [`tls`]                 |
//! | first-start enrollment                               | [`enroll`]              |
//! | network changes (netlink)                            | [`netwatch`]            |
//! | starting apps that are not connected                 | [`wake`]                |
//!
//! Startup order matters for supervisors: the store is opened and the app
//! socket bound before `READY=1` is sent ([`notify`]), and neither waits for
//! the network — apps can connect and read stored messages while the gateway
//! is unreachable. Stopping: the link says GoAway while [`appsock::serve`]
//! lets connection tasks finish (bounded by [`appsock::STOP_GRACE`]); [`run`]
//! returns once both are done.

pub mod activation;
pub mod appsock;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod display;
pub mod endpoint;
pub mod enroll;
pub mod heartbeat;
pub mod hub;
pub mod link;
pub mod logging;
pub mod netwatch;
pub mod notify;
pub mod packages_list;
pub mod policy;
pub mod session;
pub mod settings;
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
    /// The app socket could not be bound, or the one passed by init could
    /// not be used.
    #[error(transparent)]
    Activation(#[from] activation::ActivationError),
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
/// connections, lets an in-flight commit finish, says GoAway to the gateway,
/// waits for app connection tasks to end (within [`appsock::STOP_GRACE`])
/// and returns. Must run inside a tokio runtime with I/O enabled (the daemon
/// uses a current-thread one).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with_socket(config, None, shutdown).await
}

/// [`run`], serving on `inherited` (the socket passed by systemd or Android
/// init, see [`activation::take_from_env`]) instead of binding `socket_path`.
pub async fn run_with_socket(
    config: Config,
    inherited: Option<activation::Inherited>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let notifier = Arc::new(notify::Notifier::from_env());
    let store = Arc::new(store::Store::open(&config.state_dir)?);
    let have_creds = config.device_id.is_some()
        || config.enrollment_key.is_some()
        || store.credentials()?.is_some();
    if !have_creds {
        return Err(DaemonError::NoCredentials);
    }
    let tls = tls::client_config(config.trust())?;
    let hub = hub::Hub::new();
    let gateway_clock = clock::GatewayClock::new();
    let cancel = CancellationToken::new();
    let (link, handle) = link::Link::new(
        config.clone(),
        tls,
        store.clone(),
        hub.clone(),
        notifier.clone(),
        gateway_clock.clone(),
        cancel.clone(),
    );
    let app_listener = activation::AppListener::open(&config.socket_path, inherited)?;
    let ctx = Arc::new(appsock::AppContext {
        store: store.clone(),
        hub,
        policy: policy::Policy::from_apps(&config.apps)
            .with_packages_list(config.packages_list.as_deref()),
        link: handle,
        gateway_url: config.gateway.clone(),
        heartbeat_s: config.heartbeat_s.into(),
        device_id: config.device_id.clone(),
        gateway_clock,
        journal: appsock::DeliveryJournal::default(),
    });
    notifier.ready();
    tracing::info!(
        gateway = %config.gateway,
        socket = %app_listener.path.display(),
        store = %store.path().display(),
        apps = config.apps.len(),
        "syspushd ready"
    );

    let mut link_task = tokio::spawn(link.run());
    let server_task = tokio::spawn(appsock::serve(app_listener.listener, ctx, cancel.clone()));
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
    // An inherited socket's path belongs to init: systemd keeps listening on
    // it while the daemon restarts, so removing it would strand apps.
    if let Some(path) = &app_listener.unlink_on_exit
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::debug!(error = %e, "cannot remove the app socket");
    }
    link_result??;
    tracing::info!("stopped");
    Ok(())
}
