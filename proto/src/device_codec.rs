//! Device-protocol codec: one [`Frame`] per WebSocket binary message, capped at
//! [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN).

use prost::Message;

use crate::device::{Frame, frame::Body};
use crate::{CodecError, MAX_FRAME_LEN};

/// Encodes a frame; refuses one that would exceed the cap (the peer would refuse it anyway).
pub fn encode(frame: &Frame) -> Result<Vec<u8>, CodecError> {
    let len = frame.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(frame.encode_to_vec())
}

/// Decodes one WebSocket binary message into a frame with a body.
pub fn decode(bytes: &[u8]) -> Result<Frame, CodecError> {
    if bytes.len() > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len: bytes.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let frame = Frame::decode(bytes)?;
    if frame.body.is_none() {
        return Err(CodecError::Empty);
    }
    Ok(frame)
}

/// Wraps a body into a frame.
pub fn frame(body: Body) -> Frame {
    Frame { body: Some(body) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Notification;
    use crate::device::{Ack, Deliver};

    #[test]
    fn round_trip() {
        let f = frame(Body::Deliver(Deliver {
            seq: 7,
            notification: Some(Notification {
                message_id: "m1".into(),
                title: "hi".into(),
                ..Default::default()
            }),
        }));
        let bytes = encode(&f).unwrap();
        assert_eq!(decode(&bytes).unwrap(), f);
    }

    #[test]
    fn refuses_oversized() {
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert!(matches!(decode(&big), Err(CodecError::TooLarge { .. })));
        let f = frame(Body::Deliver(Deliver {
            seq: 1,
            notification: Some(Notification {
                data: vec![1u8; MAX_FRAME_LEN].into(),
                ..Default::default()
            }),
        }));
        assert!(matches!(encode(&f), Err(CodecError::TooLarge { .. })));
    }

    #[test]
    fn refuses_garbage_and_empty() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        let ok = encode(&frame(Body::Ack(Ack { seq: 3 }))).unwrap();
        assert!(decode(&ok[..ok.len() - 1]).is_err());
    }
}
