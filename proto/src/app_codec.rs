//! App-protocol codec: varint length-delimited protobuf frames on a byte
//! stream, as Java's `writeDelimitedTo` / `parseDelimitedFrom` speak them.
//!
//! [`DelimitedCodec`] is a `tokio_util::codec` Decoder/Encoder that works on
//! buffers only (no I/O). It reads the length prefix first and refuses a frame
//! above [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN) before buffering its body, so a
//! peer claiming 4 GiB costs nothing.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::{CodecError, MAX_FRAME_LEN};

/// Length-delimited protobuf codec for messages of type `T` in, any `Message` out.
#[derive(Debug)]
pub struct DelimitedCodec<T> {
    _t: PhantomData<fn() -> T>,
}

impl<T> Default for DelimitedCodec<T> {
    fn default() -> Self {
        Self { _t: PhantomData }
    }
}

impl<T> DelimitedCodec<T> {
    /// A new codec.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Reads a varint length prefix from the start of `buf` without consuming it.
/// `Ok(None)`: not enough bytes yet. Returns (length, prefix size).
pub fn peek_length(buf: &[u8]) -> Result<Option<(u64, usize)>, CodecError> {
    let mut value: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 10 {
        Err(CodecError::BadLength)
    } else {
        Ok(None)
    }
}

/// Decodes one complete frame from the front of `buf`, if present.
pub fn try_decode<T: Message + Default>(buf: &mut BytesMut) -> Result<Option<T>, CodecError> {
    let Some((len, prefix)) = peek_length(buf)? else {
        return Ok(None);
    };
    if len > MAX_FRAME_LEN as u64 {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let len = len as usize;
    if buf.len() < prefix + len {
        // Reserve only what a capped frame can need.
        buf.reserve(prefix + len - buf.len());
        return Ok(None);
    }
    buf.advance(prefix);
    let body = buf.split_to(len);
    Ok(Some(T::decode(body.freeze())?))
}

/// Encodes `msg` with its varint length prefix; refuses one above the cap.
pub fn encode_delimited<M: Message>(msg: &M, dst: &mut BytesMut) -> Result<(), CodecError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    dst.reserve(len + 10);
    msg.encode_length_delimited(dst)
        .map_err(|_| CodecError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        })?;
    Ok(())
}

impl<T: Message + Default> Decoder for DelimitedCodec<T> {
    type Item = T;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<T>, CodecError> {
        try_decode(src)
    }
}

impl<T, M: Message> Encoder<M> for DelimitedCodec<T> {
    type Error = CodecError;

    fn encode(&mut self, item: M, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_delimited(&item, dst)
    }
}

/// Helper for code that writes with plain buffers: encodes to a fresh Vec.
pub fn to_vec<M: Message>(msg: &M) -> Result<Vec<u8>, CodecError> {
    let mut b = BytesMut::new();
    encode_delimited(msg, &mut b)?;
    let mut v = Vec::with_capacity(b.len());
    v.put(b);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{AppRequest, Hello, app_request::Body};

    fn hello(id: &str) -> AppRequest {
        AppRequest {
            request_id: 1,
            body: Some(Body::Hello(Hello { app_id: id.into() })),
        }
    }

    #[test]
    fn round_trip_in_pieces() {
        let mut bytes = BytesMut::new();
        encode_delimited(&hello("a"), &mut bytes).unwrap();
        encode_delimited(&hello("b"), &mut bytes).unwrap();
        let all = bytes.freeze();
        let mut codec = DelimitedCodec::<AppRequest>::new();
        let mut buf = BytesMut::new();
        let mut out = vec![];
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![hello("a"), hello("b")]);
    }

    #[test]
    fn refuses_4gib_claim_without_allocating() {
        // varint of 4 GiB
        let mut buf = BytesMut::from(&[0x80, 0x80, 0x80, 0x80, 0x10][..]);
        let cap_before = buf.capacity();
        assert!(matches!(
            try_decode::<AppRequest>(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn refuses_bad_varint_and_garbage() {
        let mut buf = BytesMut::from(&[0xffu8; 12][..]);
        assert!(matches!(
            try_decode::<AppRequest>(&mut buf),
            Err(CodecError::BadLength)
        ));
        let mut buf = BytesMut::from(&[3u8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            try_decode::<AppRequest>(&mut buf),
            Err(CodecError::Decode(_))
        ));
    }
}
