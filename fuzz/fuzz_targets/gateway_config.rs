//! The gateway's TOML config: parse, resolve paths, validate.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = syspush_gateway::config::Config::from_toml(text, Path::new("/etc/syspush-gateway"));
    }
});
