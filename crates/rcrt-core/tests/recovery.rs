//! The recovery KEK, over real stores (SQLite and PostgreSQL): every DEK is also wrapped under it;
//! the "KMS lost" drill (the main KEK gone, the recovered KEK given as an old KEK) decrypts every
//! secret through its recovery wrap and the re-wrap moves every row to the new KEK; configuring
//! a recovery KEK later back-fills recovery wraps; a running server never unwraps through the
//! recovery wrap while its main KEK is configured (the main KEK stays the kill switch); and a KEK
//! provider that cannot be used answers `KekProviderUnavailable` (503) with nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rcrt_core::maintenance::{Maintenance, NoHook};
use rcrt_core::rewrap_job::{RewrapJob, RewrapSettings};
use rcrt_core::{CoreError, CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::{Dek, Kek, KekId, WrapContext, WrappedDek};
use rcrt_keys::settings::{CacheSettings, CallSettings};
use rcrt_keys::{KekBackend, KeyError, KeyProvider, KeySource, Keyring, LocalKek, ProviderKind};
use rcrt_store::{Store, StoredVersion, VersionFilter};
use rcrt_types::{Principal, Scope, SecretId};
use zeroize::Zeroizing;

fn kek(b: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([b; 32]))
}

fn id_of(b: u8) -> String {
    kek(b).id().as_str().to_owned()
}

fn ctx() -> RequestContext {
    RequestContext {
        principal: Principal::anonymous(),
        request_id: "r-recovery".into(),
    }
}

/// A keyring of local KEKs: `current`, `old`, and an optional recovery KEK.
fn ring(current: u8, old: &[u8], recovery: Option<u8>) -> Arc<Keyring> {
    Arc::new(Keyring::new(
        KeySource::Local(kek(current)),
        old.iter().map(|b| KeySource::Local(kek(*b))).collect(),
        recovery.map(|b| KeySource::Local(kek(b))),
        &CallSettings::default(),
        &CacheSettings::default(),
    ))
}

fn service(store: &Arc<dyn Store>, keys: Arc<dyn KeyProvider>) -> Service {
    Service::new(
        store.clone(),
        keys,
        Arc::new(SystemClock),
        Limits::default(),
    )
}

fn maintenance(store: &Arc<dyn Store>, keys: Arc<dyn KeyProvider>) -> Maintenance {
    Maintenance::new(store.clone(), keys, Arc::new(SystemClock))
}

fn create_req(name: &str, value: &str) -> CreateSecret {
    CreateSecret {
        name: name.parse().unwrap(),
        scope: Scope::global(),
        value: Zeroizing::new(value.into()),
        attrs: Default::default(),
    }
}

async fn all_versions(store: &Arc<dyn Store>) -> Vec<StoredVersion> {
    store
        .scan_versions(&VersionFilter::All, None, 10_000, false)
        .await
        .unwrap()
}

/// Three secrets (one with two versions) and a vault with one key: five versions. Returns the
/// secrets' ids with their current values.
async fn populate(svc: &Service) -> Vec<(SecretId, &'static str)> {
    let a = svc.create(&ctx(), create_req("A", "a1")).await.unwrap().id;
    svc.update(&ctx(), a, Zeroizing::new("a2".into()), None)
        .await
        .unwrap();
    let b = svc.create(&ctx(), create_req("B", "b1")).await.unwrap().id;
    let c = svc.create(&ctx(), create_req("C", "")).await.unwrap().id;
    let mut secrets = BTreeMap::new();
    secrets.insert("K".to_owned(), Zeroizing::new("kv".to_owned()));
    svc.create_vault(&ctx(), "ws", "vault", secrets)
        .await
        .unwrap();
    vec![(a, "a2"), (b, "b1"), (c, "")]
}

/// Every secret decrypts to its value, and the vault reads.
async fn decrypts_all(svc: &Service, secrets: &[(SecretId, &str)]) {
    for (id, value) in secrets {
        let (plain, _) = svc.decrypt(&ctx(), *id, Some("drill")).await.unwrap();
        assert_eq!(plain.expose_secret(), value.as_bytes());
    }
    let (_, values) = svc
        .vault_values(&ctx(), "vault", None, Some("drill"))
        .await
        .unwrap();
    assert_eq!(values["K"].expose_secret(), b"kv");
}

