//! One conformance suite, run against SQLite and PostgreSQL (a fresh database per test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use rcrt_store::{
    KekUsage, ListQuery, NewSecret, RecoveryRecord, Rewrapped, SecretMeta, Store, StoreError,
    TokenQuery, TokenRecord, VaultQuery, VaultRecord, VersionFilter, VersionRecord,
};
use rcrt_types::{
    AuditAction, AuditEntry, AuditOutcome, Role, Roles, Scope, ScopeType, SecretId, TenantId,
    TokenId, VaultId,
};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}

fn audit(action: AuditAction, id: Option<SecretId>, tenant: &TenantId) -> AuditEntry {
    AuditEntry {
        timestamp: now(),
        action,
        secret_id: id,
        token_id: None,
        tenant: tenant.clone(),
        user_id: "tester".into(),
        reason: Some("because".into()),
        outcome: AuditOutcome::Success,
        request_id: "req-1".into(),
        version: None,
    }
}

fn record(version: i64, kek: &str) -> VersionRecord {
    VersionRecord {
        version,
        kek_id: kek.into(),
        wrapped_dek: vec![1, 2, 3, version as u8],
        sealed_value: vec![9, 8, 7, version as u8],
        created_at: now(),
        recovery: None,
        created_by: String::new(),
    }
}

fn recovery(kek: &str, byte: u8) -> Option<RecoveryRecord> {
    Some(RecoveryRecord {
        kek_id: kek.into(),
        wrapped_dek: vec![0x5e, byte],
    })
}

fn new_secret(tenant: &TenantId, name: &str, scope: Scope) -> NewSecret {
    let t = now();
    NewSecret {
        meta: SecretMeta {
            id: SecretId::new(),
            tenant: tenant.clone(),
            name: name.parse().unwrap(),
            scope,
            version: 1,
            created_at: t,
            updated_at: t,
            attrs: Default::default(),
            deleted: None,
        },
        first: record(1, "kek-a"),
        vault: None,
        idempotency: None,
    }
}

async fn create(s: &dyn Store, tenant: &TenantId, name: &str, scope: Scope) -> NewSecret {
    let n = new_secret(tenant, name, scope);
    s.create_secret(
        n.clone(),
        audit(AuditAction::Create, Some(n.meta.id), tenant),
    )
    .await
    .unwrap();
    n
}

async fn create_get_round_trip(s: Arc<dyn Store>) {
    s.ping().await.unwrap();
    let t = TenantId::default_tenant();
    let n = create(&*s, &t, "API_KEY", Scope::global()).await;
    let meta = s.get_meta(&t, n.meta.id).await.unwrap().unwrap();
    assert_eq!(meta, n.meta);
    let (meta2, v) = s.get_current(&t, n.meta.id).await.unwrap().unwrap();
    assert_eq!(meta2, n.meta);
    assert_eq!(v, n.first);
    // Other tenant and unknown id see nothing.
    assert!(s
        .get_meta(&TenantId::new("other"), n.meta.id)
        .await
        .unwrap()
        .is_none());
    assert!(s.get_current(&t, SecretId::new()).await.unwrap().is_none());
}

async fn names_unique_per_scope(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    create(&*s, &t, "DUP", Scope::global()).await;
    let again = new_secret(&t, "DUP", Scope::global());
    let err = s
        .create_secret(again, audit(AuditAction::Create, None, &t))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NameTaken), "{err:?}");
    // Same name elsewhere is fine.
    let ws = Scope::new(ScopeType::Workspace, Some("ws1")).unwrap();
    create(&*s, &t, "DUP", ws.clone()).await;
    create(&*s, &TenantId::new("t2"), "DUP", Scope::global()).await;
    // The failed create left no audit row behind (its transaction rolled back).
    let rows = s.list_audit(None, 100).await.unwrap();
    assert_eq!(rows.len(), 3);
}

async fn list_filters_and_pages(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let ws = Scope::new(ScopeType::Workspace, Some("ws1")).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create(&*s, &t, &format!("G{i}"), Scope::global())
                .await
                .meta
                .id,
        );
    }
    for i in 0..3 {
        create(&*s, &t, &format!("W{i}"), ws.clone()).await;
    }
    create(&*s, &TenantId::new("t2"), "OTHER", Scope::global()).await;
    let q = |scope_type, scope_id: Option<&str>, limit, after| ListQuery {
        tenant: t.clone(),
        scope_type,
        scope_id: scope_id.map(str::to_owned),
        limit,
        after,
        visible_to: None,
        filter: Default::default(),
    };
    assert_eq!(s.list(&q(None, None, 100, None)).await.unwrap().len(), 8);
    let globals = s
        .list(&q(Some(ScopeType::Global), None, 100, None))
        .await
        .unwrap();
    assert_eq!(globals.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    let wsl = s
        .list(&q(Some(ScopeType::Workspace), Some("ws1"), 100, None))
        .await
        .unwrap();
    assert_eq!(wsl.len(), 3);
    // A scope id alone: the workspace and agent scopes of that id, never a global secret.
    let agent = Scope::new(ScopeType::Agent, Some("ws1")).unwrap();
    let agent_id = create(&*s, &t, "A0", agent).await.meta.id;
    let by_id = s.list(&q(None, Some("ws1"), 100, None)).await.unwrap();
    assert_eq!(by_id.len(), 4, "{by_id:?}");
    assert!(by_id.iter().any(|m| m.id == agent_id), "{by_id:?}");
    assert!(by_id.windows(2).all(|w| w[0].id < w[1].id), "{by_id:?}");
    assert!(s
        .list(&q(None, Some(""), 100, None))
        .await
        .unwrap()
        .is_empty());
    // Pages of 2 cover the 5 globals exactly once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list(&q(Some(ScopeType::Global), None, 2, after))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|m| m.id);
        seen.extend(page.into_iter().map(|m| m.id));
    }
    assert_eq!(seen, ids);
}

