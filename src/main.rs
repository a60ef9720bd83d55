//! The quick start: `cargo run --release`.
//!
//! Starts a gateway on loopback with a CA it generates into a data directory,
//! a daemon enrolled against it, registers a demo app, sends a first push
//! through the whole path (HTTP -> gateway -> TLS WebSocket -> daemon store ->
//! Unix socket -> app), then prints the `syspushctl` and `curl` lines to see
//! and send more, and runs until Ctrl-C. Gateway and daemon run in this
//! process (the daemon on its own current-thread runtime, as in production);
//! the tests run them as separate processes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use syspush::appserver::AppServer;
use syspush_client::{Client, Event, Listener};

const DEMO_APP: &str = "demo.app";

/// syspush quick start: a gateway, a daemon and a demo app on loopback.
#[derive(Parser)]
struct Args {
    /// Where the CA, stores and socket live (default: the user's data dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Gateway port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[allow(clippy::print_stdout)] // the quick start talks to a person
fn main() -> Result<()> {
    let args = Args::parse();
    let dir = match args.dir {
        Some(d) => d,
        None => directories::ProjectDirs::from("dev", "syspush", "syspush")
            .context("no home directory: pass --dir")?
            .data_dir()
            .join("quickstart"),
    };
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Gateway: TLS material, config, the demo app's key, then serve.
    let tls = dir.join("tls");
    if !tls.join("ca.pem").exists() {
        syspush_gateway::tls::generate(
            &tls,
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )?;
    }
    let enrollment_key = "quickstart-enrollment-key";
    let gw_toml = dir.join("gateway.toml");
    std::fs::write(
        &gw_toml,
        format!(
            "listen = \"127.0.0.1:{}\"\ndata_dir = \"gateway-data\"\ntls_cert = \"tls/cert.pem\"\n\
             tls_key = \"tls/key.pem\"\nenrollment_key = \"{enrollment_key}\"\n",
            args.port
        ),
    )?;
    let gw_cfg = syspush_gateway::config::Config::load(&gw_toml)?;
    let key_file = dir.join(format!("{DEMO_APP}.key"));
    let app_key = match std::fs::read_to_string(&key_file) {
        Ok(k) => k.trim().to_string(),
        Err(_) => {
            let k = syspush_gateway::admin::add_app(&gw_cfg, DEMO_APP, &[])?;
            std::fs::write(&key_file, &k)?;
            k
        }
    };
    let gateway = rt.block_on(syspush_gateway::Gateway::start(gw_cfg))?;
    let addr = gateway.local_addr();
    let url = format!("https://{addr}");

    // Daemon: enrolled on first start, the demo app owned by this uid.
    let socket = dir.join("syspushd.sock");
    let d_toml = dir.join("syspushd.toml");
    let uid = nix::unistd::getuid().as_raw();
    std::fs::write(
        &d_toml,
        format!(
            "gateway = \"{url}\"\nca_file = \"{ca}\"\nenrollment_key = \"{enrollment_key}\"\n\
             state_dir = \"{state}\"\nsocket_path = \"{sock}\"\n\n[[app]]\nid = \"{DEMO_APP}\"\nuids = [{uid}]\n",
            ca = tls.join("ca.pem").display(),
            state = dir.join("daemon-state").display(),
            sock = socket.display(),
        ),
    )?;
    let d_cfg = syspushd::config::Config::load(&d_toml)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(syspushd::run(d_cfg, async {
            let _ = stop_rx.await;
        }))?;
        Ok(())
    });

    let (token, first_ms) =
        rt.block_on(first_push(&socket, &url, &app_key, &tls.join("ca.pem")))?;
    let ca = tls.join("ca.pem");
    println!(
        "syspush is running: gateway {url}, daemon socket {}",
        socket.display()
    );
    println!("first push went app server -> gateway -> syspushd -> app in {first_ms:.1} ms\n");
    println!("See pushes as an app does (one JSON line each):");
    println!(
        "  cargo run --release -p syspush-client --bin syspushctl -- --socket {} listen {DEMO_APP}\n",
        socket.display()
    );
    println!("Send one as an app server does:");
    println!(
        "  curl --cacert {} -H 'Authorization: Bearer {app_key}' -H 'Content-Type: application/json' \\\n    \
         -d '{{\"token\":\"{token}\",\"title\":\"Hello\",\"desc\":\"from curl\"}}' {url}/v1/messages\n",
        ca.display()
    );
    println!(
        "Daemon state: cargo run --release -p syspush-client --bin syspushctl -- --socket {} status",
        socket.display()
    );
    println!("Ctrl-C stops both.");

    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    let _ = stop_tx.send(());
    match daemon.join() {
        Ok(r) => r?,
        Err(_) => bail!("daemon thread panicked"),
    }
    rt.block_on(gateway.shutdown());
    Ok(())
}

/// Waits for the daemon's socket, registers the demo app and sends one push
/// through the whole path; returns the token and the push's latency.
async fn first_push(socket: &Path, url: &str, key: &str, ca: &Path) -> Result<(String, f64)> {
    // The daemon thread binds the socket shortly after start.
    let mut client = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(socket).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => return Err(e).context("daemon socket"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    let token = client
        .register(DEMO_APP)
        .await
        .context("register the demo app")?;
    let mut listener = Listener::connect(socket, DEMO_APP).await?;
    let server = AppServer::new(url, key, ca)?;
    let t0 = Instant::now();
    let reply = tokio::task::spawn_blocking({
        let token = token.clone();
        move || {
            server.send(&json!({
                "token": token, "title": "Welcome to syspush",
                "desc": "this push crossed the whole path", "ext": "quickstart",
                "sender": {"id": "syspush", "nickname": "syspush"}
            }))
        }
    })
    .await??;
    if reply.status != 200 {
        bail!(
            "gateway refused the first push: {} {}",
            reply.status,
            reply.body
        );
    }
    let want = reply.body["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), listener.next())
            .await
            .context("first push did not arrive")??
        {
            Event::Notification(d) => {
                let id = d
                    .notification
                    .as_ref()
                    .map(|n| n.message_id.clone())
                    .unwrap_or_default();
                listener.ack(std::slice::from_ref(&id)).await?;
                if id == want {
                    return Ok((token, t0.elapsed().as_secs_f64() * 1000.0));
                }
            }
            _ => continue,
        }
    }
}
