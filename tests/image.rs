//! The Debian package on a device image that boots real systemd.
//!
//! `cargo test --test image -- --nocapture` (as root; prints the figures).
//!
//! The harness — the debootstrap image cache, installing the `.deb` built from
//! this test run's binaries, `systemd-nspawn -b`, commands inside, the journal
//! — is `syspush::testkit::image`. This file is the scenarios, one function
//! each, run in order by one `#[test]` over one shared booted image: they
//! share the container, some restart the service (so they must not run in
//! parallel), and one owner of the container means its teardown runs however
//! a scenario ends. A failing scenario fails the test, naming the scenario;
//! the ones after it do not run (they build on what it set up).
//!
//! The image's `/etc/syspush/syspushd.toml` is the packaged example pointing
//! at a gateway on the host's loopback (the container shares the host's
//! network namespace), with APP given to APP_UID.
//!
//! Boot 1 (`syspushd.service` enabled): the service is active (READY=1) at
//! boot as its own user with its sandbox in force; an allowed uid registers and
//! receives a push sent from the host, another uid is refused; `systemctl stop`
//! takes under 2 s and a message pending in the store is delivered after
//! `systemctl start`; the journal holds the daemon's entries with their fields;
//! `systemd-analyze security` in the booted image gives the offline figure.
//! Boot 2 (only `syspushd.socket` enabled): the daemon is not running after
//! boot, the first app connection starts it and is served.
//!
//! Readiness is never guessed: the boot is awaited through nspawn's READY=1,
//! the daemon's link with `journalctl -f`, a service start with `systemctl
//! start` (Type=notify: it returns after READY=1). The one poll is "the pushed
//! message is in the daemon's store" (`syspushctl status`), where no event is
//! visible from outside; it is bounded.
//!
//! Skipped with a "skipped: ..." message (a failure under `CI=true`) when not
//! root, or when debootstrap, systemd-nspawn, nsenter, cargo-deb or an apt
//! mirror are not available.

#[path = "image/hardening.rs"]
mod hardening;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use syspush::appserver::AppServer;
use syspush::testkit::image::{
    self, Container, Prepared, add_user, await_journal, chroot, journal_u64, monotonic_us, run,
    text, write_config,
};
use syspush::testkit::{AppPolicy, Gateway, Lines};

const APP: &str = "com.example.chat";
/// The uid the policy gives APP to.
const APP_UID: u32 = 10123;
/// Another app's uid: not allowed to act for APP.
const OTHER_UID: u32 = 10124;
/// Failure bound for one exchange inside the booted image.
const STEP: Duration = Duration::from_secs(60);

type Scenario = fn(&mut World) -> Result<()>;

/// In order: each may build on what the ones before it did.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("syspushd is READY at boot and links up", ready_at_boot),
    ("the service's sandbox is in force", hardening),
    ("an allowed uid registers and receives a push", app_served),
    ("another uid is refused", other_uid_refused),
    (
        "stop takes < 2 s and a pending message survives stop/start",
        stop_start_without_loss,
    ),
    (
        "the journal holds the daemon's entries and fields",
        journal_fields,
    ),
    (
        "exposure: live equals offline and is <= 2.0",
        exposure_score,
    ),
    ("socket activation after a reboot", socket_activation),
];

#[test]
fn debian_package_boots_in_a_systemd_image_and_serves_apps() -> Result<()> {
    let t_test = Instant::now();
    let Some((suite, mirror)) = image::runnable() else {
        return Ok(());
    };
    let img = image::prepare(&suite, &mirror)?;
    let mut w = World::boot(img)?;
    for (name, scenario) in SCENARIOS {
        let t = Instant::now();
        scenario(&mut w).with_context(|| format!("image scenario failed: {name}"))?;
        eprintln!("image: ok: {name} ({:.1} s)", t.elapsed().as_secs_f64());
    }
    w.print_figures(&suite, t_test.elapsed());
    Ok(())
}

/// What the scenarios share. Fields drop in order: the container first
/// (halted if a scenario failed), the image tree last.
struct World {
    /// The booted container: boot 1, then boot 2; `None` while powered off.
    c: Option<Container>,
    // Kept for its lifetime: dropping it stops the gateway the image uses.
    _gateway: Gateway,
    /// The app server for APP at `gateway`.
    app: AppServer,
    /// The machine name both boots use.
    name: String,
    /// APP's token, once registered.
    token: String,
    /// The daemon's "link up" journal entry of boot 1.
    connected: serde_json::Value,
    fig: Figures,
    img: Prepared,
}

