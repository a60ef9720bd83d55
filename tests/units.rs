//! The init-integration files: systemd units (systemd/) and Android init + SELinux
//! (android-init/).
//!
//! - `systemd-analyze security --offline=true` must rate syspushd.service at an
//!   exposure of 2.0 or lower, and `systemd-analyze verify` must accept the service
//!   and socket units (skipped, with a message, where systemd-analyze is missing;
//!   a failure under `CI=true`, see `syspush::testkit::skip`).
//! - The units, sysusers/tmpfiles files, syspushd.rc, file_contexts, the .te
//!   module and the Android example config must agree with each other and with the
//!   paths in docs/contracts.md and shared/DESIGN.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use syspush::testkit::skip;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs systemd-analyze; `None` (after [`skip`] said why) when it is not installed.
fn systemd_analyze(args: &[&str], dir: &Path) -> Option<Output> {
    match Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip("systemd-analyze not installed");
            None
        }
        Err(e) => panic!("spawn systemd-analyze: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A unit file as section -> key -> values (repeated keys keep every value, in order).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(src: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in src.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line:?}"));
        unit.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    unit
}

/// The last value of a key (what systemd uses for single-valued settings).
fn get<'a>(unit: &'a Unit, section: &str, key: &str) -> Option<&'a str> {
    unit.get(section)?.get(key)?.last().map(String::as_str)
}

fn service() -> Unit {
    parse_unit(&read("systemd/syspushd.service"))
}

fn socket() -> Unit {
    parse_unit(&read("systemd/syspushd.socket"))
}

#[test]
fn service_exposure_is_at_most_2() {
    let dir = root().join("systemd");
    let Some(out) = systemd_analyze(
        &[
            "security",
            "--offline=true",
            "--no-pager",
            "syspushd.service",
        ],
        &dir,
    ) else {
        return;
    };
    let all = text(&out);
    // --offline appeared in systemd 250; CI installs a newer one.
    if all.contains("unrecognized option") || all.contains("Unknown option") {
        skip(&format!(
            "this systemd-analyze has no --offline (needs systemd 250+):\n{all}"
        ));
        return;
    }
    let line = all
        .lines()
        .find(|l| l.contains("Overall exposure level for syspushd.service"))
        .unwrap_or_else(|| panic!("no exposure line in systemd-analyze output:\n{all}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse the exposure from {line:?}"));
    println!("{line}");
    assert!(
        score <= 2.0,
        "syspushd.service exposure {score} > 2.0:\n{all}"
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let daemon = syspush::testkit::bin("syspushd");
    let tmp = tempfile::tempdir().expect("tempdir");
    // verify checks that ExecStart's binary exists and is executable: point it at
    // the freshly built daemon instead of /usr/bin/syspushd. Nothing else changes.
    let src = read("systemd/syspushd.service");
    let exec = "ExecStart=/usr/bin/syspushd ";
    assert_eq!(src.matches(exec).count(), 1, "expected one `{exec}` line");
    let rewritten = src.replace(exec, &format!("ExecStart={} ", daemon.display()));
    std::fs::write(tmp.path().join("syspushd.service"), rewritten).expect("write service");
    std::fs::copy(
        root().join("systemd/syspushd.socket"),
        tmp.path().join("syspushd.socket"),
    )
    .expect("copy socket");

    let Some(out) = systemd_analyze(
        &[
            "verify",
            "--man=no",
            "./syspushd.service",
            "./syspushd.socket",
        ],
        tmp.path(),
    ) else {
        return;
    };
    let all = text(&out);
    // verify exits 0 even on unknown keys or unparsable values (it only warns), so
    // any message about our units fails the test. Messages about the host's own
    // units (targets we are ordered against) are not ours and are ignored. The one
    // message about our units that is tolerated: the syspush user not existing on
    // the test host (sysusers.d creates it on install; the test does not add users
    // to the machine it runs on). systemd 252 does not emit it; other versions may.
    let ours: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("syspushd"))
        .filter(|l| {
            !(l.contains("syspush")
                && (l.contains("user") || l.contains("User"))
                && l.contains("exist"))
        })
        .collect();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{all}",
        out.status
    );
    assert!(
        ours.is_empty(),
        "systemd-analyze verify complained about the units:\n{}",
        ours.join("\n")
    );
}

