//! Service rules without HTTP, over a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use rcrt_core::{CoreError, CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{SqliteStore, Store};
use rcrt_types::{Principal, Role, Scope, ScopeType, TenantId};
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
        attrs: Default::default(),
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

fn fail_audit_inserts(conn: &rusqlite::Connection) {
    conn.execute_batch(
        "CREATE TRIGGER fail_audit BEFORE INSERT ON secret_access_log
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .unwrap();
}

/// A caller with decrypt rights in workspace `other` only.
fn outsider() -> RequestContext {
    RequestContext {
        principal: Principal {
            user_id: "outsider".into(),
            workspaces: vec!["other".into()],
            roles: [Role::Read, Role::Decrypt, Role::Write]
                .into_iter()
                .collect(),
            ..Principal::anonymous()
        },
        request_id: "r2".into(),
    }
}

#[tokio::test]
async fn control_characters_in_audited_fields_are_refused() {
    let dir = rcrt_testkit::TempDir::new();
    let (store, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let m = svc.create(&ctx(), create_req("A", "v1")).await.unwrap();
    for bad in [
        "a\0b",
        "line\nforged",
        "esc\u{1b}[31m",
        "tab\there",
        "del\u{7f}",
    ] {
        let err = svc.decrypt(&ctx(), m.id, Some(bad)).await.unwrap_err();
        assert!(
            matches!(&err, CoreError::Invalid(msg) if msg.contains("control characters")),
            "{bad:?}: {err:?}"
        );
    }
    // Each refusal is audited, without the refused reason.
    let rows = store.list_audit(Some(m.id), 100).await.unwrap();
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "decrypt" && r.outcome == "failure")
        .collect();
    assert_eq!(refused.len(), 5);
    assert!(refused.iter().all(|r| r.reason.is_none()));
    // The same rule for vault reads.
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert("K".to_owned(), Zeroizing::new("v".to_owned()));
    svc.create_vault(&ctx(), "ws", "v", secrets).await.unwrap();
    assert!(matches!(
        svc.vault_values(&ctx(), "v", None, Some("a\0b")).await,
        Err(CoreError::Invalid(_))
    ));
    // A principal or tenant with control characters (from a JWT's sub or owner_id) is refused
    // before anything is written.
    for principal in [
        Principal {
            user_id: "evil\0".into(),
            ..Principal::anonymous()
        },
        Principal {
            tenant: TenantId::new("t\nx"),
            ..Principal::anonymous()
        },
    ] {
        let c = RequestContext {
            principal,
            request_id: "r3".into(),
        };
        assert!(matches!(
            svc.decrypt(&c, m.id, Some("why")).await,
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            svc.create(&c, create_req("B", "v")).await,
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            svc.update(&c, m.id, Zeroizing::new("v".into()), None).await,
            Err(CoreError::Invalid(_))
        ));
    }
}

/// A refused or failed access whose audit row cannot be written fails too (503, nothing else
/// said): a probe leaves a row or gets nothing.
#[tokio::test]
async fn refused_and_failed_accesses_fail_closed_without_an_audit_row() {
    let dir = rcrt_testkit::TempDir::new();
    let (store, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let ws = CreateSecret {
        name: "W".parse().unwrap(),
        scope: Scope::new(ScopeType::Workspace, Some("mine")).unwrap(),
        value: Zeroizing::new("v".into()),
        attrs: Default::default(),
    };
    let m = svc.create(&ctx(), ws).await.unwrap();
    let mut secrets = std::collections::BTreeMap::new();
    secrets.insert("K".to_owned(), Zeroizing::new("v".to_owned()));
    svc.create_vault(&ctx(), "mine", "v", secrets)
        .await
        .unwrap();
    // With rows written: a denied decrypt answers 404 and leaves a denied row.
    assert!(matches!(
        svc.decrypt(&outsider(), m.id, Some("probe")).await,
        Err(CoreError::NotFound)
    ));
    let rows = store.list_audit(Some(m.id), 10).await.unwrap();
    assert_eq!(
        (rows[0].outcome.as_str(), rows[0].user_id.as_str()),
        ("denied", "outsider")
    );

    let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
    fail_audit_inserts(&conn);
    let unavailable = |r: Result<_, CoreError>, what: &str| match r {
        Err(CoreError::Unavailable(_)) => {}
        Err(other) => panic!("{what}: {other:?}"),
        Ok(_) => panic!("{what}: succeeded"),
    };
    unavailable(
        svc.decrypt(&outsider(), m.id, Some("probe"))
            .await
            .map(|_| ()),
        "denied decrypt",
    );
    unavailable(
        svc.decrypt(&ctx(), rcrt_types::SecretId::new(), Some("probe"))
            .await
            .map(|_| ()),
        "missing secret",
    );
    unavailable(
        svc.decrypt(&ctx(), m.id, None).await.map(|_| ()),
        "no reason",
    );
    unavailable(
        svc.decrypt(&ctx(), m.id, Some("a\0b")).await.map(|_| ()),
        "bad reason",
    );
    unavailable(
        svc.create(&outsider(), create_req("G", "v"))
            .await
            .map(|_| ()),
        "denied create",
    );
    unavailable(svc.delete(&outsider(), m.id).await, "denied delete");
    unavailable(
        svc.update(&ctx(), m.id, Zeroizing::new("v".into()), Some(99))
            .await
            .map(|_| ()),
        "stale If-Match",
    );
    unavailable(
        svc.update(&outsider(), m.id, Zeroizing::new("v".into()), None)
            .await
            .map(|_| ()),
        "denied update",
    );
    unavailable(
        svc.vault_values(&outsider(), "v", None, Some("probe"))
            .await
            .map(|_| ()),
        "denied vault read",
    );
    unavailable(
        svc.vault_values(&ctx(), "v", None, None).await.map(|_| ()),
        "vault read without a reason",
    );
    conn.execute_batch("DROP TRIGGER fail_audit").unwrap();
    // Once the store writes again, the same requests get their ordinary answers.
    assert!(matches!(
        svc.decrypt(&outsider(), m.id, Some("probe")).await,
        Err(CoreError::NotFound)
    ));
    assert!(matches!(
        svc.decrypt(&ctx(), m.id, None).await,
        Err(CoreError::ReasonRequired)
    ));
}

/// Reading an empty vault, and a vault read without a reason, leave a row.
#[tokio::test]
async fn every_vault_read_leaves_an_audit_row() {
    let dir = rcrt_testkit::TempDir::new();
    let (store, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let vault = svc
        .create_vault(&ctx(), "ws", "empty", Default::default())
        .await
        .unwrap();
    let (_, values) = svc
        .vault_values(&ctx(), &vault.id.to_string(), None, Some("boot"))
        .await
        .unwrap();
    assert!(values.is_empty());
    let rows = store.list_audit(None, 10).await.unwrap();
    assert_eq!(
        (
            rows[0].action.as_str(),
            rows[0].outcome.as_str(),
            rows[0].reason.as_deref(),
            rows[0].secret_id
        ),
        ("decrypt", "success", Some("boot"), None)
    );
    assert!(matches!(
        svc.vault_values(&ctx(), "empty", None, None).await,
        Err(CoreError::VaultReasonRequired)
    ));
    let rows = store.list_audit(None, 10).await.unwrap();
    assert_eq!(
        (
            rows[0].action.as_str(),
            rows[0].outcome.as_str(),
            rows[0].reason.as_deref(),
            rows[0].request_id.as_str()
        ),
        ("decrypt", "failure", None, "r1")
    );
}

/// Listing vaults: the rule of reading one vault's metadata, paged, never audited.
#[tokio::test]
async fn vault_listing_shows_what_the_caller_may_read() {
    let dir = rcrt_testkit::TempDir::new();
    let (store, svc) = setup(&dir, LocalKeyring::new(kek(1), vec![])).await;
    let mut all = Vec::new();
    for (ws, name) in [("other", "a"), ("ws", "b"), ("other", "c"), ("ws", "d")] {
        all.push(
            svc.create_vault(&ctx(), ws, name, Default::default())
                .await
                .unwrap()
                .id,
        );
    }
    let elsewhere = RequestContext {
        principal: Principal {
            tenant: TenantId::new("elsewhere"),
            ..Principal::anonymous()
        },
        request_id: "r3".into(),
    };
    svc.create_vault(&elsewhere, "ws", "theirs", Default::default())
        .await
        .unwrap();
    all.sort();
    let audit_rows = store.list_audit(None, 1000).await.unwrap().len();
    let ids =
        |page: &rcrt_core::vaults::VaultPage| page.items.iter().map(|v| v.id).collect::<Vec<_>>();

    // The tenant's administrator: every vault of its tenant, none of another's.
    let page = svc.list_vaults(&ctx(), None, None, None).await.unwrap();
    assert_eq!((ids(&page), page.next_cursor), (all.clone(), None));
    assert!(page
        .items
        .iter()
        .all(|v| v.tenant == TenantId::default_tenant()));
    let page = svc
        .list_vaults(&ctx(), Some("ws"), None, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.items.iter().all(|v| v.workspace == "ws"));
    let page = svc.list_vaults(&elsewhere, None, None, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name, "theirs");

    // A reader of one workspace: that workspace's vaults only, asked for or not.
    let page = svc
        .list_vaults(&outsider(), None, None, None)
        .await
        .unwrap();
    assert!(page.items.iter().all(|v| v.workspace == "other"));
    assert_eq!(page.items.len(), 2);
    let page = svc
        .list_vaults(&outsider(), Some("ws"), None, None)
        .await
        .unwrap();
    assert!(page.items.is_empty());

    // Paging: one at a time, the cursor is the last id.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = svc
            .list_vaults(&ctx(), None, Some(1), cursor.as_deref())
            .await
            .unwrap();
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(c) => {
                assert_eq!(
                    Some(c.as_str()),
                    seen.last().map(|id| id.to_string()).as_deref()
                );
                cursor = Some(c);
            }
            None => break,
        }
    }
    assert_eq!(seen, all);

    // Without secrets.read: refused, like listing secrets; bad parameters: invalid.
    let no_read = RequestContext {
        principal: Principal {
            roles: [Role::Decrypt, Role::Write].into_iter().collect(),
            workspaces: vec!["ws".into()],
            ..Principal::anonymous()
        },
        request_id: "r4".into(),
    };
    assert!(matches!(
        svc.list_vaults(&no_read, None, None, None).await,
        Err(CoreError::Forbidden(_))
    ));
    for (workspace, limit, cursor) in [
        (None, Some(0), None),
        (None, Some(1001), None),
        (None, None, Some("nope")),
        (Some("bad workspace"), None, None),
        (Some(""), None, None),
    ] {
        assert!(
            matches!(
                svc.list_vaults(&ctx(), workspace, limit, cursor).await,
                Err(CoreError::Invalid(_))
            ),
            "{workspace:?} {limit:?} {cursor:?}"
        );
    }
    let err = svc
        .list_vaults(&ctx(), Some("a/b"), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CoreError::Invalid(m) if m.starts_with("workspace must be")),
        "{err:?}"
    );
    // Listing leaves no audit row.
    assert_eq!(
        store.list_audit(None, 1000).await.unwrap().len(),
        audit_rows
    );
}