/// Measured along the way, printed at the end (figures, not assertions).
#[derive(Default)]
struct Figures {
    boot: Duration,
    to_ready: Duration,
    to_connected: Duration,
    stop: Duration,
    first_activated: Duration,
    poweroff: [Duration; 2],
    exposure: (f64, f64),
}

/// The running container (a scenario before this one powered it off: a bug here).
fn booted(c: &Option<Container>) -> Result<&Container> {
    c.as_ref().context("the container is not running")
}

impl World {
    /// Configures the installed tree as an image recipe does (gateway, policy,
    /// the apps' users, the service enabled) and boots it.
    fn boot(img: Prepared) -> Result<Self> {
        let mut gateway = Gateway::new(&img.work.path().join("gateway"))?;
        let app_key = gateway.add_app(APP, &[])?;
        gateway.start()?;
        let app = gateway.app_server(&app_key)?;
        let policy = AppPolicy {
            id: APP.into(),
            uids: vec![APP_UID],
        };
        write_config(&img.root, &gateway, &[policy])?;
        // The packaged binary accepts it (as the daemon's user would read it).
        chroot(
            &img.root,
            &["syspushd", "--check-config", "/etc/syspush/syspushd.toml"],
        )?;
        add_user(&img.root, APP_UID, "app-chat")?;
        add_user(&img.root, OTHER_UID, "app-other")?;
        // What an image recipe does: the service (Also= enables the socket).
        chroot(&img.root, &["systemctl", "enable", "syspushd.service"])?;

        let name = format!("syspush-test-{}", std::process::id());
        let c = Container::boot(&img.root, &name, &img.cache.join("boot1.log"))?;
        let fig = Figures {
            boot: Duration::from_micros(monotonic_us()? - c.started_us),
            ..Figures::default()
        };
        Ok(Self {
            c: Some(c),
            _gateway: gateway,
            app,
            name,
            token: String::new(),
            connected: serde_json::Value::Null,
            fig,
            img,
        })
    }

    fn print_figures(&self, suite: &str, whole: Duration) {
        let (img, f) = (&self.img, &self.fig);
        eprintln!(
            "image figures: {suite} image {} ({:.1} s), copy {:.1} s, deb build+dpkg -i {:.1} s",
            if img.t_image > Duration::from_secs(5) {
                "built"
            } else {
                "cached"
            },
            img.t_image.as_secs_f64(),
            img.t_copy.as_secs_f64(),
            img.t_install.as_secs_f64()
        );
        eprintln!(
            "image figures: container start -> boot finished {:.2} s, -> syspushd READY {:.2} s, \
             -> connected {:.2} s; systemctl stop {:.0} ms; socket-activated first register {:.2} s; \
             poweroff {:.2} s / {:.2} s; exposure {} (offline {}); whole test {:.1} s",
            f.boot.as_secs_f64(),
            f.to_ready.as_secs_f64(),
            f.to_connected.as_secs_f64(),
            f.stop.as_secs_f64() * 1000.0,
            f.first_activated.as_secs_f64(),
            f.poweroff[0].as_secs_f64(),
            f.poweroff[1].as_secs_f64(),
            f.exposure.0,
            f.exposure.1,
            whole.as_secs_f64()
        );
    }
}

/// Active and running at boot, never restarted; READY=1 arrived (active, not
/// activating, for a Type=notify service) and the link came up.
fn ready_at_boot(w: &mut World) -> Result<()> {
    let c = booted(&w.c)?;
    let state = c.prop("syspushd.service", "ActiveState")?;
    let sub = c.prop("syspushd.service", "SubState")?;
    ensure!(
        state == "active" && sub == "running",
        "syspushd.service is {state}/{sub} after boot; journal:\n{}",
        c.ok(&["journalctl", "-b", "--no-pager"])?
    );
    ensure!(
        c.prop("syspushd.service", "NRestarts")? == "0",
        "syspushd.service restarted during boot"
    );
    let ready_us: u64 = c
        .prop("syspushd.service", "ActiveEnterTimestampMonotonic")?
        .parse()?;
    let connected = await_journal(c, "syspushd.service", "link up", STEP)?;
    let connected_us = journal_u64(&connected, "__MONOTONIC_TIMESTAMP")?;
    w.fig.to_ready = Duration::from_micros(ready_us.saturating_sub(c.started_us));
    w.fig.to_connected = Duration::from_micros(connected_us.saturating_sub(c.started_us));
    w.connected = connected;
    Ok(())
}

