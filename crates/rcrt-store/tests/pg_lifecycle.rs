//! PostgreSQL-only checks of the secret lifecycle (issue 15), beyond the shared behaviour in
//! `lifecycle.rs`: row-level security on the new tables, the purge job and restores on several
//! replicas at once, concurrent writes with one idempotency key, the audit version through the
//! group-commit path (with the chain recomputed here from `rcrt_store::chain`), and the partial
//! indexes the periodic queries rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rcrt_store::chain::{self, GENESIS};
use rcrt_store::{
    AuditOrder, AuditQuery, AuditRecord, Deletion, DestroyOutcome, IdempotencyRecord, NewSecret,
    PgStore, SecretMeta, Store, StoreError, VersionRecord,
};
use rcrt_testkit::TempPgDb;
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, Scope, SecretId, TenantId};
use time::OffsetDateTime;
use tokio_postgres::Client;

fn now() -> OffsetDateTime {
    chain::to_micros(OffsetDateTime::now_utc())
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
        request_id: format!("req-{}", uuid::Uuid::new_v4()),
        version: None,
    }
}

fn record(version: i64) -> VersionRecord {
    VersionRecord {
        version,
        kek_id: "kek-a".into(),
        wrapped_dek: vec![1, 2, 3, version as u8],
        sealed_value: vec![9, 8, 7, version as u8],
        created_at: now(),
        recovery: None,
        created_by: "tester".into(),
    }
}

fn new_secret(tenant: &TenantId, name: &str) -> NewSecret {
    let t = now();
    NewSecret {
        meta: SecretMeta {
            id: SecretId::new(),
            tenant: tenant.clone(),
            name: name.parse().unwrap(),
            scope: Scope::global(),
            version: 1,
            created_at: t,
            updated_at: t,
            attrs: Default::default(),
            deleted: None,
        },
        first: record(1),
        vault: None,
        idempotency: None,
    }
}

async fn create(s: &dyn Store, tenant: &TenantId, name: &str) -> SecretId {
    let n = new_secret(tenant, name);
    let id = n.meta.id;
    s.create_secret(n, audit(AuditAction::Create, Some(id), tenant))
        .await
        .unwrap();
    id
}

fn key_record(tenant: &TenantId, key: &str, outcome: &str) -> IdempotencyRecord {
    let t = now();
    IdempotencyRecord {
        tenant: tenant.clone(),
        principal: "tester".into(),
        key: key.into(),
        fingerprint: [7; 32],
        outcome: outcome.into(),
        created_at: t,
        expires_at: t + Duration::from_secs(3600),
    }
}

/// Soft-deletes `id` with a recovery window ending at `purge_at`.
async fn soft_delete(s: &dyn Store, tenant: &TenantId, id: SecretId, purge_at: OffsetDateTime) {
    let deletion = Deletion {
        deleted_at: now(),
        purge_at,
    };
    assert!(s
        .soft_delete(
            tenant,
            id,
            deletion,
            audit(AuditAction::SoftDelete, Some(id), tenant)
        )
        .await
        .unwrap());
}

async fn pg_client(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn stores(n: usize) -> (TempPgDb, Vec<Arc<PgStore>>) {
    let db = TempPgDb::create().await;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(PgStore::connect(db.url()).await.unwrap()));
    }
    (db, out)
}

