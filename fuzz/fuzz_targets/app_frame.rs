//! Bytes from an app on the local socket, fed to the daemon's decoder in the
//! chunks a stream read might deliver, decoding in a loop as the daemon does.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use syspush_proto::app::AppRequest;
use syspush_proto::{MAX_FRAME_LEN, app_codec};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so seams fall everywhere.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut buf = BytesMut::new();
    'outer: for piece in rest.chunks(chunk) {
        buf.put_slice(piece);
        loop {
            match app_codec::try_decode::<AppRequest>(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                // The daemon closes the connection on any error.
                Err(_) => break 'outer,
            }
        }
        // A claimed length may reserve at most one capped frame.
        assert!(buf.capacity() <= rest.len() + MAX_FRAME_LEN + 16);
    }
});
