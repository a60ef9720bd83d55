//! Unit tests of the [`Store`] contract on [`RedbStore`]: queue order, cumulative
//! ack, expiry, collapse, tokens, persistence.

use syspush_proto::common::Notification;

use crate::ids::hash_secret;
use crate::store::{AppRecord, Store, StoreError, TokenState};
use crate::store_redb::RedbStore;

fn open() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbStore::open(&dir.path().join("gw.redb")).expect("open");
    (dir, store)
}

fn msg(app: &str, id: &str, expires_at_ms: u64) -> Notification {
    Notification {
        message_id: id.into(),
        app_id: app.into(),
        ttl: 60,
        expires_at_ms,
        ..Default::default()
    }
}

fn ids(store: &RedbStore, device: &str, after: u64) -> Vec<(u64, String)> {
    let batch = store.read_after(device, after, 1000, 1).expect("read");
    batch
        .messages
        .into_iter()
        .map(|(s, n)| (s, n.message_id))
        .collect()
}

#[test]
fn queue_is_ordered_per_device_and_seqs_increase() {
    let (_d, store) = open();
    for i in 1..=3 {
        let e = store
            .enqueue("dev", &msg("a", &format!("m{i}"), 0))
            .expect("enqueue");
        assert_eq!(e.seq, i);
    }
    assert_eq!(
        store
            .enqueue("other", &msg("a", "x", 0))
            .expect("enqueue")
            .seq,
        1
    );
    assert_eq!(
        ids(&store, "dev", 0),
        vec![(1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
    );
    assert_eq!(ids(&store, "dev", 2), vec![(3, "m3".into())]);
    assert_eq!(ids(&store, "other", 0), vec![(1, "x".into())]);
    assert_eq!(store.last_seq("dev").expect("last"), 3);
    assert_eq!(store.last_seq("nobody").expect("last"), 0);
}

#[test]
fn ack_deletes_up_to_seq_only() {
    let (_d, store) = open();
    for i in 1..=5 {
        store
            .enqueue("dev", &msg("a", &format!("m{i}"), 0))
            .expect("enqueue");
    }
    assert_eq!(store.ack("dev", 3).expect("ack"), 3);
    assert_eq!(store.ack("dev", 3).expect("ack"), 0);
    assert_eq!(
        ids(&store, "dev", 0),
        vec![(4, "m4".into()), (5, "m5".into())]
    );
    // Seqs keep increasing after acks (never reused).
    assert_eq!(
        store
            .enqueue("dev", &msg("a", "m6", 0))
            .expect("enqueue")
            .seq,
        6
    );
    assert_eq!(store.queue_len("dev").expect("len"), 3);
}

#[test]
fn read_after_is_batched() {
    let (_d, store) = open();
    for i in 1..=5 {
        store
            .enqueue("dev", &msg("a", &format!("m{i}"), 0))
            .expect("enqueue");
    }
    let b = store.read_after("dev", 0, 2, 1).expect("read");
    assert_eq!(
        b.messages.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(b.more);
    let b = store.read_after("dev", 4, 2, 1).expect("read");
    assert_eq!(b.messages.len(), 1);
    assert!(!b.more);
    assert!(
        store
            .read_after("dev", u64::MAX, 2, 1)
            .expect("read")
            .messages
            .is_empty()
    );
}

#[test]
fn expired_messages_are_skipped_and_deleted() {
    let (_d, store) = open();
    store
        .enqueue("dev", &msg("a", "old", 1_000))
        .expect("enqueue");
    store
        .enqueue("dev", &msg("a", "fresh", 10_000))
        .expect("enqueue");
    store
        .enqueue("dev", &msg("a", "forever", 0))
        .expect("enqueue");
    let b = store.read_after("dev", 0, 10, 5_000).expect("read");
    let got: Vec<_> = b
        .messages
        .iter()
        .map(|(_, n)| n.message_id.as_str())
        .collect();
    assert_eq!(got, vec!["fresh", "forever"]);
    assert_eq!(store.queue_len("dev").expect("len"), 2);
}

#[test]
fn expiry_boundary() {
    let (_d, store) = open();
    store
        .enqueue("dev", &msg("a", "m", 1_000))
        .expect("enqueue");
    assert_eq!(
        store
            .read_after("dev", 0, 10, 1_000)
            .expect("read")
            .messages
            .len(),
        1
    );
    assert!(
        store
            .read_after("dev", 0, 10, 1_001)
            .expect("read")
            .messages
            .is_empty()
    );
    assert_eq!(store.queue_len("dev").expect("len"), 0);
}

#[test]
fn collapse_key_replaces_pending_message() {
    let (_d, store) = open();
    let mut a = msg("app", "a", 0);
    a.collapse_key = "score".into();
    let mut b = msg("app", "b", 0);
    b.collapse_key = "score".into();
    let mut other_app = msg("other", "c", 0);
    other_app.collapse_key = "score".into();
    assert_eq!(store.enqueue("dev", &a).expect("enqueue").replaced, None);
    assert_eq!(
        store.enqueue("dev", &other_app).expect("enqueue").replaced,
        None
    );
    assert_eq!(store.enqueue("dev", &b).expect("enqueue").replaced, Some(1));
    assert_eq!(
        ids(&store, "dev", 0),
        vec![(2, "c".into()), (3, "b".into())]
    );
    // Once acked, the next message with the key replaces nothing.
    store.ack("dev", 3).expect("ack");
    let mut d = msg("app", "d", 0);
    d.collapse_key = "score".into();
    assert_eq!(store.enqueue("dev", &d).expect("enqueue").replaced, None);
}

#[test]
fn tokens_register_idempotently_and_revoke() {
    let (_d, store) = open();
    let t1 = store
        .register_token("dev", "app", "tok1")
        .expect("register");
    assert_eq!(t1, "tok1");
    // Idempotent while live: the candidate is ignored.
    assert_eq!(
        store
            .register_token("dev", "app", "tok2")
            .expect("register"),
        "tok1"
    );
    assert_eq!(store.token("tok2").expect("token"), None);
    let rec = store.token("tok1").expect("token").expect("exists");
    assert_eq!(
        (rec.device_id.as_str(), rec.app_id.as_str(), rec.state),
        ("dev", "app", TokenState::Live)
    );

    store
        .enqueue("dev", &msg("app", "for-app", 0))
        .expect("enqueue");
    store
        .enqueue("dev", &msg("keep", "for-keep", 0))
        .expect("enqueue");
    assert_eq!(
        store.revoke_token("dev", "app").expect("revoke"),
        Some("tok1".into())
    );
    assert_eq!(
        store.token("tok1").expect("token").expect("exists").state,
        TokenState::Revoked
    );
    // The app's queued messages are gone, others stay.
    assert_eq!(ids(&store, "dev", 0), vec![(2, "for-keep".into())]);
    assert_eq!(store.revoke_token("dev", "app").expect("revoke"), None);
    // After revoke a new token is issued.
    assert_eq!(
        store
            .register_token("dev", "app", "tok3")
            .expect("register"),
        "tok3"
    );
}

#[test]
fn apps_and_devices() {
    let (_d, store) = open();
    store
        .create_device("dev", &hash_secret("s"))
        .expect("device");
    assert_eq!(
        store.device_secret_hash("dev").expect("get"),
        Some(hash_secret("s"))
    );
    assert_eq!(store.device_secret_hash("nope").expect("get"), None);

    let app = AppRecord {
        app_id: "a".into(),
        key_hash: hash_secret("k1"),
        allowed_classes: vec!["system".into()],
    };
    store.put_app(&app).expect("put");
    assert_eq!(
        store.app_by_key_hash(&hash_secret("k1")).expect("get"),
        Some(app.clone())
    );
    assert!(app.allows("system") && app.allows("operational") && !app.allows("important"));
    // Replacing the app retires the old key.
    let app2 = AppRecord {
        key_hash: hash_secret("k2"),
        ..app
    };
    store.put_app(&app2).expect("put");
    assert_eq!(
        store.app_by_key_hash(&hash_secret("k1")).expect("get"),
        None
    );
    assert_eq!(store.app("a").expect("get"), Some(app2));
}

#[test]
fn data_survives_reopen_and_second_open_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.redb");
    {
        let store = RedbStore::open(&path).expect("open");
        store.enqueue("dev", &msg("a", "m1", 0)).expect("enqueue");
        assert!(matches!(RedbStore::open(&path), Err(StoreError::Locked)));
    }
    let store = RedbStore::open(&path).expect("reopen");
    assert_eq!(ids(&store, "dev", 0), vec![(1, "m1".into())]);
}
