//! `syspushd` command line: load the config, set up logging, take the app
//! socket from init if it passed one, and run the daemon on a current-thread
//! tokio runtime until SIGTERM/SIGINT.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use syspushd::config::{Config, default_config_path};

/// syspush device daemon: one power-saving connection to the push gateway,
/// a durable inbox, and a local socket for apps.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (default /etc/syspush/syspushd.toml; for a non-root user
    /// without it, the per-user config dir).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the config, print the effective config (secrets redacted) and exit.
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    syspushd::logging::init();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the
/// message before already includes (the crate's errors name their source).
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        let cfg = Config::load(&path)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "# effective config of {}", path.display())?;
        out.write_all(cfg.to_toml_redacted().as_bytes())?;
        return Ok(());
    }
    let path = args.config.unwrap_or_else(default_config_path);
    let cfg = Config::load(&path)?;
    // Before the runtime exists: taking the socket edits the environment,
    // which is only sound while this is the only thread.
    let inherited = syspushd::activation::take_from_env()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let shutdown = shutdown_signal()?;
        syspushd::run_with_socket(cfg, inherited, shutdown)
            .await
            .context("syspushd")
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
