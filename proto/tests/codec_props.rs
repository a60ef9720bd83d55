//! Property tests of the two frame codecs on arbitrary messages and arbitrary
//! bytes: what either peer sends is untrusted, so every input must end in a
//! frame, "need more bytes", or an error — never a panic, and never an
//! allocation of a size the peer merely claimed.

#![allow(missing_docs, clippy::unwrap_used)]

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use prost::Message;
use syspush_proto::app::{self, AppRequest, DaemonMessage, app_request, daemon_message};
use syspush_proto::common::{Notification, Sender};
use syspush_proto::device::{self, Frame, frame::Body};
use syspush_proto::{CodecError, MAX_FRAME_LEN, app_codec, device_codec};

/// Small strings keep cases fast; unicode exercises UTF-8 validation.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._:-]{0,24}",
        1 => any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

fn notification() -> impl Strategy<Value = Notification> {
    (
        (text(), text(), text(), text(), text()),
        proptest::collection::vec(any::<u8>(), 0..256),
        (0i32..2, 0i32..3, any::<u32>()),
        (text(), text(), any::<bool>()),
        proptest::option::of((text(), text())),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (message_id, app_id, title, desc, ext),
                data,
                (priority, class, ttl),
                (collapse_key, channel_id, disable_push),
                sender,
                (sent_at_ms, expires_at_ms),
            )| Notification {
                message_id,
                app_id,
                title,
                desc,
                ext,
                data: data.into(),
                priority,
                class,
                ttl,
                collapse_key,
                channel_id,
                disable_push,
                sender: sender.map(|(id, nickname)| Sender { id, nickname }),
                sent_at_ms,
                expires_at_ms,
            },
        )
}

