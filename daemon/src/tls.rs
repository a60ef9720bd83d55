//! TLS client setup and the one `TcpStream` + TLS dial used by both the
//! enrollment request and the link.
//!
//! rustls with the *ring* provider only. One [`ClientConfig`] is built per
//! process and shared: its in-memory session cache is what lets a reconnect
//! resume the TLS session (one round trip, no certificate chain, no key
//! exchange signature) — cheap on the radio and the CPU, which matters for a
//! device that redials after every NAT timeout.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{ConfigError, Endpoint};

/// Errors building the TLS client or dialing.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be used.
    #[error(transparent)]
    Ca(#[from] ConfigError),
    /// A CA certificate was rejected by rustls.
    #[error("ca_file {path}: unusable certificate: {source}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the configuration (protocol versions).
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The gateway host is not a valid DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS handshake failed (certificate, protocol, reset).
    #[error("TLS handshake with {addr}: {source}")]
    Handshake {
        /// host:port.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Reads every PEM certificate of a CA file; errors if there is none.
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let file = std::fs::File::open(path).map_err(|source| ConfigError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(|source| ConfigError::CaFile {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Builds the process-wide client config: ring provider, `ca_file` roots if
/// given (else the built-in web roots), TLS session resumption on (rustls'
/// default in-memory cache).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_ca(path)? {
                roots.add(cert).map_err(|source| TlsError::BadCert {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // `resumption` defaults to an in-memory session store (256 entries):
    // sharing this Arc across dials is all that resumption needs.
    Ok(Arc::new(config))
}

/// Opens TCP to the endpoint and runs the TLS handshake.
pub async fn dial(
    config: &Arc<ClientConfig>,
    ep: &Endpoint,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let addr = ep.authority();
    let server_name =
        ServerName::try_from(ep.host.clone()).map_err(|_| TlsError::ServerName(ep.host.clone()))?;
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|source| TlsError::Connect {
            addr: addr.clone(),
            source,
        })?;
    // Small frames, latency matters more than packing: push them out at once.
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|source| TlsError::Handshake { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::ServerConfig;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    /// A server for 127.0.0.1 with rustls' default (stateful, TLS 1.3 ticket) resumption.
    fn server(dir: &Path) -> TlsAcceptor {
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("ca key"),
        )
        .expect("ca");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_redial_resumes_the_tls_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acceptor = server(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port: listener.local_addr().expect("addr").port(),
        };
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.expect("accept");
                let mut s = acceptor.accept(tcp).await.expect("handshake");
                s.write_all(b"x").await.expect("write");
                s.flush().await.expect("flush");
            }
        });
        let config = client_config(Some(&dir.path().join("ca.pem"))).expect("client config");
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut s = dial(&config, &ep).await.expect("dial");
            // Reading processes the session tickets sent after the handshake.
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.expect("read");
            kinds.push(s.get_ref().1.handshake_kind());
        }
        server.await.expect("server");
        assert_eq!(
            kinds,
            vec![
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ]
        );
    }
}
