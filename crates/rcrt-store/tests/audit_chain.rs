//! The audit hash chain, checkpoints, signing keys and audit queries, on SQLite and PostgreSQL
//! alike (a fresh database per test). The chain is checked here by recomputing every link with
//! `chain::link_hash` from the rows read back, so a store that broke the chain fails these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rcrt_store::chain::{self, GENESIS};
use rcrt_store::{
    AuditCheckpoint, AuditOrder, AuditQuery, AuditRecord, AuditSigningKey, NewSecret, SecretMeta,
    Store, VersionRecord,
};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, Scope, SecretId, TenantId};
use time::OffsetDateTime;

/// An entry stamped now, with its nanoseconds (the store must keep the microseconds it hashes).
fn entry(
    tenant: &TenantId,
    action: AuditAction,
    secret: Option<SecretId>,
    user: &str,
) -> AuditEntry {
    AuditEntry {
        timestamp: OffsetDateTime::now_utc(),
        action,
        secret_id: secret,
        token_id: None,
        tenant: tenant.clone(),
        user_id: user.into(),
        reason: Some("chain test".into()),
        outcome: AuditOutcome::Success,
        request_id: format!("req-{}", uuid::Uuid::new_v4()),
        version: None,
    }
}

fn new_secret(tenant: &TenantId, name: &str) -> NewSecret {
    let t = chain::to_micros(OffsetDateTime::now_utc());
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
        first: VersionRecord {
            version: 1,
            kek_id: "kek-a".into(),
            wrapped_dek: vec![1, 2, 3],
            sealed_value: vec![4, 5, 6],
            created_at: t,
            recovery: None,
            created_by: String::new(),
        },
        vault: None,
        idempotency: None,
    }
}

/// Reads the whole chain in small pages and checks it: per lane, seq runs 1..n without a gap,
/// each stored link equals the one recomputed from the previous link and the row's content, ids
/// grow with seq, and the lane heads are the lanes' last rows (seq 0 and GENESIS when empty).
/// Returns the rows per lane, or what is wrong.
async fn check_chain(s: &dyn Store) -> Result<BTreeMap<i32, Vec<AuditRecord>>, String> {
    let mut lanes: BTreeMap<i32, Vec<AuditRecord>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = s
            .audit_chain_page(after, 37)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        let link = last.chain.clone().ok_or("unchained row in a chain page")?;
        after = Some((link.lane, link.seq));
        for r in page {
            let lane = r
                .chain
                .as_ref()
                .ok_or("unchained row in a chain page")?
                .lane;
            lanes.entry(lane).or_default().push(r);
        }
    }
    for (lane, rows) in &lanes {
        let mut prev = GENESIS;
        let mut prev_id = i64::MIN;
        for (i, r) in rows.iter().enumerate() {
            let link = r.chain.as_ref().unwrap();
            let want_seq = i as i64 + 1;
            if link.seq != want_seq {
                return Err(format!(
                    "lane {lane}: seq {} where {want_seq} expected",
                    link.seq
                ));
            }
            let content = chain::content_hash(&r.chain_fields());
            if link.hash != chain::link_hash(&prev, &content, *lane, link.seq) {
                return Err(format!(
                    "lane {lane} seq {}: link hash mismatch (row {})",
                    link.seq, r.id
                ));
            }
            if r.id <= prev_id {
                return Err(format!(
                    "lane {lane} seq {}: id {} after id {prev_id}",
                    link.seq, r.id
                ));
            }
            prev = link.hash;
            prev_id = r.id;
        }
    }
    for head in s.audit_heads().await.map_err(|e| e.to_string())? {
        let (seq, hash) = match lanes.get(&head.lane).and_then(|rows| rows.last()) {
            Some(r) => {
                let link = r.chain.as_ref().unwrap();
                (link.seq, link.hash)
            }
            None => (0, GENESIS),
        };
        if (head.seq, head.hash) != (seq, hash) {
            return Err(format!(
                "lane {}: head at seq {} but the lane ends at seq {seq}",
                head.lane, head.seq
            ));
        }
    }
    Ok(lanes)
}

