//! Secret lifecycle (issue 15) through the `Store` trait: versions and the version cap, destroy,
//! attributes, soft delete / restore / purge, idempotency records, listing filters, the
//! expiring count and the audit rows' version. Every test runs on SQLite and on PostgreSQL (a
//! fresh database per test), like `conformance.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rcrt_store::{
    AddVersionOptions, AuditQuery, AuditRecord, Deletion, DestroyOutcome, IdempotencyRecord,
    ListFilter, ListQuery, NewSecret, SecretAttributes, SecretMeta, Store, StoreError, VaultRecord,
    VersionFilter, VersionLookup, VersionRecord, VersionState, Visibility,
};
use rcrt_types::{
    AuditAction, AuditEntry, AuditOutcome, Scope, ScopeType, SecretId, TenantId, VaultId, Version,
};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
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

fn record(version: i64, by: &str) -> VersionRecord {
    VersionRecord {
        version,
        kek_id: "kek-a".into(),
        wrapped_dek: vec![1, 2, 3, version as u8],
        sealed_value: vec![9, 8, 7, version as u8],
        created_at: now(),
        recovery: None,
        created_by: by.into(),
    }
}

fn attrs(description: &str, labels: &[(&str, &str)]) -> SecretAttributes {
    SecretAttributes {
        description: description.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        expires_at: None,
        max_versions: None,
    }
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
        first: record(1, "alice"),
        vault: None,
        idempotency: None,
    }
}

async fn create_with(s: &dyn Store, n: NewSecret) -> NewSecret {
    let a = audit(AuditAction::Create, Some(n.meta.id), &n.meta.tenant);
    s.create_secret(n.clone(), a).await.unwrap();
    n
}

async fn create(s: &dyn Store, tenant: &TenantId, name: &str) -> NewSecret {
    create_with(s, new_secret(tenant, name, Scope::global())).await
}

/// Adds version `v` (based on `v - 1`) with the given options.
async fn add(
    s: &dyn Store,
    tenant: &TenantId,
    id: SecretId,
    v: Version,
    options: AddVersionOptions,
) -> Result<Option<SecretMeta>, StoreError> {
    s.add_version_with(
        tenant,
        id,
        record(v, "bob"),
        options,
        audit(AuditAction::Update, Some(id), tenant),
    )
    .await
}

fn keep(k: u32) -> AddVersionOptions {
    AddVersionOptions {
        keep: Some(k),
        idempotency: None,
    }
}

/// This secret's audit rows, oldest first.
async fn rows_of(s: &dyn Store, id: SecretId) -> Vec<AuditRecord> {
    let mut rows = s.list_audit(Some(id), 1000).await.unwrap();
    rows.reverse();
    rows
}

async fn actions_of(s: &dyn Store, id: SecretId) -> Vec<String> {
    rows_of(s, id).await.into_iter().map(|r| r.action).collect()
}

fn query(tenant: &TenantId, filter: ListFilter) -> ListQuery {
    ListQuery {
        tenant: tenant.clone(),
        scope_type: None,
        scope_id: None,
        limit: 100,
        after: None,
        visible_to: None,
        filter,
    }
}

async fn listed(s: &dyn Store, q: &ListQuery) -> Vec<SecretId> {
    s.list(q).await.unwrap().into_iter().map(|m| m.id).collect()
}

fn sorted(mut ids: Vec<SecretId>) -> Vec<SecretId> {
    ids.sort_by_key(|id| id.to_string());
    ids
}

fn deletion(deleted_at: OffsetDateTime, window: i64) -> Deletion {
    Deletion {
        deleted_at,
        purge_at: deleted_at + secs(window),
    }
}

async fn soft_delete(s: &dyn Store, tenant: &TenantId, id: SecretId, d: Deletion) -> bool {
    s.soft_delete(
        tenant,
        id,
        d,
        audit(AuditAction::SoftDelete, Some(id), tenant),
    )
    .await
    .unwrap()
}

fn idem(tenant: &TenantId, principal: &str, key: &str, byte: u8) -> IdempotencyRecord {
    let t = now();
    IdempotencyRecord {
        tenant: tenant.clone(),
        principal: principal.into(),
        key: key.into(),
        fingerprint: [byte; 32],
        outcome: format!("{{\"status\":201,\"n\":{byte}}}"),
        created_at: t,
        expires_at: t + secs(3600),
    }
}

fn purge_template() -> AuditEntry {
    AuditEntry {
        timestamp: now(),
        action: AuditAction::Purge,
        secret_id: None,
        token_id: None,
        tenant: TenantId::new("system"),
        user_id: "purge-job".into(),
        reason: None,
        outcome: AuditOutcome::Success,
        request_id: "purge-1".into(),
        version: None,
    }
}

// --- attributes and created_by ---

