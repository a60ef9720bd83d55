//! The `syspush-gateway` binary: tls-init, app add, serve (the stdout line),
//! refusing `app add` while serving, and a clean stop on SIGTERM.

#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_syspush-gateway");
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_init_app_add_serve_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let out = Command::new(BIN)
        .args(["tls-init", "--dir"])
        .arg(&tls_dir)
        .args(["--name", "localhost", "--ip", "127.0.0.1"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        assert!(tls_dir.join(f).is_file(), "{f} missing");
    }

    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\nenrollment_key = \"k\"\n",
    )
    .unwrap();

    let out = Command::new(BIN)
        .args(["app", "add", "com.example.chat", "--config"])
        .arg(&config)
        .args(["--allow-class", "system,important"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    assert!(stdout.trim().len() >= 43);

    let out = Command::new(BIN)
        .args(["app", "add", "x", "--config"])
        .arg(&config)
        .args(["--allow-class", "vip"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());

    let mut serve = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0);

    // The store is locked while serving.
    let out = Command::new(BIN)
        .args(["app", "add", "com.other", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pid = serve.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(WAIT, serve.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        lines.next_line().await.unwrap(),
        None,
        "stdout has exactly one line"
    );
}
