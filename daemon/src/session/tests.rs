//! Virtual-time tests of the session state machine: hours of idle, dead NATs
//! and flapping gateways, each in microseconds.

use super::*;
use crate::heartbeat::HeartbeatConfig;
use syspush_proto::device::{Deliver, GoAway, Pong, ServerHello};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn hello() -> Hello {
    Hello {
        device_id: "dev".into(),
        secret: "sec".into(),
        last_committed_seq: 0,
    }
}

/// The transport went away (which way does not matter to the session).
fn lost() -> TransportError {
    TransportError::Eof
}

fn server_hello(min: u32, max: u32) -> Frame {
    frame(Body::ServerHello(ServerHello {
        session_id: "s1".into(),
        heartbeat_min_s: min,
        heartbeat_max_s: max,
        server_time_ms: 0,
    }))
}

fn drain(s: &mut Session) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Dials and completes the handshake at `now`.
fn connect(s: &mut Session, now: Duration) {
    assert!(s.wants_dial(now), "should want to dial at {now:?}");
    s.dial_started(now);
    s.transport_open(now, hello());
    let sent = drain(s);
    assert!(matches!(sent[0].body, Some(Body::ClientHello(_))));
    s.handle_frame(now, server_hello(60, 1680));
    assert!(s.is_live());
    events(s);
}

fn closed_redial(evs: &[Event]) -> Option<(CloseReason, Duration)> {
    evs.iter().find_map(|e| match e {
        Event::Closed {
            reason,
            redial_at: Some(redial_at),
        } => Some((reason.clone(), *redial_at)),
        _ => None,
    })
}