#[test]
fn service_unit_settings_the_daemon_relies_on() {
    let s = service();
    let svc = |k| get(&s, "Service", k);
    assert_eq!(svc("Type"), Some("notify"));
    assert_eq!(svc("NotifyAccess"), Some("main"));
    assert_eq!(
        svc("ExecStart"),
        Some("/usr/bin/syspushd --config /etc/syspush/syspushd.toml")
    );
    assert_eq!(svc("User"), Some("syspush"));
    assert_eq!(svc("Group"), Some("syspush"));
    assert_eq!(svc("DynamicUser"), Some("no"));
    // The app socket's path is /run/syspush/syspushd.sock (contracts.md default):
    // RuntimeDirectory must be that directory, kept across restarts so the socket
    // unit's path is not deleted from under it.
    assert_eq!(svc("RuntimeDirectory"), Some("syspush"));
    assert_eq!(svc("RuntimeDirectoryPreserve"), Some("yes"));
    assert_eq!(
        svc("StateDirectory"),
        Some("syspush"),
        "state lives in /var/lib/syspush"
    );
    assert_eq!(svc("StateDirectoryMode"), Some("0700"));
    assert_eq!(svc("ConfigurationDirectory"), Some("syspush"));
    // The daemon authorizes apps by SO_PEERCRED uid: a private user namespace would
    // turn every caller into "nobody".
    assert!(
        !matches!(svc("PrivateUsers"), Some("yes" | "true" | "1" | "on")),
        "PrivateUsers breaks SO_PEERCRED uids"
    );
    // A watchdog that does not wake an idle device often: well above the longest
    // link heartbeat (gateway heartbeat_max_s = 1680 s).
    let wd = svc("WatchdogSec").expect("WatchdogSec set");
    let wd_s = match wd.strip_suffix('h') {
        Some(h) => h.parse::<u64>().expect("hours") * 3600,
        None => {
            wd.strip_suffix("min")
                .expect("WatchdogSec in h or min")
                .parse::<u64>()
                .expect("minutes")
                * 60
        }
    };
    assert!(
        wd_s > 1680 + 10,
        "WatchdogSec={wd} is not above one maximal heartbeat"
    );
    // Restart on failure; stop within 5 s (the daemon exits within 2 s on SIGTERM).
    assert_eq!(svc("Restart"), Some("on-failure"));
    assert_eq!(svc("TimeoutStopSec"), Some("5s"));
    assert_eq!(svc("CapabilityBoundingSet"), Some(""));
    assert_eq!(
        svc("RestrictAddressFamilies"),
        Some("AF_UNIX AF_INET AF_INET6 AF_NETLINK")
    );
}

#[test]
fn socket_unit_matches_the_service_and_the_contract() {
    let sock = socket();
    let k = |key| get(&sock, "Socket", key);
    assert_eq!(k("ListenStream"), Some("/run/syspush/syspushd.sock"));
    assert_eq!(k("SocketMode"), Some("0666"));
    assert_eq!(k("SocketUser"), Some("syspush"));
    assert_eq!(k("DirectoryMode"), Some("0755"));
    assert_eq!(k("Service"), Some("syspushd.service"));
    assert_eq!(get(&sock, "Install", "WantedBy"), Some("sockets.target"));
    let s = service();
    assert_eq!(
        Path::new(k("ListenStream").expect("ListenStream")).parent(),
        Some(
            Path::new("/run")
                .join(get(&s, "Service", "RuntimeDirectory").expect("RuntimeDirectory"))
                .as_path()
        ),
        "the socket lives in the service's RuntimeDirectory"
    );
    assert_eq!(
        get(&s, "Service", "RuntimeDirectoryMode"),
        k("DirectoryMode")
    );
}

