//! One WebSocket binary message from a device (or gateway): decode it.
//! Anything may come off the network; the codec must answer Ok or Err.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syspush_proto::device_codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = device_codec::decode(data) {
        // What decodes must re-encode within the cap (the peer's cap is ours).
        let again = device_codec::encode(&frame).expect("a decoded frame re-encodes");
        let back = device_codec::decode(&again).expect("a re-encoded frame decodes");
        assert_eq!(back, frame);
    }
});
