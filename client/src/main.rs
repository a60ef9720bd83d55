//! `syspushctl`: command-line access to `syspushd` — register and unregister
//! app ids, listen for an app's notifications (one JSON line each), and show
//! the daemon's state. Built on the `syspush-client` library; everything it
//! prints as JSON comes from `syspush_client::json` so tests share the shape.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use syspush_client::{Client, ClientError, Event, Listener, default_socket_path, json};

/// Talk to the syspush daemon (syspushd) over its local socket.
#[derive(Debug, Parser)]
#[command(name = "syspushctl", version)]
struct Cli {
    /// Daemon socket path [default: /run/syspush/syspushd.sock].
    #[arg(long, global = true, env = "SYSPUSH_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register APP_ID on this device and print its push token (one line).
    Register {
        /// The app id, e.g. com.example.chat.
        app_id: String,
    },
    /// Unregister APP_ID (logout): its token is revoked, pending messages dropped.
    Unregister {
        /// The app id.
        app_id: String,
    },
    /// Print APP_ID's notifications as JSON lines, acking each after printing.
    Listen {
        /// The app id.
        app_id: String,
        /// Exit after this many notifications (default: run until killed).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Tell the daemon the device is idle (`on`: screen off / doze; the gateway
    /// holds normal-priority messages until the next heartbeat) or awake (`off`).
    /// Call it from the platform's screen or doze signal. Root or system_uids only.
    Idle {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        mode: String,
    },
    /// Show (no KEY=VALUE) or change APP_ID's notification settings on this
    /// device: allow, lockscreen, sound (true/false), min_class
    /// (operational/important/system). Changing: root or system_uids only.
    Settings {
        /// The app id.
        app_id: String,
        /// Only this notification channel (default: the whole app).
        #[arg(long, value_name = "ID")]
        channel: Option<String>,
        /// Changes, e.g. allow=false min_class=important.
        #[arg(value_name = "KEY=VALUE")]
        changes: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the daemon, its gateway link and every app; one PASS/FAIL line
    /// each with a hint (SKIP: the check could not run, and why). Exits
    /// non-zero when something fails or is skipped.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the gateway for a test push to APP_ID on this device and report
    /// whether and how fast it arrived (subscribes as the app and acks it).
    Test {
        /// The app id.
        app_id: String,
        /// Give up after this many seconds (the daemon's wait for the gateway included).
        #[arg(long, value_name = "S", default_value_t = 30)]
        timeout: u64,
    },
    /// Show the daemon's gateway link and apps.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the tokio runtime")),
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(&e),
    }
}

/// Prints the error with its whole cause chain on stderr.
fn fail(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "syspushctl: error: {e:#}");
    if let Some(ClientError::Connect { .. }) = e.downcast_ref::<ClientError>() {
        let _ = writeln!(
            std::io::stderr(),
            "syspushctl: is syspushd running? (set --socket or SYSPUSH_SOCKET)"
        );
    }
    ExitCode::FAILURE
}