fn hardening(w: &mut World) -> Result<()> {
    hardening::check_hardening(booted(&w.c)?, w.img.syspush_uid)
}

/// Sends a push to APP's token from the host; returns the gateway's answer body.
fn push(w: &World, title: &str) -> Result<serde_json::Value> {
    let r = w
        .app
        .send(&serde_json::json!({"token": w.token, "title": title, "desc": "d"}))?;
    ensure!(r.status == 200, "send: {} {}", r.status, r.body);
    Ok(r.body)
}

/// `syspushctl listen APP --count 1` as APP_UID, in a transient unit.
fn listen_once(c: &Container) -> Result<Lines> {
    Lines::spawn(&mut c.app(
        APP_UID,
        "app-listen",
        &["/usr/bin/syspushctl", "listen", APP, "--count", "1"],
    ))
}

/// An app of the allowed uid registers and receives a push from the host.
fn app_served(w: &mut World) -> Result<()> {
    let c = booted(&w.c)?;
    let out = run(&mut c.app(
        APP_UID,
        "app-register",
        &["/usr/bin/syspushctl", "register", APP],
    ))?;
    let token = text(&out.stdout).trim().to_string();
    ensure!(!token.is_empty(), "register printed no token");
    w.token = token;
    let c = booted(&w.c)?;
    let listen = listen_once(c)?;
    let sent = push(w, "to the image")?;
    let line = listen
        .lines
        .recv_timeout(STEP)
        .map_err(|e| anyhow!("no notification in the image within {STEP:?}: {e}"))?;
    let n: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(
        n["message_id"] == sent["message_id"] && n["title"] == "to the image",
        "got {n}, sent {sent}"
    );
    let (status, err) = listen.finish()?;
    ensure!(status.success(), "listen: {err}");
    Ok(())
}

/// An app of another uid can neither register for APP nor listen to it.
fn other_uid_refused(w: &mut World) -> Result<()> {
    let c = booted(&w.c)?;
    for (unit, args) in [
        (
            "other-register",
            ["/usr/bin/syspushctl", "register", APP].as_slice(),
        ),
        (
            "other-listen",
            [
                "timeout",
                "30",
                "/usr/bin/syspushctl",
                "listen",
                APP,
                "--count",
                "1",
            ]
            .as_slice(),
        ),
    ] {
        let out = c.app(OTHER_UID, unit, args).output()?;
        let err = text(&out.stderr);
        ensure!(
            !out.status.success() && err.to_lowercase().contains("permission"),
            "uid {OTHER_UID} {args:?}: {} / {err}",
            out.status
        );
    }
    Ok(())
}

/// A push while no app listens waits in the daemon's store; stop (timed) and
/// start the service: it is still there.
fn stop_start_without_loss(w: &mut World) -> Result<()> {
    let kept_id = push(w, "kept")?["message_id"].clone();
    let c = booted(&w.c)?;
    // Bounded poll: no event tells the outside that the daemon committed it.
    let until = Instant::now() + STEP;
    loop {
        let s = c.ok(&["syspushctl", "status", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(s.trim())?;
        let pending = v["apps"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["app_id"] == APP))
            .and_then(|x| x["pending"].as_u64())
            .unwrap_or(0);
        if pending >= 1 {
            break;
        }
        ensure!(Instant::now() < until, "push never reached the store: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    c.ok(&["systemctl", "stop", "syspushd.service"])?;
    let t_stop = t.elapsed();
    ensure!(
        t_stop < Duration::from_secs(2),
        "systemctl stop took {t_stop:?}"
    );
    ensure!(
        c.prop("syspushd.service", "Result")? == "success"
            && c.prop("syspushd.service", "ActiveState")? == "inactive",
        "stop did not end cleanly: {}",
        c.ok(&[
            "journalctl",
            "-u",
            "syspushd",
            "-b",
            "--no-pager",
            "-n",
            "20"
        ])?
    );
    c.ok(&["systemctl", "start", "syspushd.service"])?;
    let out = run(&mut c.app(
        APP_UID,
        "app-listen-2",
        &[
            "timeout",
            "60",
            "/usr/bin/syspushctl",
            "listen",
            APP,
            "--count",
            "1",
        ],
    ))?;
    let n: serde_json::Value = serde_json::from_str(text(&out.stdout).trim())?;
    ensure!(
        n["message_id"] == kept_id,
        "after restart got {n}, want {kept_id}"
    );
    w.fig.stop = t_stop;
    Ok(())
}

/// The daemon's entries under its unit and uid, written natively
/// (JOURNAL_STREAM), each tracing field a journal field.
fn journal_fields(w: &mut World) -> Result<()> {
    let c = booted(&w.c)?;
    let j = c.ok(&[
        "journalctl",
        "-u",
        "syspushd",
        "-b",
        "-o",
        "json",
        "--no-pager",
    ])?;
    let entries: Vec<serde_json::Value> = j
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let own: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["SYSLOG_IDENTIFIER"] == "syspushd")
        .collect();
    ensure!(!own.is_empty(), "no syspushd entries in the journal");
    let uid = w.img.syspush_uid.to_string();
    for e in &own {
        ensure!(
            e["_SYSTEMD_UNIT"] == "syspushd.service"
                && e["_UID"].as_str() == Some(uid.as_str())
                && e["_COMM"] == "syspushd",
            "entry without unit/uid fields: {e}"
        );
    }
    let connected = &w.connected;
    ensure!(
        connected["SYSPUSH_SESSION_ID"].is_string() && connected["SYSPUSH_HEARTBEAT_S"].is_string(),
        "link up without its structured fields: {connected}"
    );
    // tracing-journald maps INFO to notice (5), WARN to 4, ERROR to 3.
    ensure!(connected["PRIORITY"] == "5", "link up is info: {connected}");
    ensure!(
        own.iter()
            .any(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains("stopped"))),
        "no 'stopped' entry from the stop"
    );
    Ok(())
}

/// "Overall exposure level for syspushd.service: 1.3 OK" -> 1.3
fn exposure(out: &str) -> Result<f64> {
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("no exposure line in {out}"))?;
    // "...: 1.3 OK :-)" without a UTF-8 terminal: split after the unit name.
    let v = line
        .split_once(".service:")
        .and_then(|(_, s)| s.split_whitespace().next())
        .context("exposure value")?;
    Ok(v.parse()?)
}

