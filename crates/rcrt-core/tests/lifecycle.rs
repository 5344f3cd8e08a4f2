//! Lifecycle rules without HTTP, over a real SQLite store and a clock the test moves:
//! a rollback seals the old value again (new DEK, new ciphertext); the purge pass shreds only
//! secrets past their window, and a restore after the window fails; an expired secret's decrypt
//! is refused and audited (unless allowed); an idempotency key's answer expires, after which the
//! key is taken over by a new write instead of failing; fail closed on the rollback path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcrt_core::lifecycle::{Deleted, ExpiredSecrets, IdempotencyKey, Idempotent, LifecyclePolicy};
use rcrt_core::{Clock, CoreError, CreateSecret, Limits, RequestContext, Service};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{SecretAttributes, SqliteStore, Store, VersionFilter, VersionLookup};
use rcrt_types::{Principal, Scope};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A clock the test sets.
struct TestClock(Mutex<OffsetDateTime>);

impl TestClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

fn ctx() -> RequestContext {
    RequestContext {
        principal: Principal::anonymous(),
        request_id: "r1".into(),
    }
}

struct Env {
    _dir: rcrt_testkit::TempDir,
    store: Arc<SqliteStore>,
    clock: Arc<TestClock>,
    svc: Service,
}

async fn setup(policy: LifecyclePolicy) -> Env {
    let dir = rcrt_testkit::TempDir::new();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("s.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let clock = Arc::new(TestClock(Mutex::new(
        OffsetDateTime::parse(
            "2026-12-01T00:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap(),
    )));
    let keys = LocalKeyring::new(Kek::from_bytes(Zeroizing::new([7; 32])), vec![]);
    let svc = Service::new(
        store.clone(),
        Arc::new(keys),
        clock.clone(),
        Limits::default(),
    )
    .with_lifecycle(policy);
    Env {
        _dir: dir,
        store,
        clock,
        svc,
    }
}

fn create_req(name: &str, value: &str, attrs: SecretAttributes) -> CreateSecret {
    CreateSecret {
        name: name.parse().unwrap(),
        scope: Scope::global(),
        value: Zeroizing::new(value.to_owned()),
        attrs,
    }
}

fn key(k: &str, parts: &[&[u8]]) -> Option<Idempotent> {
    Some(Idempotent::new(IdempotencyKey::parse(k).unwrap(), parts))
}

