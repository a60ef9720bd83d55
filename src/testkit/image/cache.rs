//! The base image: a minimal Debian tree (`debootstrap --variant=minbase`
//! plus systemd and dbus) built once under `target/image-cache/` and copied
//! for each run, so runs never share or dirty it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Result, anyhow, bail};

use super::exec::run;

/// Packages added to minbase: systemd as init (with journalctl,
/// systemd-analyze, systemd-run), dbus for the system bus `systemd-analyze
/// security` talks to.
pub const INCLUDE: &str = "systemd,dbus";

/// The cached base image (a directory), built on first use under a lock (a
/// lock file keeps parallel runs from building it twice).
pub fn cached_image(cache: &Path, suite: &str, mirror: &str) -> Result<PathBuf> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(cache)?;
    let key = format!("{suite}-minbase-{}", INCLUDE.replace(',', "-"));
    let image = cache.join(&key);
    let lock = std::fs::File::create(cache.join(format!("{key}.lock")))?;
    // Blocks while another test run builds it; released on drop.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("lock image cache: {e}"))?;
    if image.is_dir() {
        return Ok(image);
    }
    let tmp = cache.join(format!("{key}.building"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let log = cache.join(format!("{key}.log"));
    let t = Instant::now();
    let st = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={INCLUDE}"))
        .arg(suite)
        .arg(&tmp)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .status()?;
    if !st.success() {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = l.lines().rev().take(20).collect();
        bail!(
            "debootstrap failed ({st}); {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // Complete images only: the rename is what marks it built.
    std::fs::rename(&tmp, &image)?;
    eprintln!(
        "image: built {} with debootstrap in {:.1} s",
        image.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(image)
}

/// A copy of `base` at `to` (`cp -a`; reflinks where the file system
/// supports them, so keep `to` next to the cache).
pub fn fresh_copy(base: &Path, to: &Path) -> Result<()> {
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(base)
        .arg(to))?;
    Ok(())
}