/// The "KMS lost" drill: secrets written under (current A, recovery R); A is lost for good. A
/// keyring (current B, old R) passes the start-up check, decrypts every secret through its
/// recovery wrap, and the re-wrap moves every row to B with a fresh recovery wrap under the
/// newly configured recovery KEK R2.
async fn kms_lost_drill(store: Arc<dyn Store>) {
    let (a, r, b, r2) = (1, 9, 2, 8);
    let svc = service(&store, ring(a, &[], Some(r)));
    let secrets = populate(&svc).await;
    let rows = all_versions(&store).await;
    assert_eq!(rows.len(), 5);
    for row in &rows {
        assert_eq!(row.kek_id, id_of(a));
        let rec = row
            .recovery
            .as_ref()
            .expect("every version has a recovery wrap");
        assert_eq!(rec.kek_id, id_of(r));
        assert_ne!(rec.wrapped_dek, row.wrapped_dek);
    }

    // Without R, the start-up check and /ready's census name A's id.
    let lost = service(&store, ring(b, &[], None));
    match lost.check_keks().await {
        Err(CoreError::UnknownKeks(ids)) => {
            assert_eq!(ids.len(), 1, "{ids:?}");
            assert!(ids[0].starts_with(&id_of(a)) && ids[0].contains("(5 versions)"));
        }
        other => panic!("expected UnknownKeks, got {other:?}"),
    }
    let job = RewrapJob::new(
        Arc::new(maintenance(&store, ring(b, &[], None))),
        RewrapSettings::default(),
    );
    assert!(matches!(
        job.check_keks_cached(Duration::ZERO).await,
        Err(CoreError::KeksUnavailable(ids)) if ids.len() == 1 && ids[0].starts_with(&id_of(a))
    ));
    assert!(matches!(
        lost.decrypt(&ctx(), secrets[0].0, Some("drill")).await,
        Err(CoreError::KekUnavailable { kek_id }) if kek_id == id_of(a)
    ));

    // With the recovered R as an old KEK: the check passes and everything decrypts.
    let drill_keys = ring(b, &[r], Some(r2));
    let drill = service(&store, drill_keys.clone());
    drill.check_keks().await.unwrap();
    let job = RewrapJob::new(
        Arc::new(maintenance(&store, drill_keys.clone())),
        RewrapSettings::default(),
    );
    job.check_keks_cached(Duration::ZERO).await.unwrap();
    decrypts_all(&drill, &secrets).await;
    assert_eq!(job.status().await.unwrap().remaining, 5);

    // The re-wrap moves every row to B, with a fresh recovery wrap under R2.
    let m = maintenance(&store, drill_keys.clone());
    let (progress, failures) = m.rewrap(2, &NoHook).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(progress.changed, 5);
    assert_eq!(m.remaining().await.unwrap(), 0);
    for row in all_versions(&store).await {
        assert_eq!(row.kek_id, id_of(b));
        assert_eq!(row.recovery.unwrap().kek_id, id_of(r2));
    }
    let usage = store.kek_usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(
        usage[0].recovery_kek_id.as_deref(),
        Some(id_of(r2).as_str())
    );
    // B alone opens every main wrap; R2 alone (a second drill) opens every recovery wrap.
    decrypts_all(&service(&store, ring(b, &[], None)), &secrets).await;
    decrypts_all(&service(&store, ring(7, &[r2], None)), &secrets).await;
    // Verification also sees every row open.
    assert!(m.verify(100, &NoHook).await.unwrap().is_clean());
}

/// The drill without a new recovery KEK: the re-wrap moves the main wraps to B and keeps the
/// rows' recovery wraps under R (the DEK is unchanged); a re-encryption, which changes the DEK,
/// drops them (they would open the old DEK).
async fn drill_without_a_new_recovery_kek(store: Arc<dyn Store>) {
    let svc = service(&store, ring(1, &[], Some(9)));
    let secrets = populate(&svc).await;
    let keys = ring(2, &[9], None);
    let m = maintenance(&store, keys.clone());
    let (_, failures) = m.rewrap(100, &NoHook).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    for row in all_versions(&store).await {
        assert_eq!(row.kek_id, id_of(2));
        assert_eq!(row.recovery.unwrap().kek_id, id_of(9));
    }
    decrypts_all(&service(&store, ring(2, &[], None)), &secrets).await;
    decrypts_all(&service(&store, ring(5, &[9], None)), &secrets).await;
    let (_, failures) = m.reencrypt(100, &NoHook).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(all_versions(&store)
        .await
        .iter()
        .all(|r| r.kek_id == id_of(2) && r.recovery.is_none()));
    decrypts_all(&service(&store, ring(2, &[], None)), &secrets).await;
}