/// Every audit row of `action`, oldest first.
async fn audit_rows(s: &dyn Store, action: AuditAction) -> Vec<AuditRecord> {
    s.query_audit(&AuditQuery {
        action: Some(action),
        order: AuditOrder::OldestFirst,
        limit: 10_000,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Reads the whole chain and recomputes it: per lane, seq runs 1..n, each link equals
/// `chain::link_hash` of the previous link and the row's content hash, and the heads are the
/// lanes' last rows. Returns the rows (every lane), or what is wrong.
async fn check_chain(s: &dyn Store) -> Result<Vec<AuditRecord>, String> {
    let mut lanes: BTreeMap<i32, Vec<AuditRecord>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = s
            .audit_chain_page(after, 50)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        let link = last.chain.clone().ok_or("unchained row in a chain page")?;
        after = Some((link.lane, link.seq));
        for r in page {
            let lane = r.chain.as_ref().ok_or("unchained row")?.lane;
            lanes.entry(lane).or_default().push(r);
        }
    }
    for (lane, rows) in &lanes {
        let mut prev = GENESIS;
        for (i, r) in rows.iter().enumerate() {
            let link = r.chain.as_ref().unwrap();
            if link.seq != i as i64 + 1 {
                return Err(format!("lane {lane}: seq {} out of order", link.seq));
            }
            let content = chain::content_hash(&r.chain_fields());
            if link.hash != chain::link_hash(&prev, &content, *lane, link.seq) {
                return Err(format!("lane {lane} seq {}: link mismatch", link.seq));
            }
            prev = link.hash;
        }
    }
    for head in s.audit_heads().await.map_err(|e| e.to_string())? {
        let want = lanes
            .get(&head.lane)
            .and_then(|rows| rows.last())
            .map_or((0, GENESIS), |r| {
                let l = r.chain.as_ref().unwrap();
                (l.seq, l.hash)
            });
        if (head.seq, head.hash) != want {
            return Err(format!("lane {}: head is not the lane's end", head.lane));
        }
    }
    Ok(lanes.into_values().flatten().collect())
}

/// Row-level security on the new tables: the app role acting for one tenant sees, and can
/// write, only that tenant's destroyed-version records and idempotency keys, even with queries
/// that forget their tenant filter; it cannot update either table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_isolates_the_new_tables() {
    let (db, s) = stores(1).await;
    let s = &*s[0];
    let (a, b) = (TenantId::new("tenant-a"), TenantId::new("tenant-b"));
    let mut ids = BTreeMap::new();
    for t in [&a, &b] {
        let mut n = new_secret(t, "S");
        n.idempotency = Some(key_record(t, "k-1", "first"));
        let id = n.meta.id;
        s.create_secret(n, audit(AuditAction::Create, Some(id), t))
            .await
            .unwrap();
        s.add_version(t, id, record(2), audit(AuditAction::Update, Some(id), t))
            .await
            .unwrap()
            .unwrap();
        let out = s
            .destroy_version(
                t,
                id,
                1,
                now(),
                audit(AuditAction::DestroyVersion, Some(id), t),
            )
            .await
            .unwrap();
        assert_eq!(out, DestroyOutcome::Destroyed);
        ids.insert(t.as_str().to_owned(), id);
    }
    let sa = ids["tenant-a"];
    let c = pg_client(db.url()).await;
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // The test connects as a superuser, which row-level security does not bind.
    assert_eq!(count("SELECT count(*) FROM destroyed_versions").await, 2);
    assert_eq!(count("SELECT count(*) FROM idempotency_keys").await, 2);
    let app: String = c
        .query_one("SELECT value FROM rcrt_state WHERE key = 'app_role'", &[])
        .await
        .unwrap()
        .get(0);
    c.batch_execute(&format!("SET ROLE {app}; SET rcrt.tenant = 'tenant-b'"))
        .await
        .unwrap();
    assert_eq!(count("SELECT count(*) FROM destroyed_versions").await, 1);
    assert_eq!(count("SELECT count(*) FROM idempotency_keys").await, 1);
    let theirs = c
        .query_opt(
            "SELECT 1 FROM destroyed_versions WHERE secret_id = $1",
            &[&sa.as_uuid()],
        )
        .await
        .unwrap();
    assert!(theirs.is_none(), "tenant-b sees tenant-a's version record");
    let tenants: Vec<String> = c
        .query("SELECT tenant FROM idempotency_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, ["tenant-b"]);
    // Deletes reach only its own rows.
    assert_eq!(
        c.execute(
            "DELETE FROM idempotency_keys WHERE tenant = 'tenant-a'",
            &[]
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        c.execute(
            "DELETE FROM destroyed_versions WHERE secret_id = $1",
            &[&sa.as_uuid()]
        )
        .await
        .unwrap(),
        0
    );
    // Writing a row for another tenant (or another tenant's secret) is refused.
    for sql in [
        "INSERT INTO idempotency_keys
             (tenant, principal, key, fingerprint, outcome, created_at, expires_at)
         VALUES ('tenant-a', 'x', 'k-2', decode(repeat('ab', 32), 'hex'), 'o', now(), now())"
            .to_owned(),
        // Another tenant's secret, labelled with either tenant.
        format!(
            "INSERT INTO destroyed_versions
                 (secret_id, tenant, version, created_at, created_by, destroyed_at)
             VALUES ('{}', 'tenant-b', 99, now(), 'x', now())",
            sa.as_uuid()
        ),
        format!(
            "INSERT INTO destroyed_versions
                 (secret_id, tenant, version, created_at, created_by, destroyed_at)
             VALUES ('{}', 'tenant-a', 99, now(), 'x', now())",
            sa.as_uuid()
        ),
    ] {
        let err = c.execute(&sql, &[]).await.unwrap_err();
        let message = err.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("row-level security")),
            "{sql}: {err:?}"
        );
    }
    // The app role never updates a destroyed version's record.
    let sql = "UPDATE destroyed_versions SET created_by = 'mallory'";
    let err = c.execute(sql, &[]).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{sql}: {err}"
    );
    c.batch_execute("SET rcrt.tenant = 'nobody'").await.unwrap();
    // It may update idempotency records (a write takes an expired key over in place), but
    // row-level security keeps that to its own tenant's: another tenant's are out of reach.
    let updated = c
        .execute("UPDATE idempotency_keys SET outcome = 'forged'", &[])
        .await
        .unwrap();
    assert_eq!(updated, 0);
    assert_eq!(count("SELECT count(*) FROM destroyed_versions").await, 0);
    assert_eq!(count("SELECT count(*) FROM idempotency_keys").await, 0);
    c.batch_execute("RESET ROLE").await.unwrap();
    // Nothing of tenant-a's changed, and the store's reads still keep to their tenant.
    assert_eq!(count("SELECT count(*) FROM destroyed_versions").await, 2);
    assert!(s
        .get_idempotency(&a, "tester", "k-1", now())
        .await
        .unwrap()
        .is_some_and(|r| r.outcome != "forged"));
    assert!(s
        .get_idempotency(&b, "tester", "k-1", now())
        .await
        .unwrap()
        .is_some_and(|r| r.tenant == b));
    assert!(s.list_versions(&b, sa, None, 10).await.unwrap().is_none());
    assert!(s.get_version(&b, sa, 1).await.unwrap().is_none());
}