#[test]
fn hello_carries_resume_point() {
    let mut s = Session::new(SessionConfig::default(), S, 1);
    s.dial_started(S);
    s.transport_open(
        S,
        Hello {
            last_committed_seq: 42,
            ..hello()
        },
    );
    match drain(&mut s).remove(0).body {
        Some(Body::ClientHello(h)) => {
            assert_eq!(h.last_committed_seq, 42);
            assert_eq!(h.protocol_version, PROTOCOL_VERSION);
            assert_eq!(h.device_id, "dev");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn three_hours_idle_is_one_ping_per_interval() {
    let cfg = SessionConfig {
        heartbeat: HeartbeatConfig::fixed(270 * S),
        ..Default::default()
    };
    let mut s = Session::new(cfg, Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    let mut now = Duration::ZERO;
    let mut pings = vec![];
    let end = Duration::from_secs(3 * 3600);
    loop {
        let t = s.poll_timeout().expect("live session has a deadline");
        assert!(t > now, "deadline must move forward (no busy loop)");
        if t >= end {
            break;
        }
        now = t;
        s.handle_timeout(now);
        for f in drain(&mut s) {
            match f.body {
                Some(Body::Ping(p)) => {
                    pings.push(now);
                    // The gateway answers 80 ms later.
                    s.handle_frame(now + 80 * MS, frame(Body::Pong(Pong { nonce: p.nonce })));
                }
                other => panic!("only pings expected while idle, got {other:?}"),
            }
        }
        // Nothing to act on but (once) what the heartbeat proved.
        assert!(
            events(&mut s)
                .iter()
                .all(|e| matches!(e, Event::Learned(_)))
        );
    }
    // 10800 s / (270 s + 80 ms) = 39.99 -> 39 pings, each one interval apart.
    assert_eq!(pings.len(), 39);
    for w in pings.windows(2) {
        assert_eq!(w[1] - w[0], 270 * S + 80 * MS);
    }
}

#[test]
fn any_frame_is_proof_of_life() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    let t = s.poll_timeout().expect("deadline");
    assert_eq!(t, 270 * S);
    s.handle_timeout(t);
    assert!(matches!(drain(&mut s)[0].body, Some(Body::Ping(_))));
    // A delivery instead of a Pong.
    s.handle_frame(
        t + 2 * S,
        frame(Body::Deliver(Deliver {
            seq: 1,
            notification: None,
        })),
    );
    assert_eq!(s.poll_timeout(), Some(t + 2 * S + 270 * S));
    s.handle_timeout(t + 11 * S);
    assert!(s.is_live());
    // Traffic postpones the next ping.
    s.handle_frame(t + 100 * S, frame(Body::Pong(Pong { nonce: 9 })));
    assert_eq!(s.poll_timeout(), Some(t + 370 * S));
}

#[test]
fn missing_pong_closes_and_first_redial_is_immediate() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    let ping_at = s.poll_timeout().expect("deadline");
    s.handle_timeout(ping_at);
    assert!(matches!(drain(&mut s)[0].body, Some(Body::Ping(_))));
    // The NAT dropped the mapping: nothing comes back.
    let dead_at = s.poll_timeout().expect("pong deadline");
    assert_eq!(dead_at, ping_at + 10 * S);
    s.handle_timeout(dead_at - MS);
    assert!(s.is_live());
    s.handle_timeout(dead_at);
    let (reason, redial_at) = closed_redial(&events(&mut s)).expect("closed");
    assert_eq!(reason, CloseReason::PongTimeout);
    assert_eq!(
        redial_at, dead_at,
        "first redial after a stable link has no backoff"
    );
    assert!(s.wants_dial(dead_at));
    assert!(drain(&mut s).is_empty());
}

#[test]
fn backoff_grows_with_jitter_and_resets_after_stable_connection() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 7);
    let mut now = Duration::ZERO;
    let mut delays = vec![];
    for _ in 0..12 {
        assert!(s.wants_dial(now));
        s.dial_started(now);
        now += 50 * MS;
        s.transport_failed(now, lost());
        let (_, redial_at) = closed_redial(&events(&mut s)).expect("closed");
        delays.push(redial_at - now);
        assert!(!s.wants_dial(redial_at.saturating_sub(MS)) || redial_at == now);
        now = redial_at;
    }
    // Ceilings 1, 2, 4, ... 256, 300, 300 s; full jitter stays under each.
    let ceilings: Vec<u64> = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].to_vec();
    for (d, c) in delays.iter().zip(&ceilings) {
        assert!(*d <= Duration::from_secs(*c), "{d:?} over {c}s");
    }
    // Grows: the late delays are (with this seed) well above the early ones, and jittered.
    let late: Duration = delays[8..].iter().sum();
    let early: Duration = delays[..4].iter().sum();
    assert!(late > early * 4, "early {early:?} late {late:?}");
    assert!(delays.windows(2).any(|w| w[0] != w[1]));

    // A connection that stays up 60 s resets it: the next redial is immediate.
    connect(&mut s, now);
    now += 61 * S;
    s.handle_frame(now, frame(Body::Pong(Pong { nonce: 0 })));
    s.transport_failed(now, lost());
    let (_, redial_at) = closed_redial(&events(&mut s)).expect("closed");
    assert_eq!(redial_at, now);
    // ... and a failure right after backs off again from the base.
    s.dial_started(now);
    s.transport_failed(now, lost());
    let (_, redial_at) = closed_redial(&events(&mut s)).expect("closed");
    assert!(redial_at - now <= S);
}

#[test]
fn short_lived_connections_do_not_reset_backoff() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 3);
    for _ in 0..10 {
        let now = s.poll_timeout().expect("dial time");
        connect(&mut s, now);
        s.transport_failed(now + 5 * S, lost());
        events(&mut s);
    }
    assert!(s.redial.ceiling() >= Duration::from_secs(256));
    assert_eq!(s.reconnects(), 9);
}

#[test]
fn goaway_retry_after_is_respected() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    let now = 120 * S;
    s.handle_frame(
        now,
        frame(Body::Goaway(GoAway {
            reason: "maintenance".into(),
            retry_after_s: 90,
        })),
    );
    let (reason, redial_at) = closed_redial(&events(&mut s)).expect("closed");
    assert!(matches!(reason, CloseReason::GoAway { .. }));
    assert_eq!(redial_at, now + 90 * S);
    assert!(!s.wants_dial(now + 89 * S));
    assert!(s.wants_dial(now + 90 * S));
}

