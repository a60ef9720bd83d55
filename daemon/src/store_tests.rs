//! Store tests on a real redb file in a temp dir.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use syspush_proto::common::Notification;

use super::schema::SEEN;
use super::*;

fn n(id: &str, app: &str, expires_at_ms: u64) -> Option<Notification> {
    Some(Notification {
        message_id: id.into(),
        app_id: app.into(),
        title: format!("title {id}"),
        expires_at_ms,
        ..Default::default()
    })
}

fn ids(v: &[Stored]) -> Vec<String> {
    v.iter()
        .map(|s| s.notification.message_id.clone())
        .collect()
}

const NOW: u64 = 1_700_000_000_000;

#[test]
fn commit_lists_in_arrival_order_and_advances_seq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    assert_eq!(s.last_committed_seq().expect("seq"), 0);
    let out = s
        .commit(
            &[
                (1, n("m1", "a", 0)),
                (2, n("m2", "b", 0)),
                (3, n("m3", "a", 0)),
            ],
            NOW,
        )
        .expect("commit");
    assert_eq!(out.last_committed_seq, 3);
    assert_eq!(out.stored.len(), 3);
    assert_eq!(s.last_committed_seq().expect("seq"), 3);
    let a = s.list("a", 0, 100, NOW).expect("list");
    assert_eq!(ids(&a), ["m1", "m3"]);
    assert_eq!(a[0].notification.title, "title m1");
    // Cursor and limit.
    assert_eq!(
        ids(&s.list("a", a[0].arrival, 100, NOW).expect("list")),
        ["m3"]
    );
    assert_eq!(ids(&s.list("a", 0, 1, NOW).expect("list")), ["m1"]);
    assert_eq!(s.pending_count("a", NOW).expect("count"), 2);
    assert_eq!(s.known_apps().expect("apps"), ["a", "b"]);
    // An app id that is a prefix of another does not see its messages.
    assert!(s.list("", 0, 100, NOW).expect("list").is_empty());
}

#[test]
fn duplicates_are_dropped_even_after_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    s.commit(&[(1, n("m1", "a", 0))], NOW).expect("commit");
    let out = s
        .commit(&[(2, n("m1", "a", 0)), (3, n("m2", "a", 0))], NOW)
        .expect("commit");
    assert_eq!(out.duplicates, 1);
    assert_eq!(out.stored.len(), 1);
    assert_eq!(out.last_committed_seq, 3);
    assert_eq!(s.ack(&["m1".into()], |_| true).expect("ack"), 1);
    let out = s.commit(&[(4, n("m1", "a", 0))], NOW).expect("commit");
    assert_eq!(out.duplicates, 1, "an acked id is still remembered");
    assert_eq!(ids(&s.list("a", 0, 100, NOW).expect("list")), ["m2"]);
}

#[test]
fn ack_removes_only_known_and_checks_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    s.commit(&[(1, n("m1", "a", 0)), (2, n("m2", "b", 0))], NOW)
        .expect("commit");
    assert_eq!(s.app_of("m2").expect("app"), Some("b".into()));
    let e = s
        .ack(&["m1".into(), "m2".into()], |app| app == "a")
        .expect_err("b not allowed");
    assert!(matches!(e, StoreError::PermissionDenied(ref app) if app == "b"));
    assert_eq!(
        s.pending_count("a", NOW).expect("count"),
        1,
        "a refused ack removes nothing"
    );
    assert_eq!(
        s.ack(&["m1".into(), "nope".into(), "m1".into()], |_| true)
            .expect("ack"),
        1
    );
    assert!(s.list("a", 0, 100, NOW).expect("list").is_empty());
}

