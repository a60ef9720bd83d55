//! Unit tests of the [`Store`] contract on [`RedbStore`]: queue order, cumulative
//! ack, expiry, collapse, tokens, persistence, and the one-commit decisions
//! (quota, idempotency keys, forced logout) with exact counters.

use syspush_proto::common::Notification;

use crate::ids::hash_secret;
use crate::store::{
    AppRecord, DailyQuota, IDEMPOTENCY_WINDOW_MS, IdempotencyKey, Store, StoreError, Submit,
    Submitted, TokenState,
};
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

fn sent(app: &str, id: &str, sent_at_ms: u64) -> Notification {
    Notification {
        sent_at_ms,
        ..msg(app, id, 0)
    }
}

fn keyed(key: &str, fingerprint: u8) -> Submit {
    Submit {
        idempotency: Some(IdempotencyKey {
            key: key.into(),
            fingerprint: [fingerprint; 32],
        }),
        ..Submit::default()
    }
}

fn drop_count(store: &RedbStore, reason: &str, now_ms: u64) -> u64 {
    let drops = store.drops("dev", "a", now_ms).expect("drops");
    drops
        .into_iter()
        .find(|(r, _)| r == reason)
        .map_or(0, |(_, n)| n)
}

#[test]
fn submit_takes_the_quota_with_the_message() {
    let (_d, store) = open();
    let how = Submit {
        quota: Some(DailyQuota { day: 3, limit: 1 }),
        ..Submit::default()
    };
    let first = store.submit("dev", &sent("a", "m1", 1), &how);
    assert!(matches!(first, Ok(Submitted::Queued(_))), "{first:?}");
    let second = store.submit("dev", &sent("a", "m2", 2), &how);
    assert!(matches!(second, Ok(Submitted::OverQuota)), "{second:?}");
    assert_eq!(store.quota_used("a", "dev", 3).expect("quota"), 1);
    assert_eq!(store.queue_len("dev").expect("len"), 1);
    assert_eq!(drop_count(&store, "quota", 2), 1);
}

#[test]
fn an_idempotency_key_answers_its_first_message_for_24_hours() {
    let (dir, store) = open();
    let t0 = 1_000;
    let first = store.submit("dev", &sent("a", "m1", t0), &keyed("k", 1));
    assert!(matches!(first, Ok(Submitted::Queued(_))), "{first:?}");
    // A retry: the first id, nothing created.
    let retry = store.submit("dev", &sent("a", "m2", t0 + 5), &keyed("k", 1));
    assert_eq!(
        retry.expect("retry"),
        Submitted::Replayed {
            message_id: "m1".into(),
            expired: false
        }
    );
    // The same key for another request.
    let reuse = store.submit("dev", &sent("a", "m3", t0 + 6), &keyed("k", 2));
    assert_eq!(reuse.expect("reuse"), Submitted::KeyReused);
    // Keys are per app.
    let other = store.submit("dev", &sent("b", "m4", t0 + 7), &keyed("k", 2));
    assert!(matches!(other, Ok(Submitted::Queued(_))), "{other:?}");
    assert_eq!(ids(&store, "dev", 0).len(), 2);
    // Still remembered at the last millisecond of the window, free after it.
    let last = t0 + IDEMPOTENCY_WINDOW_MS - 1;
    let late = store.submit("dev", &sent("a", "m5", last), &keyed("k", 2));
    assert_eq!(late.expect("late"), Submitted::KeyReused);
    let after = t0 + IDEMPOTENCY_WINDOW_MS;
    let fresh = store.submit("dev", &sent("a", "m6", after), &keyed("k", 2));
    assert!(matches!(fresh, Ok(Submitted::Queued(_))), "{fresh:?}");
    // A key remembered through a restart (it is in the same commit).
    drop(store);
    let store = RedbStore::open(&dir.path().join("gw.redb")).expect("reopen");
    let again = store.submit("dev", &sent("a", "m7", after + 1), &keyed("k", 2));
    assert_eq!(
        again.expect("again"),
        Submitted::Replayed {
            message_id: "m6".into(),
            expired: false
        }
    );
}

#[test]
fn a_message_expired_on_arrival_is_counted_and_its_key_remembered() {
    let (_d, store) = open();
    let how = Submit {
        expired_on_arrival: true,
        ..keyed("k", 1)
    };
    let first = store.submit("dev", &sent("a", "m1", 1), &how);
    assert_eq!(first.expect("first"), Submitted::Expired);
    let retry = store.submit("dev", &sent("a", "m2", 2), &how);
    assert_eq!(
        retry.expect("retry"),
        Submitted::Replayed {
            message_id: "m1".into(),
            expired: true
        }
    );
    assert_eq!(store.queue_len("dev").expect("len"), 0);
    assert_eq!(drop_count(&store, "expired", 2), 1);
}

#[test]
fn a_forced_logout_records_the_notice_with_the_revocation() {
    let (_d, store) = open();
    store.register_token("dev", "a", "tok").expect("register");
    store.enqueue("dev", &msg("a", "m", 0)).expect("enqueue");
    let rec = store.revoke_exact("tok", "bye").expect("revoke");
    assert_eq!(rec.map(|r| r.state), Some(TokenState::Live));
    assert_eq!(
        store.revocations("dev").expect("revocations"),
        vec![("a".into(), "tok".into(), "bye".into())]
    );
    assert_eq!(drop_count(&store, "revoked", 0), 1);
    // Already revoked: nothing more.
    assert_eq!(store.revoke_exact("tok", "again").expect("revoke"), None);
    assert_eq!(store.revocations("dev").expect("revocations").len(), 1);
}

#[test]
fn expired_messages_count_when_read_before_any_sweep() {
    let (_d, store) = open();
    store
        .enqueue("dev", &msg("a", "m", 1_000))
        .expect("enqueue");
    store
        .enqueue("dev", &msg("other", "o", 1_000))
        .expect("enqueue");
    assert_eq!(store.pending_for("dev", "a", 500).expect("pending"), 1);
    assert_eq!(drop_count(&store, "expired", 500), 0);
    // Past its expiry, nothing having read the queue: expired, not pending.
    assert_eq!(store.pending_for("dev", "a", 2_000).expect("pending"), 0);
    assert_eq!(drop_count(&store, "expired", 2_000), 1);
    // The sweep moves it to the stored counter: still counted once.
    store.read_after("dev", 0, 10, 2_000).expect("read");
    assert_eq!(drop_count(&store, "expired", 2_000), 1);
}
