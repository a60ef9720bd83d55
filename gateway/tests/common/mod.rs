//! Test harness: a gateway on 127.0.0.1:0 in a temp dir, an HTTPS client and a
//! device-link client that trust the generated CA.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use syspush_gateway::{Config, Gateway, admin, tls};
use syspush_proto::device::{self, Frame, frame::Body};
use syspush_proto::{PROTOCOL_VERSION, device_codec};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub const APP: &str = "com.example.chat";
pub const OTHER_APP: &str = "com.example.other";
pub const ENROLLMENT_KEY: &str = "enroll-me";
/// Upper bound for anything a test waits for (never a sleep: a timeout).
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub addr: SocketAddr,
    pub config: Config,
    pub client_tls: Arc<rustls::ClientConfig>,
    pub app_key: String,
    pub other_key: String,
    pub dir: tempfile::TempDir,
}

pub fn config_in(dir: &std::path::Path) -> Config {
    let tls = tls::generate(&dir.join("tls"), &[], &[]).unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ntls_cert = {:?}\ntls_key = {:?}\nenrollment_key = {:?}\n",
        tls.cert, tls.key, ENROLLMENT_KEY
    );
    std::fs::write(dir.join("gateway.toml"), text).unwrap();
    Config::load(dir.join("gateway.toml")).unwrap()
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        tweak(&mut config);
        let app_key = admin::add_app(&config, APP, &["important".into()]).unwrap();
        let other_key = admin::add_app(&config, OTHER_APP, &[]).unwrap();
        let gateway = Gateway::start(config.clone()).await.unwrap();
        let client_tls = tls::client_config(&dir.path().join("tls/ca.pem")).unwrap();
        TestGateway {
            addr: gateway.local_addr(),
            gateway: Some(gateway),
            config,
            client_tls,
            app_key,
            other_key,
            dir,
        }
    }

    pub async fn restart(&mut self) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await;
        }
        let mut config = self.config.clone();
        config.listen = self.addr;
        let gateway = Gateway::start(config).await.unwrap();
        self.gateway = Some(gateway);
    }

    pub async fn tls(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        TlsConnector::from(Arc::clone(&self.client_tls))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// One HTTPS request; returns the status and the JSON body (Null if empty).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        self.request_with(method, path, bearer, &[], body).await
    }

    /// Like [`TestGateway::request`], with extra request headers.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, Value) {
        let io = TokioIo::new(self.tls().await);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let resp = tokio::time::timeout(WAIT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, json)
    }

    pub async fn enroll(&self) -> (String, String) {
        let (status, body) = self
            .request(Method::POST, "/v1/devices", Some(ENROLLMENT_KEY), b"")
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["device_id"].as_str().unwrap().to_owned(),
            body["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// POST /v1/messages with the given JSON and key.
    pub async fn send_as(&self, key: &str, json: Value) -> (StatusCode, Value) {
        self.request(
            Method::POST,
            "/v1/messages",
            Some(key),
            json.to_string().as_bytes(),
        )
        .await
    }

    pub async fn send(&self, json: Value) -> (StatusCode, Value) {
        self.send_as(&self.app_key, json).await
    }

    /// POST /v1/messages with this app's key and an `Idempotency-Key`.
    pub async fn send_keyed(&self, key: &str, json: Value) -> (StatusCode, Value) {
        self.request_with(
            Method::POST,
            "/v1/messages",
            Some(&self.app_key),
            &[("idempotency-key", key)],
            json.to_string().as_bytes(),
        )
        .await
    }

    /// GET /v1/tokens/{token} with this app's key.
    pub async fn token_status(&self, token: &str) -> Value {
        let path = format!("/v1/tokens/{token}");
        let (status, body) = self
            .request(Method::GET, &path, Some(&self.app_key), b"")
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn connect(&self) -> DeviceLink {
        let url = format!("wss://localhost:{}/v1/device", self.addr.port());
        let (ws, _) = tokio_tungstenite::client_async(url, self.tls().await)
            .await
            .unwrap();
        DeviceLink { ws }
    }

    /// Enrolls, connects, says hello, and registers APP.
    pub async fn device(&self) -> (Creds, DeviceLink, String) {
        let (device_id, secret) = self.enroll().await;
        let creds = Creds { device_id, secret };
        let mut link = self.connect().await;
        link.hello(&creds, 0, false).await;
        let token = link.register(1, APP).await;
        (creds, link, token)
    }

    pub async fn shutdown(mut self) {
        if let Some(gw) = self.gateway.take() {
            gw.shutdown().await;
        }
    }
}

pub struct Creds {
    pub device_id: String,
    pub secret: String,
}

pub struct DeviceLink {
    pub ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl DeviceLink {
    pub async fn send(&mut self, body: Body) {
        let bytes = device_codec::encode(&device_codec::frame(body)).unwrap();
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Next protocol frame; None when the gateway closed the link.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Binary(b))) => return Some(device_codec::decode(&b).unwrap()),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn body(&mut self) -> Body {
        self.next().await.expect("link closed").body.unwrap()
    }

    pub async fn hello(
        &mut self,
        creds: &Creds,
        last_committed_seq: u64,
        idle: bool,
    ) -> device::ServerHello {
        self.send(Body::ClientHello(device::ClientHello {
            device_id: creds.device_id.clone(),
            secret: creds.secret.clone(),
            protocol_version: PROTOCOL_VERSION,
            last_committed_seq,
            idle,
        }))
        .await;
        match self.body().await {
            Body::ServerHello(h) => h,
            other => panic!("expected ServerHello, got {other:?}"),
        }
    }

    /// A ClientHello with arbitrary credentials and version (no answer read).
    pub async fn hello_raw(&mut self, device_id: &str, secret: &str, protocol_version: u32) {
        self.send(Body::ClientHello(device::ClientHello {
            device_id: device_id.into(),
            secret: secret.into(),
            protocol_version,
            last_committed_seq: 0,
            idle: false,
        }))
        .await;
    }

    pub async fn register(&mut self, request_id: u64, app_id: &str) -> String {
        self.send(Body::Register(device::Register {
            request_id,
            app_id: app_id.into(),
        }))
        .await;
        match self.body().await {
            Body::Registered(r) => {
                assert_eq!((r.request_id, r.app_id.as_str()), (request_id, app_id));
                r.token
            }
            other => panic!("expected Registered, got {other:?}"),
        }
    }

    pub async fn deliver(&mut self) -> device::Deliver {
        match self.body().await {
            Body::Deliver(d) => d,
            other => panic!("expected Deliver, got {other:?}"),
        }
    }

    pub async fn ack(&mut self, seq: u64) {
        self.send(Body::Ack(device::Ack { seq })).await;
    }

    /// Round-trips a Ping: everything the gateway sent before the Pong has arrived
    /// once this returns, and those frames are returned.
    pub async fn sync(&mut self, nonce: u64) -> Vec<Body> {
        self.send(Body::Ping(device::Ping { nonce })).await;
        let mut before = Vec::new();
        loop {
            match self.body().await {
                Body::Pong(p) if p.nonce == nonce => return before,
                other => before.push(other),
            }
        }
    }
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