/// Several replicas (two pools, two tasks each) run the purge job at once over 60 due secrets
/// in three tenants: every secret is purged exactly once, with exactly one `purge` row naming
/// its tenant, and the chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_purges_never_purge_or_audit_a_secret_twice() {
    let (_db, s) = stores(2).await;
    let past = now() - Duration::from_secs(60);
    let mut due = BTreeSet::new();
    for i in 0..60 {
        let t = TenantId::new(format!("t{}", i % 3));
        let id = create(&*s[0], &t, &format!("S{i}")).await;
        soft_delete(&*s[0], &t, id, past).await;
        due.insert((t.as_str().to_owned(), id));
    }
    // One more, not due yet: never purged.
    let later = TenantId::new("t0");
    let kept = create(&*s[0], &later, "LATER").await;
    soft_delete(&*s[0], &later, kept, now() + Duration::from_secs(3600)).await;

    let template = audit(AuditAction::Purge, None, &TenantId::new("system"));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = s[w % 2].clone();
            let template = template.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.purge_due(now(), 5, template.clone()).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut purged = Vec::new();
    let mut busy = 0;
    for w in workers {
        let mine = w.await.unwrap();
        busy += usize::from(!mine.is_empty());
        purged.extend(mine);
    }
    assert!(
        busy >= 2,
        "the purges did not overlap: one worker did it all"
    );
    let got: BTreeSet<(String, SecretId)> = purged
        .iter()
        .map(|(t, id)| (t.as_str().to_owned(), *id))
        .collect();
    assert_eq!(purged.len(), 60, "a secret was purged twice (or missed)");
    assert_eq!(got, due);
    let rows = audit_rows(&*s[1], AuditAction::Purge).await;
    assert_eq!(rows.len(), 60, "purge rows: {}", rows.len());
    let audited: BTreeSet<(String, SecretId)> = rows
        .iter()
        .map(|r| (r.tenant.clone(), r.secret_id.unwrap()))
        .collect();
    assert_eq!(audited, due, "one purge row per secret, with its tenant");
    for (t, id) in &due {
        let t = TenantId::new(t.clone());
        assert!(s[0].get_deleted(&t, *id).await.unwrap().is_none());
    }
    assert!(s[1].get_deleted(&later, kept).await.unwrap().is_some());
    check_chain(&*s[0]).await.unwrap();
}

