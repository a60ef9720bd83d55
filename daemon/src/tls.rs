//! TLS client setup and the one `TcpStream` + TLS dial used by both the
//! enrollment request and the link.
//!
//! rustls with the *ring* provider only. What the gateway's certificate is
//! checked against ([`Trust`]: the `ca_file` roots and the decoded pins) is
//! parsed once, when the config loads; [`client_config`] builds from it
//! without touching the file system. One [`ClientConfig`] is built per
//! process and shared: its in-memory session cache is what lets a reconnect
//! resume the TLS session (one round trip, no certificate chain, no key
//! exchange signature) — cheap on the radio and the CPU, which matters for a
//! device that redials after every NAT timeout.
//!
//! Optional public-key pinning (`pin_spki_sha256`): the chain is verified by
//! rustls' WebPKI verifier first, then the SHA-256 of the leaf certificate's
//! SubjectPublicKeyInfo must be one of the pins. Pinning the key rather than
//! the certificate survives renewals that keep the key, and a stolen CA (or a
//! mis-issued certificate) cannot pass it. The SPKI comes from rustls-webpki,
//! the X.509 parser rustls verifies the chain with.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::endpoint::Endpoint;

/// Errors reading what the gateway's certificate is checked against
/// (`ca_file`, `pin_spki_sha256`): config errors, found at load time.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `ca_file` cannot be read (or is not PEM).
    #[error("cannot read ca_file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ca_file` holds no PEM certificate.
    #[error("ca_file {path} contains no PEM certificate")]
    CaFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate was rejected by rustls.
    #[error("ca_file {path}: unusable certificate: {source}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// No `ca_file`, and this build has no built-in web roots (the
    /// `web-roots` cargo feature is off).
    #[error("invalid config: ca_file is required (this syspushd is built without web roots)")]
    NoRoots,
    /// A `pin_spki_sha256` value is not the base64 of 32 bytes.
    #[error("invalid config: pin_spki_sha256 {0:?} is not the base64 of a SHA-256 hash (32 bytes)")]
    Pin(String),
}

/// Errors building the TLS client or dialing.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    /// The certificate verifier could not be built from the roots.
    #[error("TLS verifier: {0}")]
    Verifier(#[source] VerifierBuilderError),
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

/// What the gateway's certificate is checked against: the roots (`ca_file`'s
/// certificates, or the built-in web roots) and the public-key pins.
#[derive(Debug, Clone)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    pins: Vec<[u8; 32]>,
}

impl Trust {
    /// Reads and parses `ca_file` (every PEM certificate in it; none is an
    /// error) if given, else takes the built-in web roots, and decodes `pins`.
    pub fn load(ca_file: Option<&Path>, pins: &[String]) -> Result<Self, TrustError> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in read_ca(path)? {
                    roots.add(cert).map_err(|source| TrustError::BadCert {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
            }
            #[cfg(feature = "web-roots")]
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            // Built for a private gateway only: the built-in roots are left out.
            #[cfg(not(feature = "web-roots"))]
            None => return Err(TrustError::NoRoots),
        }
        Ok(Trust {
            roots: Arc::new(roots),
            pins: parse_pins(pins)?,
        })
    }
}

/// Reads every PEM certificate of a CA file; errors if there is none.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let io = |source| TrustError::CaFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    if certs.is_empty() {
        return Err(TrustError::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Builds the process-wide client config from `trust`: ring provider, the
/// leaf key checked against the pins when there are any, TLS session
/// resumption on (rustls' default in-memory cache).
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let config = if trust.pins.is_empty() {
        builder
            .with_root_certificates(trust.roots.clone())
            .with_no_client_auth()
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(trust.roots.clone(), provider)
            .build()
            .map_err(TlsError::Verifier)?;
        let pins = trust.pins.clone();
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier { inner, pins }))
            .with_no_client_auth()
    };
    // `resumption` defaults to an in-memory session store (256 entries):
    // sharing this Arc across dials is all that resumption needs.
    Ok(Arc::new(config))
}

/// Decodes `pin_spki_sha256` values: standard base64 of 32 bytes each.
fn parse_pins(pins: &[String]) -> Result<Vec<[u8; 32]>, TrustError> {
    pins.iter()
        .map(|p| {
            base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| TrustError::Pin(p.clone()))
        })
        .collect()
}

