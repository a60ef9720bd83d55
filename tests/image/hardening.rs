//! The hardening scenario of `tests/image.rs`: what the booted image shows of
//! the running service's sandbox — its process status (uid, capabilities,
//! no_new_privs, seccomp), its own mount namespace with each path's mount
//! options, the unit's settings as systemd loaded them, and no setting
//! ignored by systemd.

use anyhow::{Context, Result, ensure};
use syspush::testkit::image::Container;

/// The service's main process's mount options at `path` (its own namespace).
fn mount_opts(mountinfo: &str, path: &str) -> Option<(String, String, String)> {
    // id parent dev root MOUNTPOINT OPTS [optional...] - FSTYPE SOURCE SUPEROPTS
    mountinfo
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let f: Vec<&str> = a.split(' ').collect();
            let g: Vec<&str> = b.split(' ').collect();
            (f.get(4) == Some(&path)).then(|| {
                (
                    f.get(5).unwrap_or(&"").to_string(),
                    g.first().unwrap_or(&"").to_string(),
                    g.get(2).unwrap_or(&"").to_string(),
                )
            })
        })
        // The last mount at a path is the visible one.
        .next_back()
}

/// What a booted image shows of the running service's sandbox.
pub fn check_hardening(c: &Container, syspush_uid: u32) -> Result<()> {
    let pid = c.prop("syspushd.service", "MainPID")?;
    ensure!(pid != "0", "syspushd.service has no main process");
    let status = c.ok(&["cat", &format!("/proc/{pid}/status")])?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let uid = syspush_uid.to_string();
    ensure!(
        field("Uid").iter().all(|u| *u == uid) && field("Gid").iter().all(|g| *g == uid),
        "not running as syspush ({uid}): {status}"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        ensure!(
            field(cap) == ["0000000000000000"],
            "{cap} not empty: {status}"
        );
    }
    ensure!(field("NoNewPrivs") == ["1"], "NoNewPrivs: {status}");
    // 2 = filter mode: SystemCallFilter, RestrictAddressFamilies,
    // MemoryDenyWriteExecute, RestrictNamespaces, LockPersonality,
    // RestrictRealtime, SystemCallArchitectures are all seccomp filters.
    ensure!(field("Seccomp") == ["2"], "no seccomp filter: {status}");

    let own_ns = c.ok(&["readlink", &format!("/proc/{pid}/ns/mnt")])?;
    let init_ns = c.ok(&["readlink", "/proc/1/ns/mnt"])?;
    ensure!(
        own_ns != init_ns,
        "the service has no mount namespace of its own"
    );
    let mi = c.ok(&["cat", &format!("/proc/{pid}/mountinfo")])?;
    let at = |p: &str| mount_opts(&mi, p).with_context(|| format!("nothing mounted at {p}:\n{mi}"));
    let ro = |p: &str| -> Result<()> {
        let (opts, _, _) = at(p)?;
        ensure!(
            opts.split(',').any(|o| o == "ro"),
            "{p} is not read-only ({opts})"
        );
        Ok(())
    };
    let rw = |p: &str| -> Result<()> {
        let (opts, _, _) = at(p)?;
        ensure!(
            opts.split(',').any(|o| o == "rw"),
            "{p} is not writable ({opts})"
        );
        Ok(())
    };
    ro("/")?; // ProtectSystem=strict
    ro("/etc/syspush")?; // config: read-only to the daemon
    rw("/var/lib/syspush")?; // StateDirectory=
    rw("/run/syspush")?; // RuntimeDirectory=
    for p in ["/home", "/root", "/run/user"] {
        ro(p)?; // ProtectHome=yes: empty, inaccessible
    }
    // ProtectKernelTunables=yes. (/proc/sys is not there at all: ProcSubset=pid.)
    ro("/sys")?;
    ro("/sys/fs/cgroup")?; // ProtectControlGroups=yes
    let (_, fs, _) = at("/tmp")?;
    ensure!(fs == "tmpfs", "PrivateTmp: /tmp is {fs}"); // a fresh one
    let (_, fs, _) = at("/dev")?;
    ensure!(fs == "tmpfs", "PrivateDevices: /dev is {fs}");
    let (_, _, sopts) = at("/proc")?;
    ensure!(
        sopts.contains("hidepid=invisible") && sopts.contains("subset=pid"),
        "ProtectProc/ProcSubset: /proc mounted {sopts}"
    );

    // systemd in the image parsed every option (none ignored as unknown).
    let expect = [
        ("User", "syspush"),
        ("Type", "notify"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateMounts", "yes"),
        ("DevicePolicy", "closed"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("RemoveIPC", "yes"),
        ("KeyringMode", "private"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("SystemCallArchitectures", "native"),
        ("SystemCallErrorNumber", "1"), // EPERM
        ("UMask", "0077"),
        ("PrivateUsers", "no"),
        ("WatchdogUSec", "1h"),
    ];
    let mut wrong = Vec::new();
    for (k, want) in expect {
        let got = c.prop("syspushd.service", k)?;
        // Lists come back in systemd's order: compare as sets.
        let set = |v: &str| {
            let mut w: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            w.sort();
            w
        };
        if set(&got) != set(want) {
            wrong.push(format!("{k}={got:?}, want {want:?}"));
        }
    }
    ensure!(wrong.is_empty(), "syspushd.service as loaded: {wrong:#?}");
    let filter = c.prop("syspushd.service", "SystemCallFilter")?;
    for allowed in ["read", "write", "epoll_wait", "sendmsg"] {
        ensure!(
            filter.split_whitespace().any(|s| s == allowed),
            "SystemCallFilter lacks {allowed}"
        );
    }
    for denied in ["setuid", "chown", "setrlimit", "mount", "ptrace"] {
        ensure!(
            !filter.split_whitespace().any(|s| s == denied),
            "SystemCallFilter allows {denied}"
        );
    }
    let unit_log = c.ok(&["journalctl", "-b", "--no-pager", "-o", "cat", "_PID=1"])?;
    let warned: Vec<&str> = unit_log
        .lines()
        .filter(|l| l.contains("syspushd.s") && (l.contains("Unknown") || l.contains("gnoring")))
        .collect();
    ensure!(
        warned.is_empty(),
        "systemd ignored unit settings: {warned:#?}"
    );
    Ok(())
}