#[test]
fn sysusers_and_tmpfiles_agree_with_the_units() {
    let sysusers = read("systemd/syspushd.sysusers");
    let user_lines: Vec<Vec<&str>> = sysusers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(user_lines.len(), 1, "one sysusers line: {user_lines:?}");
    assert_eq!(
        &user_lines[0][..2],
        ["u", "syspush"],
        "creates user syspush"
    );

    let tmpfiles = read("systemd/syspushd.tmpfiles");
    let dirs: BTreeMap<&str, (&str, &str, &str)> = tmpfiles
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[0], "d", "only directories: {l}");
            (f[1], (f[2], f[3], f[4]))
        })
        .collect();
    let s = service();
    assert_eq!(
        dirs.get("/var/lib/syspush"),
        Some(&(
            get(&s, "Service", "StateDirectoryMode").expect("mode"),
            "syspush",
            "syspush"
        ))
    );
    assert_eq!(
        dirs.get("/run/syspush"),
        Some(&(
            get(&s, "Service", "RuntimeDirectoryMode").expect("mode"),
            "syspush",
            "syspush"
        ))
    );
}

/// The options of `service NAME ...` in an init .rc file, and its command line.
fn rc_service(rc: &str, name: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut cmdline = None;
    let mut options = Vec::new();
    let mut inside = false;
    for line in rc.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        if words[0] == "service" || words[0] == "on" || words[0] == "import" {
            inside = words[0] == "service" && words.get(1).map(String::as_str) == Some(name);
            if inside {
                cmdline = Some(words[2..].to_vec());
            }
            continue;
        }
        if inside {
            options.push(words);
        }
    }
    (
        cmdline.unwrap_or_else(|| panic!("no `service {name}` in the .rc")),
        options,
    )
}

/// The commands of `on TRIGGER` in an init .rc file.
fn rc_action(rc: &str, trigger: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in rc.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("service ") || line.starts_with("on ") || line.starts_with("import ") {
            inside = line.strip_prefix("on ").map(str::trim) == Some(trigger);
            continue;
        }
        if inside {
            out.push(line.split_whitespace().map(String::from).collect());
        }
    }
    out
}

fn option<'a>(options: &'a [Vec<String>], name: &str) -> Vec<&'a Vec<String>> {
    options.iter().filter(|o| o[0] == name).collect()
}

fn android_file_contexts() -> BTreeMap<String, String> {
    read("android-init/sepolicy/file_contexts")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ctx = f.last().expect("context");
            let ty = ctx
                .split(':')
                .nth(2)
                .unwrap_or_else(|| panic!("bad context in {l:?}"));
            assert!(
                ctx.starts_with("u:object_r:") && ctx.ends_with(":s0"),
                "bad context in {l:?}"
            );
            (f[0].to_string(), ty.to_string())
        })
        .collect()
}

#[test]
fn android_rc_declares_the_service_socket_user_and_data_dir() {
    let rc = read("android-init/syspushd.rc");
    let (cmdline, opts) = rc_service(&rc, "syspushd");
    assert_eq!(
        cmdline,
        [
            "/vendor/bin/syspushd",
            "--config",
            "/vendor/etc/syspush/syspushd.toml"
        ]
    );

    let one = |name: &str| -> Vec<String> {
        let found = option(&opts, name);
        assert_eq!(found.len(), 1, "exactly one `{name}` option, got {found:?}");
        found[0][1..].to_vec()
    };
    assert_eq!(one("class"), ["main"]);
    let user = one("user");
    assert_eq!(user.len(), 1);
    let user = &user[0];
    assert!(
        !["root", "system"].contains(&user.as_str()),
        "runs as its own user, not {user}"
    );
    assert!(
        user.starts_with("vendor_"),
        "an OEM AID from config.fs resolves as vendor_*: {user}"
    );
    let groups = one("group");
    assert_eq!(&groups[0], user, "primary group is its own");
    assert!(
        groups.contains(&"inet".to_string()),
        "inet for network access: {groups:?}"
    );
    assert!(
        !groups.iter().any(|g| g == "root" || g == "system"),
        "{groups:?}"
    );
    assert_eq!(
        one("capabilities"),
        Vec::<String>::new(),
        "all capabilities dropped"
    );
    assert_eq!(one("socket"), ["syspushd", "stream", "0666", user, user]);
    assert_eq!(one("task_profiles"), ["ServiceCapacityLow"]);
    assert!(option(&opts, "oneshot").is_empty() && option(&opts, "critical").is_empty());
    assert!(
        option(&opts, "disabled").is_empty(),
        "starts with class main"
    );

    let mkdir = rc_action(&rc, "post-fs-data");
    assert!(
        mkdir.contains(
            &["mkdir", "/data/vendor/syspush", "0700", user, user]
                .map(String::from)
                .to_vec()
        ),
        "post-fs-data creates the data dir 0700 for the daemon: {mkdir:?}"
    );
}

