//! The checkpoint signing key across KEK rotations, and the checkpoint job, over a real SQLite
//! store; the verifier over a store the service wrote.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use rcrt_core::audit::checkpoint::{
    ensure_signing_key, verify_checkpoint, CheckpointJob, CheckpointSettings,
};
use rcrt_core::audit::verify::{verify_store, TrustedKeys};
use rcrt_core::{CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::{KeyProvider, LocalKeyring};
use rcrt_store::{SqliteStore, Store};
use rcrt_types::{Principal, Scope};
use zeroize::Zeroizing;

fn kek(b: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([b; 32]))
}

async fn store() -> (rcrt_testkit::TempDir, Arc<dyn Store>) {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    (dir, store)
}

#[tokio::test]
async fn the_signing_key_follows_the_kek_and_is_made_once() {
    let (_dir, store) = store().await;
    let k1 = LocalKeyring::new(kek(1), vec![]);
    let first = ensure_signing_key(&*store, &k1, &SystemClock)
        .await
        .unwrap();
    let keys = store.audit_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, first.id());
    assert_eq!(keys[0].kek_id, k1.current_kek_id().as_str());
    assert_eq!(keys[0].public_key, first.public_key());
    let rows = store.list_audit(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].action, "audit_key_create");
    assert!(rows[0].reason.as_deref().unwrap().contains(first.id()));
    assert!(rows[0].user_id.starts_with("rcrt-server@"));

    // Started again: the same key, no new row.
    let again = ensure_signing_key(&*store, &k1, &SystemClock)
        .await
        .unwrap();
    assert_eq!(again.id(), first.id());
    assert_eq!(store.list_audit(None, 10).await.unwrap().len(), 1);

    // A rotation (K2 current, K1 old): the same key, re-wrapped under K2.
    let k2 = LocalKeyring::new(kek(2), vec![kek(1)]);
    let rotated = ensure_signing_key(&*store, &k2, &SystemClock)
        .await
        .unwrap();
    assert_eq!(rotated.id(), first.id());
    let keys = store.audit_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kek_id, k2.current_kek_id().as_str());
    // K1 retired: still the same key.
    let k2_only = LocalKeyring::new(kek(2), vec![]);
    let kept = ensure_signing_key(&*store, &k2_only, &SystemClock)
        .await
        .unwrap();
    assert_eq!(kept.id(), first.id());

    // A KEK that opens no stored key: a new key (and a row), the old one kept for verifying.
    let k3 = LocalKeyring::new(kek(3), vec![]);
    let fresh = ensure_signing_key(&*store, &k3, &SystemClock)
        .await
        .unwrap();
    assert_ne!(fresh.id(), first.id());
    assert_eq!(store.audit_signing_keys().await.unwrap().len(), 2);
    assert_eq!(store.list_audit(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_job_checkpoints_only_moved_heads_and_only_with_the_lease() {
    let (_dir, store) = store().await;
    let keys: Arc<dyn KeyProvider> = Arc::new(LocalKeyring::new(kek(1), vec![]));
    let svc = Service::new(
        store.clone(),
        keys.clone(),
        Arc::new(SystemClock),
        Limits::default(),
    );
    let ctx = RequestContext {
        principal: Principal::anonymous(),
        request_id: "r".into(),
    };
    let create = |i: usize| {
        svc.create(
            &ctx,
            CreateSecret {
                name: format!("S{i}").parse().unwrap(),
                scope: Scope::global(),
                value: Zeroizing::new("v".into()),
                attrs: Default::default(),
            },
        )
    };
    create(0).await.unwrap();
    let signer = ensure_signing_key(&*store, &*keys, &SystemClock)
        .await
        .unwrap();
    let public = signer.public_key().to_vec();
    let job = CheckpointJob::new(
        store.clone(),
        Arc::new(SystemClock),
        signer,
        CheckpointSettings::every(Duration::from_secs(30)),
    );
    let cp = job.tick().await.unwrap().expect("a first checkpoint");
    assert!(verify_checkpoint(&public, &cp));
    assert_eq!(cp.heads, store.audit_heads().await.unwrap());
    assert_eq!(cp.heads.iter().map(|h| h.seq).sum::<i64>(), 2);
    // Nothing new: nothing written.
    assert!(job.tick().await.unwrap().is_none());
    create(1).await.unwrap();
    let next = job.tick().await.unwrap().expect("the heads moved");
    assert_eq!(next.heads.iter().map(|h| h.seq).sum::<i64>(), 3);
    let stored = store.audit_checkpoints().await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|c| verify_checkpoint(&public, c)));

    // Another replica holds the lease: this one writes nothing.
    let other = ensure_signing_key(&*store, &*keys, &SystemClock)
        .await
        .unwrap();
    let other = CheckpointJob::new(
        store.clone(),
        Arc::new(SystemClock),
        other,
        CheckpointSettings::every(Duration::from_secs(30)),
    );
    create(2).await.unwrap();
    assert!(other.tick().await.unwrap().is_none(), "the lease is held");
    assert!(job.tick().await.unwrap().is_some());

    // The whole store verifies with the KEK-authenticated key.
    let trusted =
        TrustedKeys::from_keyring(&*keys, &store.audit_signing_keys().await.unwrap()).await;
    assert_eq!(trusted.len(), 1);
    let report = verify_store(&*store, &trusted, 2).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.chained_rows, 4);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.rows_after_newest_checkpoint, 0);
}
