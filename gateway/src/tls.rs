//! TLS material: generating a development CA + server certificate (`tls-init`)
//! and loading PEM files into a rustls server config.
//!
//! Only rustls' `ring` provider is used, never the process-default provider, so
//! the binary does not depend on which crypto backend another crate enabled.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors generating or loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed (bad name, key generation).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate/key pair.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Paths written by [`generate`].
#[derive(Debug, Clone)]
pub struct GeneratedTls {
    /// Self-signed CA certificate; clients trust this.
    pub ca_cert: PathBuf,
    /// Server certificate signed by the CA.
    pub cert: PathBuf,
    /// The server certificate's private key (mode 0600 on Unix).
    pub key: PathBuf,
}

/// Writes `dir/ca.pem`, `dir/cert.pem` and `dir/key.pem`. The server certificate
/// carries `names` (DNS) and `ips` as SANs; when both are empty it gets
/// `localhost`, `127.0.0.1` and `::1`. The CA key is not kept: the CA exists only
/// to give clients one stable file to trust.
pub fn generate(dir: &Path, names: &[String], ips: &[IpAddr]) -> Result<GeneratedTls, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;

    let (names, ips): (Vec<String>, Vec<IpAddr>) = if names.is_empty() && ips.is_empty() {
        (
            vec!["localhost".to_owned()],
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        )
    } else {
        (names.to_vec(), ips.to_vec())
    };

    // The CA.
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "syspush-gateway local CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    // The server certificate.
    let mut params = CertificateParams::new(names.clone())?;
    for ip in &ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let cn = names
        .first()
        .cloned()
        .unwrap_or_else(|| ips.first().map(|i| i.to_string()).unwrap_or_default());
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let out = GeneratedTls {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    write_file(&out.ca_cert, ca_cert.pem().as_bytes(), false)?;
    // The chain: leaf first, then the CA, as TLS expects.
    write_file(
        &out.cert,
        format!("{}{}", cert.pem(), ca_cert.pem()).as_bytes(),
        false,
    )?;
    write_file(&out.key, key.serialize_pem().as_bytes(), true)?;
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    let io_err = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(io_err)?;
    io::Write::write_all(&mut f, bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}

/// The ring crypto provider, explicitly (see the module doc).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM chain and key into a server config that speaks HTTP/1.1 (ALPN),
/// which is what the WebSocket upgrade needs.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::Pem {
            path: cert.to_owned(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_owned(),
        source,
    })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless TLS 1.3 tickets (and TLS 1.2 ones) make a device's reconnect a
    // resumption instead of a full handshake, with no per-client server state.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}

/// Builds a client config trusting only the CA in `ca_pem` (tests, tools).
pub fn client_config(ca_pem: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|source| TlsError::Pem {
        path: ca_pem.to_owned(),
        source,
    })? {
        let cert = cert.map_err(|source| TlsError::Pem {
            path: ca_pem.to_owned(),
            source,
        })?;
        roots.add(cert)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = generate(dir.path(), &[], &[]).expect("generate");
        server_config(&out.cert, &out.key).expect("server config");
        client_config(&out.ca_cert).expect("client config");
    }
}