#[test]
fn android_file_contexts_label_the_binary_data_dir_and_socket() {
    let fc = android_file_contexts();
    let rc = read("android-init/syspushd.rc");
    let (cmdline, opts) = rc_service(&rc, "syspushd");
    let socket_name = &option(&opts, "socket")[0][1];

    // The three paths the .rc uses, each with the type the .te module defines.
    let binary = cmdline[0].clone();
    let socket = format!("/dev/socket/{socket_name}");
    let data = rc_action(&rc, "post-fs-data")
        .into_iter()
        .find(|c| c[0] == "mkdir")
        .map(|c| c[1].clone())
        .expect("mkdir in post-fs-data");
    assert_eq!(
        fc.get(&binary).map(String::as_str),
        Some("syspushd_exec"),
        "{fc:?}"
    );
    assert_eq!(
        fc.get(&socket).map(String::as_str),
        Some("syspushd_socket"),
        "{fc:?}"
    );
    // The data dir and everything in it (the redb store).
    assert_eq!(
        fc.get(&format!("{data}(/.*)?")).map(String::as_str),
        Some("syspushd_data_file"),
        "{fc:?}"
    );
    assert_eq!(fc.len(), 3, "nothing else is labelled: {fc:?}");

    let te = read("android-init/sepolicy/syspushd.te");
    let declared = |ty: &str| {
        te.lines()
            .any(|l| l.trim_start().starts_with(&format!("type {ty},")))
    };
    for ty in fc.values().map(String::as_str).chain(["syspushd"]) {
        assert!(declared(ty), "syspushd.te does not declare type {ty}");
    }
    for needed in [
        "init_daemon_domain(syspushd)",
        "net_domain(syspushd)",
        "allow syspushd syspushd_data_file:dir create_dir_perms;",
        "allow syspushd syspushd_data_file:file create_file_perms;",
        "syspushd:unix_stream_socket connectto;",
        "syspushd_socket:sock_file write;",
    ] {
        assert!(te.contains(needed), "syspushd.te lacks `{needed}`");
    }
    assert!(
        te.contains("netlink_route_socket") && te.contains("nlmsg_read"),
        "netlink route access"
    );
    // Least privilege: no capability grants at all.
    assert!(
        !te.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("capability")),
        "syspushd.te grants a capability"
    );
}

#[test]
fn android_example_config_uses_the_android_paths() {
    let rc = read("android-init/syspushd.rc");
    let (cmdline, opts) = rc_service(&rc, "syspushd");
    assert_eq!(cmdline[2], "/vendor/etc/syspush/syspushd.toml");
    let bp = read("android-init/Android.bp");
    assert!(
        bp.contains("sub_dir: \"syspush\"") && bp.contains("src: \"syspushd.toml\""),
        "{bp}"
    );

    let config = syspushd::config::Config::load(root().join("android-init/syspushd.toml"))
        .unwrap_or_else(|e| panic!("android-init/syspushd.toml: {e}"));
    assert_eq!(config.state_dir, Path::new("/data/vendor/syspush"));
    let socket_name = &option(&opts, "socket")[0][1];
    assert_eq!(
        config.socket_path,
        Path::new("/dev/socket").join(socket_name)
    );
}
