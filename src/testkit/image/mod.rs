//! The Debian package on a device image that boots real systemd: the
//! harness behind `tests/image.rs`.
//!
//! A minimal Debian image (`debootstrap --variant=minbase --include=systemd,dbus`,
//! from the mirror apt is configured with) is built once and cached under
//! `target/image-cache/` ([`cached_image`]); each run copies it, installs the
//! `.deb` built from the run's binaries with `dpkg -i` in a chroot, like an
//! image recipe ([`prepare`]), and the test boots it with `systemd-nspawn -b`
//! ([`Container`]). Everything is observed from outside with `nsenter` into
//! the container's init; app processes run inside as transient units
//! (`systemd-run --uid=...`). The container shares the host's network
//! namespace, so a gateway on the host's loopback is reachable.
//!
//! Children: `mirror` (which release, from where), `cache` (the base image),
//! `exec` (checked runs, chroot, the clock), `install` (the package and the
//! config in the tree), `container` (boot, commands inside, teardown),
//! `journal` (awaiting a logged event). This file only checks the machine
//! can do it and strings the steps before the first boot together.

mod cache;
mod container;
mod exec;
mod install;
mod journal;
mod mirror;

pub use cache::{INCLUDE, cached_image, fresh_copy};
pub use container::{BOOT_BOUND, Container};
pub use exec::{PATH_ENV, chroot, monotonic_us, run, text};
pub use install::{add_user, image_uid, install_deb, write_config};
pub use journal::{await_journal, journal_u64};
pub use mirror::apt_mirror;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::testkit::paths::target_dir;
use crate::testkit::skip::{require_root, require_tool, skip};

/// The release to build and the mirror to build it from, when this machine
/// can build and boot an image; otherwise `None`, after [`skip`] said why
/// (not root; debootstrap, systemd-nspawn, nsenter, dpkg-deb or cargo-deb
/// missing; no Debian mirror in apt's sources).
pub fn runnable() -> Option<(String, String)> {
    if !require_root("debootstrap, chroot, systemd-nspawn") {
        return None;
    }
    for (tool, args, install) in [
        ("debootstrap", &["--version"][..], "debootstrap"),
        ("systemd-nspawn", &["--version"][..], "systemd-container"),
        ("nsenter", &["--version"][..], "util-linux"),
        ("dpkg-deb", &["--version"][..], "dpkg"),
        (
            "cargo",
            &["deb", "--version"][..],
            "cargo install cargo-deb",
        ),
    ] {
        if !require_tool(tool, args, install) {
            return None;
        }
    }
    let found = apt_mirror();
    if found.is_none() {
        skip("no Debian mirror for this release in apt's sources");
    }
    found
}

/// A fresh copy of the base image with this run's package installed, not
/// yet configured or booted.
pub struct Prepared {
    /// The image tree.
    pub root: PathBuf,
    /// The uid the package's postinst gave the `syspush` user.
    pub syspush_uid: u32,
    /// The cache directory (boot logs go there).
    pub cache: PathBuf,
    /// Getting the base image (long when it had to be built).
    pub t_image: Duration,
    /// Copying it.
    pub t_copy: Duration,
    /// Building the `.deb` and installing it.
    pub t_install: Duration,
    /// Owns the copy (next to the cache); removed on drop.
    pub work: tempfile::TempDir,
}

/// The cached base image of `suite` from `mirror` (built on first use),
/// copied for this run, with the `.deb` of this run's binaries installed.
pub fn prepare(suite: &str, mirror: &str) -> Result<Prepared> {
    let cache = target_dir()?.join("image-cache");
    let t = Instant::now();
    let base = cached_image(&cache, suite, mirror)?;
    let t_image = t.elapsed();

    // A fresh copy per run, next to the cache (same file system: reflinks
    // where it supports them).
    let work = tempfile::Builder::new().prefix("run-").tempdir_in(&cache)?;
    let root = work.path().join("root");
    let t = Instant::now();
    fresh_copy(&base, &root)?;
    let t_copy = t.elapsed();

    let t = Instant::now();
    let syspush_uid = install_deb(&root, &work.path().join("deb"))?;
    let t_install = t.elapsed();
    Ok(Prepared {
        root,
        syspush_uid,
        cache,
        t_image,
        t_copy,
        t_install,
        work,
    })
}
