//! Runs the real binaries — `syspush-gateway`, `syspushd`, `syspushctl` — as
//! processes in a temp dir, for the end-to-end tests and the benchmarks, and
//! boots the Debian package in a systemd image for `tests/image.rs`.
//!
//! Readiness is never guessed with sleeps: the gateway prints one
//! `listening on https://IP:PORT` line, the daemon sends systemd's `READY=1` to
//! a `NOTIFY_SOCKET` this kit binds, and app output is read line by line. The
//! timeouts here are failure bounds, not waits. Test support code, so it uses
//! `anyhow` like the tests themselves.
//!
//! One concept per child, re-exported here:
//!
//! | module | owns |
//! |---|---|
//! | `paths` | finding built binaries and the target dir; traversable temp dirs |
//! | `skip` | the skip policy (`skipped: WHY`, a panic under `CI=true`), root and tool checks |
//! | `wait` | failure bounds: `READY_BOUND`, polling a condition, a bounded wait for an exit |
//! | `output` | a child's stdout as a line channel, its stderr drained |
//! | `process` | log files, signals, `ip netns exec` for the runners |
//! | `gateway` | a `syspush-gateway` process |
//! | `daemon` | a `syspushd` process and its app policy |
//! | `app` | `syspushctl` against a daemon (one-shot, `listen`), raw socket bytes |
//! | `stack` | gateway + daemon + app in one temp dir |
//! | `procfs` | figures from `/proc/PID/status` |
//! | `rng` | the seeded, replayable fault schedule |
//! | `deb` | building the `.deb` of this run's binaries |
//! | `image` | the debootstrap image cache and `systemd-nspawn` boots |

mod app;
mod daemon;
mod deb;
mod gateway;
pub mod image;
mod output;
mod paths;
mod process;
mod procfs;
mod rng;
mod skip;
mod stack;
mod wait;

pub use app::{Listen, raw_exchange};
pub use daemon::{AppPolicy, Daemon};
pub use deb::build_deb;
pub use gateway::Gateway;
pub use output::{Lines, drain, line_channel};
pub use paths::{bin, shared_tempdir, target_dir};
pub use procfs::{proc_status, proc_status_kib};
pub use rng::FaultRng;
pub use skip::{have, in_ci, is_root, require_root, require_tool, skip};
pub use stack::Stack;
pub use wait::{READY_BOUND, wait_bounded, wait_until};
