//! The `syspush-gateway` command: `serve`, `app add`, `tls-init`.
//!
//! Owns argument parsing, logging setup (tracing to stderr; stdout carries only
//! the one line each command promises) and signal handling.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use syspush_gateway::{Config, Gateway, admin, tls};

/// syspush reference push gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTPS: the device link and the send API.
    Serve {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage apps allowed to send.
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Write a development CA and a server certificate signed by it.
    TlsInit {
        /// Output directory (ca.pem, cert.pem, key.pem).
        #[arg(long)]
        dir: PathBuf,
        /// DNS name for the certificate (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
        /// IP address for the certificate (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Create an app (or issue a new key for it) and print its API key.
    Add {
        /// The app id, e.g. com.example.chat.
        app_id: String,
        /// The gateway's TOML config file (its data_dir holds the store).
        #[arg(long)]
        config: PathBuf,
        /// Classes the app may send besides "operational" (comma-separated).
        #[arg(long = "allow-class", value_delimiter = ',')]
        allow_class: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(config))
        }
        Command::App {
            command:
                AppCommand::Add {
                    app_id,
                    config,
                    allow_class,
                },
        } => {
            let config = Config::load(&config)?;
            let key = admin::add_app(&config, &app_id, &allow_class)
                .with_context(|| format!("cannot add app {app_id}"))?;
            print_line(&key);
            Ok(())
        }
        Command::TlsInit { dir, names, ips } => {
            let out = tls::generate(&dir, &names, &ips).context("tls-init failed")?;
            eprintln!(
                "wrote {}, {}, {}",
                out.ca_cert.display(),
                out.cert.display(),
                out.key.display()
            );
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let gateway = Gateway::start(config).await?;
    print_line(&format!("listening on https://{}", gateway.local_addr()));
    wait_for_signal().await?;
    tracing::info!("stopping");
    gateway.shutdown().await;
    Ok(())
}

/// The one stdout line a command promises (tests read it).
#[allow(clippy::print_stdout)]
fn print_line(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