async fn versions_compare_and_swap(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let n = create(&*s, &t, "V", Scope::global()).await;
    let id = n.meta.id;
    let m = s
        .add_version(
            &t,
            id,
            record(2, "kek-a"),
            audit(AuditAction::Update, Some(id), &t),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.version, 2);
    let (_, v) = s.get_current(&t, id).await.unwrap().unwrap();
    assert_eq!(v.version, 2);
    assert_eq!(v.sealed_value, record(2, "x").sealed_value);
    // Stale: based on version 1 again.
    let err = s
        .add_version(
            &t,
            id,
            record(2, "kek-a"),
            audit(AuditAction::Update, Some(id), &t),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict), "{err:?}");
    // Unknown secret, or another tenant's.
    assert!(s
        .add_version(
            &t,
            SecretId::new(),
            record(2, "k"),
            audit(AuditAction::Update, None, &t)
        )
        .await
        .unwrap()
        .is_none());
    assert!(s
        .add_version(
            &TenantId::new("t2"),
            id,
            record(3, "k"),
            audit(AuditAction::Update, None, &t)
        )
        .await
        .unwrap()
        .is_none());
}

async fn racing_updates_lose_nothing(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let id = create(&*s, &t, "RACE", Scope::global()).await.meta.id;
    let writers = 8;
    let per_writer = 5;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let s = s.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_writer {
                loop {
                    let (m, _) = s.get_current(&t, id).await.unwrap().unwrap();
                    match s
                        .add_version(
                            &t,
                            id,
                            record(m.version + 1, "kek-a"),
                            audit(AuditAction::Update, Some(id), &t),
                        )
                        .await
                    {
                        Ok(Some(_)) => break,
                        Err(StoreError::VersionConflict) => continue,
                        other => panic!("{other:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (m, v) = s.get_current(&t, id).await.unwrap().unwrap();
    let total = 1 + writers * per_writer;
    assert_eq!(m.version, total);
    assert_eq!(v.version, total);
    let usage = s.kek_usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].versions, total);
    let updates = s.list_audit(Some(id), 1000).await.unwrap();
    assert_eq!(updates.len() as i64, total); // 1 create + every update
}

async fn delete_shreds_and_keeps_audit(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let id = create(&*s, &t, "GONE", Scope::global()).await.meta.id;
    s.add_version(
        &t,
        id,
        record(2, "kek-b"),
        audit(AuditAction::Update, Some(id), &t),
    )
    .await
    .unwrap();
    let t2 = TenantId::new("t2");
    assert!(!s
        .delete_secret(&t2, id, audit(AuditAction::Delete, Some(id), &t2))
        .await
        .unwrap());
    assert!(s
        .delete_secret(&t, id, audit(AuditAction::Delete, Some(id), &t))
        .await
        .unwrap());
    assert!(s.get_current(&t, id).await.unwrap().is_none());
    assert!(
        s.kek_usage().await.unwrap().is_empty(),
        "versions must be gone"
    );
    let rows = s.list_audit(Some(id), 100).await.unwrap();
    let actions: Vec<_> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["delete", "delete", "update", "create"]);
    assert_eq!(
        rows[1].tenant, "t2",
        "the other tenant's failed attempt is logged as its own"
    );
    // A second delete finds nothing.
    assert!(!s
        .delete_secret(&t, id, audit(AuditAction::Delete, Some(id), &t))
        .await
        .unwrap());
}

async fn audit_rows_round_trip(s: Arc<dyn Store>) {
    let t = TenantId::new("acme");
    let id = SecretId::new();
    let mut e = audit(AuditAction::Decrypt, Some(id), &t);
    e.outcome = AuditOutcome::Failure;
    e.reason = None;
    e.request_id = "req-xyz".into();
    s.append_audit(e.clone()).await.unwrap();
    let rows = s.list_audit(Some(id), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.timestamp, e.timestamp);
    assert_eq!(
        (r.action.as_str(), r.outcome.as_str(), r.tenant.as_str()),
        ("decrypt", "failure", "acme")
    );
    assert_eq!(
        (r.reason.as_deref(), r.request_id.as_str()),
        (None, "req-xyz")
    );
    assert_eq!(r.secret_id, Some(id));
    assert_eq!(r.user_id, "tester");
    // The first row of its lane: linked to GENESIS over exactly these fields.
    let link = r.chain.clone().expect("a chained row");
    assert_eq!(link.seq, 1);
    let content = rcrt_store::chain::content_hash(&rcrt_store::entry_chain_fields(&e));
    assert_eq!(
        link.hash,
        rcrt_store::chain::link_hash(&rcrt_store::chain::GENESIS, &content, link.lane, 1)
    );
}

async fn kek_usage_counts(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let a = create(&*s, &t, "A", Scope::global()).await.meta.id;
    create(&*s, &t, "B", Scope::global()).await;
    s.add_version(
        &t,
        a,
        record(2, "kek-b"),
        audit(AuditAction::Update, Some(a), &t),
    )
    .await
    .unwrap();
    let usage = s.kek_usage().await.unwrap();
    let pairs: Vec<_> = usage
        .iter()
        .map(|u| (u.kek_id.as_str(), u.versions))
        .collect();
    assert_eq!(pairs, [("kek-a", 2), ("kek-b", 1)]);
}

/// The backlog census counts exactly the versions a re-wrap to (KEK, recovery KEK) has work on,
/// as the full census filtered by the same rule, and on both sides of each range (KEK ids and
/// recovery KEK ids below and above the current ones, and no recovery wrap at all).
async fn kek_backlog_counts_only_work_left(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    assert!(s
        .kek_backlog("kek-b", Some("rec-1"))
        .await
        .unwrap()
        .is_empty());
    let a = create(&*s, &t, "A", Scope::global()).await.meta.id;
    create(&*s, &t, "B", Scope::global()).await;
    let mut v2 = record(2, "kek-b");
    v2.recovery = recovery("rec-1", 2);
    s.add_version(&t, a, v2, audit(AuditAction::Update, Some(a), &t))
        .await
        .unwrap();
    for (name, kek, rec) in [
        ("C", "kek-b", None),
        ("D", "kek-b", Some("rec-0")),
        ("E", "kek-b", Some("rec-2")),
        ("F", "kek-c", Some("rec-1")),
        ("G", "kek-b", Some("rec-1")),
    ] {
        let mut n = new_secret(&t, name, Scope::global());
        n.first.kek_id = kek.into();
        n.first.recovery = rec.and_then(|r| recovery(r, 1));
        s.create_secret(n.clone(), audit(AuditAction::Create, Some(n.meta.id), &t))
            .await
            .unwrap();
    }
    let triples = |usage: Vec<KekUsage>| -> Vec<(String, Option<String>, i64)> {
        usage
            .into_iter()
            .map(|u| (u.kek_id, u.recovery_kek_id, u.versions))
            .collect()
    };
    let owned = |k: &str, r: Option<&str>, n: i64| (k.to_owned(), r.map(str::to_owned), n);
    let full = triples(s.kek_usage().await.unwrap());
    for (kek, rec) in [
        ("kek-b", None),
        ("kek-b", Some("rec-1")),
        ("kek-a", Some("rec-0")),
        ("kek-c", Some("rec-1")),
        ("kek-z", None),
        ("kek-0", Some("rec-9")),
    ] {
        let expected: Vec<_> = full
            .iter()
            .filter(|(k, r, _)| k != kek || rec.is_some_and(|rec| r.as_deref() != Some(rec)))
            .cloned()
            .collect();
        assert_eq!(
            triples(s.kek_backlog(kek, rec).await.unwrap()),
            expected,
            "backlog for ({kek}, {rec:?})"
        );
        let filter = VersionFilter::NeedsRewrap {
            kek_id: kek.into(),
            recovery_kek_id: rec.map(str::to_owned),
        };
        let scanned = s.scan_versions(&filter, None, 100, false).await.unwrap();
        assert_eq!(
            scanned.len() as i64,
            expected.iter().map(|(_, _, n)| n).sum::<i64>(),
            "backlog and the re-wrap's own filter agree for ({kek}, {rec:?})"
        );
    }
    assert_eq!(
        triples(s.kek_backlog("kek-b", None).await.unwrap()),
        [owned("kek-a", None, 2), owned("kek-c", Some("rec-1"), 1)]
    );
    assert_eq!(
        triples(s.kek_backlog("kek-b", Some("rec-1")).await.unwrap()),
        [
            owned("kek-a", None, 2),
            owned("kek-b", None, 1),
            owned("kek-b", Some("rec-0"), 1),
            owned("kek-b", Some("rec-2"), 1),
            owned("kek-c", Some("rec-1"), 1),
        ]
    );
}

async fn scan_and_replace_wrapped(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create(&*s, &t, &format!("S{i}"), Scope::global())
                .await
                .meta
                .id,
        );
    }
    let cutoff = now();
    s.add_version(
        &t,
        ids[0],
        record(2, "kek-b"),
        audit(AuditAction::Update, Some(ids[0]), &t),
    )
    .await
    .unwrap();
    let not_b = VersionFilter::NotUnderKek("kek-b".into());
    // Paging with a cursor visits each of the 5 kek-a versions once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.scan_versions(&not_b, after, 2, false).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.secret_id, last.version));
        assert!(page
            .iter()
            .all(|v| v.kek_id == "kek-a" && v.sealed_value.is_empty()));
        seen.extend(page.into_iter().map(|v| (v.secret_id, v.version)));
    }
    let expected: Vec<_> = ids.iter().map(|id| (*id, 1)).collect();
    assert_eq!(seen, expected);
    let all = s
        .scan_versions(&VersionFilter::All, None, 100, true)
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    assert!(all
        .iter()
        .all(|v| !v.sealed_value.is_empty() && v.tenant == t));
    let before = s
        .scan_versions(&VersionFilter::SealedBefore(cutoff), None, 100, false)
        .await
        .unwrap();
    assert_eq!(
        before.len(),
        5,
        "the version written after the cutoff is excluded"
    );

    // Compare-and-swap: a stale old_wrapped_dek changes nothing.
    let v = &all[0];
    let stale = Rewrapped {
        secret_id: v.secret_id,
        version: v.version,
        old_wrapped_dek: vec![0xde, 0xad],
        kek_id: "kek-c".into(),
        wrapped_dek: vec![7],
        recovery: None,
        resealed: None,
    };
    assert_eq!(s.replace_wrapped(vec![stale]).await.unwrap(), 0);
    let rows: Vec<Rewrapped> = all
        .iter()
        .filter(|v| v.kek_id == "kek-a")
        .map(|v| Rewrapped {
            secret_id: v.secret_id,
            version: v.version,
            old_wrapped_dek: v.wrapped_dek.clone(),
            kek_id: "kek-b".into(),
            wrapped_dek: vec![42, v.version as u8],
            recovery: None,
            resealed: (v.secret_id == ids[1]).then(|| (vec![5, 5, 5], now())),
        })
        .collect();
    assert_eq!(s.replace_wrapped(rows.clone()).await.unwrap(), 5);
    assert_eq!(s.replace_wrapped(rows).await.unwrap(), 0, "idempotent");
    let usage = s.kek_usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].kek_id.as_str(), usage[0].versions), ("kek-b", 6));
    let (_, v1) = s.get_current(&t, ids[1]).await.unwrap().unwrap();
    assert_eq!(v1.sealed_value, vec![5, 5, 5]);
    assert_eq!(v1.wrapped_dek, vec![42, 1]);
    let (_, v2) = s.get_current(&t, ids[2]).await.unwrap().unwrap();
    assert_eq!(
        v2.sealed_value,
        record(1, "x").sealed_value,
        "value untouched by a re-wrap"
    );
    // Re-sealed rows leave the SealedBefore set; merely re-wrapped ones stay in it.
    let before = s
        .scan_versions(&VersionFilter::SealedBefore(cutoff), None, 100, false)
        .await
        .unwrap();
    assert_eq!(before.len(), 4);
}