/// A recovery KEK configured after the secrets were written: the re-wrap back-fills a recovery
/// wrap on every row (main wraps untouched), and a new recovery KEK re-wraps them all again.
async fn enabling_a_recovery_kek_backfills(store: Arc<dyn Store>) {
    let svc = service(&store, ring(1, &[], None));
    let secrets = populate(&svc).await;
    let before = all_versions(&store).await;
    assert!(before.iter().all(|r| r.recovery.is_none()));

    let m = maintenance(&store, ring(1, &[], Some(9)));
    assert_eq!(m.remaining().await.unwrap(), 5);
    let (progress, failures) = m.rewrap(3, &NoHook).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(progress.changed, 5);
    assert_eq!(m.remaining().await.unwrap(), 0);
    let after = all_versions(&store).await;
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.wrapped_dek, old.wrapped_dek, "main wrap kept");
        assert_eq!(new.recovery.as_ref().unwrap().kek_id, id_of(9));
    }
    // Nothing left: a second pass changes nothing.
    assert_eq!(m.rewrap(3, &NoHook).await.unwrap().0.changed, 0);

    // Another recovery KEK: every row is re-wrapped under it.
    let m2 = maintenance(&store, ring(1, &[], Some(8)));
    assert_eq!(m2.remaining().await.unwrap(), 5);
    m2.rewrap(100, &NoHook).await.unwrap();
    assert!(all_versions(&store)
        .await
        .iter()
        .all(|r| r.recovery.as_ref().unwrap().kek_id == id_of(8)));
    // The back-filled wraps open the DEKs: the drill with 8 alone.
    decrypts_all(&service(&store, ring(3, &[8], None)), &secrets).await;
}

/// How a [`Switchable`] provider answers.
const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const REFUSED: u8 = 2;

/// A remote-provider stand-in around a local KEK that can be made unreachable or refusing.
struct Switchable {
    inner: LocalKek,
    state: AtomicU8,
}

