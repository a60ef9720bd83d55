//! `syspushd`: the device push daemon (library part).
pub mod backoff;
pub mod clock;
pub mod session;
