//! The Debian package of this test run's binaries (tests/init.rs checks its
//! file list, the image test installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::paths::bin;

/// `cargo deb` of the binaries this test run built (no second, release build:
/// that takes minutes; `--fast`: xz at a low preset, debug binaries are big),
/// written into `out_dir`; returns the `.deb`. Needs cargo-deb.
pub fn build_deb(out_dir: &Path) -> Result<PathBuf> {
    let daemon = bin("syspushd");
    bin("syspushctl");
    let profile_dir = daemon.parent().context("bin dir")?;
    let target_dir = profile_dir.parent().context("target dir")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("odd binary path {}", daemon.display()),
    };
    let out = Command::new("cargo")
        .args([
            "deb",
            "-p",
            "syspushd",
            "--no-build",
            "--no-strip",
            "--fast",
            "--profile",
        ])
        .arg(profile)
        .arg("-o")
        .arg(out_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if !out.status.success() {
        bail!("cargo deb: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::read_dir(out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no .deb written")
}
