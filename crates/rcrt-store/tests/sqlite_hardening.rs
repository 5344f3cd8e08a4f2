//! SQLite under load and after deletes: listing plans, the WAL's size and content, the reader
//! pool's bound, and the database files' modes. All against a real database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use rcrt_store::{
    AddVersionOptions, Deletion, DestroyOutcome, ListFilter, ListQuery, NewSecret, SecretMeta,
    SqliteStore, Store, VaultRecord, VersionRecord, Visibility,
};
use rcrt_types::{
    AuditAction, AuditEntry, AuditOutcome, Scope, ScopeType, SecretId, TenantId, VaultId,
};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}

fn audit(action: AuditAction, id: Option<SecretId>) -> AuditEntry {
    AuditEntry {
        timestamp: now(),
        action,
        secret_id: id,
        token_id: None,
        tenant: TenantId::default_tenant(),
        user_id: "tester".into(),
        reason: None,
        outcome: AuditOutcome::Success,
        request_id: "req".into(),
        version: None,
    }
}

/// `n` random bytes (UUID v4s, so tests need no extra crate).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

fn new_secret(name: &str, scope: Scope, value_len: usize) -> NewSecret {
    let t = now();
    NewSecret {
        meta: SecretMeta {
            id: SecretId::new(),
            tenant: TenantId::default_tenant(),
            name: name.parse().unwrap(),
            scope,
            version: 1,
            created_at: t,
            updated_at: t,
            attrs: Default::default(),
            deleted: None,
        },
        first: VersionRecord {
            version: 1,
            kek_id: "kek-a".into(),
            wrapped_dek: random_bytes(60),
            sealed_value: random_bytes(value_len),
            created_at: t,
            recovery: None,
            created_by: String::new(),
        },
        vault: None,
        idempotency: None,
    }
}

async fn create(s: &SqliteStore, n: NewSecret) -> NewSecret {
    s.create_secret(n.clone(), audit(AuditAction::Create, Some(n.meta.id)))
        .await
        .unwrap();
    n
}