fn device_frame() -> impl Strategy<Value = Frame> {
    let body = prop_oneof![
        (text(), text(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
            |(device_id, secret, protocol_version, last_committed_seq, idle)| {
                Body::ClientHello(device::ClientHello {
                    device_id,
                    secret,
                    protocol_version,
                    last_committed_seq,
                    idle,
                })
            }
        ),
        (any::<u64>(), proptest::option::of(notification()))
            .prop_map(|(seq, notification)| Body::Deliver(device::Deliver { seq, notification })),
        any::<u64>().prop_map(|seq| Body::Ack(device::Ack { seq })),
        (any::<u64>(), text()).prop_map(|(request_id, app_id)| Body::Register(device::Register {
            request_id,
            app_id
        })),
        any::<u64>().prop_map(|nonce| Body::Ping(device::Ping { nonce })),
        (text(), any::<u32>()).prop_map(|(reason, retry_after_s)| Body::Goaway(device::GoAway {
            reason,
            retry_after_s
        })),
    ];
    body.prop_map(device_codec::frame)
}

fn daemon_message() -> impl Strategy<Value = DaemonMessage> {
    let body = prop_oneof![
        3 => (notification(), any::<bool>()).prop_map(|(n, display)| {
            daemon_message::Body::Notification(app::Delivery {
                notification: Some(n),
                display,
                lockscreen: display,
                sound: display,
            })
        }),
        1 => (text(), any::<u32>()).prop_map(|(app_id, pending)| {
            daemon_message::Body::HelloOk(app::HelloOk { app_id, pending })
        }),
        1 => (0i32..6, text()).prop_map(|(code, message)| {
            daemon_message::Body::Error(app::Error { code, message })
        }),
    ];
    (any::<u64>(), proptest::option::of(body))
        .prop_map(|(request_id, body)| DaemonMessage { request_id, body })
}

fn app_request() -> impl Strategy<Value = AppRequest> {
    let body = prop_oneof![
        text().prop_map(|app_id| app_request::Body::Hello(app::Hello { app_id })),
        text().prop_map(|app_id| app_request::Body::Register(app::RegisterRequest { app_id })),
        proptest::collection::vec(text(), 0..8)
            .prop_map(|message_ids| app_request::Body::Ack(app::AckRequest { message_ids })),
        Just(app_request::Body::Status(app::StatusRequest {})),
    ];
    (any::<u64>(), proptest::option::of(body))
        .prop_map(|(request_id, body)| AppRequest { request_id, body })
}

/// Drains every complete frame from `buf`.
fn drain<T: Message + Default>(buf: &mut BytesMut) -> Result<Vec<T>, CodecError> {
    let mut out = Vec::new();
    while let Some(m) = app_codec::try_decode::<T>(buf)? {
        out.push(m);
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn device_frames_round_trip(f in device_frame()) {
        let bytes = device_codec::encode(&f).unwrap();
        prop_assert_eq!(device_codec::decode(&bytes).unwrap(), f);
    }

    /// A Frame is one length-delimited field, so every strict prefix of its
    /// encoding is incomplete (or empty): a WebSocket message cut short must
    /// never decode as a different, shorter frame.
    #[test]
    fn every_truncated_device_frame_errors(f in device_frame()) {
        let bytes = device_codec::encode(&f).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(device_codec::decode(&bytes[..cut]).is_err(), "prefix of {} bytes decoded", cut);
        }
    }

    #[test]
    fn any_bytes_as_device_frame_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = device_codec::decode(&bytes);
    }

    #[test]
    fn app_frames_round_trip_in_any_split(
        msgs in proptest::collection::vec(daemon_message(), 1..6),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            app_codec::encode_delimited(m, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        // Deliver the stream in two pieces cut anywhere: the decoder must
        // neither lose nor invent frames at the seam.
        let cut = split.index(wire.len() + 1);
        let mut buf = BytesMut::new();
        buf.put_slice(&wire[..cut]);
        let mut got: Vec<DaemonMessage> = drain(&mut buf).unwrap();
        buf.put_slice(&wire[cut..]);
        got.extend(drain::<DaemonMessage>(&mut buf).unwrap());
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn app_requests_round_trip(m in app_request()) {
        let bytes = app_codec::to_vec(&m).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(app_codec::try_decode::<AppRequest>(&mut buf).unwrap(), Some(m));
        prop_assert!(buf.is_empty());
    }

    /// Every strict prefix of a delimited frame means "need more bytes" and
    /// consumes nothing; only the whole frame decodes.
    #[test]
    fn every_truncated_app_frame_needs_more_bytes(m in daemon_message()) {
        let bytes = app_codec::to_vec(&m).unwrap();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            let r = app_codec::try_decode::<DaemonMessage>(&mut buf);
            prop_assert!(matches!(r, Ok(None)), "prefix of {} bytes: {:?}", cut, r);
            prop_assert_eq!(buf.len(), cut);
        }
    }

    /// Arbitrary bytes: frames, "need more", or an error — and after an error
    /// the caller closes, so nothing more is asked of the decoder.
    #[test]
    fn any_bytes_as_app_stream_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = app_codec::try_decode::<AppRequest>(&mut buf) {}
        // A claimed length never reserves more than the cap allows.
        prop_assert!(buf.capacity() <= bytes.len().max(MAX_FRAME_LEN + 16));
    }

    /// Any announced length above the cap is refused from the prefix alone.
    #[test]
    fn oversized_length_prefixes_are_refused(len in (MAX_FRAME_LEN as u64 + 1)..=u64::MAX) {
        let mut buf = BytesMut::new();
        prost::encoding::encode_varint(len, &mut buf);
        let cap_before = buf.capacity();
        let r = app_codec::try_decode::<AppRequest>(&mut buf);
        prop_assert!(matches!(r, Err(CodecError::TooLarge { .. })), "{:?}", r);
        prop_assert_eq!(buf.capacity(), cap_before);
    }

    /// Messages above the cap are refused by both encoders, and a device
    /// message above the cap is refused by the decoder whatever its content.
    #[test]
    fn oversized_messages_are_refused(extra in 1usize..4096, fill in any::<u8>()) {
        let n = Notification { data: vec![fill; MAX_FRAME_LEN + extra].into(), ..Default::default() };
        let f = device_codec::frame(Body::Deliver(device::Deliver { seq: 1, notification: Some(n.clone()) }));
        prop_assert!(matches!(device_codec::encode(&f), Err(CodecError::TooLarge { .. })), "encode");
        prop_assert!(matches!(device_codec::decode(&f.encode_to_vec()), Err(CodecError::TooLarge { .. })), "decode");
        let m = DaemonMessage {
            request_id: 0,
            body: Some(daemon_message::Body::Notification(app::Delivery { notification: Some(n), ..Default::default() })),
        };
        prop_assert!(matches!(app_codec::to_vec(&m), Err(CodecError::TooLarge { .. })), "app encode");
    }
}