/// Recovery wraps: written by every insert of a version (create, update, vault), read back by
/// every read of one, counted by the census per (KEK, recovery KEK), selected by the re-wrap
/// filter when missing or under another recovery KEK, and written by the compare-and-swap.
async fn recovery_wraps(s: Arc<dyn Store>) {
    let t = TenantId::new("acme");
    let ids = |rows: &[rcrt_store::StoredVersion]| -> Vec<(SecretId, i64)> {
        rows.iter().map(|v| (v.secret_id, v.version)).collect()
    };
    // With a recovery wrap (created, then updated) and without one.
    let mut with = new_secret(&t, "WITH", Scope::global());
    with.first.recovery = recovery("kek-r", 1);
    s.create_secret(with.clone(), audit(AuditAction::Create, None, &t))
        .await
        .unwrap();
    let w = with.meta.id;
    let (_, v) = s.get_current(&t, w).await.unwrap().unwrap();
    assert_eq!(v.recovery, recovery("kek-r", 1));
    let mut v2 = record(2, "kek-a");
    v2.recovery = recovery("kek-r", 2);
    s.add_version(&t, w, v2, audit(AuditAction::Update, Some(w), &t))
        .await
        .unwrap();
    let (_, v) = s.get_current(&t, w).await.unwrap().unwrap();
    assert_eq!((v.version, v.recovery), (2, recovery("kek-r", 2)));
    let without = create(&*s, &t, "WITHOUT", Scope::global()).await.meta.id;
    assert_eq!(
        s.get_current(&t, without)
            .await
            .unwrap()
            .unwrap()
            .1
            .recovery,
        None
    );
    // A vault's secrets carry theirs too.
    let ws = Scope::new(ScopeType::Workspace, Some("w1")).unwrap();
    let vault = VaultRecord {
        id: VaultId::new(),
        tenant: t.clone(),
        workspace: "w1".into(),
        name: "v".into(),
        created_at: now(),
    };
    let mut in_vault = new_secret(&t, "v/KEY", ws);
    in_vault.vault = Some(vault.id);
    in_vault.first.recovery = recovery("kek-r", 3);
    s.create_vault(
        vault.clone(),
        vec![in_vault.clone()],
        vec![audit(AuditAction::Create, None, &t)],
    )
    .await
    .unwrap();
    let listed = s.vault_secrets(&t, vault.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.recovery, recovery("kek-r", 3));

    // The census groups by (KEK, recovery KEK), versions without a recovery wrap first.
    let usage = s.kek_usage().await.unwrap();
    let pairs: Vec<_> = usage
        .iter()
        .map(|u| (u.kek_id.as_str(), u.recovery_kek_id.as_deref(), u.versions))
        .collect();
    assert_eq!(pairs, [("kek-a", None, 1), ("kek-a", Some("kek-r"), 3)]);
    assert_eq!(
        KekUsage::versions_per_kek(&usage)
            .into_iter()
            .collect::<Vec<_>>(),
        [("kek-a".to_owned(), 4)]
    );

    // Scans carry the recovery wrap; the re-wrap filter selects what needs work.
    let all = s
        .scan_versions(&VersionFilter::All, None, 100, false)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    let by_id = |id: SecretId, version: i64| {
        all.iter()
            .find(|v| v.secret_id == id && v.version == version)
            .unwrap()
            .recovery
            .clone()
    };
    assert_eq!(by_id(w, 1), recovery("kek-r", 1));
    assert_eq!(by_id(without, 1), None);
    let needs = |kek: &str, rec: Option<&str>| VersionFilter::NeedsRewrap {
        kek_id: kek.into(),
        recovery_kek_id: rec.map(str::to_owned),
    };
    let scan = |f: VersionFilter| {
        let s = s.clone();
        async move { s.scan_versions(&f, None, 100, false).await.unwrap() }
    };
    assert!(scan(needs("kek-a", None)).await.is_empty(), "nothing to do");
    assert_eq!(
        ids(&scan(needs("kek-a", Some("kek-r"))).await),
        [(without, 1)],
        "the version without a recovery wrap is back-filled"
    );
    assert_eq!(
        scan(needs("kek-a", Some("kek-r2"))).await.len(),
        4,
        "a new recovery KEK re-wraps every version"
    );
    assert_eq!(
        scan(needs("kek-b", None)).await.len(),
        4,
        "a new main KEK too"
    );
    assert_eq!(
        scan(VersionFilter::NotUnderKek("kek-a".into())).await.len(),
        0
    );

    // The compare-and-swap writes the recovery wrap with the main one, and can clear it.
    let row = all.iter().find(|v| v.secret_id == without).unwrap().clone();
    let fill = Rewrapped {
        secret_id: row.secret_id,
        version: row.version,
        old_wrapped_dek: row.wrapped_dek.clone(),
        kek_id: "kek-a".into(),
        wrapped_dek: vec![43],
        recovery: recovery("kek-r", 9),
        resealed: None,
    };
    assert_eq!(s.replace_wrapped(vec![fill.clone()]).await.unwrap(), 1);
    assert_eq!(s.replace_wrapped(vec![fill]).await.unwrap(), 0, "stale");
    let (_, v) = s.get_current(&t, without).await.unwrap().unwrap();
    assert_eq!(
        (v.wrapped_dek, v.recovery),
        (vec![43], recovery("kek-r", 9))
    );
    assert!(scan(needs("kek-a", Some("kek-r"))).await.is_empty());
    let usage = s.kek_usage().await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].recovery_kek_id.as_deref(), Some("kek-r"));
    let clear = Rewrapped {
        secret_id: without,
        version: 1,
        old_wrapped_dek: vec![43],
        kek_id: "kek-b".into(),
        wrapped_dek: vec![44],
        recovery: None,
        resealed: None,
    };
    assert_eq!(s.replace_wrapped(vec![clear]).await.unwrap(), 1);
    let (_, v) = s.get_current(&t, without).await.unwrap().unwrap();
    assert_eq!((v.kek_id.as_str(), v.recovery), ("kek-b", None));
}

