//! [`AppContext`]: what every app connection shares. Built once by
//! [`crate::run_with_socket`] and passed in; the app socket reads no
//! process-wide state.

use std::sync::Arc;

use super::journal::DeliveryJournal;
use crate::clock::GatewayClock;
use crate::hub::Hub;
use crate::link::LinkHandle;
use crate::policy::Policy;
use crate::store::Store;

/// What connections share.
#[derive(Debug)]
pub struct AppContext {
    /// The inbox.
    pub store: Arc<Store>,
    /// Commit notifications.
    pub hub: Arc<Hub>,
    /// uid -> app ids.
    pub policy: Policy,
    /// The gateway link.
    pub link: LinkHandle,
    /// For Status.
    pub gateway_url: String,
    /// Configured heartbeat (shown while no session is up).
    pub heartbeat_s: u64,
    /// Configured device id, if any (shown before the link knows one).
    pub device_id: Option<String>,
    /// The gateway's wall clock (shared with the link), for expiry.
    pub gateway_clock: GatewayClock,
    /// Last delivery and error per app, for doctor.
    pub journal: DeliveryJournal,
}