fn chained_rows(lanes: &BTreeMap<i32, Vec<AuditRecord>>) -> usize {
    lanes.values().map(Vec::len).sum()
}

/// 16 writers x 50 rows, through every audit path: single rows (the decrypt path), several rows
/// of one tenant and of several tenants in one transaction, secret writes. The writers take
/// turns over `replicas` (store instances on one database).
async fn concurrent_writers_keep_every_lane_linked(
    replicas: Vec<Arc<dyn Store>>,
    lanes_expected: usize,
) {
    let writers = 16;
    let per_writer = 50;
    let mut tasks = Vec::new();
    let s = replicas[0].clone();
    for w in 0..writers {
        let s = replicas[w % replicas.len()].clone();
        tasks.push(tokio::spawn(async move {
            let tenant = TenantId::new(format!("t{}", w % 3));
            let mut rows = 0;
            for i in 0..per_writer {
                match i % 10 {
                    3 => {
                        let n = new_secret(&tenant, &format!("S_{w}_{i}"));
                        let e = entry(&tenant, AuditAction::Create, Some(n.meta.id), "writer");
                        s.create_secret(n, e).await.unwrap();
                        rows += 1;
                    }
                    6 => {
                        let other = TenantId::new("other");
                        let batch = vec![
                            entry(&tenant, AuditAction::Decrypt, None, "batch"),
                            entry(&other, AuditAction::Decrypt, None, "batch"),
                            entry(&tenant, AuditAction::Decrypt, None, "batch"),
                        ];
                        s.append_audits(batch).await.unwrap();
                        rows += 3;
                    }
                    8 => {
                        let batch = vec![
                            entry(&tenant, AuditAction::Decrypt, None, "same"),
                            entry(&tenant, AuditAction::Decrypt, None, "same"),
                        ];
                        s.append_audits(batch).await.unwrap();
                        rows += 2;
                    }
                    _ => {
                        let e = entry(&tenant, AuditAction::Decrypt, None, "decrypt");
                        s.append_audit(e).await.unwrap();
                        rows += 1;
                    }
                }
            }
            rows
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let lanes = check_chain(&*s).await.unwrap();
    assert_eq!(chained_rows(&lanes), total);
    assert!(s.unchained_audit(None, 10).await.unwrap().is_empty());
    assert_eq!(s.audit_heads().await.unwrap().len(), lanes_expected);
    if lanes_expected > 1 {
        assert!(lanes.len() > 1, "concurrent writers all used one lane");
    }
    // The rows read back elsewhere carry their links too.
    let newest = s.list_audit(None, 5).await.unwrap();
    assert!(newest.iter().all(|r| r.chain.is_some()));
}

/// Raw SQL on the store's database, behind the store's back (tampering, pre-chain rows).
enum Raw {
    Sqlite(std::path::PathBuf),
    Pg(String),
}

impl Raw {
    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Raw::Pg(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(conn);
                client.batch_execute(sql).await.unwrap();
                drop(client);
                let _ = task.await;
            }
        }
    }
}

/// The check above is not vacuous: a changed field, a removed row and a moved head all fail it.
async fn tampering_fails_the_check(s: Arc<dyn Store>, raw: Raw) {
    let t = TenantId::default_tenant();
    for _ in 0..5 {
        s.append_audit(entry(&t, AuditAction::Decrypt, None, "alice"))
            .await
            .unwrap();
    }
    let lanes = check_chain(&*s).await.unwrap();
    assert_eq!(chained_rows(&lanes), 5);
    let rows: Vec<&AuditRecord> = lanes.values().flatten().collect();
    let (first, second) = (rows[0].id, rows[1].id);
    raw.exec(&format!(
        "UPDATE secret_access_log SET user_id = 'mallory' WHERE id = {first}"
    ))
    .await;
    let err = check_chain(&*s).await.unwrap_err();
    assert!(err.contains("link hash mismatch"), "{err}");
    raw.exec(&format!(
        "UPDATE secret_access_log SET user_id = 'alice' WHERE id = {first}"
    ))
    .await;
    check_chain(&*s).await.unwrap();
    raw.exec(&format!(
        "DELETE FROM secret_access_log WHERE id = {second}"
    ))
    .await;
    let err = check_chain(&*s).await.unwrap_err();
    assert!(err.contains("expected"), "{err}");
}

/// Rows without chain columns (written before migration 0006, or by hand) are listed by
/// unchained_audit in id order, not by the chain pages, and read back with `chain: None`.
async fn unchained_rows_are_listed_apart(s: Arc<dyn Store>, raw: Raw) {
    let t = TenantId::default_tenant();
    for i in 0..3 {
        raw.exec(&format!(
            "INSERT INTO secret_access_log (timestamp, action, tenant, user_id, outcome, request_id)
             VALUES ('2020-01-01T00:00:0{i}.000000Z', 'decrypt', 'default', 'old', 'success', 'r{i}')"
        ))
        .await;
    }
    s.append_audit(entry(&t, AuditAction::Decrypt, None, "new"))
        .await
        .unwrap();
    let lanes = check_chain(&*s).await.unwrap();
    assert_eq!(chained_rows(&lanes), 1);
    let old = s.unchained_audit(None, 10).await.unwrap();
    assert_eq!(old.len(), 3);
    assert!(old.iter().all(|r| r.chain.is_none() && r.user_id == "old"));
    assert!(old.windows(2).all(|w| w[0].id < w[1].id));
    let rest = s.unchained_audit(Some(old[0].id), 1).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, old[1].id);
    let all = s.list_audit(None, 10).await.unwrap();
    assert_eq!(all.iter().filter(|r| r.chain.is_some()).count(), 1);
}

/// Checkpoints and signing keys round-trip; created_at keeps whole microseconds (a signature
/// covers them); a key put again with its id replaces only its wrapping, and its audit row is
/// a chained row written with it.
async fn checkpoints_and_signing_keys(s: Arc<dyn Store>) {
    let t = TenantId::default_tenant();
    assert!(s.audit_checkpoints().await.unwrap().is_empty());
    assert!(s.audit_signing_keys().await.unwrap().is_empty());
    let created = OffsetDateTime::now_utc();
    let key = AuditSigningKey {
        id: "ed25519:0123456789abcdef".into(),
        public_key: vec![7; 32],
        kek_id: "kek-a".into(),
        wrapped_key: vec![1, 2, 3],
        created_at: created,
    };
    let made = entry(&t, AuditAction::AuditKeyCreate, None, "rcrt-server");
    s.put_audit_signing_key(&key, Some(made.clone()))
        .await
        .unwrap();
    let keys = s.audit_signing_keys().await.unwrap();
    let want = AuditSigningKey {
        created_at: chain::to_micros(created),
        ..key.clone()
    };
    assert_eq!(keys, vec![want.clone()]);
    let rows = s.list_audit(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].action, "audit_key_create");
    assert_eq!(rows[0].request_id, made.request_id);
    // Re-wrapped under another KEK: same key, new wrapping, no audit row asked for.
    let rewrapped = AuditSigningKey {
        kek_id: "kek-b".into(),
        wrapped_key: vec![4, 5],
        public_key: vec![9; 32],
        created_at: OffsetDateTime::now_utc(),
        ..key.clone()
    };
    s.put_audit_signing_key(&rewrapped, None).await.unwrap();
    let keys = s.audit_signing_keys().await.unwrap();
    assert_eq!(
        keys,
        vec![AuditSigningKey {
            kek_id: "kek-b".into(),
            wrapped_key: vec![4, 5],
            ..want.clone()
        }]
    );
    let second = AuditSigningKey {
        id: "ed25519:fedcba9876543210".into(),
        created_at: created + Duration::from_secs(1),
        ..key.clone()
    };
    s.put_audit_signing_key(&second, None).await.unwrap();
    let ids: Vec<String> = s
        .audit_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec![key.id.clone(), second.id.clone()]);
    assert_eq!(s.list_audit(None, 10).await.unwrap().len(), 1);

    let heads = s.audit_heads().await.unwrap();
    assert!(heads.iter().any(|h| h.seq == 1));
    let cp = AuditCheckpoint {
        id: 0,
        created_at: OffsetDateTime::now_utc(),
        key_id: key.id.clone(),
        heads: heads.clone(),
        signature: vec![0xAA; 64],
    };
    s.insert_audit_checkpoint(&cp).await.unwrap();
    s.append_audit(entry(&t, AuditAction::Decrypt, None, "x"))
        .await
        .unwrap();
    let cp2 = AuditCheckpoint {
        created_at: cp.created_at + Duration::from_secs(30),
        heads: s.audit_heads().await.unwrap(),
        signature: vec![0xBB; 64],
        ..cp.clone()
    };
    s.insert_audit_checkpoint(&cp2).await.unwrap();
    let stored = s.audit_checkpoints().await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored[0].id < stored[1].id);
    for (got, want) in stored.iter().zip([&cp, &cp2]) {
        assert_eq!(got.created_at, chain::to_micros(want.created_at));
        assert_eq!(got.key_id, want.key_id);
        assert_eq!(got.heads, want.heads);
        assert_eq!(got.signature, want.signature);
    }
    assert_ne!(stored[0].heads, stored[1].heads);
    check_chain(&*s).await.unwrap();
}

