//! The daemon refuses a gateway whose certificate is from another CA, for
//! another host name, or expired, and (with `pin_spki_sha256`) one whose chain
//! is valid but whose key is not pinned — each with a clear error in its log.
//! Certificates are made here with rcgen; the gateway serves them as its own.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

/// A CA named `name`: its PEM and an issuer to sign leaves with.
fn ca(name: &str) -> Result<(String, CertifiedIssuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    Ok((ca.pem(), ca))
}

/// A leaf for `names` signed by `ca`, expired if asked: (cert PEM, key PEM, cert DER).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    expired: bool,
) -> Result<(String, String, Vec<u8>)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

/// Starts a gateway serving `cert`/`key`, and a daemon trusting `trusted_ca`
/// with `daemon_extra` config; returns them once the daemon is ready.
fn stack_with_cert(
    dir: &std::path::Path,
    cert: &(String, String, Vec<u8>),
    trusted_ca: &str,
    daemon_extra: &str,
) -> Result<(Gateway, Daemon)> {
    let mut gw = Gateway::new(&dir.join("gateway"))?;
    gw.add_app(APP, &[])?;
    std::fs::write(gw.dir.join("tls/cert.pem"), &cert.0)?;
    std::fs::write(gw.dir.join("tls/key.pem"), &cert.1)?;
    gw.ca = dir.join("trusted-ca.pem");
    std::fs::write(&gw.ca, trusted_ca)?;
    gw.start()?;
    let me = nix::unistd::getuid().as_raw();
    let apps = [AppPolicy {
        id: APP.into(),
        uids: vec![me],
    }];
    let mut daemon = Daemon::new(&dir.join("daemon"), &gw, &apps, daemon_extra)?;
    daemon.start()?;
    Ok((gw, daemon))
}

/// The daemon must log `expect` (its first dial is at once) and never get a link.
fn refused(
    name: &str,
    cert: &(String, String, Vec<u8>),
    trusted_ca: &str,
    extra: &str,
    expect: &str,
) -> Result<()> {
    let dir = shared_tempdir()?;
    let (_gw, daemon) = stack_with_cert(dir.path(), cert, trusted_ca, extra)?;
    // rustls words some of these differently across versions: match case-blind.
    let has = |l: &str| l.to_lowercase().contains(&expect.to_lowercase());
    wait_until(
        BOUND,
        &format!("{name}: {expect:?} in the daemon's log"),
        || has(&daemon.log()),
    )?;
    let line = daemon
        .log()
        .lines()
        .find(|l| has(l))
        .unwrap_or_default()
        .to_string();
    ensure!(
        line.contains("WARN") || line.contains("ERROR"),
        "{name}: not logged as a warning or error: {line}"
    );
    let status = daemon.ctl(&["status", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    ensure!(
        v["connected"] == false,
        "{name}: the daemon connected anyway: {v}"
    );
    eprintln!("{name}: refused; log: {line}");
    Ok(())
}

#[test]
fn certificates_from_another_ca_for_another_name_or_expired_are_refused() -> Result<()> {
    let (good_pem, good) = ca("syspush test CA")?;
    let (_, other) = ca("someone else's CA")?;
    let ip = "127.0.0.1";
    refused(
        "another CA",
        &leaf(&other, &[ip], false)?,
        &good_pem,
        "",
        "UnknownIssuer",
    )?;
    refused(
        "another name",
        &leaf(&good, &["gateway.example.com"], false)?,
        &good_pem,
        "",
        "not valid for name",
    )?;
    refused(
        "expired",
        &leaf(&good, &[ip], true)?,
        &good_pem,
        "",
        "expired",
    )?;
    Ok(())
}

#[test]
fn a_pinned_key_is_required_when_pins_are_set() -> Result<()> {
    let (good_pem, good) = ca("syspush test CA")?;
    let cert = leaf(&good, &["127.0.0.1"], false)?;
    // A valid chain with a key that is not pinned: refused.
    let not_it = leaf(&good, &["127.0.0.1"], false)?;
    let wrong_pin = syspushd::tls::spki_sha256_base64(&not_it.2).context("pin")?;
    refused(
        "unpinned key",
        &cert,
        &good_pem,
        &format!("pin_spki_sha256 = [\"{wrong_pin}\"]"),
        "not in pin_spki_sha256",
    )?;
    // The same certificate with its own key pinned (next to another): accepted.
    let pin = syspushd::tls::spki_sha256_base64(&cert.2).context("pin")?;
    let dir = shared_tempdir()?;
    let extra = format!("pin_spki_sha256 = [\"{wrong_pin}\", \"{pin}\"]");
    let (_gw, daemon) = stack_with_cert(dir.path(), &cert, &good_pem, &extra)?;
    let token = daemon.register(APP)?;
    ensure!(!token.is_empty(), "no token through the pinned link");
    Ok(())
}
