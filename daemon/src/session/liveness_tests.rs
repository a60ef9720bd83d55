//! Virtual-time tests of what proves the path alive and what says it is
//! dead: bytes that are not a frame teach the heartbeat nothing, a close
//! message from the gateway neither; a silent gateway's transport is reset,
//! a closed one's is closed; and what the next session's heartbeat will be.

use super::*;
use crate::link::error::Shared;

/// A live session on a network with `good` 600 s and `ceiling` 700 s learned,
/// its Ping just sent; returns when it was sent.
fn ping_outstanding(s: &mut Session) -> Duration {
    s.network_up(
        Duration::ZERO,
        Some(Learned {
            good: Some(600 * S),
            ceiling: Some(700 * S),
        }),
    );
    connect(s, Duration::ZERO);
    let ping_at = s.poll_timeout().expect("ping time");
    s.handle_timeout(ping_at);
    assert!(matches!(drain(s)[0].body, Some(Body::Ping(_))));
    assert_eq!(s.poll_driver_event(), None);
    ping_at
}

fn learned_events(evs: &[Event]) -> Vec<Learned> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Learned(l) => Some(*l),
            _ => None,
        })
        .collect()
}

/// A frame that does not decode.
fn bad_frame() -> ProtocolError {
    let e = syspush_proto::device_codec::decode(&[0xff; 3]).expect_err("garbage");
    ProtocolError::BadFrame(Shared::new(e))
}

#[test]
fn a_bad_frame_with_a_ping_outstanding_is_no_heartbeat_failure() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    let ping_at = ping_outstanding(&mut s);
    let (learned, interval) = (s.learned(), s.heartbeat());
    let error = bad_frame();
    // Bytes arrived: the mapping is alive, whatever they were.
    s.handle_malformed(ping_at + S, error.clone());
    let evs = events(&mut s);
    assert_eq!(learned_events(&evs), vec![], "nothing taught to the policy");
    let (reason, redial_at) = closed_redial(&evs).expect("closed");
    assert_eq!(reason, CloseReason::Protocol(error), "a protocol error");
    assert_eq!(s.last_rx(), Some(ping_at + S), "they were received");
    assert_eq!(
        s.poll_driver_event(),
        Some(DriverEvent::Disconnect),
        "the gateway is not silent: a normal close"
    );
    assert_eq!(s.learned(), learned, "good and ceiling unchanged");
    connect(&mut s, redial_at);
    assert_eq!(s.heartbeat(), interval, "the learned interval is unchanged");
}

#[test]
fn a_text_message_or_a_close_with_a_ping_outstanding_is_no_heartbeat_failure() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    let ping_at = ping_outstanding(&mut s);
    let learned = s.learned();
    s.handle_malformed(ping_at + S, ProtocolError::UnexpectedText);
    assert_eq!(learned_events(&events(&mut s)), vec![]);
    assert_eq!(s.learned(), learned);

    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    let ping_at = ping_outstanding(&mut s);
    s.transport_failed(ping_at + S, TransportError::closed(None));
    assert_eq!(learned_events(&events(&mut s)), vec![]);
    assert_eq!(s.learned(), learned);
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Disconnect));

    // Whereas a connection that dies with nothing received is a failure.
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    let ping_at = ping_outstanding(&mut s);
    s.transport_failed(ping_at + S, TransportError::Eof);
    assert_ne!(learned_events(&events(&mut s)), vec![]);
    assert_ne!(s.learned(), learned);
}

#[test]
fn a_silent_gateway_is_reset_and_others_are_closed() {
    // A Ping that goes unanswered: reset.
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    let ping_at = ping_outstanding(&mut s);
    s.handle_timeout(ping_at + 10 * S);
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Abort));
    assert_eq!(s.poll_driver_event(), None);
    // A handshake that goes unanswered: reset.
    let now = s.poll_timeout().expect("redial");
    s.dial_started(now);
    s.transport_open(now, hello());
    let deadline = s.poll_timeout().expect("handshake deadline");
    s.handle_timeout(deadline);
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Abort));
    // A write that never completes: reset.
    let now = s.poll_timeout().expect("redial");
    connect(&mut s, now);
    s.transport_failed(now + S, TransportError::SendStalled);
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Abort));
    // A GoAway, a network change: a normal close.
    let now = s.poll_timeout().expect("redial");
    connect(&mut s, now);
    s.handle_frame(
        now + S,
        frame(Body::Goaway(GoAway {
            reason: "restart".into(),
            retry_after_s: 0,
        })),
    );
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Disconnect));
    let now = s.poll_timeout().expect("redial");
    connect(&mut s, now);
    s.network_up(now + S, None);
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Disconnect));
}

#[test]
fn between_connections_the_planned_heartbeat_is_what_was_learned() {
    let cfg = SessionConfig {
        heartbeat: HeartbeatConfig {
            initial: 270 * S,
            min: 5 * S,
            ..Default::default()
        },
        pong_timeout: 2 * S,
        ..Default::default()
    };
    let mut s = Session::new(cfg, Duration::ZERO, 1);
    assert_eq!(s.planned_heartbeat(), Some(270 * S), "nothing learned yet");
    s.dial_started(Duration::ZERO);
    s.transport_open(Duration::ZERO, hello());
    s.handle_frame(Duration::ZERO, server_hello(1, 1680));
    assert_eq!(s.planned_heartbeat(), s.heartbeat());
    s.handle_timeout(270 * S);
    s.handle_timeout(272 * S);
    assert!(!s.is_live());
    assert_eq!(s.heartbeat(), None);
    assert_eq!(
        s.planned_heartbeat(),
        Some(216 * S),
        "the reconnect steps back below the failure, not to the configured 270 s"
    );
    s.network_lost(273 * S);
    assert_eq!(s.planned_heartbeat(), None, "no network, nothing known");
}
