//! Service rules without HTTP, over a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use rcrt_core::{CoreError, CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{SqliteStore, Store};
use rcrt_types::{Principal, Scope};
use zeroize::Zeroizing;

fn ctx() -> RequestContext {
    RequestContext {
        principal: Principal::anonymous(),
        request_id: "r1".into(),
    }
}

fn kek(b: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([b; 32]))
}

async fn setup(dir: &rcrt_testkit::TempDir, keys: LocalKeyring) -> (Arc<SqliteStore>, Service) {
    let store = Arc::new(
        SqliteStore::open(dir.path().join("s.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let svc = Service::new(
        store.clone(),
        Arc::new(keys),
        Arc::new(SystemClock),
        Limits {
            max_value_bytes: 16,
        },
    );
    (store, svc)
}

fn create_req(name: &str, value: &str) -> CreateSecret {
    CreateSecret {
        name: name.parse().unwrap(),
        scope: Scope::global(),
        value: Zeroizing::new(value.to_owned()),
    }
}

#[tokio::test]
async fn decrypt_fails_closed_without_an_audit_row() {
    let dir = rcrt_testkit::TempDir::new();
    let (store, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let meta = svc.create(&ctx(), create_req("A", "v1")).await.unwrap();
    // Make every audit insert fail, as a full disk would.
    let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER fail_audit BEFORE INSERT ON secret_access_log
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let err = svc.decrypt(&ctx(), meta.id, Some("why")).await.unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    conn.execute_batch("DROP TRIGGER fail_audit").unwrap();
    let (plain, version) = svc.decrypt(&ctx(), meta.id, Some("why")).await.unwrap();
    assert_eq!((plain.expose_secret(), version), (&b"v1"[..], 1));
    let rows = store.list_audit(Some(meta.id), 10).await.unwrap();
    assert_eq!(rows[0].action, "decrypt");
    assert_eq!(rows[0].reason.as_deref(), Some("why"));
    assert_eq!(rows[0].outcome, "success");
    assert_eq!(rows[0].request_id, "r1");
}

#[tokio::test]
async fn rules_reason_size_versions() {
    let dir = rcrt_testkit::TempDir::new();
    let (store, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let m = svc.create(&ctx(), create_req("A", "v1")).await.unwrap();
    assert!(matches!(
        svc.decrypt(&ctx(), m.id, None).await,
        Err(CoreError::ReasonRequired)
    ));
    assert!(matches!(
        svc.decrypt(&ctx(), m.id, Some("   ")).await,
        Err(CoreError::ReasonRequired)
    ));
    assert!(matches!(
        svc.create(&ctx(), create_req("B", &"x".repeat(17))).await,
        Err(CoreError::ValueTooLarge { limit: 16 })
    ));
    assert!(matches!(
        svc.create(&ctx(), create_req("A", "dup")).await,
        Err(CoreError::NameTaken)
    ));
    let m2 = svc
        .update(&ctx(), m.id, Zeroizing::new("v2".into()), Some(1))
        .await
        .unwrap();
    assert_eq!(m2.version, 2);
    assert!(matches!(
        svc.update(&ctx(), m.id, Zeroizing::new("v3".into()), Some(1))
            .await,
        Err(CoreError::VersionMismatch {
            expected: 1,
            current: 2
        })
    ));
    let (plain, v) = svc.decrypt(&ctx(), m.id, Some("r")).await.unwrap();
    assert_eq!((plain.expose_secret(), v), (&b"v2"[..], 2));
    // Failed decrypts are audited too.
    let failures = store
        .list_audit(Some(m.id), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "decrypt" && r.outcome == "failure")
        .count();
    assert_eq!(failures, 2);
    svc.delete(&ctx(), m.id).await.unwrap();
    assert!(matches!(
        svc.get(&ctx(), m.id).await,
        Err(CoreError::NotFound)
    ));
    assert!(matches!(
        svc.delete(&ctx(), m.id).await,
        Err(CoreError::NotFound)
    ));
}

#[tokio::test]
async fn kek_check_names_unknown_ids_and_accepts_old_keys() {
    let dir = rcrt_testkit::TempDir::new();
    {
        let (_, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
        svc.check_keks().await.unwrap(); // empty store: any KEK
        svc.create(&ctx(), create_req("A", "v1")).await.unwrap();
    }
    let old_id = kek(1).id().to_string();
    let (_, svc) = setup(&dir, LocalKeyring::new(kek(2), vec![])).await;
    match svc.check_keks().await {
        Err(CoreError::UnknownKeks(ids)) => assert!(ids[0].contains(&old_id), "{ids:?}"),
        other => panic!("{other:?}"),
    }
    let (_, svc) = setup(&dir, LocalKeyring::new(kek(2), vec![kek(1)])).await;
    svc.check_keks().await.unwrap();
    let page = svc.list(&ctx(), None, None, None, None).await.unwrap();
    let (plain, _) = svc
        .decrypt(&ctx(), page.items[0].id, Some("after rotation"))
        .await
        .unwrap();
    assert_eq!(plain.expose_secret(), b"v1");
}

#[tokio::test]
async fn tampered_ciphertext_is_a_counted_decrypt_failure() {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("s.db");
    let (_, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let m = svc.create(&ctx(), create_req("A", "v1")).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE secret_versions SET sealed_value = CAST(sealed_value || x'00' AS BLOB)",
        [],
    )
    .unwrap();
    assert!(matches!(
        svc.decrypt(&ctx(), m.id, Some("r")).await,
        Err(CoreError::DecryptFailed)
    ));
    assert_eq!(svc.metrics().decrypt_failures_total(), 1);
}