#[test]
fn deliveries_are_acked_once_per_commit() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    for seq in 1..=3 {
        s.handle_frame(
            S,
            frame(Body::Deliver(Deliver {
                seq,
                notification: Some(Default::default()),
            })),
        );
    }
    let evs = events(&mut s);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::Deliver { .. }))
            .count(),
        3
    );
    assert!(drain(&mut s).is_empty(), "no ack before the commit");
    s.committed(3);
    let sent = drain(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, Some(Body::Ack(device::Ack { seq: 3 })));
    s.committed(2);
    s.committed(3);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn heartbeat_is_clamped_to_gateway_bounds() {
    for (want, min, max, got) in [
        (270, 60, 1680, 270),
        (30, 60, 1680, 60),
        (3000, 60, 1680, 1680),
        (270, 0, 0, 270),
    ] {
        let cfg = SessionConfig {
            heartbeat: HeartbeatConfig {
                initial: Duration::from_secs(want),
                min: S,
                max: Duration::from_secs(86_400),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut s = Session::new(cfg, Duration::ZERO, 1);
        s.dial_started(Duration::ZERO);
        s.transport_open(Duration::ZERO, hello());
        s.handle_frame(Duration::ZERO, server_hello(min, max));
        assert_eq!(s.heartbeat(), Some(Duration::from_secs(got)));
    }
}

#[test]
fn handshake_timeout_and_rejection() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    s.dial_started(Duration::ZERO);
    s.transport_open(S, hello());
    assert_eq!(s.poll_timeout(), Some(30 * S));
    s.handle_timeout(30 * S);
    assert_eq!(
        closed_redial(&events(&mut s)).expect("closed").0,
        CloseReason::HandshakeTimeout
    );

    let now = s.poll_timeout().expect("redial");
    s.dial_started(now);
    s.transport_open(now, hello());
    s.handle_frame(
        now,
        frame(Body::Error(device::Error {
            code: 2,
            message: "bad secret".into(),
            request_id: 0,
        })),
    );
    let (reason, _) = closed_redial(&events(&mut s)).expect("closed");
    assert!(matches!(reason, CloseReason::Rejected { code: 2, .. }));
}

#[test]
fn requests_wait_for_a_session_and_survive_reconnects() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    let id = s.register("com.example.chat");
    let gone = s.register("com.example.gone");
    s.cancel(gone);
    assert!(drain(&mut s).is_empty());
    connect_keep_frames(&mut s, Duration::ZERO);
    let sent = drain(&mut s);
    assert_eq!(sent.len(), 1);
    assert!(matches!(&sent[0].body, Some(Body::Register(r)) if r.request_id == id));
    // Link drops before the answer: resent on the next session.
    s.transport_failed(S, lost());
    events(&mut s);
    let now = s.poll_timeout().expect("redial");
    connect_keep_frames(&mut s, now);
    let sent = drain(&mut s);
    assert!(matches!(&sent[0].body, Some(Body::Register(r)) if r.request_id == id));
    s.handle_frame(
        now,
        frame(Body::Registered(device::Registered {
            request_id: id,
            app_id: "com.example.chat".into(),
            token: "t".into(),
        })),
    );
    assert!(events(&mut s).contains(&Event::Registered {
        request_id: id,
        app_id: "com.example.chat".into(),
        token: "t".into()
    }));
    // Failure answers map to RequestFailed.
    let un = s.unregister("x");
    drain(&mut s);
    s.handle_frame(
        now,
        frame(Body::Error(device::Error {
            code: 4,
            message: "unknown app".into(),
            request_id: un,
        })),
    );
    assert!(
        matches!(events(&mut s)[..], [Event::RequestFailed { request_id, code: 4, .. }] if request_id == un)
    );
    assert!(s.is_live(), "a request error does not end the session");
}