#[test]
fn expired_messages_are_dropped_on_arrival_and_lazily() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    let out = s
        .commit(
            &[
                (1, n("old", "a", NOW - 1)),
                (2, n("soon", "a", NOW + 1000)),
                (3, n("never", "a", 0)),
            ],
            NOW,
        )
        .expect("commit");
    assert_eq!(out.expired, 1);
    assert_eq!(
        out.last_committed_seq, 3,
        "an expired message's seq still counts"
    );
    assert_eq!(
        ids(&s.list("a", 0, 100, NOW).expect("list")),
        ["soon", "never"]
    );
    let later = NOW + 2000;
    assert_eq!(s.pending_count("a", later).expect("count"), 1);
    assert_eq!(ids(&s.list("a", 0, 100, later).expect("list")), ["never"]);
    assert_eq!(
        s.app_of("soon").expect("app"),
        None,
        "lazily deleted, index too"
    );
    // Seen ids are pruned by expiry inside a later commit.
    s.commit(&[], later).expect("commit");
    let txn = s.read().expect("read");
    let seen = txn.open_table(SEEN).expect("seen");
    assert!(seen.get("soon").expect("get").is_none());
    assert!(seen.get("never").expect("get").is_some());
}

#[test]
fn state_survives_restart_and_file_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    {
        let s = Store::open(&state).expect("open");
        s.set_credentials("dev1", "secret").expect("creds");
        s.commit(&[(5, n("m5", "a", 0))], NOW).expect("commit");
        s.set_token("a", "tok").expect("token");
        // A second opener is refused while the first holds it.
        assert!(matches!(Store::open(&state), Err(StoreError::Locked(_))));
    }
    let s = Store::open(&state).expect("reopen");
    assert_eq!(
        s.credentials().expect("creds"),
        Some(("dev1".into(), "secret".into()))
    );
    assert_eq!(s.last_committed_seq().expect("seq"), 5);
    assert_eq!(ids(&s.list("a", 0, 100, NOW).expect("list")), ["m5"]);
    assert_eq!(s.token("a").expect("token"), Some("tok".into()));
    let out = s.commit(&[(6, n("m6", "a", 0))], NOW).expect("commit");
    assert!(
        out.stored[0].1 > s.list("a", 0, 1, NOW).expect("list")[0].arrival,
        "arrivals keep growing"
    );
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(s.path()), 0o600);
}

#[test]
fn drop_app_and_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    s.commit(
        &[
            (1, n("m1", "a", 0)),
            (2, n("m2", "a", 0)),
            (3, n("m3", "ab", 0)),
        ],
        NOW,
    )
    .expect("commit");
    s.set_token("a", "t1").expect("token");
    assert!(!s.remove_token("a", Some("other")).expect("remove"));
    assert_eq!(s.drop_app("a").expect("drop"), 2);
    let drops: std::collections::HashMap<_, _> = s.drops(NOW).expect("drops").into_iter().collect();
    assert_eq!(
        drops["revoked"], 2,
        "logout drops count as revoked: {drops:?}"
    );
    assert_eq!(s.token("a").expect("token"), None);
    assert_eq!(s.app_of("m1").expect("app"), None);
    assert_eq!(ids(&s.list("ab", 0, 100, NOW).expect("list")), ["m3"]);
    s.set_token("ab", "t2").expect("token");
    assert!(s.remove_token("ab", Some("t2")).expect("remove"));
}

#[test]
fn new_credentials_restart_the_sequence_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    s.commit(&[(9, None)], NOW).expect("commit");
    assert_eq!(s.last_committed_seq().expect("seq"), 9);
    s.set_credentials("dev2", "s2").expect("creds");
    assert_eq!(s.last_committed_seq().expect("seq"), 0);
}

#[test]
fn expired_messages_count_as_dropped_before_any_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Store::open(dir.path()).expect("open");
    // Live on arrival; the app stays away while the first one expires.
    s.commit(&[(1, n("m1", "a", NOW + 1_000)), (2, n("m2", "a", 0))], NOW)
        .expect("commit");
    let expired = |now: u64| -> u64 {
        s.drops(now)
            .expect("drops")
            .into_iter()
            .find(|(r, _)| r == "expired")
            .map_or(0, |(_, n)| n)
    };
    assert_eq!(expired(NOW), 0);
    assert_eq!(expired(NOW + 2_000), 1, "counted although nothing swept it");
    assert_eq!(s.pending_count("a", NOW + 2_000).expect("pending"), 1);
    // The sweep (the app connects) moves it into the counter: still one.
    assert_eq!(ids(&s.list("a", 0, 10, NOW + 2_000).expect("list")), ["m2"]);
    assert_eq!(expired(NOW + 2_000), 1, "not counted twice");
}