/// One audit row of the query test, with the fields the filters look at.
struct Spec {
    tenant: &'static str,
    secret: usize,
    user: &'static str,
    action: AuditAction,
    outcome: AuditOutcome,
}

/// query_audit: every filter alone and together, both orders, pages through the cursor, and
/// tenant Some (that tenant only) / None (every tenant). Expected pages are computed from the
/// rows written, so a filter the store ignored or misapplied shows up.
async fn query_audit_filters_pages_and_tenants(s: Arc<dyn Store>) {
    let secrets = [SecretId::new(), SecretId::new(), SecretId::new()];
    let now = chain::to_micros(OffsetDateTime::now_utc());
    let base = now - time::Duration::hours(2) + time::Duration::nanoseconds(100);
    let tenants = ["acme", "acme", "umbrella"];
    let users = ["alice", "bob", "carol"];
    let actions = [
        AuditAction::Decrypt,
        AuditAction::Create,
        AuditAction::Update,
    ];
    let outcomes = [AuditOutcome::Success, AuditOutcome::Denied];
    let mut written = Vec::new();
    for i in 0..40usize {
        let spec = Spec {
            tenant: tenants[i % 3],
            secret: i % 3,
            user: users[(i / 2) % 3],
            action: actions[(i / 3) % 3],
            outcome: outcomes[(i / 5) % 2],
        };
        let mut e = entry(
            &TenantId::new(spec.tenant),
            spec.action,
            (i % 4 != 0).then_some(secrets[spec.secret]),
            spec.user,
        );
        e.outcome = spec.outcome;
        // One row a minute, with sub-microsecond digits the store drops (the bounds below
        // fall inside a row's microsecond, before its nanoseconds).
        e.timestamp = base + time::Duration::minutes(i as i64) + time::Duration::nanoseconds(789);
        s.append_audit(e.clone()).await.unwrap();
        written.push(e);
    }
    // Ids in write order: the store assigns increasing ids.
    let all = s
        .query_audit(&AuditQuery {
            order: AuditOrder::OldestFirst,
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), written.len());
    for (r, e) in all.iter().zip(&written) {
        assert_eq!(r.request_id, e.request_id);
        assert_eq!(r.timestamp, chain::to_micros(e.timestamp));
        assert!(r.chain.is_some());
    }
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    let queries = vec![
        AuditQuery::default(),
        AuditQuery {
            tenant: Some(TenantId::new("acme")),
            ..AuditQuery::default()
        },
        AuditQuery {
            tenant: Some(TenantId::new("umbrella")),
            ..AuditQuery::default()
        },
        AuditQuery {
            tenant: Some(TenantId::new("nobody")),
            ..AuditQuery::default()
        },
        AuditQuery {
            secret_id: Some(secrets[1]),
            ..AuditQuery::default()
        },
        AuditQuery {
            user_id: Some("bob".into()),
            ..AuditQuery::default()
        },
        AuditQuery {
            action: Some(AuditAction::Create),
            ..AuditQuery::default()
        },
        AuditQuery {
            outcome: Some(AuditOutcome::Denied),
            ..AuditQuery::default()
        },
        AuditQuery {
            since: Some(base + time::Duration::minutes(10)),
            until: Some(base + time::Duration::minutes(25)),
            ..AuditQuery::default()
        },
        AuditQuery {
            tenant: Some(TenantId::new("acme")),
            secret_id: Some(secrets[0]),
            user_id: Some("alice".into()),
            action: Some(AuditAction::Decrypt),
            outcome: Some(AuditOutcome::Success),
            since: Some(base),
            until: Some(base + time::Duration::minutes(40)),
            ..AuditQuery::default()
        },
    ];
    let mut nonempty = 0;
    for q in queries {
        let want: Vec<i64> = all
            .iter()
            .zip(&written)
            .filter(|(_, e)| {
                q.tenant.as_ref().is_none_or(|t| *t == e.tenant)
                    && q.secret_id.is_none_or(|id| e.secret_id == Some(id))
                    && q.user_id.as_ref().is_none_or(|u| *u == e.user_id)
                    && q.action.is_none_or(|a| a == e.action)
                    && q.outcome.is_none_or(|o| o == e.outcome)
                    // Both databases keep microseconds: bounds compare at that precision.
                    && q.since.is_none_or(|t| chain::to_micros(e.timestamp) >= chain::to_micros(t))
                    && q.until.is_none_or(|t| chain::to_micros(e.timestamp) < chain::to_micros(t))
            })
            .map(|(r, _)| r.id)
            .collect();
        nonempty += usize::from(!want.is_empty());
        for order in [AuditOrder::NewestFirst, AuditOrder::OldestFirst] {
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let page = s
                    .query_audit(&AuditQuery {
                        order,
                        cursor,
                        limit: 3,
                        ..q.clone()
                    })
                    .await
                    .unwrap();
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                cursor = Some(last.id);
                got.extend(page.iter().map(|r| r.id));
            }
            let mut want = want.clone();
            if order == AuditOrder::NewestFirst {
                want.reverse();
            }
            assert_eq!(got, want, "{q:?} {order:?}");
        }
    }
    assert!(nonempty >= 8, "the queries must select something");
}