fn connect_keep_frames(s: &mut Session, now: Duration) {
    s.dial_started(now);
    s.transport_open(now, hello());
    assert!(matches!(
        s.poll_transmit().expect("hello").body,
        Some(Body::ClientHello(_))
    ));
    s.handle_frame(now, server_hello(60, 1680));
}

#[test]
fn shutdown_sends_goaway_only_when_connected() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    assert!(!s.shutdown());
    assert_eq!(s.poll_timeout(), None);
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    assert!(s.shutdown());
    assert!(matches!(
        drain(&mut s)[..],
        [Frame {
            body: Some(Body::Goaway(_))
        }]
    ));
    assert!(s.is_disconnected());
}

#[test]
fn gateway_ping_is_answered() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    s.handle_frame(S, frame(Body::Ping(device::Ping { nonce: 77 })));
    assert_eq!(drain(&mut s)[0].body, Some(Body::Pong(Pong { nonce: 77 })));
}

/// Answers every Ping at once while the NAT keeps mappings for `nat`; returns
/// (pings, closes) until `end`.
fn run_behind_nat(s: &mut Session, mut now: Duration, nat: Duration, end: Duration) -> (u64, u64) {
    let (mut pings, mut closes) = (0, 0);
    let mut last_rx = now;
    while let Some(t) = s.poll_timeout() {
        if t >= end {
            break;
        }
        now = t;
        if s.wants_dial(now) {
            connect(s, now);
            last_rx = now;
            continue;
        }
        s.handle_timeout(now);
        for f in drain(s) {
            if let Some(Body::Ping(p)) = f.body {
                pings += 1;
                if now - last_rx < nat {
                    s.handle_frame(now, frame(Body::Pong(Pong { nonce: p.nonce })));
                    last_rx = now;
                }
            }
        }
        closes += events(s)
            .iter()
            .filter(|e| matches!(e, Event::Closed { .. }))
            .count() as u64;
    }
    (pings, closes)
}

#[test]
fn the_heartbeat_learns_the_nat_timeout_and_redials_at_once_on_a_dead_mapping() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    let nat = 600 * S;
    let (_, closes) = run_behind_nat(&mut s, Duration::ZERO, nat, 6 * 3600 * S);
    let hb = s.heartbeat().expect("live");
    assert!(hb * 4 >= nat * 3 && hb < nat, "learned {hb:?}");
    assert_eq!(s.heartbeat_state(), HeartbeatState::Stable);
    assert!(closes <= 4, "{closes} dead mappings while learning");
    // Settled: the next day has only the re-probes of the ceiling.
    let (pings, closes) = run_behind_nat(&mut s, 6 * 3600 * S, nat, 30 * 3600 * S);
    assert!(closes <= 2, "{closes}");
    assert!(pings <= 24 * 3600 / 540 + 3, "{pings} pings in a day");
}

#[test]
fn a_pong_timeout_counts_against_the_interval_and_redials_without_backoff() {
    let cfg = SessionConfig {
        heartbeat: HeartbeatConfig {
            initial: 20 * S,
            min: 5 * S,
            ..Default::default()
        },
        pong_timeout: 2 * S,
        ..Default::default()
    };
    let mut s = Session::new(cfg, Duration::ZERO, 1);
    s.dial_started(Duration::ZERO);
    s.transport_open(Duration::ZERO, hello());
    drain(&mut s);
    s.handle_frame(Duration::ZERO, server_hello(1, 1680));
    events(&mut s);
    s.handle_timeout(20 * S);
    assert!(matches!(drain(&mut s)[0].body, Some(Body::Ping(_))));
    s.handle_timeout(22 * S);
    let evs = events(&mut s);
    let learned = evs.iter().find_map(|e| match e {
        Event::Learned(l) => Some(*l),
        _ => None,
    });
    assert_eq!(learned.and_then(|l| l.ceiling), Some(20 * S));
    // Live for 20 s only (under stable_after), yet the redial is immediate.
    assert_eq!(
        closed_redial(&evs),
        Some((CloseReason::PongTimeout, 22 * S))
    );
    s.dial_started(22 * S);
    s.transport_open(22 * S, hello());
    s.handle_frame(22 * S, server_hello(1, 1680));
    assert_eq!(
        s.heartbeat(),
        Some(16 * S),
        "stepped back below the failure"
    );
}

