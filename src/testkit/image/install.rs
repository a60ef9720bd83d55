//! What an image recipe does to the copied tree before the first boot:
//! install the `.deb` with `dpkg -i` in a chroot, write
//! `/etc/syspush/syspushd.toml` from the packaged example (pointing at a test
//! gateway, with an app policy), create the apps' users, enable units.

use std::path::Path;

use anyhow::{Context, Result, ensure};

use super::exec::{chroot, text};
use crate::testkit::daemon::AppPolicy;
use crate::testkit::deb::build_deb;
use crate::testkit::gateway::Gateway;

/// Builds the `.deb` of this run's binaries into `deb_dir`, installs it into
/// the tree at `root`, and returns the uid its postinst gave the `syspush` user.
pub fn install_deb(root: &Path, deb_dir: &Path) -> Result<u32> {
    std::fs::create_dir_all(deb_dir)?;
    let deb = build_deb(deb_dir)?;
    std::fs::copy(&deb, root.join("var/cache/syspushd.deb"))?;
    let dpkg = chroot(root, &["dpkg", "-i", "/var/cache/syspushd.deb"])?;
    std::fs::remove_file(root.join("var/cache/syspushd.deb"))?;
    image_uid(root, "syspush")
        .with_context(|| format!("postinst did not create the user: {}", text(&dpkg.stdout)))
}

/// uid of `user` in the image's /etc/passwd.
pub fn image_uid(root: &Path, user: &str) -> Result<u32> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f.get(2).and_then(|u| u.parse().ok()))?
        })
        .with_context(|| format!("no user {user} in the image"))
}

/// The packaged example config with the test gateway `gw`, its CA and `apps`
/// as policy, installed as the README says (0640 root:syspush).
pub fn write_config(root: &Path, gw: &Gateway, apps: &[AppPolicy]) -> Result<()> {
    let example =
        std::fs::read_to_string(root.join("usr/share/doc/syspushd/examples/syspushd.toml"))
            .context("example config not installed")?;
    let etc = root.join("etc/syspush");
    std::fs::create_dir_all(&etc)?;
    std::fs::copy(&gw.ca, etc.join("gateway-ca.pem"))?;
    let mut cfg = String::new();
    for line in example.lines() {
        if line.starts_with("gateway =") {
            cfg.push_str(&format!(
                "gateway = \"{}\"\nca_file = \"/etc/syspush/gateway-ca.pem\"\n",
                gw.url()
            ));
        } else if line.starts_with("enrollment_key =") {
            cfg.push_str(&format!("enrollment_key = \"{}\"\n", gw.enrollment_key));
        } else {
            cfg.push_str(line);
            cfg.push('\n');
        }
    }
    ensure!(
        cfg.contains(&gw.url()),
        "no gateway line in the example config"
    );
    for a in apps {
        cfg.push_str(&a.toml());
    }
    std::fs::write(etc.join("syspushd.toml"), cfg)?;
    // It holds the enrollment key: readable by the daemon's group only.
    chroot(
        root,
        &["chown", "root:syspush", "/etc/syspush/syspushd.toml"],
    )?;
    chroot(root, &["chmod", "0640", "/etc/syspush/syspushd.toml"])?;
    Ok(())
}

/// A system user `name` with uid = gid = `uid` and no home or shell, as an
/// image recipe creates an app's user.
pub fn add_user(root: &Path, uid: u32, name: &str) -> Result<()> {
    let uid = uid.to_string();
    chroot(
        root,
        &[
            "useradd",
            "-u",
            &uid,
            "-U",
            "-M",
            "-d",
            "/nonexistent",
            "-s",
            "/usr/sbin/nologin",
            name,
        ],
    )?;
    Ok(())
}
