//! Concurrent updates of one secret without `If-Match` queue instead of failing, over a real
//! SQLite store: on one replica (one `Service`) and across two replicas sharing the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::sync::Arc;

use rcrt_core::{CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{SqliteStore, Store, VersionFilter};
use rcrt_types::{Principal, Scope, SecretId};
use zeroize::Zeroizing;

fn ctx() -> RequestContext {
    RequestContext {
        principal: Principal::anonymous(),
        request_id: "r1".into(),
    }
}

fn service(store: Arc<SqliteStore>) -> Arc<Service> {
    let keys = LocalKeyring::new(Kek::from_bytes(Zeroizing::new([7; 32])), vec![]);
    // Every version kept (up to the cap's maximum), so the test can count them all.
    Arc::new(
        Service::new(
            store,
            Arc::new(keys),
            Arc::new(SystemClock),
            Limits::default(),
        )
        .with_lifecycle(rcrt_core::lifecycle::LifecyclePolicy {
            max_versions: rcrt_core::lifecycle::MAX_KEPT_VERSIONS,
            ..Default::default()
        }),
    )
}

/// Runs `per_replica` concurrent updates through each service at once; returns the versions
/// they were answered with.
async fn update_all(replicas: &[Arc<Service>], id: SecretId, per_replica: usize) -> Vec<i64> {
    let mut tasks = Vec::new();
    for (r, svc) in replicas.iter().enumerate() {
        for i in 0..per_replica {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let value = Zeroizing::new(format!("value {r}-{i}"));
                svc.update(&ctx(), id, value, None).await
            }));
        }
    }
    let mut versions = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(meta) => versions.push(meta.version),
            Err(e) => panic!("a concurrent update failed: {e:?}"),
        }
    }
    versions.sort_unstable();
    versions
}

/// The versions stored for `id`.
async fn stored_versions(store: &SqliteStore, id: SecretId) -> Vec<i64> {
    let rows = store
        .scan_versions(&VersionFilter::All, None, 10_000, false)
        .await
        .unwrap();
    rows.iter()
        .filter(|r| r.secret_id == id)
        .map(|r| r.version)
        .collect()
}

async fn setup() -> (rcrt_testkit::TempDir, Arc<SqliteStore>, SecretId) {
    let dir = rcrt_testkit::TempDir::new();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("s.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let meta = service(store.clone())
        .create(
            &ctx(),
            CreateSecret {
                name: "HOT".parse().unwrap(),
                scope: Scope::global(),
                value: Zeroizing::new("v1".into()),
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    (dir, store, meta.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_updates_of_one_secret_all_succeed() {
    let (_dir, store, id) = setup().await;
    let svc = service(store.clone());
    let versions = update_all(std::slice::from_ref(&svc), id, 50).await;
    // Each update got its own version: none lost, none doubled.
    assert_eq!(versions, (2..=51).collect::<Vec<_>>());
    assert_eq!(
        stored_versions(&store, id).await,
        (1..=51).collect::<Vec<_>>()
    );
    let (value, version) = svc.decrypt(&ctx(), id, Some("check")).await.unwrap();
    assert_eq!(version, 51);
    assert!(value.expose_secret().starts_with(b"value 0-"));
    let audits = store.list_audit(Some(id), 1000).await.unwrap();
    let updates: Vec<_> = audits.iter().filter(|a| a.action == "update").collect();
    assert_eq!(updates.len(), 50);
    assert!(updates.iter().all(|a| a.outcome == "success"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_updating_one_secret_still_compare_and_swap() {
    let (_dir, store, id) = setup().await;
    // Two services over one store: each queues its own writers, and the store's
    // compare-and-swap decides between them.
    let replicas = [service(store.clone()), service(store.clone())];
    let versions = update_all(&replicas, id, 15).await;
    assert_eq!(versions, (2..=31).collect::<Vec<_>>());
    let distinct: BTreeSet<i64> = stored_versions(&store, id).await.into_iter().collect();
    assert_eq!(distinct, (1..=31).collect());
}
