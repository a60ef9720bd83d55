//! Where the gateway link connects: the `gateway` base URL of the config
//! (`https://HOST[:PORT]`) parsed into a host and a port, once, when the
//! config loads. Enrollment and the link dial the same [`Endpoint`].

/// Where the link connects, parsed from `gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal (no brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// `gateway` is not a usable https base URL.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URI at all.
    #[error("invalid gateway URL {url:?}: {source}")]
    Uri {
        /// The configured value.
        url: String,
        /// The URI parser's reason.
        #[source]
        source: tokio_tungstenite::tungstenite::http::uri::InvalidUri,
    },
    /// A URI, but not of the form `https://HOST[:PORT]`.
    #[error("invalid gateway URL {url:?}: {reason}")]
    Form {
        /// The configured value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Endpoint {
    /// Parses a gateway base URL: https only, a host, no user info, no path
    /// or query (the link appends `/v1/device` itself); port 443 by default.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let bad = |reason: &str| EndpointError::Form {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: tokio_tungstenite::tungstenite::http::Uri =
            url.parse().map_err(|source| EndpointError::Uri {
                url: url.to_string(),
                source,
            })?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => return Err(bad(&format!("scheme must be https, not {other}"))),
            None => return Err(bad("missing scheme (expected https://HOST[:PORT])")),
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "must be a base URL without path or query (the link uses /v1/device)",
            ));
        }
        Ok(Endpoint {
            host,
            port: authority.port_u16().unwrap_or(443),
        })
    }

    /// `host:port` with IPv6 literals bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_url_forms() {
        assert_eq!(
            Endpoint::parse("https://example.com").expect("ok").port,
            443
        );
        assert_eq!(
            Endpoint::parse("https://example.com/").expect("ok").host,
            "example.com"
        );
        let v6 = Endpoint::parse("https://[::1]:9000").expect("ok");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert_eq!(v6.authority(), "[::1]:9000");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, want) in [
            ("http://x", "scheme must be https"),
            ("x", "missing scheme"),
            ("https://u@x", "user info"),
            ("https://x/api", "without path"),
            ("https://x?q=1", "without path or query"),
            ("not a url", "invalid gateway URL"),
        ] {
            let e = Endpoint::parse(url).expect_err(url);
            assert!(e.to_string().contains(want), "{url:?}: {e}");
        }
    }
}
