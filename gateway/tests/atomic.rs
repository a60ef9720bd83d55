//! One commit per decision: a send that takes quota, and a forced logout that
//! must reach the device, each change the store in a single transaction, so a
//! crash can never leave half of it behind (quota spent on nothing; a token
//! revoked that the device is never told about).
//!
//! The crash is simulated with [`CrashStore`], a [`Store`] that lets a given
//! number of writes through and fails every write after that, as if the
//! process had died there; the test then reads what the real store kept.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{APP, TestGateway};
use hyper::{Method, StatusCode};
use serde_json::json;
use syspush_gateway::registry::MemoryRegistry;
use syspush_gateway::store::{
    AppRecord, Batch, SecretHash, Store, StoreError, Submit, Submitted, TokenRecord,
};
use syspush_gateway::store_redb::RedbStore;
use syspush_gateway::{Gateway, admin};
use syspush_proto::common::Notification;

/// A store that fails every write once `writes_left` is used up.
struct CrashStore {
    inner: Arc<RedbStore>,
    writes_left: AtomicU64,
}

impl CrashStore {
    fn write(&self) -> Result<(), StoreError> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(StoreError::Engine("simulated crash".into()));
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }

    /// From now on, `n` more writes commit and every later one fails.
    fn crash_after(&self, n: u64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }
}

impl Store for CrashStore {
    fn create_device(&self, d: &str, h: &SecretHash) -> Result<(), StoreError> {
        self.write()?;
        self.inner.create_device(d, h)
    }
    fn device_secret_hash(&self, d: &str) -> Result<Option<SecretHash>, StoreError> {
        self.inner.device_secret_hash(d)
    }
    fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.write()?;
        self.inner.put_app(app)
    }
    fn app(&self, a: &str) -> Result<Option<AppRecord>, StoreError> {
        self.inner.app(a)
    }
    fn app_by_key_hash(&self, h: &SecretHash) -> Result<Option<AppRecord>, StoreError> {
        self.inner.app_by_key_hash(h)
    }
    fn register_token(&self, d: &str, a: &str, c: &str) -> Result<String, StoreError> {
        self.write()?;
        self.inner.register_token(d, a, c)
    }
    fn revoke_token(&self, d: &str, a: &str) -> Result<Option<String>, StoreError> {
        self.write()?;
        self.inner.revoke_token(d, a)
    }
    fn revoke_exact(&self, t: &str, r: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.write()?;
        self.inner.revoke_exact(t, r)
    }
    fn token(&self, t: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token(t)
    }
    fn submit(&self, d: &str, n: &Notification, how: &Submit) -> Result<Submitted, StoreError> {
        self.write()?;
        self.inner.submit(d, n, how)
    }
    fn read_after(&self, d: &str, after: u64, l: usize, now: u64) -> Result<Batch, StoreError> {
        self.write()?;
        self.inner.read_after(d, after, l, now)
    }
    fn ack(&self, d: &str, seq: u64) -> Result<usize, StoreError> {
        self.write()?;
        self.inner.ack(d, seq)
    }
    fn last_seq(&self, d: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(d)
    }
    fn queue_len(&self, d: &str) -> Result<usize, StoreError> {
        self.inner.queue_len(d)
    }
    fn drops(&self, d: &str, a: &str, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.drops(d, a, now)
    }
    fn pending_for(&self, d: &str, a: &str, now: u64) -> Result<u64, StoreError> {
        self.inner.pending_for(d, a, now)
    }
    fn quota_used(&self, a: &str, d: &str, day: u64) -> Result<u64, StoreError> {
        self.inner.quota_used(a, d, day)
    }
    fn revocations(&self, d: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        self.inner.revocations(d)
    }
    fn clear_revocation(&self, d: &str, t: &str) -> Result<(), StoreError> {
        self.write()?;
        self.inner.clear_revocation(d, t)
    }
}

/// A gateway on a [`CrashStore`] (with no crash armed yet).
async fn start(quota: Option<u64>) -> (TestGateway, Arc<CrashStore>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_in(dir.path());
    config.operational_daily_quota = quota;
    let app_key = admin::add_app(&config, APP, &[]).unwrap();
    let other_key = admin::add_app(&config, common::OTHER_APP, &[]).unwrap();
    let inner = Arc::new(RedbStore::open(&config.store_path()).unwrap());
    let store = Arc::new(CrashStore {
        inner,
        writes_left: AtomicU64::new(u64::MAX),
    });
    let gateway = Gateway::start_with(
        config.clone(),
        Arc::clone(&store) as _,
        Arc::new(MemoryRegistry::new()),
    )
    .await
    .unwrap();
    let client_tls = syspush_gateway::tls::client_config(&dir.path().join("tls/ca.pem")).unwrap();
    let gw = TestGateway {
        addr: gateway.local_addr(),
        gateway: Some(gateway),
        config,
        client_tls,
        app_key,
        other_key,
        dir,
    };
    (gw, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_forced_logout_never_hides_the_revocation_from_the_device() {
    let (gw, store) = start(None).await;
    let (creds, link, token) = gw.device().await;
    drop(link);
    // The process dies after the first write of the forced logout.
    store.crash_after(1);
    let path = format!("/v1/tokens/{token}");
    let _ = gw
        .request(Method::DELETE, &path, Some(&gw.app_key), b"")
        .await;
    let revoked = store.inner.token(&token).unwrap().unwrap().state
        == syspush_gateway::store::TokenState::Revoked;
    let told = !store
        .inner
        .revocations(&creds.device_id)
        .unwrap()
        .is_empty();
    assert_eq!(
        revoked, told,
        "token revoked: {revoked}, device notice recorded: {told}"
    );
    store.crash_after(u64::MAX);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_send_never_spends_quota_on_nothing() {
    let (gw, store) = start(Some(5)).await;
    let (creds, _link, token) = gw.device().await;
    // The process dies after the first write of the send.
    store.crash_after(1);
    let (status, body) = gw.send(json!({"token": token})).await;
    let day = syspush_gateway::ids::now_ms() / 86_400_000;
    let used = store.inner.quota_used(APP, &creds.device_id, day).unwrap();
    let queued = store.inner.queue_len(&creds.device_id).unwrap() as u64;
    assert_eq!(used, queued, "quota used {used}, messages queued {queued}");
    assert_eq!(status, StatusCode::OK, "{body}");
    store.crash_after(u64::MAX);
    gw.shutdown().await;
}