#[tokio::test]
async fn rollback_seals_the_old_value_again() {
    let env = setup(LifecyclePolicy::default()).await;
    let meta = env
        .svc
        .create(&ctx(), create_req("A", "first", Default::default()))
        .await
        .unwrap();
    env.svc
        .update(&ctx(), meta.id, Zeroizing::new("second".into()), None)
        .await
        .unwrap();
    let rolled = env
        .svc
        .rollback(&ctx(), meta.id, 1, Some(2), None)
        .await
        .unwrap();
    assert_eq!(rolled.value.version, 3);
    let (plain, v) = env
        .svc
        .decrypt(&ctx(), meta.id, Some("check"))
        .await
        .unwrap();
    assert_eq!((plain.expose_secret(), v), (&b"first"[..], 3));
    // Not a copy: version 3 has its own DEK and ciphertext.
    let stored = |n| {
        let store = env.store.clone();
        async move {
            match store
                .get_version(&Principal::anonymous().tenant, meta.id, n)
                .await
                .unwrap()
                .unwrap()
                .1
            {
                VersionLookup::Kept(r) => r,
                other => panic!("{other:?}"),
            }
        }
    };
    let (v1, v3) = (stored(1).await, stored(3).await);
    assert_ne!(v1.wrapped_dek, v3.wrapped_dek);
    assert_ne!(v1.sealed_value, v3.sealed_value);
    assert_eq!(v3.created_by, "anonymous");
    // A stale If-Match is refused and writes nothing.
    let err = env
        .svc
        .rollback(&ctx(), meta.id, 1, Some(2), None)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::VersionMismatch { .. }), "{err:?}");
    let all = env
        .store
        .scan_versions(&VersionFilter::All, None, 100, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn purge_pass_shreds_only_secrets_past_their_window() {
    let env = setup(LifecyclePolicy::default()).await;
    let a = env
        .svc
        .create(&ctx(), create_req("A", "a", Default::default()))
        .await
        .unwrap();
    let b = env
        .svc
        .create(&ctx(), create_req("B", "b", Default::default()))
        .await
        .unwrap();
    let day = Duration::from_secs(86400);
    assert!(matches!(
        env.svc
            .delete_with_window(&ctx(), a.id, Some(day))
            .await
            .unwrap(),
        Deleted::Soft(_)
    ));
    assert!(matches!(
        env.svc
            .delete_with_window(&ctx(), b.id, Some(3 * day))
            .await
            .unwrap(),
        Deleted::Soft(_)
    ));
    assert_eq!(env.svc.purge_pass().await.unwrap(), 0);
    env.clock.advance(day + Duration::from_secs(1));
    assert_eq!(env.svc.purge_pass().await.unwrap(), 1);
    // A's window is over and it is gone; B is still restorable.
    assert!(matches!(
        env.svc.restore(&ctx(), a.id).await.unwrap_err(),
        CoreError::NotFound
    ));
    assert_eq!(env.svc.restore(&ctx(), b.id).await.unwrap().id, b.id);
    let rows = env.store.list_audit(Some(a.id), 10).await.unwrap();
    assert_eq!(rows[0].action, "restore", "{rows:?}");
    assert_eq!(rows[0].outcome, "failure");
    let purge = rows.iter().find(|r| r.action == "purge").unwrap();
    assert_eq!(purge.user_id, "rcrt-purge");
    // A window beyond 90 days is refused.
    assert!(matches!(
        env.svc
            .delete_with_window(&ctx(), b.id, Some(91 * day))
            .await
            .unwrap_err(),
        CoreError::Invalid(_)
    ));
}

#[tokio::test]
async fn expired_secrets_are_refused_unless_allowed() {
    for expired in [ExpiredSecrets::Deny, ExpiredSecrets::Allow] {
        let env = setup(LifecyclePolicy {
            expired,
            ..Default::default()
        })
        .await;
        let attrs = SecretAttributes {
            expires_at: Some(env.clock.now() + Duration::from_secs(60)),
            ..Default::default()
        };
        let meta = env
            .svc
            .create(&ctx(), create_req("A", "v", attrs))
            .await
            .unwrap();
        env.svc
            .decrypt(&ctx(), meta.id, Some("before"))
            .await
            .unwrap();
        env.clock.advance(Duration::from_secs(60));
        let result = env.svc.decrypt(&ctx(), meta.id, Some("after")).await;
        let rows = env.store.list_audit(Some(meta.id), 1).await.unwrap();
        assert_eq!(rows[0].reason.as_deref(), Some("after"));
        match expired {
            ExpiredSecrets::Deny => {
                assert!(matches!(result, Err(CoreError::Expired)), "{result:?}");
                assert_eq!(rows[0].outcome, "failure");
            }
            ExpiredSecrets::Allow => {
                assert!(result.is_ok());
                assert_eq!(rows[0].outcome, "success");
            }
        }
        assert_eq!(env.svc.count_expiring(Duration::ZERO).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn an_expired_idempotency_key_is_taken_over() {
    let env = setup(LifecyclePolicy {
        idempotency_ttl: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    let first = env
        .svc
        .create_idempotent(
            &ctx(),
            create_req("A", "v", Default::default()),
            key("k", &[b"a"]),
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = env
        .svc
        .create_idempotent(
            &ctx(),
            create_req("A", "v", Default::default()),
            key("k", &[b"a"]),
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.id, first.value.id);
    assert!(matches!(
        env.svc
            .create_idempotent(
                &ctx(),
                create_req("B", "v", Default::default()),
                key("k", &[b"b"])
            )
            .await
            .unwrap_err(),
        CoreError::IdempotencyKeyReused
    ));
    // After the TTL, before any purge: the key serves a new request (it failed with 503
    // before the stores took expired keys over).
    env.clock.advance(Duration::from_secs(3601));
    let fresh = env
        .svc
        .create_idempotent(
            &ctx(),
            create_req("B", "v", Default::default()),
            key("k", &[b"b"]),
        )
        .await
        .unwrap();
    assert!(!fresh.replayed);
    assert_ne!(fresh.value.id, first.value.id);
    let replay = env
        .svc
        .create_idempotent(
            &ctx(),
            create_req("B", "v", Default::default()),
            key("k", &[b"b"]),
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.value.id, fresh.value.id);
}

#[tokio::test]
async fn a_rollback_fails_closed_without_its_audit_row() {
    let env = setup(LifecyclePolicy::default()).await;
    let meta = env
        .svc
        .create(&ctx(), create_req("A", "first", Default::default()))
        .await
        .unwrap();
    env.svc
        .update(&ctx(), meta.id, Zeroizing::new("second".into()), None)
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(env._dir.path().join("s.db")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER fail_audit BEFORE INSERT ON secret_access_log
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
    let err = env
        .svc
        .rollback(&ctx(), meta.id, 1, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    conn.execute_batch("DROP TRIGGER fail_audit").unwrap();
    // Nothing was written: version 2 is still current.
    assert_eq!(env.svc.get(&ctx(), meta.id).await.unwrap().version, 2);
}