/// Runs the command; `Ok(false)` when it ran but found a failure (doctor).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let socket = cli.socket.unwrap_or_else(default_socket_path);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Register { app_id } => {
            let token = Client::connect(&socket).await?.register(&app_id).await?;
            writeln!(out, "{token}").context("writing to stdout")?;
        }
        Command::Unregister { app_id } => {
            Client::connect(&socket).await?.unregister(&app_id).await?;
        }
        Command::Idle { mode } => {
            Client::connect(&socket)
                .await?
                .set_idle(mode == "on")
                .await?;
        }
        Command::Settings {
            app_id,
            channel,
            changes,
            json: as_json,
        } => {
            let changes = changes
                .iter()
                .map(|c| {
                    c.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .with_context(|| format!("{c:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let s = Client::connect(&socket)
                .await?
                .settings(&app_id, channel.as_deref().unwrap_or(""), changes)
                .await?;
            let v = json::settings_json(&s);
            if as_json {
                writeln!(out, "{v}").context("writing to stdout")?;
            } else {
                let levels = std::iter::once(&v["app"])
                    .chain(v["channels"].as_array().into_iter().flatten());
                for l in levels {
                    let ch = l["channel_id"].as_str().unwrap_or_default();
                    writeln!(
                        out,
                        "{app_id}{}: allow={} lockscreen={} sound={} min_class={}",
                        if ch.is_empty() {
                            String::new()
                        } else {
                            format!(" channel {ch}")
                        },
                        l["allow"],
                        l["lockscreen"],
                        l["sound"],
                        l["min_class"].as_str().unwrap_or_default()
                    )
                    .context("writing to stdout")?;
                }
            }
        }
        Command::Doctor { json: as_json } => {
            let report = Client::connect(&socket).await?.doctor().await?;
            let ok = report.checks.iter().all(|c| c.ok);
            if as_json {
                let checks: Vec<serde_json::Value> = report
                    .checks
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "ok": c.ok, "skipped": c.skipped, "detail": c.detail, "hint": c.hint}))
                    .collect();
                writeln!(out, "{}", serde_json::json!({"ok": ok, "checks": checks}))
                    .context("writing to stdout")?;
            } else {
                for c in &report.checks {
                    // SKIP: the check could not run (detail says why).
                    let mark = match (c.ok, c.skipped) {
                        (true, _) => "PASS",
                        (false, true) => "SKIP",
                        (false, false) => "FAIL",
                    };
                    writeln!(out, "{mark} {}: {}", c.name, c.detail)
                        .context("writing to stdout")?;
                    if !c.ok && !c.hint.is_empty() {
                        writeln!(out, "     hint: {}", c.hint).context("writing to stdout")?;
                    }
                }
            }
            out.flush().context("writing to stdout")?;
            return Ok(ok);
        }
        Command::Test { app_id, timeout } => {
            // The whole test, the daemon's wait for the gateway included,
            // ends within --timeout.
            let bound = std::time::Duration::from_secs(timeout);
            let started = std::time::Instant::now();
            let mut sent: Option<String> = None;
            let arrived = tokio::time::timeout(bound, async {
                // Subscribe first, so the test message cannot slip past us.
                let mut listener = Listener::connect(&socket, app_id.clone()).await?;
                let id = Client::connect(&socket)
                    .await?
                    .test_push_within(&app_id, bound.saturating_sub(started.elapsed()))
                    .await?;
                sent = Some(id.clone());
                loop {
                    if let Event::Notification(d) = listener.next().await? {
                        // Other messages stay pending for the app itself.
                        if d.notification.as_ref().is_some_and(|n| n.message_id == id) {
                            let ms = started.elapsed().as_millis();
                            listener
                                .ack(std::slice::from_ref(&id))
                                .await
                                .context("acking")?;
                            return anyhow::Ok((id, ms, d.display));
                        }
                    }
                }
            })
            .await;
            let (id, ms, display) = match arrived {
                Ok(r) => r?,
                Err(_) => match sent {
                    Some(id) => anyhow::bail!("test push {id} did not arrive within {timeout} s"),
                    None => anyhow::bail!(
                        "the daemon did not send a test push within {timeout} s (is the gateway reachable? see syspushctl doctor)"
                    ),
                },
            };
            writeln!(out, "test push {id} arrived in {ms} ms (display={display})")
                .context("writing to stdout")?;
        }
        Command::Status { json: as_json } => {
            let status = Client::connect(&socket).await?.status().await?;
            if as_json {
                writeln!(out, "{}", json::status_json(&status)).context("writing to stdout")?;
            } else {
                write!(out, "{}", json::status_text(&status)).context("writing to stdout")?;
            }
        }
        Command::Listen { app_id, count } => {
            let mut listener = Listener::connect(&socket, app_id).await?;
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                match listener.next().await? {
                    Event::Notification(d) => {
                        // Print and flush before acking: if we die in between,
                        // the message is redelivered rather than lost.
                        writeln!(out, "{}", json::notification_json(&d))
                            .context("writing to stdout")?;
                        out.flush().context("writing to stdout")?;
                        // Then ack, in batches: the listener sends what was
                        // handled as one Ack whenever it would wait for the
                        // socket (or every ACK_BATCH ids), and the daemon
                        // commits the batch in one transaction.
                        if let Some(n) = d.notification {
                            listener.handled(n.message_id);
                        }
                        seen += 1;
                    }
                    Event::TokenRevoked { app_id, reason } => {
                        // A JSON line too (with "event", which notifications
                        // lack), so a script sees the forced logout in order.
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({"event": "token_revoked", "app_id": app_id, "reason": reason})
                        )
                        .context("writing to stdout")?;
                        out.flush().context("writing to stdout")?;
                        let _ = writeln!(
                            std::io::stderr(),
                            "syspushctl: token of {app_id} revoked: {reason}"
                        );
                    }
                    _ => {}
                }
            }
            // --count reached: the last batch must reach the daemon before we
            // exit, or it is redelivered to the next listener.
            match listener.flush_acks().await {
                Ok(_) => {}
                // The daemon cannot store the ack now (its disk is full): the
                // messages stay stored and are redelivered; nothing is lost.
                Err(e)
                    if e.daemon_code() == Some(syspush_proto::app::ErrorCode::ErrorUnavailable) =>
                {
                    let _ = writeln!(std::io::stderr(), "syspushctl: ack deferred: {e}");
                }
                Err(e @ syspush_client::ClientError::Daemon { .. }) => {
                    return Err(e).context("acking");
                }
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "syspushctl: ack deferred, daemon unreachable: {e}"
                    );
                }
            }
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(true)
}
