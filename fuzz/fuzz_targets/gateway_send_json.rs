//! The JSON body of `POST /v1/messages`, exactly as the handler parses and
//! validates it (after authentication, before the store).
#![no_main]

use libfuzzer_sys::fuzz_target;
use syspush_gateway::api::{MAX_BODY_BYTES, MAX_PAYLOAD_BYTES, parse_send_request};

fuzz_target!(|data: &[u8]| {
    // The body limit is enforced before parsing; fuzz what can get through.
    if data.len() > MAX_BODY_BYTES {
        return;
    }
    if let Ok((token, n)) = parse_send_request(data) {
        assert!(!token.is_empty());
        let size = n.title.len() + n.desc.len() + n.ext.len() + n.data.len();
        // The title may be filled from the sender, which is outside the cap.
        let sender = n
            .sender
            .as_ref()
            .map_or(0, |s| s.id.len() + s.nickname.len());
        assert!(size <= MAX_PAYLOAD_BYTES + sender);
    }
});