async fn leases_and_state(s: Arc<dyn Store>) {
    let t0 = now();
    let ttl = std::time::Duration::from_secs(30);
    assert!(s.try_lease("rewrap", "a", t0, ttl).await.unwrap());
    assert!(
        s.try_lease("rewrap", "a", t0, ttl).await.unwrap(),
        "renewal"
    );
    assert!(!s.try_lease("rewrap", "b", t0, ttl).await.unwrap());
    let later = t0 + std::time::Duration::from_secs(31);
    assert!(
        s.try_lease("rewrap", "b", later, ttl).await.unwrap(),
        "expired lease"
    );
    assert!(!s.try_lease("rewrap", "a", later, ttl).await.unwrap());
    s.release_lease("rewrap", "b").await.unwrap();
    assert!(s.try_lease("rewrap", "a", later, ttl).await.unwrap());

    assert_eq!(s.get_state("k").await.unwrap(), None);
    s.set_state("k", Some("v1")).await.unwrap();
    s.set_state("k", Some("v2")).await.unwrap();
    assert_eq!(s.get_state("k").await.unwrap().as_deref(), Some("v2"));
    s.set_state("k", None).await.unwrap();
    assert_eq!(s.get_state("k").await.unwrap(), None);
}

async fn vaults(s: Arc<dyn Store>) {
    let t = TenantId::new("acme");
    let ws = Scope::new(ScopeType::Workspace, Some("w1")).unwrap();
    let vault = VaultRecord {
        id: VaultId::new(),
        tenant: t.clone(),
        workspace: "w1".into(),
        name: "payments".into(),
        created_at: now(),
    };
    let mut secrets = Vec::new();
    for key in ["B_KEY", "A_KEY"] {
        let mut n = new_secret(&t, &format!("payments/{key}"), ws.clone());
        n.vault = Some(vault.id);
        secrets.push(n);
    }
    s.create_vault(
        vault.clone(),
        secrets.clone(),
        vec![audit(AuditAction::Create, None, &t)],
    )
    .await
    .unwrap();
    // Same name in the same workspace: refused, and nothing of it is left behind.
    let again = VaultRecord {
        id: VaultId::new(),
        ..vault.clone()
    };
    let err = s.create_vault(again, vec![], vec![]).await.unwrap_err();
    assert!(matches!(err, StoreError::NameTaken), "{err:?}");
    assert_eq!(
        s.get_vault(&t, vault.id).await.unwrap(),
        Some(vault.clone())
    );
    assert_eq!(
        s.find_vaults(&t, "payments").await.unwrap(),
        vec![vault.clone()]
    );
    assert!(s
        .get_vault(&TenantId::new("other"), vault.id)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .find_vaults(&TenantId::new("other"), "payments")
        .await
        .unwrap()
        .is_empty());
    let members = s.vault_secrets(&t, vault.id).await.unwrap();
    let names: Vec<_> = members.iter().map(|(m, _)| m.name.to_string()).collect();
    assert_eq!(names, ["payments/A_KEY", "payments/B_KEY"]);
    assert!(s
        .vault_secrets(&TenantId::new("other"), vault.id)
        .await
        .unwrap()
        .is_empty());
    // A second vault with a clashing secret name fails whole.
    let clash = VaultRecord {
        id: VaultId::new(),
        name: "other".into(),
        ..vault.clone()
    };
    let mut dup = new_secret(&t, "payments/A_KEY", ws.clone());
    dup.vault = Some(clash.id);
    assert!(s
        .create_vault(clash.clone(), vec![dup], vec![])
        .await
        .is_err());
    assert!(s.get_vault(&t, clash.id).await.unwrap().is_none());
    // Delete: the vault, its secrets and their versions go; audit rows stay.
    assert!(s
        .delete_vault(&t, vault.id, vec![audit(AuditAction::Delete, None, &t)])
        .await
        .unwrap());
    assert!(s.get_vault(&t, vault.id).await.unwrap().is_none());
    for n in &secrets {
        assert!(s.get_meta(&t, n.meta.id).await.unwrap().is_none());
    }
    assert!(s.kek_usage().await.unwrap().is_empty());
    assert!(!s.delete_vault(&t, vault.id, vec![]).await.unwrap());
}

