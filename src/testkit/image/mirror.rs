//! Which Debian release to build the image of, and from where: the host's
//! codename and the first mirror in apt's sources (one-line `.list` or
//! deb822 `.sources`) that serves it with `main`.

use std::path::PathBuf;

/// The host's Debian codename and an apt mirror URI that serves it (main).
pub fn apt_mirror() -> Option<(String, String)> {
    let os = std::fs::read_to_string("/etc/os-release").ok()?;
    let suite = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(body) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        let found = if name.ends_with(".list") {
            one_line_style(&body, &suite)
        } else if name.ends_with(".sources") {
            deb822_style(&body, &suite)
        } else {
            None
        };
        if let Some(uri) = found {
            return Some((suite, uri));
        }
    }
    None
}

/// `deb [opts] URI SUITE COMPONENTS...` lines.
fn one_line_style(body: &str, suite: &str) -> Option<String> {
    for l in body.lines().map(str::trim) {
        let mut w = l.split_whitespace();
        if w.next() != Some("deb") {
            continue;
        }
        let mut uri = w.next()?;
        if uri.starts_with('[') {
            // options: skip to the token after the closing bracket
            let mut rest = uri;
            while !rest.ends_with(']') {
                rest = w.next()?;
            }
            uri = w.next()?;
        }
        let s = w.next();
        let comps: Vec<&str> = w.collect();
        if s == Some(suite) && comps.contains(&"main") {
            return Some(uri.to_string());
        }
    }
    None
}

/// deb822 stanzas separated by blank lines.
fn deb822_style(body: &str, suite: &str) -> Option<String> {
    for stanza in body.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let types = field("Types:").unwrap_or_default();
        let uris = field("URIs:").unwrap_or_default();
        let suites = field("Suites:").unwrap_or_default();
        let comps = field("Components:").unwrap_or_default();
        if types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == suite)
            && comps.split_whitespace().any(|c| c == "main")
            && let Some(uri) = uris.split_whitespace().next()
        {
            return Some(uri.to_string());
        }
    }
    None
}