async fn open(dir: &Path) -> (SqliteStore, PathBuf) {
    let path = dir.join("s.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    (store, path)
}

fn scope(t: ScopeType, id: Option<&str>) -> Scope {
    Scope::new(t, id).unwrap()
}

fn query(
    scope_type: Option<ScopeType>,
    scope_id: Option<&str>,
    after: Option<SecretId>,
    visible_to: Option<Visibility>,
    limit: u32,
) -> ListQuery {
    ListQuery {
        tenant: TenantId::default_tenant(),
        scope_type,
        scope_id: scope_id.map(str::to_owned),
        limit,
        after,
        visible_to,
        filter: Default::default(),
    }
}

fn visibility(workspaces: &[&str], agent: &str) -> Visibility {
    Visibility {
        workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
        agent: agent.into(),
    }
}

/// Many workspaces: past the store's limit on merged arms, so the fallback plan is checked too.
fn wide_visibility() -> Visibility {
    let mut workspaces: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    workspaces.push("a".into());
    Visibility {
        workspaces,
        agent: "me".into(),
    }
}

/// Every filter combination `Store::list` is given: scope type and id, cursor, admin or not.
fn all_queries(after: SecretId) -> Vec<ListQuery> {
    let filters: [(Option<ScopeType>, Option<&str>); 8] = [
        (None, None),
        // A scope id alone: workspace and agent scopes of that id.
        (None, Some("a")),
        (None, Some("me")),
        (Some(ScopeType::Global), None),
        (Some(ScopeType::Workspace), None),
        (Some(ScopeType::Workspace), Some("a")),
        (Some(ScopeType::Agent), None),
        (Some(ScopeType::Agent), Some("me")),
    ];
    let mut out = Vec::new();
    for (t, id) in filters {
        for after in [None, Some(after)] {
            for vis in [
                None,
                Some(visibility(&["a", "b", "a"], "me")),
                Some(wide_visibility()),
            ] {
                out.push(query(t, id, after, vis, 101));
            }
        }
    }
    out
}

/// The listing filters of issue 15, alone and together; each arm of a listing gets them all.
fn all_filters() -> Vec<ListFilter> {
    let labels = vec![
        ("env".to_owned(), "prod".to_owned()),
        ("team".to_owned(), "core".to_owned()),
    ];
    vec![
        ListFilter::default(),
        ListFilter {
            deleted: true,
            ..Default::default()
        },
        ListFilter {
            labels: labels.clone(),
            ..Default::default()
        },
        ListFilter {
            name_prefix: Some("S1".into()),
            ..Default::default()
        },
        ListFilter {
            expires_before: Some(now()),
            ..Default::default()
        },
        ListFilter {
            labels,
            name_prefix: Some("S".into()),
            expires_before: Some(now()),
            deleted: true,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_reads_an_index_in_id_order_without_a_sort() {
    let dir = rcrt_testkit::TempDir::new();
    let (s, _) = open(dir.path()).await;
    let mut last = SecretId::new();
    for i in 0..20 {
        let mut n = new_secret(&format!("S{i}"), Scope::global(), 10);
        // Some expiring, so the expires_at index has rows the planner could prefer.
        n.meta.attrs.expires_at = (i % 2 == 0).then(|| now() + time::Duration::hours(i));
        last = create(&s, n).await.meta.id;
    }
    let queries = all_queries(last).into_iter().flat_map(|q| {
        all_filters().into_iter().map(move |filter| ListQuery {
            filter,
            ..q.clone()
        })
    });
    for q in queries {
        let plan = s.list_plan(&q).await.unwrap();
        let shown = format!("{q:?}\n{}", plan.join("\n"));
        assert!(!plan.is_empty(), "no plan: {shown}");
        assert!(
            plan.iter().all(|l| !l.contains("TEMP B-TREE")),
            "sorts: {shown}"
        );
        let on_secrets: Vec<&String> = plan.iter().filter(|l| l.contains(" secrets")).collect();
        assert!(!on_secrets.is_empty(), "{shown}");
        for line in on_secrets {
            assert!(
                line.starts_with("SEARCH secrets USING INDEX secrets_tenant"),
                "not an index search: {shown}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_return_exactly_the_visible_secrets_in_id_order() {
    let dir = rcrt_testkit::TempDir::new();
    let (s, _) = open(dir.path()).await;
    let scopes = [
        scope(ScopeType::Global, None),
        scope(ScopeType::Workspace, Some("a")),
        scope(ScopeType::Workspace, Some("b")),
        scope(ScopeType::Workspace, Some("c")),
        scope(ScopeType::Agent, Some("me")),
        scope(ScopeType::Agent, Some("other")),
    ];
    let mut all = Vec::new();
    for i in 0..60 {
        let sc = scopes[i % scopes.len()].clone();
        all.push(create(&s, new_secret(&format!("S{i}"), sc, 10)).await.meta);
    }
    all.sort_by_key(|m| m.id.to_string());
    let visible = |m: &SecretMeta, v: &Visibility| match m.scope.scope_type() {
        ScopeType::Global => true,
        ScopeType::Workspace => v.workspaces.iter().any(|w| w == m.scope.storage_id()),
        ScopeType::Agent => m.scope.storage_id() == v.agent,
    };
    let mut checked = 0;
    for q in all_queries(SecretId::new()) {
        let expected: Vec<SecretId> = all
            .iter()
            .filter(|m| q.scope_type.is_none_or(|t| m.scope.scope_type() == t))
            .filter(|m| {
                q.scope_id
                    .as_deref()
                    .is_none_or(|id| m.scope.storage_id() == id)
            })
            .filter(|m| q.visible_to.as_ref().is_none_or(|v| visible(m, v)))
            .map(|m| m.id)
            .collect();
        // Page through in pages of 3.
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .list(&ListQuery {
                    after,
                    limit: 3,
                    ..q.clone()
                })
                .await
                .unwrap();
            got.extend(page.iter().map(|m| m.id));
            match page.last() {
                Some(m) if page.len() == 3 => after = Some(m.id),
                _ => break,
            }
        }
        assert_eq!(got, expected, "{q:?}");
        checked += usize::from(!expected.is_empty());
    }
    assert!(checked > 20, "too few queries matched anything: {checked}");
}

/// Whether `hay` holds `needle`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Which files under `dir` hold any of `needles`.
fn files_holding(dir: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        for (i, n) in needles.iter().enumerate() {
            if contains(&bytes, n) {
                found.push(format!("{} (needle {i})", path.display()));
            }
        }
    }
    found
}

/// The wrapped DEK, and 48-byte windows of the sealed value (a large value spans overflow pages,
/// so the whole value is never contiguous on disk; each window sits inside one page or is not
/// found either way).
fn blobs(n: &NewSecret) -> Vec<Vec<u8>> {
    version_blobs(&n.first)
}

/// [`blobs`] of one version.
fn version_blobs(r: &VersionRecord) -> Vec<Vec<u8>> {
    let v = &r.sealed_value;
    let mut out = vec![r.wrapped_dek.clone()];
    out.extend(
        (0..v.len().saturating_sub(48))
            .step_by(500)
            .map(|i| v[i..i + 48].to_vec()),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_secrets_leave_no_bytes_in_the_database_wal_or_shm() {
    let dir = rcrt_testkit::TempDir::new();
    let (s, _) = open(dir.path()).await;
    let t = TenantId::default_tenant();
    let keep = create(&s, new_secret("KEEP", Scope::global(), 300)).await;
    let mut doomed = Vec::new();
    for (i, len) in [80usize, 3000, 20_000].into_iter().enumerate() {
        doomed.push(create(&s, new_secret(&format!("GONE{i}"), Scope::global(), len)).await);
    }
    // A second version too: every version goes.
    let v2 = VersionRecord {
        version: 2,
        kek_id: "kek-a".into(),
        wrapped_dek: random_bytes(60),
        sealed_value: random_bytes(500),
        created_at: now(),
        recovery: None,
        created_by: String::new(),
    };
    let first = doomed[0].meta.id;
    s.add_version(
        &t,
        first,
        v2.clone(),
        audit(AuditAction::Update, Some(first)),
    )
    .await
    .unwrap()
    .unwrap();
    // And a vault's keys, deleted with the vault.
    let vault = VaultRecord {
        id: VaultId::new(),
        tenant: t.clone(),
        workspace: "w".into(),
        name: "v".into(),
        created_at: now(),
    };
    let mut in_vault = new_secret("VAULTED", scope(ScopeType::Workspace, Some("w")), 700);
    in_vault.vault = Some(vault.id);
    s.create_vault(vault.clone(), vec![in_vault.clone()], vec![])
        .await
        .unwrap();

    let mut needles: Vec<Vec<u8>> = doomed.iter().flat_map(blobs).collect();
    needles.extend(blobs(&in_vault));
    needles.push(v2.wrapped_dek.clone());
    needles.push(v2.sealed_value.clone());
    // The scan finds what is there: before the deletes every blob is on disk.
    let before = files_holding(dir.path(), &needles);
    for i in 0..needles.len() {
        assert!(
            before.iter().any(|f| f.ends_with(&format!("(needle {i})"))),
            "needle {i} not on disk before the delete: {before:?}"
        );
    }

    for n in &doomed {
        assert!(s
            .delete_secret(&t, n.meta.id, audit(AuditAction::Delete, Some(n.meta.id)))
            .await
            .unwrap());
    }
    assert!(s.delete_vault(&t, vault.id, vec![]).await.unwrap());
    // Scanned while the store is open (closing the last connection would checkpoint anyway).
    let after = files_holding(dir.path(), &needles);
    assert!(after.is_empty(), "deleted bytes still on disk: {after:?}");
    // What was kept is still there and readable.
    let (_, v) = s.get_current(&t, keep.meta.id).await.unwrap().unwrap();
    assert_eq!(v.wrapped_dek, keep.first.wrapped_dek);
}

/// A version of `len` random value bytes, written now.
fn version(version: i64, len: usize) -> VersionRecord {
    VersionRecord {
        version,
        kek_id: "kek-a".into(),
        wrapped_dek: random_bytes(60),
        sealed_value: random_bytes(len),
        created_at: now(),
        recovery: None,
        created_by: "tester".into(),
    }
}

/// Issue 15's ways of removing ciphertext: a destroyed version, the versions a capped write
/// destroys, and a soft-deleted secret the purge job shreds. None leaves its wrapped DEK or any
/// window of its sealed value in the database file, `-wal` or `-shm` once the call returns
/// (each write runs through the shredding path: `secure_delete` overwrites the rows' pages and
/// the WAL is truncated before the answer), while every version kept is still on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_capped_and_purged_versions_leave_no_bytes_in_the_database_wal_or_shm() {
    let dir = rcrt_testkit::TempDir::new();
    let (s, _) = open(dir.path()).await;
    let t = TenantId::default_tenant();
    let add = |id: SecretId, v: VersionRecord, keep: Option<u32>| {
        let (s, t) = (&s, t.clone());
        async move {
            s.add_version_with(
                &t,
                id,
                v,
                AddVersionOptions {
                    keep,
                    idempotency: None,
                },
                audit(AuditAction::Update, Some(id)),
            )
            .await
            .unwrap()
            .unwrap()
        }
    };
    let mut kept: Vec<VersionRecord> = Vec::new();

    // One version destroyed on request (a value spanning overflow pages), two kept.
    let destroyed = create(&s, new_secret("DESTROYED", Scope::global(), 20_000)).await;
    let d = destroyed.meta.id;
    let (d2, d3) = (version(2, 3000), version(3, 80));
    add(d, d2.clone(), None).await;
    add(d, d3.clone(), None).await;
    let gone_destroyed = version_blobs(&destroyed.first);
    kept.extend([d2, d3]);

    // A cap of 2: the third write destroys versions 1, the fourth version 2.
    let capped = create(&s, new_secret("CAPPED", Scope::global(), 3000)).await;
    let c = capped.meta.id;
    let (c2, c3, c4) = (version(2, 20_000), version(3, 500), version(4, 80));
    add(c, c2.clone(), Some(2)).await;
    let gone_capped: Vec<Vec<u8>> = [&capped.first, &c2]
        .into_iter()
        .flat_map(version_blobs)
        .collect();
    kept.extend([c3.clone(), c4.clone()]);

    // Soft-deleted with two versions (one of them destroyed first), then purged.
    let purged = create(&s, new_secret("PURGED", Scope::global(), 5000)).await;
    let p = purged.meta.id;
    let p2 = version(2, 20_000);
    add(p, p2.clone(), None).await;
    let gone_purged: Vec<Vec<u8>> = [&purged.first, &p2]
        .into_iter()
        .flat_map(version_blobs)
        .collect();

    let keep = create(&s, new_secret("KEEP", Scope::global(), 300)).await;
    kept.push(keep.first.clone());

    let needles: Vec<Vec<u8>> = [&gone_destroyed, &gone_capped, &gone_purged]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let kept_needles: Vec<Vec<u8>> = kept.iter().flat_map(version_blobs).collect();
    // The scan finds what is there: before the removals every blob is on disk.
    let before = files_holding(dir.path(), &needles);
    for i in 0..needles.len() {
        assert!(
            before.iter().any(|f| f.ends_with(&format!("(needle {i})"))),
            "needle {i} not on disk before the removals: {before:?}"
        );
    }

    let destroy = |id: SecretId, v: i64| {
        let (s, t) = (&s, t.clone());
        async move {
            s.destroy_version(
                &t,
                id,
                v,
                now(),
                audit(AuditAction::DestroyVersion, Some(id)),
            )
            .await
            .unwrap()
        }
    };
    // Each step is scanned as soon as it returns (a later shredding write would truncate the
    // WAL for it too and hide a step that did not).
    let scan = |needles: &[Vec<u8>], step: &str| {
        let found = files_holding(dir.path(), needles);
        assert!(
            found.is_empty(),
            "{step}: removed bytes still on disk: {found:?}"
        );
    };
    assert_eq!(destroy(d, 1).await, DestroyOutcome::Destroyed);
    scan(&gone_destroyed, "destroy_version");
    add(c, c3, Some(2)).await;
    add(c, c4, Some(2)).await;
    scan(&gone_capped, "version cap");
    let p1 = version_blobs(&purged.first);
    assert_eq!(destroy(p, 1).await, DestroyOutcome::Destroyed);
    scan(&p1, "destroy_version before the purge");
    let t0 = now();
    assert!(s
        .soft_delete(
            &t,
            p,
            Deletion {
                deleted_at: t0 - time::Duration::hours(2),
                purge_at: t0 - time::Duration::hours(1),
            },
            audit(AuditAction::SoftDelete, Some(p)),
        )
        .await
        .unwrap());
    let mut template = audit(AuditAction::Purge, None);
    template.user_id = "purge-job".into();
    assert_eq!(
        s.purge_due(t0, 10, template).await.unwrap(),
        [(t.clone(), p)]
    );

    // Scanned while the store is open (closing the last connection would checkpoint anyway).
    scan(&gone_purged, "purge");
    scan(&needles, "at the end");
    // What was kept is still there and readable.
    let still = files_holding(dir.path(), &kept_needles);
    for i in 0..kept_needles.len() {
        assert!(
            still.iter().any(|f| f.ends_with(&format!("(needle {i})"))),
            "kept needle {i} missing: {still:?}"
        );
    }
    let (_, v) = s.get_current(&t, c).await.unwrap().unwrap();
    assert_eq!(v.version, 4);
    assert_eq!(s.kek_usage().await.unwrap()[0].versions, 5);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_wal_and_shm_are_created_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = rcrt_testkit::TempDir::new();
    let (s, path) = open(dir.path()).await;
    create(&s, new_secret("A", Scope::global(), 10)).await;
    s.list(&query(None, None, None, None, 10)).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
}

fn wal_len(path: &Path) -> u64 {
    std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_stays_bounded_under_writes_and_listings() {
    let dir = rcrt_testkit::TempDir::new();
    let (s, path) = open(dir.path()).await;
    let s = Arc::new(s);
    let t = TenantId::default_tenant();
    let stop = Arc::new(AtomicBool::new(false));
    let listings = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (s, stop, listings) = (s.clone(), stop.clone(), listings.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                s.list(&query(None, None, None, None, 200)).await.unwrap();
                listings.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let watcher = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(wal_len(&path));
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            max
        })
    };
    // About 46 MB of values (over 5x the WAL limit): new secrets and new versions, in
    // batches of six concurrent writes, while the listings run.
    let mut ids = Vec::new();
    for round in 0..48usize {
        let mut batch = Vec::new();
        for i in 0..6 {
            let (s, t) = (s.clone(), t.clone());
            let value = vec![(round * 6 + i) as u8; 160_000];
            let existing = ids.get(i).copied().filter(|_| round % 2 == 1);
            batch.push(tokio::spawn(async move {
                match existing {
                    None => {
                        let mut n = new_secret(&format!("R{round}_{i}"), Scope::global(), 0);
                        n.first.sealed_value = value;
                        create(&s, n).await.meta
                    }
                    Some(id) => {
                        let current = s.get_meta(&t, id).await.unwrap().unwrap().version;
                        let v = VersionRecord {
                            version: current + 1,
                            kek_id: "kek-a".into(),
                            wrapped_dek: random_bytes(60),
                            sealed_value: value,
                            created_at: now(),
                            recovery: None,
                            created_by: String::new(),
                        };
                        let a = audit(AuditAction::Update, Some(id));
                        s.add_version(&t, id, v, a).await.unwrap().unwrap()
                    }
                }
            }));
        }
        for h in batch {
            let meta = h.await.unwrap();
            if ids.len() < 6 {
                ids.push(meta.id);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let max_wal = watcher.join().unwrap();
    assert!(
        listings.load(Ordering::Relaxed) > 50,
        "listings did not run"
    );
    // The limit plus about one batch of six writes (1 MB of values and their pages).
    let bound = SqliteStore::WAL_LIMIT_BYTES + 4 * 1024 * 1024;
    assert!(
        max_wal <= bound,
        "WAL reached {max_wal} bytes (bound {bound})"
    );
}

/// File descriptors of this process open on `path` (one per SQLite connection).
fn open_handles(path: &Path) -> usize {
    let path = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| *target == path)
                .count()
        })
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_never_open_more_than_the_pool() {
    let dir = rcrt_testkit::TempDir::new();
    let (s, path) = open(dir.path()).await;
    let s = Arc::new(s);
    for i in 0..300 {
        create(&s, new_secret(&format!("S{i}"), Scope::global(), 100)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(open_handles(&path));
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            max
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let page = s.list(&query(None, None, None, None, 300)).await.unwrap();
                assert_eq!(page.len(), 300);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let max = watcher.join().unwrap();
    // The writer's connection and at most READ_POOL readers.
    let bound = 1 + SqliteStore::READ_POOL;
    assert!(max >= 2, "the watcher saw no reader: {max}");
    assert!(
        max <= bound,
        "{max} connections open at once (bound {bound})"
    );
    assert!(open_handles(&path) <= bound);
}
