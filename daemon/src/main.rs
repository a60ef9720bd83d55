//! `syspushd` command line: load the config, set up logging, take the app
//! socket from init if it passed one, and run the daemon on a current-thread
//! tokio runtime until SIGTERM/SIGINT.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use syspushd::config::{Config, default_config_path};

/// `--help` text.
const HELP: &str = "\
syspush device daemon: one power-saving connection to the push gateway, a durable inbox, and a local socket for apps

Usage: syspushd [OPTIONS]

Options:
      --config <PATH>        Config file (default /etc/syspush/syspushd.toml; for a non-root user without it, the per-user config dir)
      --check-config <PATH>  Validate the config, print the effective config (secrets redacted) and exit
  -h, --help                 Print help
  -V, --version              Print version
";

/// The command line, parsed by hand: two options do not need a parser
/// library (which would be a sizeable part of the binary). Accepts
/// `--opt VALUE` and `--opt=VALUE`; usage errors exit with status 2.
#[derive(Debug, Default)]
struct Args {
    /// Config file (default /etc/syspush/syspushd.toml; for a non-root user
    /// without it, the per-user config dir).
    config: Option<PathBuf>,
    /// Validate the config, print the effective config (secrets redacted) and exit.
    check_config: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Run(Args),
    Help,
    Version,
}

impl Args {
    /// Parses the arguments after the program name; `Err` is the usage error.
    fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
        let mut out = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy();
            let (name, inline) = match text.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (text.to_string(), None),
            };
            let slot = match name.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                "--config" => &mut out.config,
                "--check-config" => &mut out.check_config,
                _ => return Err(format!("unexpected argument '{text}' found")),
            };
            if slot.is_some() {
                return Err(format!(
                    "the argument '{name} <PATH>' cannot be used multiple times"
                ));
            }
            let value = match inline {
                // The raw OsString when it came separately: paths need not be UTF-8.
                Some(v) => PathBuf::from(v),
                None => args.next().map(PathBuf::from).ok_or_else(|| {
                    format!("a value is required for '{name} <PATH>' but none was supplied")
                })?,
            };
            *slot = Some(value);
        }
        if out.config.is_some() && out.check_config.is_some() {
            return Err(
                "the argument '--check-config <PATH>' cannot be used with '--config <PATH>'".into(),
            );
        }
        Ok(Command::Run(out))
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => return print_stdout(HELP),
        Ok(Command::Version) => {
            return print_stdout(&format!("syspushd {}\n", env!("CARGO_PKG_VERSION")));
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: {e}\n\nUsage: syspushd [OPTIONS]\n\nFor more information, try '--help'."
            );
            return ExitCode::from(2);
        }
    };
    syspushd::logging::init();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Writes help or version text to stdout.
fn print_stdout(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
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

fn real_main(args: Args) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Args::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_both_forms_and_refuses_misuse() {
        let Ok(Command::Run(a)) = parse(&["--config", "/a.toml"]) else {
            panic!("--config")
        };
        assert_eq!(a.config, Some(PathBuf::from("/a.toml")));
        let Ok(Command::Run(a)) = parse(&["--check-config=/b.toml"]) else {
            panic!("--check-config=")
        };
        assert_eq!(a.check_config, Some(PathBuf::from("/b.toml")));
        assert!(matches!(
            parse(&[]),
            Ok(Command::Run(Args {
                config: None,
                check_config: None
            }))
        ));
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
        assert!(matches!(parse(&["-V"]), Ok(Command::Version)));
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["--config", "a", "--check-config", "b"]).is_err());
        assert!(parse(&["--config", "a", "--config", "b"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
    }
}
