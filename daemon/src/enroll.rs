//! First-start enrollment: `POST /v1/devices` with the enrollment key, over
//! the same TLS client config as the link, to obtain the device id and secret
//! the link authenticates with. Stored by the caller; the key is not used
//! again while credentials are stored.
//!
//! The request is one HTTP/1.1 exchange on a fresh TLS stream
//! (`Connection: close`), written and read here rather than through an HTTP
//! client library: it runs once per device lifetime, and a client stack would
//! be a large share of the daemon binary. The response head is parsed with
//! `httparse` (already linked for the WebSocket handshake); the body is read
//! by `Content-Length`, chunked, or to the end of the stream, never more
//! than [`MAX_BODY`] bytes. The JSON body is read by [`json`], which knows
//! only the flat object of strings the gateway answers with.

mod json;

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::endpoint::Endpoint;
use crate::tls::{self, TlsError};

/// Largest enrollment response body read.
const MAX_BODY: usize = 16 * 1024;
/// Largest response head (status line and headers) read.
const MAX_HEAD: usize = 16 * 1024;
/// Most response headers parsed.
const MAX_HEADERS: usize = 64;

/// Errors of enrollment.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// TCP/TLS failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Writing the request or reading the response failed.
    #[error("enrollment request: {0}")]
    Http(#[from] io::Error),
    /// The response (head or body) could not be read.
    #[error("enrollment response: {0}")]
    Body(String),
    /// The gateway refused (401: wrong enrollment key).
    #[error("enrollment refused: HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The gateway's `error` text.
        message: String,
    },
}

/// Credentials issued by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// Device id.
    pub device_id: String,
    /// Device secret.
    pub secret: String,
}

/// Enrolls this device; returns its credentials.
pub async fn enroll(
    tls_config: &Arc<ClientConfig>,
    ep: &Endpoint,
    key: &str,
) -> Result<Enrolled, EnrollError> {
    // What an HTTP header value may hold: no control characters but tab, so
    // a key cannot end the header and inject others.
    if key.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(EnrollError::Body(
            "enrollment key is not a valid header value".into(),
        ));
    }
    let mut stream = tls::dial(tls_config, ep).await?;
    let request = format!(
        "POST /v1/devices HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {key}\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n",
        ep.authority()
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let (status, body) = read_response(&mut stream).await?;
    let members = json::string_members(&body);
    let member = |name: &str| {
        members
            .as_ref()
            .ok()
            .and_then(|m| m.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    };
    if status != StatusCode::CREATED && status != StatusCode::OK {
        let message = member("error")
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(EnrollError::Refused { status, message });
    }
    if let Err(e) = &members {
        return Err(EnrollError::Body(format!("bad JSON: {e}")));
    }
    let (Some(device_id), Some(secret)) = (member("device_id"), member("secret")) else {
        return Err(EnrollError::Body(
            "bad JSON: device_id and secret (strings) are required".into(),
        ));
    };
    let enrolled = Enrolled { device_id, secret };
    if enrolled.device_id.is_empty() || enrolled.secret.is_empty() {
        return Err(EnrollError::Body("empty device_id or secret".into()));
    }
    Ok(enrolled)
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    ToEof,
}

/// Reads one HTTP/1.1 response: its status and body (at most [`MAX_BODY`]).
async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(StatusCode, Vec<u8>), EnrollError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some((status, framing, head_len)) = parse_head(&buf)? {
            let rest = buf.split_off(head_len);
            let body = read_body(s, rest, framing).await?;
            return Ok((status, body));
        }
        if buf.len() >= MAX_HEAD {
            return Err(EnrollError::Body("response head too large".into()));
        }
        if read_more(s, &mut buf).await? == 0 {
            return Err(EnrollError::Http(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            )));
        }
    }
}

/// The status, framing and length of the head if `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<(StatusCode, Framing, usize)>, EnrollError> {
    let bad = |what: String| EnrollError::Body(what);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("bad response head: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| bad(format!("bad status code {code}")))?;
    let mut framing = Framing::ToEof;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(h.value);
            if value.to_ascii_lowercase().contains("chunked") {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| bad("bad content-length".into()))?;
            framing = Framing::Length(len);
        }
    }
    Ok(Some((status, framing, head_len)))
}

/// Reads the body after the head; `buf` holds what was read past the head.
async fn read_body<S: AsyncRead + Unpin>(
    s: &mut S,
    mut buf: Vec<u8>,
    framing: Framing,
) -> Result<Vec<u8>, EnrollError> {
    let too_large = || EnrollError::Body(format!("body over {MAX_BODY} bytes"));
    match framing {
        Framing::Length(len) => {
            if len > MAX_BODY {
                return Err(too_large());
            }
            while buf.len() < len {
                if read_more(s, &mut buf).await? == 0 {
                    return Err(EnrollError::Http(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            buf.truncate(len);
            Ok(buf)
        }
        Framing::Chunked => loop {
            if let Some(body) = dechunk(&buf)? {
                return Ok(body);
            }
            // Chunk-size lines and CRLFs come on top of the body bytes.
            if buf.len() > 2 * MAX_BODY {
                return Err(too_large());
            }
            if read_more(s, &mut buf).await? == 0 {
                return Err(EnrollError::Http(io::ErrorKind::UnexpectedEof.into()));
            }
        },
        Framing::ToEof => loop {
            if buf.len() > MAX_BODY {
                return Err(too_large());
            }
            match read_more(s, &mut buf).await {
                Ok(0) => return Ok(buf),
                // A peer closing TLS without close_notify: the body ends at
                // the end of the stream either way.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(buf),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        },
    }
}

/// Decodes a complete chunked body; None while the final chunk is missing.
/// Trailers are skipped.
fn dechunk(mut raw: &[u8]) -> Result<Option<Vec<u8>>, EnrollError> {
    let bad = || EnrollError::Body("bad chunked body".into());
    let mut body = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&raw[..eol]).map_err(|_| bad())?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad())?;
        raw = &raw[eol + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(body));
                }
                raw = &raw[eol + 2..];
            }
        }
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            return Err(EnrollError::Body(format!("body over {MAX_BODY} bytes")));
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        if &raw[size..size + 2] != b"\r\n" {
            return Err(bad());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Appends what one read returns; 0 at the end of the stream.
async fn read_more<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn response(raw: &[u8]) -> Result<(StatusCode, Vec<u8>), EnrollError> {
        let mut s = raw;
        read_response(&mut s).await
    }

    #[tokio::test]
    async fn reads_a_content_length_body_and_ignores_what_follows() {
        let (status, body) = response(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
        )
        .await
        .expect("response");
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn reads_a_chunked_body_with_trailers() {
        let (status, body) = response(
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
        )
        .await
        .expect("response");
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, b"abcde");
    }

    #[tokio::test]
    async fn reads_to_the_end_without_framing() {
        let (_, body) = response(b"HTTP/1.0 200 OK\r\n\r\n{}")
            .await
            .expect("response");
        assert_eq!(body, b"{}");
    }

    #[tokio::test]
    async fn refuses_oversized_and_truncated_responses() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            response(big.as_bytes()).await,
            Err(EnrollError::Body(_))
        ));
        assert!(matches!(
            response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").await,
            Err(EnrollError::Http(_))
        ));
        assert!(matches!(
            response(b"HTTP/1.1 200 OK\r\nContent-").await,
            Err(EnrollError::Http(_))
        ));
        assert!(matches!(
            response(b"garbage\r\n\r\n").await,
            Err(EnrollError::Body(_))
        ));
    }
}
