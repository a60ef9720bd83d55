//! Where things are: the workspace binaries this test run built, the target
//! directory they live in, and temp dirs a dropped uid can traverse.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Path of a workspace binary built next to the running test or bench.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// The target directory this test binary was built into (`target/`, above
/// the profile directory holding [`bin`]s).
pub fn target_dir() -> Result<PathBuf> {
    let daemon = bin("syspushd");
    let profile_dir = daemon.parent().context("bin dir")?;
    Ok(profile_dir.parent().context("target dir")?.to_path_buf())
}

/// A temp dir that others (a dropped uid) can traverse, for tests that switch uids.
pub fn shared_tempdir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix("syspush-test").tempdir()?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(d)
}
