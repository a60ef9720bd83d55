//! A `syspush-gateway` process with its own data dir, CA and config.
//!
//! Ready when it printed its one `listening on https://IP:PORT` line: the
//! port is ephemeral on the first start and kept across restarts.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;

use anyhow::{Context, Result, anyhow, bail};

use super::paths::bin;
use super::process::{in_netns, log_file, signal};
use super::wait::READY_BOUND;
use crate::appserver::AppServer;

/// A `syspush-gateway` process with its own data dir, CA and config.
pub struct Gateway {
    /// Its directory (config, store, TLS material, log).
    pub dir: PathBuf,
    /// The CA that signed its certificate.
    pub ca: PathBuf,
    /// Devices present this to enroll.
    pub enrollment_key: String,
    /// The address it listens on and is reached at (127.0.0.1 unless in a netns).
    pub host: IpAddr,
    /// Network namespace it runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// Extra config lines (for example heartbeat bounds), written at each start.
    pub extra_config: String,
    port: u16,
    child: Option<(Child, ChildStdout)>,
}

impl Gateway {
    /// Prepares a gateway in `dir` (TLS material and config); does not start it.
    pub fn new(dir: &Path) -> Result<Self> {
        Self::new_at(dir, IpAddr::from([127, 0, 0, 1]), None)
    }

    /// Like [`Gateway::new`], listening on `host`, run inside `netns` when given.
    pub fn new_at(dir: &Path, host: IpAddr, netns: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let tls = dir.join("tls");
        let st = Command::new(bin("syspush-gateway"))
            .args(["tls-init", "--dir"])
            .arg(&tls)
            .args(["--name", "localhost", "--ip"])
            .arg(host.to_string())
            .stderr(log_file(&dir.join("gateway.log"))?)
            .status()?;
        if !st.success() {
            bail!("syspush-gateway tls-init failed: {st}");
        }
        let gw = Self {
            dir: dir.to_path_buf(),
            ca: tls.join("ca.pem"),
            enrollment_key: "test-enrollment-key".into(),
            host,
            netns: netns.map(str::to_string),
            extra_config: String::new(),
            port: 0,
            child: None,
        };
        gw.write_config()?;
        Ok(gw)
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    fn write_config(&self) -> Result<()> {
        let cfg = format!(
            "listen = \"{host}:{port}\"\ndata_dir = \"data\"\ntls_cert = \"tls/cert.pem\"\n\
             tls_key = \"tls/key.pem\"\nenrollment_key = \"{key}\"\n{extra}\n",
            host = self.host,
            port = self.port,
            key = self.enrollment_key,
            extra = self.extra_config
        );
        std::fs::write(self.config(), cfg)?;
        Ok(())
    }

    /// Creates an app (the gateway must be stopped) and returns its API key.
    pub fn add_app(&self, app_id: &str, allow_classes: &[&str]) -> Result<String> {
        let mut cmd = Command::new(bin("syspush-gateway"));
        cmd.args(["app", "add", app_id, "--config"])
            .arg(self.config());
        if !allow_classes.is_empty() {
            cmd.arg("--allow-class").arg(allow_classes.join(","));
        }
        let out = cmd.stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            bail!("app add {app_id}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts the gateway; on a restart it listens on the port it had before.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("gateway already running");
        }
        self.write_config()?;
        let mut child = in_netns(self.netns.as_deref(), &bin("syspush-gateway"))
            .args(["serve", "--config"])
            .arg(self.config())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.dir.join("gateway.log"))?)
            .spawn()?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let (tx, rx) = mpsc::channel();
        // Read the one readiness line on a thread so a hung gateway fails the test
        // after READY_BOUND instead of blocking it forever.
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line);
            let _ = tx.send((res.map(|_| line), r.into_inner()));
        });
        let (line, stdout) = match rx.recv_timeout(READY_BOUND) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                bail!("gateway did not print its address within {READY_BOUND:?}");
            }
        };
        let _ = reader.join();
        let line = line?;
        let addr = line
            .trim()
            .strip_prefix("listening on https://")
            .ok_or_else(|| {
                anyhow!(
                    "unexpected gateway output {line:?} (see {})",
                    self.dir.join("gateway.log").display()
                )
            })?;
        let port: u16 = addr.rsplit(':').next().unwrap_or_default().parse()?;
        if self.port == 0 {
            self.port = port;
            self.write_config()?;
        }
        self.child = Some((child, stdout));
        Ok(())
    }

    /// Base URL, `https://HOST:PORT`.
    pub fn url(&self) -> String {
        format!(
            "https://{}",
            std::net::SocketAddr::new(self.host, self.port)
        )
    }

    /// An app-server client for this gateway with `key`.
    pub fn app_server(&self, key: &str) -> Result<AppServer> {
        Ok(AppServer::new(&self.url(), key, &self.ca)?)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some((mut c, _)) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let (mut c, _) = self.child.take().context("gateway not running")?;
        signal(&c, nix::sys::signal::Signal::SIGTERM);
        Ok(c.wait()?)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}