/// A restore and the purge job (on another replica) race for the same due-and-restorable
/// secret, many times: each time exactly one wins, and the store and the audit log agree on
/// which.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_racing_purge_has_exactly_one_winner() {
    let (_db, s) = stores(2).await;
    let t = TenantId::new("tenant-a");
    let (mut restored, mut purged) = (0, 0);
    for i in 0..24 {
        let id = create(&*s[0], &t, &format!("RACE{i}")).await;
        let purge_at = now() + Duration::from_secs(60);
        soft_delete(&*s[0], &t, id, purge_at).await;
        // The restore's clock is before the window's end, the purge's after it: both may win.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let restore = {
            let (store, t, barrier) = (s[0].clone(), t.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .restore(
                        &t,
                        id,
                        purge_at - Duration::from_secs(1),
                        audit(AuditAction::Restore, Some(id), &t),
                    )
                    .await
                    .unwrap()
            })
        };
        let purge = {
            let (store, barrier) = (s[1].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .purge_due(
                        purge_at + Duration::from_secs(1),
                        100,
                        audit(AuditAction::Purge, None, &TenantId::new("system")),
                    )
                    .await
                    .unwrap()
            })
        };
        let (restore, purge) = (restore.await.unwrap(), purge.await.unwrap());
        let purge_hit = purge.iter().any(|(_, p)| *p == id);
        let live = s[1].get_meta(&t, id).await.unwrap();
        let deleted = s[1].get_deleted(&t, id).await.unwrap();
        assert!(deleted.is_none(), "round {i}: still soft-deleted");
        match (restore, purge_hit) {
            (Some(m), false) => {
                assert_eq!(m.id, id);
                assert!(m.deleted.is_none());
                assert!(live.is_some(), "round {i}: restored but not readable");
                restored += 1;
            }
            (None, true) => {
                assert!(live.is_none(), "round {i}: purged but readable");
                purged += 1;
            }
            (r, p) => panic!("round {i}: restore {r:?}, purged {p}: not exactly one winner"),
        }
        // Its audit rows say the same.
        let rows = s[0]
            .query_audit(&AuditQuery {
                secret_id: Some(id),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let n = |a: AuditAction| rows.iter().filter(|r| r.action == a.as_str()).count();
        assert_eq!(
            (n(AuditAction::Restore), n(AuditAction::Purge)),
            if live.is_some() { (1, 0) } else { (0, 1) },
            "round {i}"
        );
        // A restored secret is not due any more: later purges leave it.
        if live.is_some() {
            let again = s[1]
                .purge_due(
                    purge_at + Duration::from_secs(1),
                    100,
                    audit(AuditAction::Purge, None, &TenantId::new("system")),
                )
                .await
                .unwrap();
            assert!(again.is_empty(), "round {i}: {again:?}");
        }
    }
    eprintln!("restore won {restored}, purge won {purged}");
    check_chain(&*s[0]).await.unwrap();
}