async fn attributes_and_created_by_round_trip(s: Arc<dyn Store>) {
    let t = TenantId::new("acme");
    let mut n = new_secret(&t, "WITH_ATTRS", Scope::global());
    n.meta.attrs = SecretAttributes {
        description: "the payments API key".into(),
        labels: [("env", "prod"), ("team", "core")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        expires_at: Some(now() + secs(86_400)),
        max_versions: Some(7),
    };
    let n = create_with(&*s, n).await;
    let id = n.meta.id;
    // Every reader fills the attributes, and the version's author.
    assert_eq!(s.get_meta(&t, id).await.unwrap().unwrap(), n.meta);
    let (meta, v) = s.get_current(&t, id).await.unwrap().unwrap();
    assert_eq!(meta, n.meta);
    assert_eq!(v.created_by, "alice");
    assert_eq!(v, n.first);
    assert_eq!(
        s.list(&query(&t, ListFilter::default())).await.unwrap(),
        vec![n.meta.clone()]
    );
    // A new version keeps the attributes and records its own author.
    let m2 = add(&*s, &t, id, 2, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m2.attrs, n.meta.attrs);
    let (_, v2) = s.get_current(&t, id).await.unwrap().unwrap();
    assert_eq!(v2.created_by, "bob");
    let Some((_, VersionLookup::Kept(v1))) = s.get_version(&t, id, 1).await.unwrap() else {
        panic!("version 1 must be kept");
    };
    assert_eq!(v1.created_by, "alice");

    // Replacing the attributes: all four at once, updated_at (the current version's time) kept.
    let new_attrs = SecretAttributes {
        description: String::new(),
        labels: [("env".to_owned(), "staging".to_owned())].into(),
        expires_at: None,
        max_versions: None,
    };
    let before = rows_of(&*s, id).await.len();
    let m3 = s
        .update_attributes(
            &t,
            id,
            new_attrs.clone(),
            audit(AuditAction::UpdateMetadata, Some(id), &t),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m3.attrs, new_attrs);
    assert_eq!((m3.version, m3.updated_at), (m2.version, m2.updated_at));
    assert_eq!(s.get_meta(&t, id).await.unwrap().unwrap(), m3);
    assert_eq!(rows_of(&*s, id).await.len(), before + 1);
    assert_eq!(
        actions_of(&*s, id).await.last().unwrap(),
        AuditAction::UpdateMetadata.as_str()
    );

    // Another tenant, an unknown id: None and no audit row.
    let other = TenantId::new("other");
    for (tenant, sid) in [(&other, id), (&t, SecretId::new())] {
        assert!(s
            .update_attributes(
                tenant,
                sid,
                attrs("x", &[]),
                audit(AuditAction::UpdateMetadata, Some(sid), tenant),
            )
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(rows_of(&*s, id).await.len(), before + 1);
    assert_eq!(s.get_meta(&t, id).await.unwrap().unwrap().attrs, new_attrs);
}

// --- versions: history, lookup, destroy, cap ---

async fn list_versions_pages_newest_first_with_states(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let id = create(&*s, &t, "HISTORY").await.meta.id;
    for v in 2..=5 {
        add(&*s, &t, id, v, AddVersionOptions::default())
            .await
            .unwrap()
            .unwrap();
    }
    let at = now();
    assert_eq!(
        s.destroy_version(
            &t,
            id,
            2,
            at,
            audit(AuditAction::DestroyVersion, Some(id), &t)
        )
        .await
        .unwrap(),
        DestroyOutcome::Destroyed
    );
    let all = s.list_versions(&t, id, None, 100).await.unwrap().unwrap();
    let summary: Vec<(Version, VersionState, Option<OffsetDateTime>)> = all
        .iter()
        .map(|v| (v.version, v.state, v.destroyed_at))
        .collect();
    assert_eq!(
        summary,
        [
            (5, VersionState::Current, None),
            (4, VersionState::Kept, None),
            (3, VersionState::Kept, None),
            (2, VersionState::Destroyed, Some(at)),
            (1, VersionState::Kept, None),
        ]
    );
    // Authors, and the destroyed version keeps its creation time and author.
    let by: Vec<&str> = all.iter().map(|v| v.created_by.as_str()).collect();
    assert_eq!(by, ["bob", "bob", "bob", "bob", "alice"]);
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    // Pages: `before` is exclusive, `limit` bounds the page.
    let page = |before, limit| {
        let s = s.clone();
        let t = t.clone();
        async move {
            s.list_versions(&t, id, before, limit)
                .await
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|v| v.version)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, [5, 4]);
    assert_eq!(page(Some(4), 2).await, [3, 2]);
    assert_eq!(page(Some(2), 2).await, [1]);
    assert_eq!(page(Some(1), 2).await, Vec::<Version>::new());
    // An existing secret with an empty page is Some(empty); another tenant or an unknown id
    // is None.
    assert!(s
        .list_versions(&TenantId::new("other"), id, None, 10)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .list_versions(&t, SecretId::new(), None, 10)
        .await
        .unwrap()
        .is_none());
}

async fn get_version_kept_destroyed_missing(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let n = create(&*s, &t, "LOOKUP").await;
    let id = n.meta.id;
    let m3 = {
        add(&*s, &t, id, 2, AddVersionOptions::default())
            .await
            .unwrap();
        add(&*s, &t, id, 3, AddVersionOptions::default())
            .await
            .unwrap()
            .unwrap()
    };
    let at = now();
    s.destroy_version(
        &t,
        id,
        2,
        at,
        audit(AuditAction::DestroyVersion, Some(id), &t),
    )
    .await
    .unwrap();
    let (meta, v1) = s.get_version(&t, id, 1).await.unwrap().unwrap();
    assert_eq!(meta, m3);
    match v1 {
        VersionLookup::Kept(r) => assert_eq!(r, n.first),
        other => panic!("{other:?}"),
    }
    match s.get_version(&t, id, 3).await.unwrap().unwrap().1 {
        VersionLookup::Kept(r) => assert_eq!(r.sealed_value, record(3, "").sealed_value),
        other => panic!("{other:?}"),
    }
    match s.get_version(&t, id, 2).await.unwrap().unwrap().1 {
        VersionLookup::Destroyed(when) => assert_eq!(when, at),
        other => panic!("{other:?}"),
    }
    for missing in [0, 4, 99, -1] {
        assert!(
            matches!(
                s.get_version(&t, id, missing).await.unwrap().unwrap().1,
                VersionLookup::Missing
            ),
            "version {missing}"
        );
    }
    assert!(s
        .get_version(&TenantId::new("other"), id, 1)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_version(&t, SecretId::new(), 1)
        .await
        .unwrap()
        .is_none());
}

async fn destroy_version_outcomes_and_audit(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let other = TenantId::new("other");
    let id = create(&*s, &t, "DESTROY").await.meta.id;
    add(&*s, &t, id, 2, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
    let destroy = |tenant: TenantId, sid: SecretId, v: Version| {
        let s = s.clone();
        async move {
            let mut a = audit(AuditAction::DestroyVersion, Some(sid), &tenant);
            a.version = Some(v);
            s.destroy_version(&tenant, sid, v, now(), a).await.unwrap()
        }
    };
    let rows = rows_of(&*s, id).await.len();
    // Failures write nothing (the caller audits them itself).
    assert_eq!(destroy(t.clone(), id, 2).await, DestroyOutcome::IsCurrent);
    assert_eq!(destroy(t.clone(), id, 7).await, DestroyOutcome::NotFound);
    assert_eq!(
        destroy(other.clone(), id, 1).await,
        DestroyOutcome::NotFound
    );
    assert_eq!(
        destroy(t.clone(), SecretId::new(), 1).await,
        DestroyOutcome::NotFound
    );
    assert_eq!(rows_of(&*s, id).await.len(), rows);
    // The other tenant's attempt did not destroy anything.
    assert!(matches!(
        s.get_version(&t, id, 1).await.unwrap().unwrap().1,
        VersionLookup::Kept(_)
    ));
    assert_eq!(destroy(t.clone(), id, 1).await, DestroyOutcome::Destroyed);
    let last = rows_of(&*s, id).await.pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.version),
        ("destroy_version", Some(1))
    );
    assert_eq!(
        destroy(t.clone(), id, 1).await,
        DestroyOutcome::AlreadyDestroyed
    );
    assert_eq!(rows_of(&*s, id).await.len(), rows + 1);
    // The ciphertext is gone from every maintenance view; the current version is untouched.
    let usage = s.kek_usage().await.unwrap();
    assert_eq!(usage.iter().map(|u| u.versions).sum::<i64>(), 1);
    let scanned = s
        .scan_versions(&VersionFilter::All, None, 100, true)
        .await
        .unwrap();
    assert_eq!(
        scanned.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2],
        "{scanned:?}"
    );
    let (_, current) = s.get_current(&t, id).await.unwrap().unwrap();
    assert_eq!(current.version, 2);
}

async fn version_cap_destroys_the_oldest_with_audit_rows(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let id = create(&*s, &t, "CAPPED").await.meta.id;
    // Under the cap nothing goes.
    add(&*s, &t, id, 2, keep(2)).await.unwrap().unwrap();
    let rows = rows_of(&*s, id).await.len();
    // One too many: the oldest goes, in the same write.
    let mut write = record(3, "bob");
    write.created_at = now() + secs(1);
    let write_audit = AuditEntry {
        request_id: "req-cap".into(),
        ..audit(AuditAction::Update, Some(id), &t)
    };
    let m = s
        .add_version_with(&t, id, write.clone(), keep(2), write_audit.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.version, 3);
    let states = |s: Arc<dyn Store>| {
        let t = t.clone();
        async move {
            s.list_versions(&t, id, None, 100)
                .await
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|v| (v.version, v.state))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        states(s.clone()).await,
        [
            (3, VersionState::Current),
            (2, VersionState::Kept),
            (1, VersionState::Destroyed)
        ]
    );
    let v1 = s.list_versions(&t, id, Some(2), 1).await.unwrap().unwrap();
    assert_eq!(v1[0].destroyed_at, Some(write.created_at));
    assert_eq!(v1[0].created_by, "alice");
    // The write's row and one destroy_version row cloned from it.
    let new_rows = rows_of(&*s, id).await.split_off(rows);
    assert_eq!(new_rows.len(), 2, "{new_rows:?}");
    let destroy_row = new_rows
        .iter()
        .find(|r| r.action == "destroy_version")
        .unwrap();
    let update_row = new_rows.iter().find(|r| r.action == "update").unwrap();
    assert_eq!(destroy_row.version, Some(1));
    assert_eq!(destroy_row.reason, None);
    assert_eq!(
        (
            destroy_row.user_id.as_str(),
            destroy_row.request_id.as_str(),
            destroy_row.tenant.as_str(),
            destroy_row.secret_id
        ),
        ("tester", "req-cap", t.as_str(), Some(id))
    );
    assert_eq!(
        (update_row.version, update_row.reason.as_deref()),
        (None, Some("because"))
    );

    // No cap: everything stays.
    add(&*s, &t, id, 4, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
    add(&*s, &t, id, 5, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
    // A manually destroyed version no longer counts against the cap: kept are 2, 4, 5 (and
    // 6 after the write), so a cap of 3 destroys only version 2.
    s.destroy_version(
        &t,
        id,
        3,
        now(),
        audit(AuditAction::DestroyVersion, Some(id), &t),
    )
    .await
    .unwrap();
    add(&*s, &t, id, 6, keep(3)).await.unwrap().unwrap();
    assert_eq!(
        states(s.clone()).await,
        [
            (6, VersionState::Current),
            (5, VersionState::Kept),
            (4, VersionState::Kept),
            (3, VersionState::Destroyed),
            (2, VersionState::Destroyed),
            (1, VersionState::Destroyed),
        ]
    );
    // Several at once, oldest first, one row each; the current version always stays.
    let before = rows_of(&*s, id).await.len();
    add(&*s, &t, id, 7, keep(1)).await.unwrap().unwrap();
    let destroyed: Vec<Option<Version>> = rows_of(&*s, id)
        .await
        .split_off(before)
        .into_iter()
        .filter(|r| r.action == "destroy_version")
        .map(|r| r.version)
        .collect();
    assert_eq!(destroyed, [Some(4), Some(5), Some(6)]);
    let kept: Vec<_> = states(s.clone())
        .await
        .into_iter()
        .filter(|(_, st)| *st != VersionState::Destroyed)
        .collect();
    assert_eq!(kept, [(7, VersionState::Current)]);
    assert_eq!(s.kek_usage().await.unwrap()[0].versions, 1);
    let (_, current) = s.get_current(&t, id).await.unwrap().unwrap();
    assert_eq!(current.version, 7);
    // A capped write that conflicts destroys nothing.
    let err = add(&*s, &t, id, 7, keep(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict), "{err:?}");
    assert_eq!(
        s.list_versions(&t, id, None, 100)
            .await
            .unwrap()
            .unwrap()
            .len(),
        7
    );
}

// --- soft delete, restore, purge ---

async fn soft_deleted_secrets_are_hidden_but_keep_their_name(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let other = TenantId::new("other");
    // In a vault too, so vault_secrets is checked.
    let vault = VaultRecord {
        id: VaultId::new(),
        tenant: t.clone(),
        workspace: "w".into(),
        name: "v".into(),
        created_at: now(),
    };
    let ws = Scope::new(ScopeType::Workspace, Some("w")).unwrap();
    let mut gone = new_secret(&t, "GONE", ws.clone());
    gone.vault = Some(vault.id);
    let mut stays = new_secret(&t, "STAYS", ws.clone());
    stays.vault = Some(vault.id);
    s.create_vault(vault.clone(), vec![gone.clone(), stays.clone()], vec![])
        .await
        .unwrap();
    let id = gone.meta.id;
    add(&*s, &t, id, 2, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
    let d = deletion(now(), 3600);
    // Another tenant cannot, and writes no row.
    let rows = rows_of(&*s, id).await.len();
    assert!(!soft_delete(&*s, &other, id, d).await);
    assert!(!soft_delete(&*s, &t, SecretId::new(), d).await);
    assert_eq!(rows_of(&*s, id).await.len(), rows);
    assert!(soft_delete(&*s, &t, id, d).await);
    assert_eq!(
        actions_of(&*s, id).await.last().unwrap(),
        AuditAction::SoftDelete.as_str()
    );
    // Twice: false, no second row.
    assert!(!soft_delete(&*s, &t, id, d).await);
    assert_eq!(rows_of(&*s, id).await.len(), rows + 1);

    // Hidden from every live read and write.
    assert!(s.get_meta(&t, id).await.unwrap().is_none());
    assert!(s.get_current(&t, id).await.unwrap().is_none());
    assert_eq!(
        listed(&*s, &query(&t, ListFilter::default())).await,
        [stays.meta.id]
    );
    let in_vault: Vec<SecretId> = s
        .vault_secrets(&t, vault.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    assert_eq!(in_vault, [stays.meta.id]);
    assert!(add(&*s, &t, id, 3, AddVersionOptions::default())
        .await
        .unwrap()
        .is_none());
    assert!(s.list_versions(&t, id, None, 10).await.unwrap().is_none());
    assert!(s.get_version(&t, id, 1).await.unwrap().is_none());
    assert_eq!(
        s.destroy_version(
            &t,
            id,
            1,
            now(),
            audit(AuditAction::DestroyVersion, Some(id), &t)
        )
        .await
        .unwrap(),
        DestroyOutcome::NotFound
    );
    assert!(s
        .update_attributes(
            &t,
            id,
            attrs("x", &[]),
            audit(AuditAction::UpdateMetadata, Some(id), &t)
        )
        .await
        .unwrap()
        .is_none());
    // None of those wrote a row.
    assert_eq!(rows_of(&*s, id).await.len(), rows + 1);

    // Seen by the deleted views only, with its window.
    let meta = s.get_deleted(&t, id).await.unwrap().unwrap();
    assert_eq!(meta.deleted, Some(d));
    assert_eq!((meta.version, meta.name.as_str()), (2, "GONE"));
    assert!(s.get_deleted(&other, id).await.unwrap().is_none());
    assert!(s.get_deleted(&t, stays.meta.id).await.unwrap().is_none());
    let deleted = s
        .list(&query(
            &t,
            ListFilter {
                deleted: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(deleted, vec![meta.clone()]);
    assert!(s
        .list(&query(
            &other,
            ListFilter {
                deleted: true,
                ..Default::default()
            }
        ))
        .await
        .unwrap()
        .is_empty());

    // The name stays reserved in its scope.
    let err = s
        .create_secret(
            new_secret(&t, "GONE", ws.clone()),
            audit(AuditAction::Create, None, &t),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NameTaken), "{err:?}");

    // An immediate delete shreds a soft-deleted secret too.
    assert!(s
        .delete_secret(&t, id, audit(AuditAction::Delete, Some(id), &t))
        .await
        .unwrap());
    assert!(s.get_deleted(&t, id).await.unwrap().is_none());
    assert_eq!(s.kek_usage().await.unwrap()[0].versions, 1);
    create_with(&*s, new_secret(&t, "GONE", ws)).await;
}

async fn restore_only_within_the_window(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let other = TenantId::new("other");
    let n = create(&*s, &t, "BACK").await;
    let id = n.meta.id;
    let restore = |tenant: TenantId, at: OffsetDateTime| {
        let s = s.clone();
        async move {
            s.restore(
                &tenant,
                id,
                at,
                audit(AuditAction::Restore, Some(id), &tenant),
            )
            .await
            .unwrap()
        }
    };
    // A live secret is not restored, and no row is written.
    assert!(restore(t.clone(), now()).await.is_none());
    assert_eq!(actions_of(&*s, id).await, ["create"]);
    let d = deletion(now(), 60);
    assert!(soft_delete(&*s, &t, id, d).await);
    assert!(restore(other.clone(), d.deleted_at).await.is_none());
    // At purge_at the window is over.
    assert!(restore(t.clone(), d.purge_at).await.is_none());
    assert!(restore(t.clone(), d.purge_at + secs(1)).await.is_none());
    assert_eq!(actions_of(&*s, id).await, ["create", "soft_delete"]);
    let back = restore(t.clone(), d.purge_at - secs(1)).await.unwrap();
    assert_eq!(back.deleted, None);
    assert_eq!(back, n.meta);
    assert_eq!(s.get_meta(&t, id).await.unwrap().unwrap(), n.meta);
    assert!(s.get_deleted(&t, id).await.unwrap().is_none());
    assert_eq!(
        actions_of(&*s, id).await,
        ["create", "soft_delete", "restore"]
    );
    // Live again: readable and writable.
    let (_, v) = s.get_current(&t, id).await.unwrap().unwrap();
    assert_eq!(v, n.first);
    add(&*s, &t, id, 2, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
}

async fn purge_takes_only_due_secrets_with_one_row_each(s: Arc<dyn Store>) {
    let (a, b) = (TenantId::new("tenant-a"), TenantId::new("tenant-b"));
    let t0 = now();
    let mut due = Vec::new();
    for (i, tenant) in [&a, &b, &a].into_iter().enumerate() {
        let id = create(&*s, tenant, &format!("DUE{i}")).await.meta.id;
        add(&*s, tenant, id, 2, AddVersionOptions::default())
            .await
            .unwrap()
            .unwrap();
        // Version 1 destroyed: its record goes with the secret too.
        s.destroy_version(
            tenant,
            id,
            1,
            t0,
            audit(AuditAction::DestroyVersion, Some(id), tenant),
        )
        .await
        .unwrap();
        assert!(soft_delete(&*s, tenant, id, deletion(t0 - secs(100 + i as i64), 50)).await);
        due.push((tenant.clone(), id));
    }
    let later = create(&*s, &a, "LATER").await.meta.id;
    assert!(soft_delete(&*s, &a, later, deletion(t0, 3600)).await);
    let live = create(&*s, &b, "LIVE").await.meta.id;

    // A limit of 2: the two whose window ended first.
    let first = s.purge_due(t0, 2, purge_template()).await.unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let second = s.purge_due(t0, 10, purge_template()).await.unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    let mut purged: Vec<(TenantId, SecretId)> = first.into_iter().chain(second).collect();
    purged.sort_by_key(|(_, id)| id.to_string());
    due.sort_by_key(|(_, id)| id.to_string());
    assert_eq!(purged, due);
    assert!(s
        .purge_due(t0, 10, purge_template())
        .await
        .unwrap()
        .is_empty());
    for (tenant, id) in &due {
        assert!(s.get_deleted(tenant, *id).await.unwrap().is_none());
        let purge_rows: Vec<AuditRecord> = rows_of(&*s, *id)
            .await
            .into_iter()
            .filter(|r| r.action == "purge")
            .collect();
        assert_eq!(purge_rows.len(), 1, "{purge_rows:?}");
        let r = &purge_rows[0];
        assert_eq!(
            (r.tenant.as_str(), r.secret_id, r.user_id.as_str()),
            (tenant.as_str(), Some(*id), "purge-job")
        );
    }
    // Versions gone with them: what is left is LATER's and LIVE's first versions.
    let usage = s.kek_usage().await.unwrap();
    assert_eq!(usage.iter().map(|u| u.versions).sum::<i64>(), 2);
    // Not due yet, and live: untouched.
    assert!(s.get_deleted(&a, later).await.unwrap().is_some());
    assert!(s.get_meta(&b, live).await.unwrap().is_some());
    // Once its window ends, it goes too.
    let last = s
        .purge_due(t0 + secs(3600), 10, purge_template())
        .await
        .unwrap();
    assert_eq!(last, [(a.clone(), later)]);
    // A purged name can be used again.
    create(&*s, &a, "LATER").await;
}

async fn concurrent_purges_never_purge_one_secret_twice(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let t0 = now();
    let mut ids = BTreeSet::new();
    for i in 0..24 {
        let id = create(&*s, &t, &format!("P{i}")).await.meta.id;
        assert!(soft_delete(&*s, &t, id, deletion(t0 - secs(10), 5)).await);
        ids.insert(id.to_string());
    }
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let page = s.purge_due(t0, 3, purge_template()).await.unwrap();
                if page.is_empty() {
                    break mine;
                }
                mine.extend(page.into_iter().map(|(_, id)| id.to_string()));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(
        all.len(),
        unique.len(),
        "a secret was purged twice: {all:?}"
    );
    assert_eq!(unique, ids);
    let purge_rows = s
        .query_audit(&AuditQuery {
            action: Some(AuditAction::Purge),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purge_rows.len(), ids.len());
    let audited: BTreeSet<String> = purge_rows
        .iter()
        .map(|r| r.secret_id.unwrap().to_string())
        .collect();
    assert_eq!(audited, ids);
}

async fn restore_racing_purge_has_one_winner(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let t0 = now();
    let d = deletion(t0 - secs(30), 30);
    let mut ids = Vec::new();
    for i in 0..16 {
        let id = create(&*s, &t, &format!("R{i}")).await.meta.id;
        assert!(soft_delete(&*s, &t, id, d).await);
        ids.push(id);
    }
    // The restores run as if just before purge_at, the purge as if just after: each secret is
    // eligible for both.
    let purge = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut purged = Vec::new();
            for _ in 0..16 {
                purged.extend(
                    s.purge_due(d.purge_at + secs(1), 1, purge_template())
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|(_, id)| id),
                );
                tokio::task::yield_now().await;
            }
            purged
        })
    };
    let mut restores = Vec::new();
    for &id in &ids {
        let (s, t) = (s.clone(), t.clone());
        restores.push(tokio::spawn(async move {
            let back = s
                .restore(
                    &t,
                    id,
                    d.purge_at - secs(1),
                    audit(AuditAction::Restore, Some(id), &t),
                )
                .await
                .unwrap();
            (id, back.is_some())
        }));
    }
    let mut restored = BTreeMap::new();
    for r in restores {
        let (id, ok) = r.await.unwrap();
        restored.insert(id.to_string(), ok);
    }
    let purged: BTreeSet<String> = purge
        .await
        .unwrap()
        .iter()
        .map(|id| id.to_string())
        .collect();
    for id in &ids {
        let key = id.to_string();
        let actions = actions_of(&*s, *id).await;
        let restores = actions.iter().filter(|a| *a == "restore").count();
        let purges = actions.iter().filter(|a| *a == "purge").count();
        if restored[&key] {
            assert!(!purged.contains(&key), "{key} restored and purged");
            assert_eq!((restores, purges), (1, 0), "{actions:?}");
            assert!(s.get_meta(&t, *id).await.unwrap().is_some());
        } else {
            assert!(purged.contains(&key), "{key} neither restored nor purged");
            assert_eq!((restores, purges), (0, 1), "{actions:?}");
            assert!(s.get_meta(&t, *id).await.unwrap().is_none());
            assert!(s.get_deleted(&t, *id).await.unwrap().is_none());
        }
    }
}

// --- idempotency ---

async fn idempotency_records_round_trip_and_expire(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let other = TenantId::new("other");
    let key = idem(&t, "alice", "key-1", 1);
    let mut n = new_secret(&t, "IDEM", Scope::global());
    n.idempotency = Some(key.clone());
    let n = create_with(&*s, n).await;
    let got = s
        .get_idempotency(&t, "alice", "key-1", key.created_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, key);
    // Per tenant and per principal; and not once expired.
    assert!(s
        .get_idempotency(&other, "alice", "key-1", key.created_at)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_idempotency(&t, "bob", "key-1", key.created_at)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_idempotency(&t, "alice", "key-1", key.expires_at)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_idempotency(&t, "alice", "key-1", key.expires_at - secs(1))
        .await
        .unwrap()
        .is_some());

    // The same key again: refused, and nothing of that write is stored.
    let mut again = new_secret(&t, "IDEM_AGAIN", Scope::global());
    again.idempotency = Some(idem(&t, "alice", "key-1", 2));
    let err = s
        .create_secret(
            again.clone(),
            audit(AuditAction::Create, Some(again.meta.id), &t),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyTaken), "{err:?}");
    assert!(s.get_meta(&t, again.meta.id).await.unwrap().is_none());
    assert!(rows_of(&*s, again.meta.id).await.is_empty());
    assert_eq!(
        s.get_idempotency(&t, "alice", "key-1", key.created_at)
            .await
            .unwrap()
            .unwrap()
            .fingerprint,
        [1; 32]
    );
    // Another principal or tenant may use the same key.
    let mut bobs = new_secret(&t, "IDEM_BOB", Scope::global());
    bobs.idempotency = Some(idem(&t, "bob", "key-1", 3));
    create_with(&*s, bobs).await;
    let mut theirs = new_secret(&other, "IDEM", Scope::global());
    theirs.idempotency = Some(idem(&other, "alice", "key-1", 4));
    create_with(&*s, theirs).await;
    assert_eq!(
        s.get_idempotency(&other, "alice", "key-1", key.created_at)
            .await
            .unwrap()
            .unwrap()
            .fingerprint,
        [4; 32]
    );

    // add_version_with: stored with the version; a taken key writes nothing.
    let id = n.meta.id;
    let upd = idem(&t, "alice", "key-2", 5);
    add(
        &*s,
        &t,
        id,
        2,
        AddVersionOptions {
            keep: None,
            idempotency: Some(upd.clone()),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        s.get_idempotency(&t, "alice", "key-2", upd.created_at)
            .await
            .unwrap(),
        Some(upd.clone())
    );
    let rows = rows_of(&*s, id).await.len();
    let err = add(
        &*s,
        &t,
        id,
        3,
        AddVersionOptions {
            keep: Some(1),
            idempotency: Some(idem(&t, "alice", "key-2", 6)),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyTaken), "{err:?}");
    assert_eq!(s.get_meta(&t, id).await.unwrap().unwrap().version, 2);
    assert_eq!(rows_of(&*s, id).await.len(), rows);
    assert_eq!(
        s.list_versions(&t, id, None, 10)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    // Writes that did not happen are not remembered: a conflict, a missing secret, another
    // tenant's secret.
    let conflict = add(
        &*s,
        &t,
        id,
        2,
        AddVersionOptions {
            keep: None,
            idempotency: Some(idem(&t, "alice", "key-3", 7)),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(conflict, StoreError::VersionConflict),
        "{conflict:?}"
    );
    for (tenant, sid, k) in [(&t, SecretId::new(), "key-4"), (&other, id, "key-5")] {
        let missing = add(
            &*s,
            tenant,
            sid,
            3,
            AddVersionOptions {
                keep: None,
                idempotency: Some(idem(tenant, "alice", k, 8)),
            },
        )
        .await
        .unwrap();
        assert!(missing.is_none());
    }
    for (tenant, k) in [(&t, "key-3"), (&t, "key-4"), (&other, "key-5")] {
        assert!(
            s.get_idempotency(tenant, "alice", k, key.created_at)
                .await
                .unwrap()
                .is_none(),
            "{k} remembered for a write that did not happen"
        );
    }

    // create_vault_with: the same rule.
    let vault = |name: &str| VaultRecord {
        id: VaultId::new(),
        tenant: t.clone(),
        workspace: "w".into(),
        name: name.into(),
        created_at: now(),
    };
    let ws = Scope::new(ScopeType::Workspace, Some("w")).unwrap();
    let v1 = vault("v1");
    let mut in_v1 = new_secret(&t, "IN_V1", ws.clone());
    in_v1.vault = Some(v1.id);
    s.create_vault_with(
        v1.clone(),
        vec![in_v1],
        vec![],
        Some(idem(&t, "alice", "vault-key", 9)),
    )
    .await
    .unwrap();
    assert!(s
        .get_idempotency(&t, "alice", "vault-key", key.created_at)
        .await
        .unwrap()
        .is_some());
    let v2 = vault("v2");
    let mut in_v2 = new_secret(&t, "IN_V2", ws);
    in_v2.vault = Some(v2.id);
    let err = s
        .create_vault_with(
            v2.clone(),
            vec![in_v2.clone()],
            vec![audit(AuditAction::Create, Some(in_v2.meta.id), &t)],
            Some(idem(&t, "alice", "vault-key", 10)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyTaken), "{err:?}");
    assert!(s.get_vault(&t, v2.id).await.unwrap().is_none());
    assert!(s.get_meta(&t, in_v2.meta.id).await.unwrap().is_none());
    assert!(rows_of(&*s, in_v2.meta.id).await.is_empty());

    // The purge deletes expired records in every tenant, and only those.
    assert_eq!(s.purge_idempotency(key.created_at).await.unwrap(), 0);
    let mut short = new_secret(&t, "IDEM_SHORT", Scope::global());
    let mut short_key = idem(&t, "carol", "key-short", 11);
    short_key.expires_at = key.created_at + secs(10);
    short.idempotency = Some(short_key.clone());
    create_with(&*s, short).await;
    assert_eq!(s.purge_idempotency(short_key.expires_at).await.unwrap(), 1);
    assert!(s
        .get_idempotency(&t, "carol", "key-short", key.created_at)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get_idempotency(&t, "alice", "key-1", key.created_at)
        .await
        .unwrap()
        .is_some());
    // The five stored keys left (alice's key-1, key-2 and vault-key, bob's key-1, the other
    // tenant's key-1) expire within the hour (their created_at differ by milliseconds).
    assert_eq!(
        s.purge_idempotency(key.expires_at + secs(60))
            .await
            .unwrap(),
        5
    );
    assert!(s
        .get_idempotency(&other, "alice", "key-1", key.created_at)
        .await
        .unwrap()
        .is_none());
}

// --- listing filters and the expiring count ---

async fn listing_filters_by_label_prefix_expiry_and_deletion(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    let other = TenantId::new("other");
    let t0 = now();
    let ws = Scope::new(ScopeType::Workspace, Some("w")).unwrap();
    let mk = |name: &str, scope: Scope, labels: &[(&str, &str)], expires: Option<i64>| {
        let mut n = new_secret(&t, name, scope);
        n.meta.attrs = attrs("", labels);
        n.meta.attrs.expires_at = expires.map(|d| t0 + secs(d));
        n
    };
    let prod_core = create_with(
        &*s,
        mk(
            "DB_MAIN",
            Scope::global(),
            &[("env", "prod"), ("team", "core")],
            Some(-10),
        ),
    )
    .await
    .meta
    .id;
    let prod_web = create_with(
        &*s,
        mk(
            "DBXMAIN",
            ws.clone(),
            &[("env", "prod"), ("team", "web")],
            Some(100),
        ),
    )
    .await
    .meta
    .id;
    let staging = create_with(
        &*s,
        mk(
            "API_KEY",
            Scope::global(),
            &[("env", "staging")],
            Some(100_000),
        ),
    )
    .await
    .meta
    .id;
    let bare = create_with(&*s, mk("DB_OLD", ws.clone(), &[], None))
        .await
        .meta
        .id;
    // Another tenant with matching labels never shows.
    let mut theirs = new_secret(&other, "DB_MAIN", Scope::global());
    theirs.meta.attrs = attrs("", &[("env", "prod")]);
    create_with(&*s, theirs).await;

    let run = |filter: ListFilter| {
        let s = s.clone();
        let t = t.clone();
        async move { sorted(listed(&*s, &query(&t, filter)).await) }
    };
    let labels = |pairs: &[(&str, &str)]| ListFilter {
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        run(ListFilter::default()).await,
        sorted(vec![prod_core, prod_web, staging, bare])
    );
    assert_eq!(
        run(labels(&[("env", "prod")])).await,
        sorted(vec![prod_core, prod_web])
    );
    // Every label must match.
    assert_eq!(
        run(labels(&[("env", "prod"), ("team", "core")])).await,
        [prod_core]
    );
    assert!(run(labels(&[("env", "prod"), ("team", "none")]))
        .await
        .is_empty());
    // A value is matched whole, and a key is not matched as a value.
    assert!(run(labels(&[("env", "pro")])).await.is_empty());
    assert!(run(labels(&[("prod", "env")])).await.is_empty());
    // Prefix: `_` is a plain character (no LIKE wildcard), and the match is case-sensitive.
    let prefix = |p: &str| ListFilter {
        name_prefix: Some(p.into()),
        ..Default::default()
    };
    assert_eq!(run(prefix("DB_")).await, sorted(vec![prod_core, bare]));
    assert_eq!(
        run(prefix("DB")).await,
        sorted(vec![prod_core, prod_web, bare])
    );
    assert!(run(prefix("db")).await.is_empty());
    assert!(run(prefix("%")).await.is_empty());
    assert_eq!(run(prefix("DB_MAIN")).await, [prod_core]);
    assert!(run(prefix("DB_MAIN_")).await.is_empty());
    // Expiry: at or before the bound, already expired included, never-expiring excluded.
    let expiring = |d: i64| ListFilter {
        expires_before: Some(t0 + secs(d)),
        ..Default::default()
    };
    assert_eq!(run(expiring(0)).await, [prod_core]);
    assert_eq!(run(expiring(100)).await, sorted(vec![prod_core, prod_web]));
    assert_eq!(
        run(expiring(1_000_000)).await,
        sorted(vec![prod_core, prod_web, staging])
    );
    // Filters combine with each other and with the scope filters and visibility.
    assert_eq!(
        run(ListFilter {
            name_prefix: Some("DB".into()),
            expires_before: Some(t0 + secs(100)),
            labels: vec![("team".into(), "web".into())],
            deleted: false,
        })
        .await,
        [prod_web]
    );
    let in_ws = ListQuery {
        scope_type: Some(ScopeType::Workspace),
        scope_id: Some("w".into()),
        ..query(&t, labels(&[("env", "prod")]))
    };
    assert_eq!(listed(&*s, &in_ws).await, [prod_web]);
    let not_member = ListQuery {
        visible_to: Some(Visibility {
            workspaces: vec!["elsewhere".into()],
            agent: "me".into(),
        }),
        ..query(&t, prefix("DB"))
    };
    assert_eq!(listed(&*s, &not_member).await, [prod_core]);
    let member = ListQuery {
        visible_to: Some(Visibility {
            workspaces: vec!["w".into()],
            agent: "me".into(),
        }),
        ..query(&t, prefix("DB"))
    };
    assert_eq!(
        sorted(listed(&*s, &member).await),
        sorted(vec![prod_core, prod_web, bare])
    );
    // Deleted: the same filters over soft-deleted secrets only.
    assert!(soft_delete(&*s, &t, prod_web, deletion(t0, 60)).await);
    assert_eq!(run(labels(&[("env", "prod")])).await, [prod_core]);
    let deleted = |mut f: ListFilter| {
        f.deleted = true;
        f
    };
    assert_eq!(run(deleted(labels(&[("env", "prod")]))).await, [prod_web]);
    assert!(run(deleted(labels(&[("env", "staging")]))).await.is_empty());
    assert_eq!(run(deleted(ListFilter::default())).await, [prod_web]);
    // Pages of one through the filtered listing, in id order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list(&ListQuery {
                limit: 1,
                after,
                ..query(&t, prefix("DB"))
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.push(last.id);
    }
    assert_eq!(seen, sorted(vec![prod_core, bare]));
}

async fn count_expiring_counts_live_secrets_in_every_tenant(s: Arc<dyn Store>) {
    let t0 = now();
    assert_eq!(s.count_expiring(t0).await.unwrap(), 0);
    let mut made = Vec::new();
    for (i, (tenant, expires)) in [
        ("a", Some(-100)),
        ("b", Some(0)),
        ("a", Some(50)),
        ("b", Some(5000)),
        ("a", None),
    ]
    .into_iter()
    .enumerate()
    {
        let tenant = TenantId::new(tenant);
        let mut n = new_secret(&tenant, &format!("E{i}"), Scope::global());
        n.meta.attrs.expires_at = expires.map(|d| t0 + secs(d));
        made.push(create_with(&*s, n).await);
    }
    assert_eq!(s.count_expiring(t0 - secs(101)).await.unwrap(), 0);
    assert_eq!(s.count_expiring(t0 - secs(100)).await.unwrap(), 1);
    // At the bound counts (b's expires exactly at t0).
    assert_eq!(s.count_expiring(t0).await.unwrap(), 2);
    assert_eq!(s.count_expiring(t0 + secs(60)).await.unwrap(), 3);
    assert_eq!(s.count_expiring(t0 + secs(100_000)).await.unwrap(), 4);
    // Soft-deleted secrets do not count; an attribute update moves a secret in or out.
    let first = &made[0].meta;
    assert!(soft_delete(&*s, &first.tenant, first.id, deletion(t0, 60)).await);
    assert_eq!(s.count_expiring(t0).await.unwrap(), 1);
    let never = &made[4].meta;
    let mut a = never.attrs.clone();
    a.expires_at = Some(t0 - secs(1));
    s.update_attributes(
        &never.tenant,
        never.id,
        a,
        audit(AuditAction::UpdateMetadata, Some(never.id), &never.tenant),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(s.count_expiring(t0).await.unwrap(), 2);
}

// --- audit rows' version ---

async fn audit_version_round_trips_and_the_chain_verifies(s: Arc<dyn Store>) {
    let t = TenantId::new("acme");
    let id = create(&*s, &t, "AUDITED").await.meta.id;
    add(&*s, &t, id, 2, AddVersionOptions::default())
        .await
        .unwrap()
        .unwrap();
    let mut decrypt = audit(AuditAction::Decrypt, Some(id), &t);
    decrypt.version = Some(1);
    decrypt.reason = Some("read v1".into());
    s.append_audit(decrypt.clone()).await.unwrap();
    let mut rollback = audit(AuditAction::Rollback, Some(id), &t);
    rollback.version = Some(1);
    s.add_version_with(&t, id, record(3, "bob"), keep(2), rollback)
        .await
        .unwrap()
        .unwrap();
    s.append_audits(vec![
        audit(AuditAction::Decrypt, Some(id), &t),
        AuditEntry {
            version: Some(i64::MAX),
            ..audit(AuditAction::Decrypt, Some(id), &t)
        },
    ])
    .await
    .unwrap();
    // (action, version) of each row, sorted: the order of a write's own row and the
    // destroy_version rows of its cap is not part of the contract.
    let versions = |rows: &[AuditRecord]| -> Vec<(String, Option<Version>)> {
        let mut v: Vec<_> = rows.iter().map(|r| (r.action.clone(), r.version)).collect();
        v.sort();
        v
    };
    let expected: Vec<(String, Option<Version>)> = [
        ("create", None),
        ("update", None),
        ("decrypt", Some(1)),
        ("rollback", Some(1)),
        ("destroy_version", Some(1)),
        ("decrypt", None),
        ("decrypt", Some(i64::MAX)),
    ]
    .into_iter()
    .map(|(a, v)| (a.to_owned(), v))
    .collect::<Vec<_>>();
    let expected = {
        let mut e = expected;
        e.sort();
        e
    };
    // list_audit (newest first), query_audit (both orders), audit_chain_page.
    let mut listed = s.list_audit(Some(id), 100).await.unwrap();
    listed.reverse();
    assert_eq!(versions(&listed), expected);
    let queried = s
        .query_audit(&AuditQuery {
            tenant: Some(t.clone()),
            secret_id: Some(id),
            order: rcrt_store::AuditOrder::OldestFirst,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(versions(&queried), expected);
    let decrypts = s
        .query_audit(&AuditQuery {
            action: Some(AuditAction::Decrypt),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        decrypts.iter().map(|r| r.version).collect::<Vec<_>>(),
        [Some(i64::MAX), None, Some(1)]
    );
    let page = s.audit_chain_page(None, 1000).await.unwrap();
    let mut chained: Vec<AuditRecord> = page
        .iter()
        .filter(|r| r.secret_id == Some(id))
        .cloned()
        .collect();
    chained.sort_by_key(|r| r.id);
    assert_eq!(versions(&chained), expected);
    // The stored row hashes as the entry written, version included.
    let stored = listed
        .iter()
        .find(|r| r.reason.as_deref() == Some("read v1"))
        .unwrap();
    assert_eq!(
        rcrt_store::chain::content_hash(&stored.chain_fields()),
        rcrt_store::chain::content_hash(&rcrt_store::entry_chain_fields(&decrypt))
    );
    // Every lane links from GENESIS through every row, the version-carrying ones included.
    let mut heads: BTreeMap<i32, (i64, [u8; 32])> = BTreeMap::new();
    let mut after = None;
    let mut checked = 0;
    loop {
        let page = s.audit_chain_page(after, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        let link = last.chain.clone().unwrap();
        after = Some((link.lane, link.seq));
        for r in &page {
            let link = r.chain.clone().expect("chained row");
            let (seq, prev) = heads
                .get(&link.lane)
                .copied()
                .unwrap_or((0, rcrt_store::chain::GENESIS));
            assert_eq!(link.seq, seq + 1, "gap in lane {}", link.lane);
            let content = rcrt_store::chain::content_hash(&r.chain_fields());
            assert_eq!(
                link.hash,
                rcrt_store::chain::link_hash(&prev, &content, link.lane, link.seq),
                "row {} does not link",
                r.id
            );
            heads.insert(link.lane, (link.seq, link.hash));
            checked += 1;
        }
    }
    assert_eq!(checked, expected.len());
    // The heads the store reports are where the walk ended.
    for head in s.audit_heads().await.unwrap() {
        let walked = heads
            .get(&head.lane)
            .copied()
            .unwrap_or((0, rcrt_store::chain::GENESIS));
        assert_eq!((head.seq, head.hash), walked, "lane {}", head.lane);
    }
    // A changed version would not verify: the hash covers it.
    let mut forged = stored.clone();
    forged.version = Some(2);
    assert_ne!(
        rcrt_store::chain::content_hash(&forged.chain_fields()),
        rcrt_store::chain::content_hash(&stored.chain_fields())
    );
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
    attributes_and_created_by_round_trip,
    list_versions_pages_newest_first_with_states,
    get_version_kept_destroyed_missing,
    destroy_version_outcomes_and_audit,
    version_cap_destroys_the_oldest_with_audit_rows,
    soft_deleted_secrets_are_hidden_but_keep_their_name,
    restore_only_within_the_window,
    purge_takes_only_due_secrets_with_one_row_each,
    concurrent_purges_never_purge_one_secret_twice,
    restore_racing_purge_has_one_winner,
    idempotency_records_round_trip_and_expire,
    listing_filters_by_label_prefix_expiry_and_deletion,
    count_expiring_counts_live_secrets_in_every_tenant,
    audit_version_round_trips_and_the_chain_verifies,
);