/// An empty vault in `workspace`, created and returned.
async fn add_vault(s: &dyn Store, tenant: &TenantId, workspace: &str, name: &str) -> VaultRecord {
    let vault = VaultRecord {
        id: VaultId::new(),
        tenant: tenant.clone(),
        workspace: workspace.into(),
        name: name.into(),
        created_at: now(),
    };
    s.create_vault(vault.clone(), vec![], vec![]).await.unwrap();
    vault
}

/// Every page of `query` (pages of `query.limit`), checking each is in id order and continues
/// after the previous one.
async fn all_vault_pages(s: &dyn Store, query: &VaultQuery) -> Vec<VaultRecord> {
    let mut out: Vec<VaultRecord> = Vec::new();
    let mut q = query.clone();
    loop {
        let page = s.list_vaults(&q).await.unwrap();
        assert!(page.len() <= q.limit as usize);
        assert!(page.windows(2).all(|w| w[0].id < w[1].id), "{page:?}");
        if let (Some(last), Some(first)) = (out.last(), page.first()) {
            assert!(last.id < first.id);
        }
        let done = page.len() < q.limit as usize;
        q.after = page.last().map(|v| v.id).or(q.after);
        out.extend(page);
        if done {
            return out;
        }
    }
}

async fn vault_listing(s: Arc<dyn Store>) {
    let t = TenantId::new("acme");
    let other = TenantId::new("other");
    let mut mine = Vec::new();
    for (i, ws) in ["w1", "w2", "w1", "we\"ird", "w2", "w1"].iter().enumerate() {
        mine.push(add_vault(&*s, &t, ws, &format!("v{i}")).await);
    }
    // A vault with a member secret: listing shows the vault, not its secrets.
    let ws1 = Scope::new(ScopeType::Workspace, Some("w1")).unwrap();
    let with_key = VaultRecord {
        id: VaultId::new(),
        tenant: t.clone(),
        workspace: "w1".into(),
        name: "keys".into(),
        created_at: now(),
    };
    let mut member = new_secret(&t, "keys/A", ws1);
    member.vault = Some(with_key.id);
    s.create_vault(with_key.clone(), vec![member], vec![])
        .await
        .unwrap();
    mine.push(with_key);
    // Another tenant with the same workspace and vault names.
    let theirs = add_vault(&*s, &other, "w1", "v0").await;
    mine.sort_by_key(|v| v.id);

    let q = |workspace: Option<&str>, visible: Option<&[&str]>, limit| VaultQuery {
        tenant: t.clone(),
        workspace: workspace.map(str::to_owned),
        visible_workspaces: visible.map(|v| v.iter().map(|w| (*w).to_owned()).collect()),
        after: None,
        limit,
    };
    let only = |pred: &dyn Fn(&VaultRecord) -> bool| -> Vec<VaultRecord> {
        mine.iter().filter(|v| pred(v)).cloned().collect()
    };

    // Everything of the tenant, in id order, records as created; never another tenant's.
    assert_eq!(s.list_vaults(&q(None, None, 100)).await.unwrap(), mine);
    assert_eq!(
        s.list_vaults(&VaultQuery {
            tenant: other.clone(),
            ..q(None, None, 100)
        })
        .await
        .unwrap(),
        vec![theirs.clone()]
    );
    assert!(s
        .list_vaults(&VaultQuery {
            tenant: TenantId::new("nobody"),
            ..q(Some("w1"), None, 100)
        })
        .await
        .unwrap()
        .is_empty());

    // Workspace filter.
    let w1 = only(&|v| v.workspace == "w1");
    assert_eq!(w1.len(), 4);
    assert_eq!(s.list_vaults(&q(Some("w1"), None, 100)).await.unwrap(), w1);
    assert!(s
        .list_vaults(&q(Some("w9"), None, 100))
        .await
        .unwrap()
        .is_empty());

    // Visibility: only the workspaces given (an odd name bound as it is), none for an empty
    // list; with a workspace filter, both apply.
    let visible = only(&|v| v.workspace == "w2" || v.workspace == "we\"ird");
    assert_eq!(
        s.list_vaults(&q(None, Some(&["w2", "we\"ird", "w9"]), 100))
            .await
            .unwrap(),
        visible
    );
    assert!(s
        .list_vaults(&q(None, Some(&[]), 100))
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .list_vaults(&q(Some("w1"), Some(&["w2"]), 100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list_vaults(&q(Some("w1"), Some(&["w1", "w2"]), 100))
            .await
            .unwrap(),
        w1
    );

    // Paging: `after` and `limit`, alone and with each filter.
    for limit in [1, 2, 3, 7, 8] {
        assert_eq!(all_vault_pages(&*s, &q(None, None, limit)).await, mine);
        assert_eq!(all_vault_pages(&*s, &q(Some("w1"), None, limit)).await, w1);
        assert_eq!(
            all_vault_pages(&*s, &q(None, Some(&["w2", "we\"ird"]), limit)).await,
            visible
        );
    }
    let after_third = VaultQuery {
        after: Some(mine[2].id),
        ..q(None, None, 2)
    };
    assert_eq!(s.list_vaults(&after_third).await.unwrap(), mine[3..5]);
    let after_last = VaultQuery {
        after: mine.last().map(|v| v.id),
        ..q(None, None, 100)
    };
    assert!(s.list_vaults(&after_last).await.unwrap().is_empty());
    // An id of another tenant as the cursor only says where to start.
    let after_theirs = VaultQuery {
        after: Some(theirs.id),
        ..q(None, None, 100)
    };
    let later: Vec<_> = only(&|v| v.id > theirs.id);
    assert_eq!(s.list_vaults(&after_theirs).await.unwrap(), later);

    // A deleted vault is gone from every listing.
    let gone = w1[1].clone();
    assert!(s.delete_vault(&t, gone.id, vec![]).await.unwrap());
    mine.retain(|v| v.id != gone.id);
    assert_eq!(s.list_vaults(&q(None, None, 100)).await.unwrap(), mine);
    assert!(!s
        .list_vaults(&q(Some("w1"), Some(&["w1"]), 100))
        .await
        .unwrap()
        .contains(&gone));
    assert_eq!(all_vault_pages(&*s, &q(None, None, 2)).await, mine);
}

fn token(tenant: &TenantId, name: &str, created_by: &str) -> TokenRecord {
    TokenRecord {
        id: TokenId::from(*uuid::Uuid::new_v4().as_bytes()),
        tenant: tenant.clone(),
        name: name.into(),
        principal: format!("{name}-principal"),
        roles: [Role::Read, Role::TokensCreate].into_iter().collect(),
        workspaces: vec!["w1".into(), "w 2".into()],
        secret_hash: [name.len() as u8; 32],
        created_by: created_by.into(),
        created_at: now(),
        expires_at: Some(now() + time::Duration::days(1)),
        revoked_at: None,
        parent: None,
    }
}

fn token_audit(action: AuditAction, id: TokenId, tenant: &TenantId) -> AuditEntry {
    AuditEntry {
        token_id: Some(id),
        ..audit(action, None, tenant)
    }
}

async fn tokens(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let other = TenantId::new("t2");
    assert!(!s.has_tokens().await.unwrap());
    // The first token goes in only while there is none, once.
    let first = TokenRecord {
        expires_at: None,
        roles: Roles::all(),
        workspaces: vec![],
        ..token(&t, "boot", "bootstrap")
    };
    assert!(s
        .create_first_token(
            first.clone(),
            token_audit(AuditAction::TokenCreate, first.id, &t)
        )
        .await
        .unwrap());
    let second = token(&t, "boot2", "bootstrap");
    assert!(!s
        .create_first_token(
            second.clone(),
            token_audit(AuditAction::TokenCreate, second.id, &t)
        )
        .await
        .unwrap());
    assert!(s.find_token(second.id).await.unwrap().is_none());
    assert!(s.has_tokens().await.unwrap());
    assert_eq!(s.find_token(first.id).await.unwrap().as_ref(), Some(&first));

    // ensure_token: inserts once, then returns what is stored (not the caller's copy).
    let boot = token(&t, "ensure", "bootstrap");
    let stored = s
        .ensure_token(
            boot.clone(),
            token_audit(AuditAction::TokenCreate, boot.id, &t),
        )
        .await
        .unwrap();
    assert_eq!(stored, boot);
    let impostor = TokenRecord {
        secret_hash: [0xEE; 32],
        ..boot.clone()
    };
    let stored = s
        .ensure_token(impostor, token_audit(AuditAction::TokenCreate, boot.id, &t))
        .await
        .unwrap();
    assert_eq!(
        stored.secret_hash, boot.secret_hash,
        "the first insert wins"
    );

    // A console session keeps the id of the token it was opened with (a tenant of its own, so
    // the listings below count as before).
    let t3 = TenantId::new("t3");
    let session = TokenRecord {
        parent: Some(first.id),
        ..token(&t3, "console:session", "boot-principal")
    };
    s.create_token(
        session.clone(),
        token_audit(AuditAction::TokenCreate, session.id, &t3),
    )
    .await
    .unwrap();
    let found = s.find_token(session.id).await.unwrap().unwrap();
    assert_eq!(found.parent, Some(first.id));
    assert_eq!(found, session);

    // Minted tokens in two tenants; a duplicate id is refused.
    let mut mine = Vec::new();
    for i in 0..5 {
        let by = if i % 2 == 0 { "alice" } else { "bob" };
        let r = token(&t, &format!("tok{i}"), by);
        s.create_token(r.clone(), token_audit(AuditAction::TokenCreate, r.id, &t))
            .await
            .unwrap();
        mine.push(r);
    }
    let theirs = token(&other, "theirs", "alice");
    s.create_token(
        theirs.clone(),
        token_audit(AuditAction::TokenCreate, theirs.id, &other),
    )
    .await
    .unwrap();
    assert!(s
        .create_token(
            mine[0].clone(),
            token_audit(AuditAction::TokenCreate, mine[0].id, &t)
        )
        .await
        .is_err());
    // find_token crosses tenants (authentication does not know the tenant yet).
    assert_eq!(
        s.find_token(theirs.id).await.unwrap().as_ref(),
        Some(&theirs)
    );

    // Listing: the tenant's only, in id order, paged; related_to filters by creator/principal.
    let page = |related_to: Option<&str>, after: Option<TokenId>, limit: u32| TokenQuery {
        tenant: t.clone(),
        related_to: related_to.map(str::to_owned),
        after,
        limit,
    };
    let all = s.list_tokens(&page(None, None, 100)).await.unwrap();
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(all.iter().all(|r| r.tenant == t));
    let first2 = s.list_tokens(&page(None, None, 2)).await.unwrap();
    let rest = s
        .list_tokens(&page(None, Some(first2[1].id), 100))
        .await
        .unwrap();
    assert_eq!(first2.len() + rest.len(), 7);
    let alices = s
        .list_tokens(&page(Some("alice"), None, 100))
        .await
        .unwrap();
    assert_eq!(alices.len(), 3);
    let by_principal = s
        .list_tokens(&page(Some("tok1-principal"), None, 100))
        .await
        .unwrap();
    assert_eq!(by_principal, vec![mine[1].clone()]);

    // Revoking: in the tenant only; the first revocation time is kept; audited either way.
    let at = now();
    assert!(s
        .revoke_token(
            &t,
            mine[0].id,
            at,
            token_audit(AuditAction::TokenRevoke, mine[0].id, &t)
        )
        .await
        .unwrap());
    let later = at + time::Duration::seconds(5);
    assert!(s
        .revoke_token(
            &t,
            mine[0].id,
            later,
            token_audit(AuditAction::TokenRevoke, mine[0].id, &t)
        )
        .await
        .unwrap());
    assert_eq!(
        s.find_token(mine[0].id).await.unwrap().unwrap().revoked_at,
        Some(at)
    );
    assert!(!s
        .revoke_token(
            &t,
            theirs.id,
            at,
            token_audit(AuditAction::TokenRevoke, theirs.id, &t)
        )
        .await
        .unwrap());
    assert!(s
        .find_token(theirs.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    let rows = s.list_audit(None, 100).await.unwrap();
    let revokes: Vec<_> = rows.iter().filter(|r| r.action == "token_revoke").collect();
    assert_eq!(revokes.len(), 3);
    assert!(revokes.iter().any(|r| r.token_id == Some(theirs.id)));
    // One create row per inserted token: first, ensure (once), the session, five minted,
    // theirs.
    let creates = rows.iter().filter(|r| r.action == "token_create").count();
    assert_eq!(creates, 9);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = rcrt_testkit::TempDir::new();
                    let path = dir.path().join("t.db");
                    let store = rcrt_store::SqliteStore::open(path.to_str().unwrap()).await.unwrap();
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

suite!(
    create_get_round_trip,
    names_unique_per_scope,
    list_filters_and_pages,
    versions_compare_and_swap,
    racing_updates_lose_nothing,
    delete_shreds_and_keeps_audit,
    audit_rows_round_trip,
    kek_usage_counts,
    kek_backlog_counts_only_work_left,
    scan_and_replace_wrapped,
    recovery_wraps,
    leases_and_state,
    vaults,
    vault_listing,
    tokens,
);

/// Row-level security: a connection acting as the app role sees only the tenant it has set, even
/// with a query that forgets its tenant filter.
#[tokio::test]
async fn postgres_row_level_security_isolates_tenants() {
    let db = rcrt_testkit::TempPgDb::create().await;
    let store = rcrt_store::PgStore::connect(db.url()).await.unwrap();
    let a = TenantId::new("tenant-a");
    let b = TenantId::new("tenant-b");
    let sa = create(&store, &a, "A1", Scope::global()).await.meta.id;
    create(&store, &b, "B1", Scope::global()).await;
    create(&store, &b, "B2", Scope::global()).await;
    let ta = token(&a, "ta", "x");
    store
        .create_token(ta.clone(), token_audit(AuditAction::TokenCreate, ta.id, &a))
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // As the owner: everything.
    assert_eq!(count("SELECT count(*) FROM secrets").await, 3);
    // The database's own app role (migration 0004), recorded in rcrt_state.
    let app: String = client
        .query_one("SELECT value FROM rcrt_state WHERE key = 'app_role'", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!("SET ROLE {app}; SET rcrt.tenant = 'tenant-b'"))
        .await
        .unwrap();
    assert_eq!(count("SELECT count(*) FROM secrets").await, 2);
    assert_eq!(count("SELECT count(*) FROM secret_versions").await, 2);
    assert_eq!(count("SELECT count(*) FROM secret_access_log").await, 2);
    assert_eq!(count("SELECT count(*) FROM auth_tokens").await, 0);
    assert_eq!(
        client
            .execute("UPDATE auth_tokens SET revoked_at = now()", &[])
            .await
            .unwrap(),
        0,
        "tenant-b must not revoke tenant-a's token"
    );
    let row = client
        .query_opt("SELECT name FROM secrets WHERE id = $1", &[&sa.as_uuid()])
        .await
        .unwrap();
    assert!(
        row.is_none(),
        "tenant-b must not see tenant-a's secret by id"
    );
    // Writing a row for another tenant is refused.
    let err = client
        .execute(
            "UPDATE secrets SET name = 'X' WHERE id = $1",
            &[&sa.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(err, 0);
    assert!(client
        .execute(
            "INSERT INTO secret_access_log (timestamp, action, tenant, user_id, outcome, request_id)
             VALUES (now(), 'decrypt', 'tenant-a', 'x', 'success', 'r')",
            &[],
        )
        .await
        .is_err());
    // A version cannot be attached to another tenant's secret, under either tenant's name, nor
    // moved to another tenant (the version's tenant column decides who reads it: 0011).
    for tenant in ["tenant-b", "tenant-a"] {
        let err = client
            .execute(
                "INSERT INTO secret_versions
                     (secret_id, tenant, version, kek_id, wrapped_dek, sealed_value, created_at,
                      sealed_at, created_by)
                 VALUES ($1, $2, 2, 'k', '\\x00', '\\x00', now(), now(), 'x')",
                &[&sa.as_uuid(), &tenant],
            )
            .await
            .unwrap_err();
        assert!(
            err.as_db_error()
                .is_some_and(|e| e.message().contains("row-level security")),
            "{tenant}: {err:?}"
        );
    }
    let err = client
        .execute("UPDATE secret_versions SET tenant = 'tenant-a'", &[])
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("row-level security")),
        "{err:?}"
    );
    client
        .batch_execute("SET rcrt.tenant = 'nobody'")
        .await
        .unwrap();
    assert_eq!(count("SELECT count(*) FROM secrets").await, 0);
    assert_eq!(count("SELECT count(*) FROM secret_versions").await, 0);
    client.batch_execute("RESET ROLE").await.unwrap();
    // The store's own tenant-scoped reads still work after the raw session changed roles.
    assert!(store.get_meta(&a, sa).await.unwrap().is_some());
    assert!(store.get_meta(&b, sa).await.unwrap().is_none());
    assert_eq!(store.kek_usage().await.unwrap()[0].versions, 3);
    assert!(store
        .find_token(ta.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}

/// Concurrent decrypt reads on PostgreSQL are grouped: while a lock holds `secrets`, 200 reads
/// queued from two tenants wait in at most 4 statements (the reader tasks), not one per pooled
/// connection (16 here). Once the lock goes, each caller gets its own secret, and an id of the
/// other tenant reads as absent, also when both tenants' ids went to PostgreSQL together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_reads_are_grouped_and_each_gets_its_own() {
    let db = rcrt_testkit::TempPgDb::create().await;
    let store = Arc::new(
        rcrt_store::PgStore::connect_pooled(db.url(), Default::default(), 16)
            .await
            .unwrap(),
    );
    let tenants = [TenantId::new("tenant-a"), TenantId::new("tenant-b")];
    let mut secrets = Vec::new();
    for i in 0..10 {
        for t in &tenants {
            secrets.push(
                create(&*store, t, &format!("S{i}"), Scope::global())
                    .await
                    .meta,
            );
        }
    }
    let (holder, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    holder
        .batch_execute("BEGIN; LOCK TABLE secrets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let reads: Vec<_> = (0..200)
        .map(|k| {
            let store = store.clone();
            let tenant = tenants[k % 2].clone();
            let wanted = secrets[k % secrets.len()].clone();
            tokio::spawn(async move {
                let found = store.get_current(&tenant, wanted.id).await;
                (tenant, wanted, found)
            })
        })
        .collect();
    let waiting = || async {
        holder
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let started = std::time::Instant::now();
    while waiting().await == 0 {
        assert!(
            started.elapsed().as_secs() < 10,
            "no read reached PostgreSQL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Time for reads sent one per connection to pile up (with a statement per read, 8 waited
    // here after 2 s).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let statements = waiting().await;
    assert!(
        (1..=4).contains(&statements),
        "{statements} statements wait for 200 reads"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    for read in reads {
        let (tenant, wanted, found) = read.await.unwrap();
        let found = found.unwrap();
        if wanted.tenant == tenant {
            let (meta, version) = found.expect("own secret found");
            assert_eq!(
                (meta.id, meta.name, version.version),
                (wanted.id, wanted.name, 1)
            );
            assert_eq!(meta.tenant, tenant);
        } else {
            assert!(found.is_none(), "{tenant:?} read another tenant's secret");
        }
    }
}

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_migrations_are_idempotent() {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("t.db");
    let t = TenantId::default_tenant();
    let id = {
        let s = rcrt_store::SqliteStore::open(path.to_str().unwrap())
            .await
            .unwrap();
        create(&s, &t, "KEEP", Scope::global()).await.meta.id
    };
    let s = rcrt_store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert!(s.get_meta(&t, id).await.unwrap().is_some());
}

#[tokio::test]
async fn postgres_runs_the_guides_audit_query_and_concurrent_migrations() {
    let db = rcrt_testkit::TempPgDb::create().await;
    // Two replicas migrating the same empty database at once.
    let (a, b) = tokio::join!(
        rcrt_store::PgStore::connect(db.url()),
        rcrt_store::PgStore::connect(db.url())
    );
    let (a, _b) = (a.unwrap(), b.unwrap());
    let t = TenantId::default_tenant();
    create(&a, &t, "AUDITED", Scope::global()).await;
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT
               timestamp,
               action,
               user_id,
               reason
             FROM secret_access_log
             WHERE timestamp > NOW() - INTERVAL '30 days'
             ORDER BY timestamp DESC;",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "create");
    assert_eq!(rows[0].get::<_, String>(2), "tester");
}
