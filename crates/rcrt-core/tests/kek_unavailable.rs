//! A store re-wrapped to a KEK the running service does not hold (an offline `rcrt kek rewrap`
//! underneath it), over a real SQLite store: decrypts and vault reads answer
//! `KekUnavailable` naming the missing KEK id (never `DecryptFailed`), are audited as
//! failures, and count in `kek_unavailable_total`, not in the decrypt failures; the KEK
//! readiness check names the ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use rcrt_core::maintenance::{Maintenance, NoHook};
use rcrt_core::rewrap_job::{RewrapJob, RewrapSettings};
use rcrt_core::{CoreError, CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{SqliteStore, Store};
use rcrt_types::{Principal, Scope};
use zeroize::Zeroizing;

fn kek(b: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([b; 32]))
}

fn ctx() -> RequestContext {
    RequestContext {
        principal: Principal::anonymous(),
        request_id: "r-kek".into(),
    }
}

#[tokio::test]
async fn a_kek_the_service_does_not_hold_is_unavailable_not_corrupt() {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    let k1 = LocalKeyring::new(kek(1), vec![]);
    let k1_id = k1.current().id().as_str().to_owned();
    let svc = Service::new(
        store.clone(),
        Arc::new(k1),
        Arc::new(SystemClock),
        Limits::default(),
    );
    let job = RewrapJob::new(
        Arc::new(Maintenance::new(
            store.clone(),
            Arc::new(LocalKeyring::new(kek(1), vec![])),
            Arc::new(SystemClock),
        )),
        RewrapSettings::default(),
    );
    let meta = svc
        .create(
            &ctx(),
            CreateSecret {
                name: "A".parse().unwrap(),
                scope: Scope::global(),
                value: Zeroizing::new("v1".into()),
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert("K".to_owned(), Zeroizing::new("kv".to_owned()));
    svc.create_vault(&ctx(), "ws", "vault", secrets)
        .await
        .unwrap();
    job.check_keks_cached(Duration::ZERO).await.unwrap();

    // The offline re-wrap, with K1 old and K2 current, on the same store.
    let k2 = LocalKeyring::new(kek(2), vec![kek(1)]);
    let k2_id = k2.current().id().as_str().to_owned();
    assert_ne!(k1_id, k2_id);
    let offline = Maintenance::new(store.clone(), Arc::new(k2), Arc::new(SystemClock));
    let (progress, failures) = offline.rewrap(100, &NoHook).await.unwrap();
    assert_eq!((progress.changed, failures.len()), (2, 0));

    // The running service (K1 only): 503-class error naming K2, audited, counted apart.
    match svc.decrypt(&ctx(), meta.id, Some("why")).await {
        Err(CoreError::KekUnavailable { kek_id }) => assert_eq!(kek_id, k2_id),
        other => panic!("expected KekUnavailable, got {:?}", other.map(|_| ())),
    }
    let err = CoreError::KekUnavailable {
        kek_id: k2_id.clone(),
    };
    assert!(err.to_string().contains(&k2_id), "{err}");
    let rows = store.list_audit(Some(meta.id), 10).await.unwrap();
    assert_eq!(
        (
            rows[0].action.as_str(),
            rows[0].outcome.as_str(),
            rows[0].reason.as_deref()
        ),
        ("decrypt", "failure", Some("why"))
    );
    match svc.vault_values(&ctx(), "vault", None, Some("why")).await {
        Err(CoreError::KekUnavailable { kek_id }) => assert_eq!(kek_id, k2_id),
        other => panic!("expected KekUnavailable, got {:?}", other.map(|_| ())),
    }
    let rows = store.list_audit(None, 1).await.unwrap();
    assert_eq!(
        (rows[0].action.as_str(), rows[0].outcome.as_str()),
        ("decrypt", "failure")
    );
    let m = svc.metrics();
    assert_eq!(m.kek_unavailable_total(), 2);
    assert_eq!(
        m.decrypt_failures_total(),
        0,
        "a missing key is not corruption"
    );
    assert_eq!(m.decrypt_success_total(), 0);

    // Readiness names K2 and its count once the census is fresh; a cached census is kept
    // for its age.
    job.check_keks_cached(Duration::from_secs(3600))
        .await
        .unwrap();
    match job.check_keks_cached(Duration::ZERO).await {
        Err(CoreError::KeksUnavailable(ids)) => {
            assert_eq!(ids, vec![format!("{k2_id} (2 versions)")]);
        }
        other => panic!("expected KeksUnavailable, got {other:?}"),
    }

    // Tampered bytes under a held KEK still count as a decrypt failure.
    let k2_svc = Service::new(
        store.clone(),
        Arc::new(LocalKeyring::new(kek(2), vec![])),
        Arc::new(SystemClock),
        Limits::default(),
    );
    let (plain, _) = k2_svc.decrypt(&ctx(), meta.id, Some("why")).await.unwrap();
    assert_eq!(plain.expose_secret(), b"v1");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("UPDATE secret_versions SET sealed_value = zeroblob(40)")
        .unwrap();
    assert!(matches!(
        k2_svc.decrypt(&ctx(), meta.id, Some("why")).await,
        Err(CoreError::DecryptFailed)
    ));
    assert_eq!(k2_svc.metrics().decrypt_failures_total(), 1);
    assert_eq!(k2_svc.metrics().kek_unavailable_total(), 0);
}