/// `systemd-analyze security`, live in the booted image and offline on the
/// installed unit file: the same figure, at most 2.0.
fn exposure_score(w: &mut World) -> Result<()> {
    let c = booted(&w.c)?;
    let live = exposure(&c.ok(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "syspushd.service",
    ])?)?;
    let offline = exposure(&c.ok(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "--offline=true",
        "/usr/lib/systemd/system/syspushd.service",
    ])?)?;
    ensure!(live == offline, "exposure live {live} != offline {offline}");
    ensure!(live <= 2.0, "exposure {live} > 2.0");
    w.fig.exposure = (live, offline);
    Ok(())
}

/// Boot 2, with only `syspushd.socket` enabled: the daemon is not running
/// after boot; the first app connection starts it, keeps its token and is
/// served.
fn socket_activation(w: &mut World) -> Result<()> {
    let c = w.c.take().context("the container is not running")?;
    w.fig.poweroff[0] = c.poweroff()?;
    chroot(&w.img.root, &["systemctl", "disable", "syspushd.service"])?;
    chroot(&w.img.root, &["systemctl", "enable", "syspushd.socket"])?;
    w.c = Some(Container::boot(
        &w.img.root,
        &w.name,
        &w.img.cache.join("boot2.log"),
    )?);
    let c = booted(&w.c)?;
    ensure!(
        c.prop("syspushd.socket", "ActiveState")? == "active",
        "syspushd.socket not listening after boot"
    );
    ensure!(
        c.prop("syspushd.service", "ActiveState")? == "inactive",
        "syspushd.service runs without an app having connected"
    );
    // The first app connection: registering again returns its token.
    let t = Instant::now();
    let out = run(&mut c.app(
        APP_UID,
        "app-register",
        &["/usr/bin/syspushctl", "register", APP],
    ))?;
    w.fig.first_activated = t.elapsed();
    ensure!(
        text(&out.stdout).trim() == w.token,
        "token changed across reboot: {} vs {}",
        text(&out.stdout).trim(),
        w.token
    );
    ensure!(
        c.prop("syspushd.service", "ActiveState")? == "active",
        "the app connection did not start syspushd.service"
    );
    let listen = listen_once(c)?;
    let sent = push(w, "activated")?;
    let line = listen
        .lines
        .recv_timeout(STEP)
        .map_err(|e| anyhow!("no notification after socket activation: {e}"))?;
    let n: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(n["message_id"] == sent["message_id"], "got {n}");
    ensure!(listen.finish()?.0.success(), "listen failed");
    let c = w.c.take().context("the container is not running")?;
    w.fig.poweroff[1] = c.poweroff()?;
    Ok(())
}
