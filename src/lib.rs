//! `syspush`: the top of the workspace — the quick start (`cargo run --release`),
//! the end-to-end tests in `tests/`, and the latency benchmark.
//!
//! This library holds what those three share: [`appserver`], a small blocking
//! client for the gateway's HTTP API (what an app server does), and [`testkit`],
//! which runs the real `syspush-gateway` and `syspushd` binaries as processes
//! (and boots the Debian package in a systemd image), and [`netns`], a NAT
//! built from network namespaces.

pub mod appserver;
pub mod netns;
pub mod testkit;