/// The two orders of the race, forced with a raw transaction holding the secret's row: a
/// purge finds a secret a restore has locked and skips it without waiting; a restore waiting
/// behind a purge's delete finds the secret gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_and_purge_orders_forced_by_row_locks() {
    let (db, s) = stores(1).await;
    let s = s[0].clone();
    let t = TenantId::new("tenant-a");
    let template = audit(AuditAction::Purge, None, &TenantId::new("system"));
    let raw = pg_client(db.url()).await;

    // A restore in flight (its row lock held, not committed): the purge skips the secret.
    let id = create(&*s, &t, "LOCKED").await;
    let purge_at = now() + Duration::from_secs(60);
    soft_delete(&*s, &t, id, purge_at).await;
    raw.batch_execute(&format!(
        "BEGIN; UPDATE secrets SET deleted_at = NULL, purge_at = NULL WHERE id = '{}'",
        id.as_uuid()
    ))
    .await
    .unwrap();
    let after_window = purge_at + Duration::from_secs(1);
    let skipped = tokio::time::timeout(
        Duration::from_secs(2),
        s.purge_due(after_window, 100, template.clone()),
    )
    .await
    .expect("the purge waited for a locked secret")
    .unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    raw.batch_execute("COMMIT").await.unwrap();
    assert!(s
        .purge_due(after_window, 100, template.clone())
        .await
        .unwrap()
        .is_empty());
    assert!(s.get_meta(&t, id).await.unwrap().is_some());
    assert!(audit_rows(&*s, AuditAction::Purge).await.is_empty());

    // A purge in flight (the row deleted, not committed): the restore waits, then finds nothing.
    let id = create(&*s, &t, "PURGING").await;
    soft_delete(&*s, &t, id, purge_at).await;
    raw.batch_execute(&format!(
        "BEGIN; DELETE FROM secrets WHERE id = '{}'",
        id.as_uuid()
    ))
    .await
    .unwrap();
    let restore = {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move {
            s.restore(
                &t,
                id,
                purge_at - Duration::from_secs(1),
                audit(AuditAction::Restore, Some(id), &t),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!restore.is_finished(), "the restore did not wait");
    raw.batch_execute("COMMIT").await.unwrap();
    assert!(restore.await.unwrap().unwrap().is_none());
    let restores = audit_rows(&*s, AuditAction::Restore).await;
    assert!(
        restores.iter().all(|r| r.secret_id != Some(id)),
        "a restore that found nothing was audited"
    );
}

/// Concurrent creates with one idempotency key (two replicas): exactly one succeeds, every
/// other gets `IdempotencyKeyTaken` and leaves nothing behind (no secret, no audit row), and
/// the stored answer is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_idempotency_key() {
    let (_db, s) = stores(2).await;
    let t = TenantId::new("tenant-a");
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, t, barrier) = (s[i % 2].clone(), t.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut n = new_secret(&t, &format!("N{i}"));
                n.idempotency = Some(key_record(&t, "retry-1", &format!("answer {i}")));
                let id = n.meta.id;
                barrier.wait().await;
                let r = store
                    .create_secret(n, audit(AuditAction::Create, Some(id), &t))
                    .await;
                (i, id, r)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        let (i, id, r) = task.await.unwrap();
        match r {
            Ok(()) => winners.push((i, id)),
            Err(StoreError::IdempotencyKeyTaken) => losers.push(id),
            Err(e) => panic!("create {i}: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (winner, winner_id) = winners[0];
    assert!(s[0].get_meta(&t, winner_id).await.unwrap().is_some());
    for id in &losers {
        assert!(s[0].get_meta(&t, *id).await.unwrap().is_none());
    }
    let creates = audit_rows(&*s[0], AuditAction::Create).await;
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].secret_id, Some(winner_id));
    let stored = s[1]
        .get_idempotency(&t, "tester", "retry-1", now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.outcome, format!("answer {winner}"));
    let listed = s[0]
        .list(&rcrt_store::ListQuery {
            tenant: t.clone(),
            scope_type: None,
            scope_id: None,
            limit: 100,
            after: None,
            visible_to: None,
            filter: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

/// A write whose key another transaction is inserting waits for that transaction: it conflicts
/// if the other commits, and goes ahead if the other rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_waits_for_the_transaction_holding_its_key() {
    let (db, s) = stores(1).await;
    let s = s[0].clone();
    let t = TenantId::new("tenant-a");
    let raw = pg_client(db.url()).await;
    for (end, want_ok) in [("ROLLBACK", true), ("COMMIT", false)] {
        let key = format!("k-{end}");
        raw.batch_execute(&format!(
            "BEGIN; INSERT INTO idempotency_keys
                 (tenant, principal, key, fingerprint, outcome, created_at, expires_at)
             VALUES ('tenant-a', 'tester', '{key}', decode(repeat('ab', 32), 'hex'), 'held',
                     now(), now() + interval '1 hour')"
        ))
        .await
        .unwrap();
        let mut n = new_secret(&t, &format!("AFTER_{end}"));
        n.idempotency = Some(key_record(&t, &key, "mine"));
        let id = n.meta.id;
        let task = {
            let (s, t) = (s.clone(), t.clone());
            tokio::spawn(async move {
                s.create_secret(n, audit(AuditAction::Create, Some(id), &t))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!task.is_finished(), "{end}: the write did not wait");
        raw.batch_execute(end).await.unwrap();
        let r = task.await.unwrap();
        let stored = s
            .get_idempotency(&t, "tester", &key, now())
            .await
            .unwrap()
            .unwrap();
        if want_ok {
            r.unwrap();
            assert!(s.get_meta(&t, id).await.unwrap().is_some());
            assert_eq!(stored.outcome, "mine");
        } else {
            assert!(matches!(r, Err(StoreError::IdempotencyKeyTaken)), "{r:?}");
            assert!(s.get_meta(&t, id).await.unwrap().is_none());
            assert_eq!(stored.outcome, "held");
        }
    }
}

/// Decrypt rows carrying a version, written concurrently through the group-commit path (and
/// the single-row and several-row paths), read back with their versions from every reader,
/// share transactions, and chain: the recomputed links match. Changing a stored version breaks
/// its link, so the chain covers the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_audit_rows_keep_their_version_and_chain() {
    let (db, s) = stores(1).await;
    let s = s[0].clone();
    let tasks: Vec<_> = (0..48)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let t = TenantId::new(format!("t{}", w % 3));
                let mut sent = Vec::new();
                for i in 0..10 {
                    let mut e = audit(AuditAction::Decrypt, Some(SecretId::new()), &t);
                    // Every other row names a version; the rest stay NULL.
                    e.version = (i % 2 == 0).then_some(w * 100 + i);
                    sent.push((e.request_id.clone(), e.version));
                    s.append_audit(e).await.unwrap();
                }
                sent
            })
        })
        .collect();
    let mut want: BTreeMap<String, Option<i64>> = BTreeMap::new();
    for task in tasks {
        want.extend(task.await.unwrap());
    }
    // The several-row path (two tenants: the owner's transaction).
    let mut several = Vec::new();
    for (t, v) in [("t0", Some(7)), ("t9", None)] {
        let mut e = audit(AuditAction::Decrypt, None, &TenantId::new(t));
        e.version = v;
        want.insert(e.request_id.clone(), v);
        several.push(e);
    }
    s.append_audits(several).await.unwrap();

    let rows = check_chain(&*s).await.unwrap();
    assert_eq!(rows.len(), want.len());
    let got: BTreeMap<String, Option<i64>> = rows
        .iter()
        .map(|r| (r.request_id.clone(), r.version))
        .collect();
    assert_eq!(got, want);
    assert!(want.values().filter(|v| v.is_some()).count() > 200);
    // The other readers return the version too.
    let listed = s.list_audit(None, 10_000).await.unwrap();
    assert!(listed.iter().all(|r| want[&r.request_id] == r.version));
    let one_tenant = s
        .query_audit(&AuditQuery {
            tenant: Some(TenantId::new("t1")),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(one_tenant.len(), 160);
    assert!(one_tenant.iter().all(|r| want[&r.request_id] == r.version));
    // Group commit happened: rows of one transaction share its xmin.
    let c = pg_client(db.url()).await;
    let r = c
        .query_one(
            "SELECT count(DISTINCT xmin::text), count(*) FROM secret_access_log",
            &[],
        )
        .await
        .unwrap();
    let (transactions, total): (i64, i64) = (r.get(0), r.get(1));
    assert!(
        transactions * 2 <= total,
        "{total} rows took {transactions} transactions: no group commit"
    );
    // A changed version is a broken link.
    c.execute(
        "UPDATE secret_access_log SET version = version + 1
         WHERE id = (SELECT min(id) FROM secret_access_log WHERE version IS NOT NULL)",
        &[],
    )
    .await
    .unwrap();
    let err = check_chain(&*s).await.unwrap_err();
    assert!(err.contains("link mismatch"), "{err}");
}

/// The periodic queries read only the rows they are about, through the partial indexes of
/// migration 8, and not every secret: the expiring gauge (and the listing's expiry filter) and
/// the purge job. Checked on the statements' plans with 3000 other secrets in the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_and_purge_queries_use_their_partial_indexes() {
    let (db, s) = stores(1).await;
    let s = s[0].clone();
    let t = TenantId::new("tenant-a");
    let c = pg_client(db.url()).await;
    c.batch_execute(
        "INSERT INTO secrets (id, tenant, name, scope_type, current_version, created_at,
                              updated_at)
         SELECT gen_random_uuid(), 'bulk', 'B' || g, 'global', 1, now(), now()
         FROM generate_series(1, 3000) AS g",
    )
    .await
    .unwrap();
    let soon = create(&*s, &t, "SOON").await;
    let mut attrs = s.get_meta(&t, soon).await.unwrap().unwrap().attrs;
    attrs.expires_at = Some(now() + Duration::from_secs(3600));
    s.update_attributes(
        &t,
        soon,
        attrs,
        audit(AuditAction::UpdateMetadata, Some(soon), &t),
    )
    .await
    .unwrap()
    .unwrap();
    let gone = create(&*s, &t, "GONE").await;
    soft_delete(&*s, &t, gone, now() - Duration::from_secs(1)).await;
    c.batch_execute("ANALYZE secrets").await.unwrap();
    // The statements as the store sends them (kept in step with postgres.rs).
    for (sql, index) in [
        (
            "SELECT count(*) FROM secrets WHERE expires_at <= $1 AND deleted_at IS NULL",
            "secrets_expires_at",
        ),
        (
            "WITH due AS (SELECT id FROM secrets WHERE purge_at <= $1 ORDER BY purge_at
                          LIMIT $2 FOR UPDATE SKIP LOCKED)
             DELETE FROM secrets s USING due WHERE s.id = due.id RETURNING s.tenant, s.id",
            "secrets_purge_at",
        ),
    ] {
        let plan: Vec<String> = c
            .query(
                &format!(
                    "EXPLAIN {}",
                    sql.replace("$1", "now()").replace("$2", "100")
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{sql}:\n{plan}");
    }
    assert_eq!(
        s.count_expiring(now() + Duration::from_secs(7200))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.count_expiring(now()).await.unwrap(), 0);
    let template = audit(AuditAction::Purge, None, &TenantId::new("system"));
    let purged = s.purge_due(now(), 10, template).await.unwrap();
    assert_eq!(purged, vec![(t.clone(), gone)]);
}