async fn sqlite_store() -> (rcrt_testkit::TempDir, Arc<dyn Store>) {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("t.db");
    let store = rcrt_store::SqliteStore::open(path.to_str().unwrap())
        .await
        .unwrap();
    (dir, Arc::new(store))
}

async fn pg_store() -> (rcrt_testkit::TempPgDb, Arc<dyn Store>) {
    let db = rcrt_testkit::TempPgDb::create().await;
    let store = rcrt_store::PgStore::connect(db.url()).await.unwrap();
    (db, Arc::new(store))
}

macro_rules! both {
    ($($name:ident $(($raw:tt))?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (dir, s) = super::sqlite_store().await;
                    let _raw = super::Raw::Sqlite(dir.path().join("t.db"));
                    super::$name(s $(, both!(@raw $raw _raw))?).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (db, s) = super::pg_store().await;
                    let _raw = super::Raw::Pg(db.url().to_owned());
                    super::$name(s $(, both!(@raw $raw _raw))?).await;
                }
            )*
        }
    };
    (@raw raw $v:ident) => { $v };
}

both!(
    tampering_fails_the_check(raw),
    unchained_rows_are_listed_apart(raw),
    checkpoints_and_signing_keys,
    query_audit_filters_pages_and_tenants,
);
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_writers_keep_the_chain() {
    let (_dir, s) = sqlite_store().await;
    concurrent_writers_keep_every_lane_linked(vec![s], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_on_two_replicas_keep_every_lane_linked() {
    let (db, s) = pg_store().await;
    let replica: Arc<dyn Store> = Arc::new(rcrt_store::PgStore::connect(db.url()).await.unwrap());
    concurrent_writers_keep_every_lane_linked(vec![s, replica], 32).await;
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// With every lane held by other transactions, a writer (single row or several) waits for a
/// lane instead of failing or writing outside the chain, and links correctly once it gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_writers_wait_for_a_lane_when_every_lane_is_held() {
    let (db, s) = pg_store().await;
    let t = TenantId::default_tenant();
    s.append_audit(entry(&t, AuditAction::Decrypt, None, "before"))
        .await
        .unwrap();
    let holder = pg_client(db.url()).await;
    // Writers hold a lane by its transaction-level advisory lock (key 0x72636c6e, lane).
    holder
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(1919118446, g) FROM generate_series(0, 31) AS g",
        )
        .await
        .unwrap();
    let single = {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move {
            s.append_audit(entry(&t, AuditAction::Decrypt, None, "single"))
                .await
        })
    };
    let several = {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move {
            s.append_audits(vec![
                entry(&t, AuditAction::Decrypt, None, "several"),
                entry(
                    &TenantId::new("other"),
                    AuditAction::Decrypt,
                    None,
                    "several",
                ),
            ])
            .await
        })
    };
    let secret = {
        let (s, t) = (s.clone(), t.clone());
        tokio::spawn(async move {
            let n = new_secret(&t, "WAITS");
            let e = entry(&t, AuditAction::Create, Some(n.meta.id), "creator");
            s.create_secret(n, e).await
        })
    };
    // Concurrent single rows: the store's writers batch them, and those batches wait too.
    let grouped: Vec<_> = (0..40)
        .map(|_| {
            let (s, t) = (s.clone(), t.clone());
            tokio::spawn(async move {
                s.append_audit(entry(&t, AuditAction::Decrypt, None, "grouped"))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!single.is_finished() && !several.is_finished() && !secret.is_finished());
    assert!(grouped.iter().all(|g| !g.is_finished()));
    assert_eq!(s.list_audit(None, 10).await.unwrap().len(), 1);
    holder.batch_execute("COMMIT").await.unwrap();
    single.await.unwrap().unwrap();
    several.await.unwrap().unwrap();
    secret.await.unwrap().unwrap();
    for g in grouped {
        g.await.unwrap().unwrap();
    }
    let lanes = check_chain(&*s).await.unwrap();
    assert_eq!(chained_rows(&lanes), 45);
}

/// How many transactions wrote the audit rows (rows of one transaction share its `xmin`).
async fn audit_transactions(url: &str) -> (i64, i64) {
    let c = pg_client(url).await;
    let r = c
        .query_one(
            "SELECT count(DISTINCT xmin::text), count(*) FROM secret_access_log",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

/// Single rows written concurrently (the decrypt path) are committed several to a transaction
/// (group commit), and every lane still links.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_single_rows_share_commits() {
    let (db, s) = pg_store().await;
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let t = TenantId::new(format!("t{}", w % 3));
                for _ in 0..20 {
                    s.append_audit(entry(&t, AuditAction::Decrypt, None, "decrypt"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let lanes = check_chain(&*s).await.unwrap();
    assert_eq!(chained_rows(&lanes), 64 * 20);
    let (transactions, rows) = audit_transactions(db.url()).await;
    assert_eq!(rows, 64 * 20);
    assert!(
        transactions * 2 <= rows,
        "{rows} rows took {transactions} transactions: no group commit"
    );
}

/// A batch that fails fails every caller in it: a caller hears "written" only if its row is
/// there, and a failed caller's row is not. The batch is forced: with every lane held, the
/// writer tasks wait inside their first batches while the next rows queue up behind them, and
/// the first writer freed takes all of those as one batch, the bad row (a NUL byte, which
/// PostgreSQL refuses in text) among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_failed_batch_fails_every_caller_in_it() {
    let (db, s) = pg_store().await;
    let t = TenantId::default_tenant();
    let holder = pg_client(db.url()).await;
    holder
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(1919118446, g) FROM generate_series(0, 31) AS g",
        )
        .await
        .unwrap();
    let spawn = |e: AuditEntry| {
        let s = s.clone();
        tokio::spawn(async move { s.append_audit(e).await })
    };
    // More than the store's writer tasks (4), one at a time so each writer takes one.
    let mut blockers = Vec::new();
    for _ in 0..8 {
        blockers.push(spawn(entry(&t, AuditAction::Decrypt, None, "blocker")));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut bad = entry(&t, AuditAction::Decrypt, None, "bad");
    bad.reason = Some("nul \0 byte".into());
    let bad = spawn(bad);
    let goods: Vec<(String, _)> = (0..20)
        .map(|_| {
            let e = entry(&t, AuditAction::Decrypt, None, "good");
            (e.request_id.clone(), spawn(e))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    assert!(bad.await.unwrap().is_err(), "a NUL byte was accepted");
    for b in blockers {
        let _ = b.await.unwrap();
    }
    let stored: std::collections::BTreeSet<String> = s
        .list_audit(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let mut failed = 0;
    for (request_id, task) in goods {
        match task.await.unwrap() {
            Ok(()) => assert!(stored.contains(&request_id), "acknowledged row missing"),
            Err(_) => {
                failed += 1;
                assert!(
                    !stored.contains(&request_id),
                    "a failed caller's row is stored"
                );
            }
        }
    }
    assert!(failed > 0, "no good row shared the bad row's batch");
    check_chain(&*s).await.unwrap();
    // The failed batch's transaction ended with it: no pooled connection was left inside a
    // transaction, and later batches work.
    let open: i64 = holder
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "a pooled connection was left in a transaction");
    let t = TenantId::default_tenant();
    let after: Vec<_> = (0..32)
        .map(|_| {
            let s = s.clone();
            let t = t.clone();
            tokio::spawn(async move {
                s.append_audit(entry(&t, AuditAction::Decrypt, None, "d"))
                    .await
            })
        })
        .collect();
    for a in after {
        a.await.unwrap().unwrap();
    }
    check_chain(&*s).await.unwrap();
}

/// The app role (the request path) moves lane heads but cannot change or remove audit rows,
/// nor touch checkpoints or signing keys.
#[tokio::test]
async fn postgres_app_role_grants() {
    let (db, s) = pg_store().await;
    let t = TenantId::default_tenant();
    s.append_audit(entry(&t, AuditAction::Decrypt, None, "alice"))
        .await
        .unwrap();
    let c = pg_client(db.url()).await;
    let app: String = c
        .query_one("SELECT value FROM rcrt_state WHERE key = 'app_role'", &[])
        .await
        .unwrap()
        .get(0);
    c.batch_execute(&format!("SET ROLE {app}; SET rcrt.tenant = 'default'"))
        .await
        .unwrap();
    let seen: i64 = c
        .query_one("SELECT count(*) FROM secret_access_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1);
    c.execute("UPDATE audit_chain_heads SET seq = seq WHERE lane = 0", &[])
        .await
        .unwrap();
    for sql in [
        "UPDATE secret_access_log SET user_id = 'mallory'",
        "DELETE FROM secret_access_log",
        "DELETE FROM audit_chain_heads",
        "INSERT INTO audit_chain_heads (lane, seq, hash) VALUES (99, 0, '\\x00')",
        "SELECT count(*) FROM audit_checkpoints",
        "SELECT count(*) FROM audit_signing_keys",
        "INSERT INTO audit_checkpoints (created_at, key_id, heads, signature)
         VALUES (now(), 'k', '[]', '\\x00')",
    ] {
        let err = c.execute(sql, &[]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err}"
        );
    }
}
