//! The gateway link: one TLS WebSocket fed to the sans-I/O
//! [`Session`] (which decides); the parts here act.
//!
//! - `driver`: the select loop — bytes in, frames out, timer deadlines on
//!   `CLOCK_BOOTTIME` — and nothing else;
//! - `connect`: credentials (enrolling first if needed), then TCP + TLS +
//!   WebSocket;
//! - `effects`: what the session's application events do — commits to the
//!   store, the Ack, the hub, the waker, revocations, request answers,
//!   learned heartbeats, the status;
//! - `network`: the network the device is on, and what its changes do;
//! - `replies`: who waits for which request (the session owns the queue);
//! - `handle`: the app side's view (requests, status);
//! - [`error`]: fatal and transport errors, typed.
//!
//! This file only builds the parts ([`Link::new`]) and starts the driver
//! ([`Link::run`]).

mod connect;
mod driver;
mod effects;
pub mod error;
mod handle;
mod network;
mod replies;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Timer};
use crate::config::Config;
use crate::hub::Hub;
use crate::notify::Notifier;
use crate::session::{Session, SessionConfig};
use crate::store::Store;
use crate::wake::Waker;

use connect::Dialer;
use driver::Driver;
use effects::Effects;
use handle::COMMAND_QUEUE;
use network::Network;
use replies::Replies;

pub use error::{
    ConnectFailure, DialFailure, LinkError, LinkFailure, ProtocolError, Shared, TlsFailure,
    TransportError,
};
pub use handle::{LinkCommand, LinkHandle, LinkStatus, RequestError};

/// The link task. Build with [`Link::new`], run with [`Link::run`].
pub struct Link {
    dialer: Dialer,
    effects: Effects,
    commands: mpsc::Receiver<LinkCommand>,
    shutdown: CancellationToken,
}

impl Link {
    /// Prepares the link (nothing is dialed until [`Link::run`]).
    pub fn new(
        config: Arc<Config>,
        tls: Arc<ClientConfig>,
        store: Arc<Store>,
        hub: Arc<Hub>,
        notifier: Arc<Notifier>,
        gateway_clock: clock::GatewayClock,
        shutdown: CancellationToken,
    ) -> (Self, LinkHandle) {
        let endpoint = config.endpoint().clone();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let handle = LinkHandle {
            commands: tx,
            status: status.clone(),
            system_uids: config.system_uids.clone().into(),
        };
        let effects = Effects {
            config: config.clone(),
            store: store.clone(),
            hub,
            notifier,
            waker: Waker::from_apps(&config.apps),
            gateway_clock,
            status: status.clone(),
            replies: Replies::default(),
        };
        let dialer = Dialer {
            config,
            endpoint,
            tls,
            store,
            status,
        };
        let link = Self {
            dialer,
            effects,
            commands: rx,
            shutdown,
        };
        (link, handle)
    }

    /// Runs until shutdown: dial, serve the session, redial with backoff.
    pub async fn run(self) -> Result<(), LinkError> {
        let Link {
            dialer,
            effects,
            commands,
            shutdown,
        } = self;
        let timer = Timer::new().map_err(LinkError::Timer)?;
        let cfg = SessionConfig {
            heartbeat: dialer.config.heartbeat_config(),
            pong_timeout: Duration::from_secs(dialer.config.pong_timeout_s.into()),
            ..SessionConfig::default()
        };
        let mut session = Session::new(cfg, clock::now(), seed()?);
        let network = Network::open(
            effects.store.clone(),
            effects.notifier.clone(),
            &mut session,
        );
        Driver {
            session,
            effects,
            network,
            dialer,
            timer,
            commands,
            shutdown,
        }
        .run()
        .await
    }
}

/// A seed for the backoff jitter.
fn seed() -> Result<u64, LinkError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| LinkError::Random)?;
    Ok(u64::from_le_bytes(b))
}
