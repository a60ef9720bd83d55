//! Who is calling, as far as the app socket's budgets and answers care: the
//! class of a peer uid. A leaf: the accept loop sorts each connection into a
//! class once (from the policy and `system_uids`), and the caps, Status and
//! doctor read it from there.

use super::context::AppContext;

/// The peer of a connection, as the kernel reports it, and its class
/// (sorted once, when the connection is accepted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) uid: u32,
    pub(crate) pid: i32,
    pub(crate) class: Class,
}

/// The class of a caller's uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Root or a configured `system_uids` uid: the platform. Sees everything,
    /// and has connection slots no one else can take.
    Privileged,
    /// A uid that owns an app id (`[[app]]` uids, `packages_list` packages):
    /// sees its own apps and the link's health, not the device.
    App,
    /// Any other local uid: may ask Status (liveness only) and doctor, with a
    /// small shared connection budget.
    Stranger,
}

impl Class {
    /// The class of `uid` under the daemon's configuration.
    pub fn of(ctx: &AppContext, uid: u32) -> Class {
        if ctx.link.may_set_idle(uid) {
            Class::Privileged
        } else if ctx.policy.owns_any(uid) {
            Class::App
        } else {
            Class::Stranger
        }
    }

    /// The word for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Privileged => "privileged",
            Class::App => "app",
            Class::Stranger => "stranger",
        }
    }
}