#[test]
fn without_a_network_nothing_is_dialed_and_its_return_dials_at_once() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 5);
    // Several failed dials build up a backoff.
    let mut now = Duration::ZERO;
    for _ in 0..8 {
        now = s.poll_timeout().expect("dial time");
        s.dial_started(now);
        s.transport_failed(now, lost());
        events(&mut s);
    }
    s.network_lost(now);
    assert!(s.is_offline());
    assert_eq!(s.poll_timeout(), None, "no timer while offline");
    assert!(!s.wants_dial(now + 3600 * S));
    let back = now + 3600 * S;
    let learned = Learned {
        good: Some(900 * S),
        ceiling: Some(1000 * S),
    };
    s.network_up(back, Some(learned));
    assert!(s.wants_dial(back), "dials the moment the network is back");
    connect(&mut s, back);
    assert_eq!(s.heartbeat(), Some(895 * S), "starts from what was learned");
    assert_eq!(s.heartbeat_state(), HeartbeatState::Stable);
    // A change of network while live drops the connection, without a verdict.
    s.network_up(back + 10 * S, None);
    let evs = events(&mut s);
    assert_eq!(
        closed_redial(&evs),
        Some((CloseReason::NetworkChanged, back + 10 * S))
    );
    assert!(!evs.iter().any(|e| matches!(e, Event::Learned(_))));
    // Losing it while live: closed, waiting with no redial time.
    connect(&mut s, back + 10 * S);
    s.network_lost(back + 20 * S);
    assert!(events(&mut s).iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: CloseReason::NetworkLost,
            redial_at: None
        }
    )));
    assert!(s.is_disconnected() && s.poll_timeout().is_none());
}

#[test]
fn idle_is_told_at_once_and_in_every_hello() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    s.set_idle(true);
    s.dial_started(Duration::ZERO);
    s.transport_open(Duration::ZERO, hello());
    match drain(&mut s).remove(0).body {
        Some(Body::ClientHello(h)) => assert!(h.idle),
        other => panic!("unexpected {other:?}"),
    }
    s.handle_frame(Duration::ZERO, server_hello(60, 1680));
    s.set_idle(false);
    s.set_idle(false);
    let sent = drain(&mut s);
    assert_eq!(
        sent.iter().map(|f| f.body.clone()).collect::<Vec<_>>(),
        vec![Some(Body::SetIdle(device::SetIdle { idle: false }))]
    );
    assert!(!s.idle());
}

#[test]
fn the_driver_is_told_to_drop_the_transport_once_per_close() {
    let mut s = Session::new(SessionConfig::default(), Duration::ZERO, 1);
    connect(&mut s, Duration::ZERO);
    assert_eq!(s.poll_driver_event(), None, "a live session needs nothing");
    s.transport_failed(S, lost());
    assert_eq!(s.poll_driver_event(), Some(DriverEvent::Disconnect));
    assert_eq!(s.poll_driver_event(), None);
    // Application events are a separate queue: the close is there too.
    assert!(closed_redial(&events(&mut s)).is_some());
    // A dial failure leaves one for a transport that never was: the next dial forgets it.
    let now = s.poll_timeout().expect("redial");
    s.dial_started(now);
    s.transport_failed(now, lost());
    let now = s.poll_timeout().expect("redial");
    s.dial_started(now);
    assert_eq!(s.poll_driver_event(), None);
}

#[path = "liveness_tests.rs"]
mod liveness;