impl Switchable {
    fn new(b: u8) -> Arc<Self> {
        Arc::new(Self {
            inner: LocalKek::new(kek(b)),
            state: AtomicU8::new(OK),
        })
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), KeyError> {
        let kek_id = self.inner.id().clone();
        let provider = ProviderKind::Pkcs11;
        match self.state.load(Ordering::SeqCst) {
            UNAVAILABLE => Err(KeyError::Unavailable {
                kek_id,
                provider,
                reason: "token not present".into(),
            }),
            REFUSED => Err(KeyError::Refused {
                kek_id,
                provider,
                reason: "key disabled".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl KekBackend for Switchable {
    fn id(&self) -> &KekId {
        self.inner.id()
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::Pkcs11
    }

    fn describe(&self) -> String {
        "test token".into()
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        self.check()?;
        self.inner.wrap(dek, ctx).await
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        self.check()?;
        self.inner.unwrap(wrapped, ctx).await
    }
}

fn fast_calls() -> CallSettings {
    CallSettings {
        timeout: Duration::from_secs(1),
        retries: 0,
        circuit_failures: 100,
        ..CallSettings::default()
    }
}

/// A keyring whose current KEK is `main` (a provider), with local old KEKs `old` and the
/// recovery KEK `recovery`.
fn remote_ring(main: &Arc<Switchable>, old: &[u8], recovery: Option<KeySource>) -> Arc<Keyring> {
    Arc::new(Keyring::new(
        KeySource::Remote(main.clone()),
        old.iter().map(|b| KeySource::Local(kek(*b))).collect(),
        recovery,
        &fast_calls(),
        &CacheSettings::default(),
    ))
}

async fn outcomes(store: &Arc<dyn Store>) -> Vec<(String, String)> {
    store
        .list_audit(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.outcome))
        .collect()
}

fn assert_provider_unavailable<T>(result: Result<T, CoreError>, kek_id: &str) {
    match result {
        Err(e @ CoreError::KekProviderUnavailable { .. }) => {
            let CoreError::KekProviderUnavailable {
                kek_id: id,
                provider,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((id.as_str(), provider.as_str()), (kek_id, "pkcs11"));
            let text = e.to_string();
            assert!(text.contains(kek_id) && text.contains("intact"), "{text}");
            assert!(!text.contains("token not present") && !text.contains("key disabled"));
        }
        Err(other) => panic!("expected KekProviderUnavailable, got {other:?}"),
        Ok(_) => panic!("expected KekProviderUnavailable, got a value"),
    }
}

/// Writes while the main KEK's or the recovery KEK's provider cannot be used: 503-class
/// `KekProviderUnavailable` naming that KEK, nothing written, a failure audit row, counted.
async fn provider_failure_on_write_writes_nothing(store: Arc<dyn Store>) {
    let main = Switchable::new(1);
    let svc = service(
        &store,
        remote_ring(&main, &[], Some(KeySource::Local(kek(9)))),
    );
    let kept = svc
        .create(&ctx(), create_req("KEPT", "v1"))
        .await
        .unwrap()
        .id;
    let audit_rows = outcomes(&store).await.len();

    main.set(UNAVAILABLE);
    assert_provider_unavailable(svc.create(&ctx(), create_req("NEW", "x")).await, &id_of(1));
    main.set(REFUSED);
    assert_provider_unavailable(
        svc.update(&ctx(), kept, Zeroizing::new("v2".into()), None)
            .await,
        &id_of(1),
    );
    let mut secrets = BTreeMap::new();
    secrets.insert("K".to_owned(), Zeroizing::new("kv".to_owned()));
    assert_provider_unavailable(
        svc.create_vault(&ctx(), "ws", "vault", secrets.clone())
            .await,
        &id_of(1),
    );
    // Nothing written: one secret, one version; each attempt audited as a failure.
    assert_eq!(all_versions(&store).await.len(), 1);
    assert_eq!(svc.get(&ctx(), kept).await.unwrap().version, 1);
    let rows = outcomes(&store).await;
    assert_eq!(rows.len(), audit_rows + 3);
    for (action, outcome) in &rows[..3] {
        assert_eq!(outcome, "failure", "{action}");
    }
    assert_eq!(svc.metrics().kek_unavailable_total(), 3);

    // The recovery KEK's provider failing refuses the write too: every DEK must be recoverable.
    main.set(OK);
    let recovery = Switchable::new(9);
    let svc = service(
        &store,
        remote_ring(&main, &[], Some(KeySource::Remote(recovery.clone()))),
    );
    recovery.set(UNAVAILABLE);
    assert_provider_unavailable(svc.create(&ctx(), create_req("NEW", "x")).await, &id_of(9));
    assert_eq!(all_versions(&store).await.len(), 1);
    recovery.set(OK);
    svc.create(&ctx(), create_req("NEW", "x")).await.unwrap();
    assert_eq!(all_versions(&store).await.len(), 2);
}

/// A running server whose main KEK is configured but refusing (disabled in its KMS) does not
/// fall back to the recovery wrap, even when it holds the recovery KEK as an old KEK: the
/// decrypt answers `KekProviderUnavailable` without a value. The main KEK is the kill switch.
async fn a_refusing_main_kek_is_not_bypassed_by_the_recovery_wrap(store: Arc<dyn Store>) {
    let main = Switchable::new(1);
    for old in [&[][..], &[9][..]] {
        let svc = service(
            &store,
            remote_ring(&main, old, Some(KeySource::Local(kek(9)))),
        );
        main.set(OK);
        let name = format!("S{}", old.len());
        let id = svc.create(&ctx(), create_req(&name, "v")).await.unwrap().id;
        let vault = format!("vault{}", old.len());
        let mut secrets = BTreeMap::new();
        secrets.insert("K".to_owned(), Zeroizing::new("kv".to_owned()));
        svc.create_vault(&ctx(), "ws", &vault, secrets)
            .await
            .unwrap();
        let stored = store
            .get_current(&ctx().principal.tenant, id)
            .await
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(stored.recovery.unwrap().kek_id, id_of(9));
        for state in [REFUSED, UNAVAILABLE] {
            main.set(state);
            assert_provider_unavailable(svc.decrypt(&ctx(), id, Some("try")).await, &id_of(1));
            assert_provider_unavailable(
                svc.vault_values(&ctx(), &vault, None, Some("try")).await,
                &id_of(1),
            );
        }
        // Each refused read audited as a failed decrypt and counted as kek_unavailable.
        let rows = outcomes(&store).await;
        assert!(
            rows[..4]
                .iter()
                .all(|(a, o)| a == "decrypt" && o == "failure"),
            "{rows:?}"
        );
        assert_eq!(svc.metrics().kek_unavailable_total(), 4);
        assert_eq!(svc.metrics().decrypt_failures_total(), 0);
        assert_eq!(svc.metrics().decrypt_success_total(), 0);
        // And it all comes back with the provider.
        main.set(OK);
        let (plain, _) = svc.decrypt(&ctx(), id, Some("back")).await.unwrap();
        assert_eq!(plain.expose_secret(), b"v");
    }
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = rcrt_testkit::TempDir::new();
                    let path = dir.path().join("s.db");
                    let store = rcrt_store::SqliteStore::open(path.to_str().unwrap())
                        .await
                        .unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = rcrt_testkit::TempPgDb::create().await;
                    let store = rcrt_store::PgStore::connect(db.url()).await.unwrap();
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

both_stores!(
    kms_lost_drill,
    drill_without_a_new_recovery_kek,
    enabling_a_recovery_kek_backfills,
    provider_failure_on_write_writes_nothing,
    a_refusing_main_kek_is_not_bypassed_by_the_recovery_wrap,
);
