//! `syspushd`: the device push daemon (library part).
pub mod backoff;
pub mod clock;
pub mod config;
pub mod session;
pub mod store;
pub mod tls;
pub mod hub;
pub mod notify;
pub mod policy;
pub mod wake;
