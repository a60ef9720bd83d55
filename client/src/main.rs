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
        Ok(()) => ExitCode::SUCCESS,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
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
                        let id = d.notification.map(|n| n.message_id).unwrap_or_default();
                        if !id.is_empty() {
                            match listener.ack(&[id]).await {
                                Ok(_) => {}
                                // The daemon refused: that is a real error.
                                Err(e @ syspush_client::ClientError::Daemon { .. }) => {
                                    return Err(e).context("acking");
                                }
                                // The daemon went away (restart, crash): the listener
                                // remembers the id as acked and re-acks it when the
                                // daemon redelivers it, so keep listening.
                                Err(e) => {
                                    let _ = writeln!(
                                        std::io::stderr(),
                                        "syspushctl: ack deferred, daemon unreachable: {e}"
                                    );
                                }
                            }
                        }
                        seen += 1;
                    }
                    Event::TokenRevoked { app_id, reason } => {
                        let _ = writeln!(
                            std::io::stderr(),
                            "syspushctl: token of {app_id} revoked: {reason}"
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}