/// The SubjectPublicKeyInfo (whole DER element, outer SEQUENCE included) of
/// an X.509 certificate; `None` if it does not parse.
fn spki_of(cert: &CertificateDer<'_>) -> Option<SubjectPublicKeyInfoDer<'static>> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(cert.subject_public_key_info())
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
fn spki_sha256(cert: &CertificateDer<'_>) -> Option<ring::digest::Digest> {
    let spki = spki_of(cert)?;
    Some(ring::digest::digest(&ring::digest::SHA256, spki.as_ref()))
}

/// The pin of a certificate: base64 SHA-256 of its SubjectPublicKeyInfo (the
/// value `pin_spki_sha256` takes; `openssl x509 -pubkey | openssl pkey
/// -pubin -outform der | openssl dgst -sha256 -binary | base64` prints the same).
pub fn spki_sha256_base64(cert_der: &[u8]) -> Option<String> {
    let digest = spki_sha256(&CertificateDer::from(cert_der))?;
    Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

/// The leaf key is not one of the pins (shown in the handshake error).
#[derive(thiserror::Error)]
#[error("certificate public key (SPKI sha256 {0}) is not in pin_spki_sha256")]
pub struct NotPinned(String);

// rustls shows a certificate error with `Debug`: make that the readable text.
impl std::fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// WebPKI chain verification, then the leaf's key against the pins.
#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain first: a pin never makes an invalid certificate acceptable.
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let digest = spki_sha256(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        if self.pins.iter().any(|p| p[..] == *digest.as_ref()) {
            return Ok(verified);
        }
        let shown = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(NotPinned(shown))),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

/// A CA and a TLS server for 127.0.0.1 with a leaf it signed, for the
/// tests of this module and of the link's failure classification.
#[cfg(test)]
pub(crate) mod test_server {
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// What [`new`] made.
    pub(crate) struct TestServer {
        /// The CA's certificate (PEM), to trust or to leave out.
        pub ca_pem: String,
        /// The server side of the handshake.
        pub acceptor: tokio_rustls::TlsAcceptor,
        /// The leaf certificate (DER).
        pub leaf: Vec<u8>,
        /// The leaf key's SubjectPublicKeyInfo (DER).
        pub spki: Vec<u8>,
    }

    /// A fresh CA named `ca_name` (distinct names: a second CA with the same
    /// name would fail on its signature, not as an unknown issuer).
    pub(crate) fn new(ca_name: &str) -> TestServer {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        TestServer {
            ca_pem: ca.pem(),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            leaf: cert.der().to_vec(),
            spki: rcgen::PublicKeyData::subject_public_key_info(&key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    /// A server for 127.0.0.1 with rustls' default (stateful, TLS 1.3 ticket) resumption.
    fn server(dir: &Path) -> TlsAcceptor {
        server_with_leaf(dir).0
    }

    /// Like [`server`], also returning the leaf certificate (DER) and its key's SPKI.
    fn server_with_leaf(dir: &Path) -> (TlsAcceptor, Vec<u8>, Vec<u8>) {
        let s = super::test_server::new("syspush test CA");
        std::fs::write(dir.join("ca.pem"), &s.ca_pem).expect("write ca");
        (s.acceptor, s.leaf, s.spki)
    }

    #[test]
    fn spki_is_cut_out_of_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, leaf, spki) = server_with_leaf(dir.path());
        let spki_of = |der: &[u8]| spki_of(&CertificateDer::from(der)).map(|s| s.to_vec());
        assert_eq!(spki_of(&leaf), Some(spki));
        let pin = spki_sha256_base64(&leaf).expect("pin");
        assert_eq!(parse_pins(&[pin]).expect("pin parses").len(), 1);
        // Every truncation and a wrong outer tag are refused, never a panic.
        for n in 0..leaf.len() {
            assert_eq!(spki_of(&leaf[..n]), None, "truncated at {n}");
        }
        let mut bad = leaf.clone();
        bad[0] = 0x31;
        assert_eq!(spki_of(&bad), None);
        assert_eq!(spki_of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(spki_of(&[0x30, 0x02, 0x1f, 0x00]), None);
    }

    #[test]
    fn bad_pins_are_config_errors() {
        assert!(parse_pins(&["not base64!".into()]).is_err());
        assert!(
            parse_pins(&["AAAA".into()]).is_err(),
            "3 bytes is not a SHA-256"
        );
        assert!(parse_pins(&[]).expect("none").is_empty());
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let e = Trust::load(Some(&missing), &[]).expect_err("missing");
        assert!(matches!(e, TrustError::CaFile { .. }), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = Trust::load(Some(&empty), &[]).expect_err("empty");
        assert!(matches!(e, TrustError::CaFileEmpty { .. }), "{e}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = Trust::load(Some(&bad), &[]).expect_err("bad");
        assert!(matches!(e, TrustError::BadCert { .. }), "{e}");
        #[cfg(feature = "web-roots")]
        assert!(Trust::load(None, &[]).expect("web roots").pins.is_empty());
        #[cfg(not(feature = "web-roots"))]
        assert!(matches!(Trust::load(None, &[]), Err(TrustError::NoRoots)));
    }

    /// One handshake against a fresh server; the dial's error text on failure.
    async fn handshake(pins: impl FnOnce(&[u8]) -> Vec<String>) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (acceptor, leaf, _) = server_with_leaf(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port: listener.local_addr().expect("addr").port(),
        };
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let _ = acceptor.accept(tcp).await;
        });
        let trust = Trust::load(Some(&dir.path().join("ca.pem")), &pins(&leaf)).expect("trust");
        let config = client_config(&trust).expect("client config");
        let r = dial(&config, &ep)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = server.await;
        r
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pinned_key_is_accepted_and_another_key_refused() {
        handshake(|leaf| vec![spki_sha256_base64(leaf).expect("pin")])
            .await
            .expect("the pinned key must be accepted");
        let other = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let err = handshake(|_| vec![other])
            .await
            .expect_err("an unpinned key must be refused");
        assert!(err.contains("not in pin_spki_sha256"), "{err}");
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
        let trust = Trust::load(Some(&dir.path().join("ca.pem")), &[]).expect("trust");
        let config = client_config(&trust).expect("client config");
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
