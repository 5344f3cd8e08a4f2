//! SQLite: one writer thread that commits concurrent requests' writes together (group commit,
//! `synchronous=FULL`, so each caller waits for its own row to be durable) and a bounded pool of
//! reader connections (WAL lets them run beside the writer; a read waits for a free connection
//! rather than opening another).
//!
//! The WAL stays small: the writer truncates it (`wal_checkpoint(TRUNCATE)`) after every write
//! that removed key material (before that write is acknowledged, so a deleted secret's wrapped DEK
//! and sealed value leave no copy in `-wal`) and whenever it grows past [`WAL_LIMIT_BYTES`];
//! reads hold their snapshot only while their statement runs. The database file is created 0600,
//! and SQLite gives `-wal` and `-shm` the database file's mode.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::sync::{oneshot, Semaphore};

use crate::{
    audit_query_sql, chain, chain_from_stored, entry_chain_fields, filter_sql, hash_from_stored,
    head_hash, heads_from_stored, heads_to_stored, migrate, name_from_stored, recovery_from_stored,
    roles_from_stored, roles_to_stored, scope_from_stored, AddVersionOptions, AuditArg,
    AuditCheckpoint, AuditQuery, AuditRecord, AuditSigningKey, ChainHead, Deletion, DestroyOutcome,
    IdempotencyRecord, KekUsage, ListQuery, NewSecret, PoolStatus, Rewrapped, SecretAttributes,
    SecretMeta, Store, StoreError, StoredVersion, TokenQuery, TokenRecord, VaultQuery, VaultRecord,
    VersionFilter, VersionInfo, VersionLookup, VersionRecord, VersionState,
};
use rcrt_types::{AuditAction, AuditEntry, SecretId, TenantId, TokenId, VaultId, Version};

/// The metadata columns [`read_meta`] reads: `meta_cols!` (0-7), then the attribute and
/// soft-delete columns of migration 0008 (8-13).
macro_rules! secret_cols {
    () => {
        concat!(
            meta_cols!(),
            ", description, labels, expires_at, max_versions, deleted_at, purge_at"
        )
    };
}

/// [`secret_cols!`] of `secrets s` (columns 0-13) and the version columns [`read_version`]
/// reads, of `secret_versions v` (from column [`META_COLS`]).
macro_rules! secret_and_version_cols {
    () => {
        "s.id, s.tenant, s.name, s.scope_type, s.scope_id, s.current_version, s.created_at,
         s.updated_at, s.description, s.labels, s.expires_at, s.max_versions, s.deleted_at,
         s.purge_at,
         v.version, v.kek_id, v.wrapped_dek, v.sealed_value, v.created_at, v.recovery_kek_id,
         v.recovery_wrapped_dek, v.created_by"
    };
}

/// How many columns [`secret_cols!`] names (where the version columns start after it).
const META_COLS: usize = 14;

const TS_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
/// Writes committed together at most.
const MAX_BATCH: usize = 256;
/// Reader connections at most: a read waits for a free one rather than opening more.
const READ_POOL: usize = 8;
/// The WAL size past which the writer checkpoints and truncates it; also its
/// `journal_size_limit` (what a reset WAL is trimmed back to).
const WAL_LIMIT_BYTES: u64 = 8 * 1024 * 1024;
/// How long an idle writer waits before retrying a checkpoint that readers kept from finishing.
const CHECKPOINT_RETRY: Duration = Duration::from_millis(500);
/// Arms (visible scopes) a listing merges at most; past that it filters one index scan instead
/// (SQLite allows 500 arms in a compound SELECT).
const MAX_LIST_ARMS: usize = 64;
/// Prepared statements each connection keeps. rusqlite's default of 16 is fewer than the writer's
/// distinct statements (its transaction control included) or a reader's under mixed traffic
/// (listings vary with the caller's scopes); an evicted statement is parsed again on its next use.
const STATEMENT_CACHE: usize = 128;

type Completion = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// What a write job tells the writer thread.
struct Ran {
    /// Keep the job's savepoint (false rolls back only this job).
    ok: bool,
    /// The job removed or replaced key material: truncate the WAL before answering.
    shreds: bool,
    /// Answers the caller once the batch's commit is known.
    done: Completion,
}

/// The bounded reader pool.
struct Readers {
    path: String,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may exist; a read holds one while it runs.
    permits: Arc<Semaphore>,
}

/// The embedded store: one SQLite file in WAL mode.
pub struct SqliteStore {
    writer: mpsc::SyncSender<Job>,
    readers: Arc<Readers>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("SQLite writer stopped".into())
}

fn ts(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(TS_FORMAT)
        .unwrap_or_default()
}

fn parse_ts(s: &str) -> Result<OffsetDateTime, StoreError> {
    let body = s.strip_suffix('Z').unwrap_or(s);
    PrimitiveDateTime::parse(
        body,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"),
    )
    .map(PrimitiveDateTime::assume_utc)
    .map_err(|_| StoreError::Corrupt(format!("timestamp {s:?}")))
}

fn parse_id(s: &str) -> Result<SecretId, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("secret id {s:?}")))
}

fn open_conn(path: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(unavailable)?;
    // secure_delete overwrites deleted content, so crypto-shredded rows leave no ciphertext in
    // free pages; FULL makes each commit durable before the caller is answered;
    // journal_size_limit trims the WAL file back whenever it is reset.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA secure_delete=ON;
         PRAGMA journal_size_limit={WAL_LIMIT_BYTES};
         PRAGMA busy_timeout=5000;"
    ))
    .map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Creates the database file with mode 0600 if it does not exist yet (SQLite then creates `-wal`
/// and `-shm` with the database file's mode); warns if an existing one is open to other users.
fn create_private(path: &str) -> Result<(), StoreError> {
    if path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
                if let Some(mode) = mode.ok().filter(|m| m & 0o077 != 0) {
                    tracing::warn!(
                        path,
                        mode = format!("{mode:o}"),
                        "the SQLite database is open to other users; chmod 600 it and its -wal and -shm files"
                    );
                }
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
    Ok(())
}

/// Copies the WAL into the database and truncates it to zero bytes. False if readers kept it from
/// finishing (they still use older snapshots); the writer then retries.
fn truncate_wal(conn: &Connection) -> bool {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => true,
        Ok(_) => {
            tracing::warn!("SQLite WAL checkpoint blocked by readers; will retry");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "SQLite WAL checkpoint failed; will retry");
            false
        }
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A census row: (KEK, recovery KEK, versions).
fn kek_usage(r: &Row<'_>) -> rusqlite::Result<KekUsage> {
    Ok(KekUsage {
        kek_id: r.get(0)?,
        recovery_kek_id: r.get(1)?,
        versions: r.get(2)?,
    })
}

fn read_meta(row: &Row<'_>) -> rusqlite::Result<Result<SecretMeta, StoreError>> {
    let id: String = row.get(0)?;
    let tenant: String = row.get(1)?;
    let name: String = row.get(2)?;
    let scope_type: String = row.get(3)?;
    let scope_id: String = row.get(4)?;
    let version: i64 = row.get(5)?;
    let created_at: String = row.get(6)?;
    let updated_at: String = row.get(7)?;
    let description: String = row.get(8)?;
    let labels: String = row.get(9)?;
    let expires_at: Option<String> = row.get(10)?;
    let max_versions: Option<i64> = row.get(11)?;
    let deleted_at: Option<String> = row.get(12)?;
    let purge_at: Option<String> = row.get(13)?;
    Ok((|| {
        Ok(SecretMeta {
            id: parse_id(&id)?,
            tenant: TenantId::new(tenant),
            name: name_from_stored(&name)?,
            scope: scope_from_stored(&scope_type, &scope_id)?,
            version,
            created_at: parse_ts(&created_at)?,
            updated_at: parse_ts(&updated_at)?,
            attrs: SecretAttributes {
                description,
                labels: labels_from_stored(&labels)?,
                expires_at: expires_at.as_deref().map(parse_ts).transpose()?,
                max_versions: max_versions
                    .map(|m| {
                        u32::try_from(m)
                            .map_err(|_| StoreError::Corrupt(format!("max_versions {m}")))
                    })
                    .transpose()?,
            },
            deleted: match (deleted_at, purge_at) {
                (None, None) => None,
                (Some(d), Some(p)) => Some(Deletion {
                    deleted_at: parse_ts(&d)?,
                    purge_at: parse_ts(&p)?,
                }),
                _ => {
                    return Err(StoreError::Corrupt(
                        "deleted_at and purge_at must be set together".into(),
                    ))
                }
            },
        })
    })())
}

/// Labels as stored: a JSON object of strings.
fn labels_to_stored(labels: &std::collections::BTreeMap<String, String>) -> String {
    // A map of strings always serializes; "{}" (no labels) if it ever did not.
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

fn labels_from_stored(
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt("secret labels".into()))
}

/// Which secrets a lookup by id sees.
#[derive(Clone, Copy)]
enum Liveness {
    /// Live secrets (`deleted_at IS NULL`): every read and write but the ones below.
    Live,
    /// Soft-deleted secrets (in their recovery window): `get_deleted`.
    Deleted,
}

/// A secret's metadata, if it exists in this tenant and is live or soft-deleted as asked.
fn query_meta(
    c: &Connection,
    tenant: &TenantId,
    id: SecretId,
    which: Liveness,
) -> Result<Option<SecretMeta>, StoreError> {
    c.prepare_cached(match which {
        Liveness::Live => concat!(
            "SELECT ",
            secret_cols!(),
            " FROM secrets WHERE id = ?1 AND tenant = ?2 AND deleted_at IS NULL"
        ),
        Liveness::Deleted => concat!(
            "SELECT ",
            secret_cols!(),
            " FROM secrets WHERE id = ?1 AND tenant = ?2 AND deleted_at IS NOT NULL"
        ),
    })
    .and_then(|mut st| {
        st.query_row(params![id.to_string(), tenant.as_str()], read_meta)
            .optional()
    })
    .map_err(unavailable)?
    .transpose()
}

/// The statement and parameters of one listing page (`None` when the query can match nothing):
/// `?1` tenant, `?2` the cursor, `?3` the limit, then each arm's scope values.
///
/// Every arm reads its rows in id order from an index (migration 0004) and stops at the page's
/// end; a non-admin's visible scopes (global, each workspace, its agent scope) are one arm each,
/// merged by `UNION ALL ... ORDER BY id` without a sort. So a page costs the same whatever the
/// table's size. Past [`MAX_LIST_ARMS`] visible scopes the visibility becomes a filter on one
/// id-ordered scan (still no sort, but it skips rows the caller may not see).
fn list_statement(q: &ListQuery) -> Option<(String, Vec<Value>)> {
    let mut values = vec![
        Value::Text(q.tenant.as_str().to_owned()),
        q.after.map_or(Value::Null, |a| Value::Text(a.to_string())),
        Value::Integer(i64::from(q.limit)),
    ];
    let wanted_type = q.scope_type.map(|t| t.as_str());
    // (scope type, scope id) per arm; `None` leaves that column open.
    let mut arms: Vec<(Option<&str>, Option<String>)> = Vec::new();
    // A scope id without a type: the two types that have ids, one arm each (each an index
    // range in id order, like a typed filter).
    let filter_arms = || match (wanted_type, &q.scope_id) {
        (None, Some(id)) => vec![
            (Some("workspace"), Some(id.clone())),
            (Some("agent"), Some(id.clone())),
        ],
        (t, id) => vec![(t, id.clone())],
    };
    let mut visible_filter = None;
    match &q.visible_to {
        None => arms.extend(filter_arms()),
        Some(v) => {
            let workspaces: BTreeSet<&String> = v.workspaces.iter().collect();
            if workspaces.len() + 2 > MAX_LIST_ARMS {
                arms.extend(filter_arms());
                visible_filter = Some(v);
            } else {
                let visible = std::iter::once(("global", String::new()))
                    .chain(workspaces.into_iter().map(|w| ("workspace", w.clone())))
                    .chain(std::iter::once(("agent", v.agent.clone())));
                for (scope_type, scope_id) in visible {
                    if wanted_type.is_some_and(|t| t != scope_type)
                        || q.scope_id.as_ref().is_some_and(|id| *id != scope_id)
                        || (wanted_type.is_none() && q.scope_id.is_some() && scope_type == "global")
                    {
                        continue;
                    }
                    arms.push((Some(scope_type), Some(scope_id)));
                }
            }
        }
    }
    if arms.is_empty() {
        return None;
    }
    // The filters, the same in every arm (their values bound once, shared by number).
    let f = &q.filter;
    let mut filters = String::from(if f.deleted {
        " AND deleted_at IS NOT NULL"
    } else {
        " AND deleted_at IS NULL"
    });
    for (key, value) in &f.labels {
        // Key and value bound as they are: no JSON path is put together from the key.
        values.push(Value::Text(key.clone()));
        values.push(Value::Text(value.clone()));
        let (k, v) = (values.len() - 1, values.len());
        filters.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ?{k} AND value = ?{v})"
        ));
    }
    if let Some(prefix) = &f.name_prefix {
        // Not LIKE: `%` and `_` in the prefix are plain characters.
        values.push(Value::Text(prefix.clone()));
        let p = values.len();
        filters.push_str(&format!(" AND substr(name, 1, length(?{p})) = ?{p}"));
    }
    if let Some(before) = f.expires_before {
        values.push(Value::Text(ts(before)));
        // `+` keeps this term off the expires_at index, so the arm stays on its id-ordered
        // index (a page needs no sort) whatever statistics the planner gets later; without
        // statistics it picks that index anyway (sqlite_hardening checks the plans).
        filters.push_str(&format!(" AND +expires_at <= ?{}", values.len()));
    }
    let mut selects = Vec::with_capacity(arms.len());
    for (scope_type, scope_id) in arms {
        let mut sql =
            concat!("SELECT ", secret_cols!(), " FROM secrets WHERE tenant = ?1").to_owned();
        sql.push_str(&filters);
        if let Some(t) = scope_type {
            values.push(Value::Text(t.to_owned()));
            sql.push_str(&format!(" AND scope_type = ?{}", values.len()));
        }
        if let Some(id) = scope_id {
            values.push(Value::Text(id));
            sql.push_str(&format!(" AND scope_id = ?{}", values.len()));
        }
        if q.after.is_some() {
            sql.push_str(" AND id > ?2");
        }
        if let Some(v) = visible_filter {
            // A list of strings always serializes; "[]" (fewer rows) if it ever did not.
            let workspaces =
                serde_json::to_string(&v.workspaces).unwrap_or_else(|_| "[]".to_owned());
            values.push(Value::Text(workspaces));
            values.push(Value::Text(v.agent.clone()));
            let (w, a) = (values.len() - 1, values.len());
            sql.push_str(&format!(
                " AND (scope_type = 'global'
                       OR (scope_type = 'workspace' AND scope_id IN (SELECT value FROM json_each(?{w})))
                       OR (scope_type = 'agent' AND scope_id = ?{a}))"
            ));
        }
        selects.push(sql);
    }
    Some((
        format!("{} ORDER BY id LIMIT ?3", selects.join(" UNION ALL ")),
        values,
    ))
}

/// The one lane SQLite writes (its single writer serializes audit rows anyway).
const LANE: i32 = 0;

/// Inserts an audit row as the next link of the chain, in the writer's transaction: reads the
/// head, computes the link, inserts the row with it and moves the head. The timestamp stored is
/// the one hashed (whole microseconds).
fn insert_audit(conn: &Connection, a: &AuditEntry) -> Result<(), StoreError> {
    let (seq, prev): (i64, Vec<u8>) = conn
        .prepare_cached("SELECT seq, hash FROM audit_chain_heads WHERE lane = ?1")
        .and_then(|mut st| st.query_row([LANE], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(unavailable)?;
    let prev: [u8; 32] = prev
        .try_into()
        .map_err(|_| StoreError::Corrupt("audit chain head hash is not 32 bytes".into()))?;
    let seq = seq + 1;
    let link = chain::link_hash(
        &prev,
        &chain::content_hash(&entry_chain_fields(a)),
        LANE,
        seq,
    );
    conn.prepare_cached(
        "INSERT INTO secret_access_log
         (timestamp, action, secret_id, token_id, tenant, user_id, reason, outcome, request_id,
          chain_lane, chain_seq, chain_hash, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut st| {
        st.execute(params![
            ts(chain::to_micros(a.timestamp)),
            a.action.as_str(),
            a.secret_id.map(|s| s.to_string()),
            a.token_id.map(|t| t.to_string()),
            a.tenant.as_str(),
            a.user_id,
            a.reason,
            a.outcome.as_str(),
            a.request_id,
            LANE,
            seq,
            &link[..],
            a.version,
        ])
    })
    .map_err(unavailable)?;
    conn.prepare_cached("UPDATE audit_chain_heads SET seq = ?1, hash = ?2 WHERE lane = ?3")
        .and_then(|mut st| st.execute(params![seq, &link[..], LANE]))
        .map_err(unavailable)?;
    Ok(())
}

/// Inserts a (live) secret with its first version, after its idempotency record if it has one.
fn insert_secret(c: &Connection, secret: &NewSecret) -> Result<(), StoreError> {
    if let Some(key) = &secret.idempotency {
        insert_idempotency(c, key)?;
    }
    let m = &secret.meta;
    let inserted = c
        .prepare_cached(concat!(
            "INSERT INTO secrets (",
            meta_cols!(),
            ", description, labels, expires_at, max_versions, vault_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ))
        .and_then(|mut st| {
            st.execute(params![
                m.id.to_string(),
                m.tenant.as_str(),
                m.name.as_str(),
                m.scope.scope_type().as_str(),
                m.scope.storage_id(),
                m.version,
                ts(m.created_at),
                ts(m.updated_at),
                m.attrs.description,
                labels_to_stored(&m.attrs.labels),
                m.attrs.expires_at.map(ts),
                m.attrs.max_versions,
                secret.vault.map(|v| v.to_string()),
            ])
        });
    inserted.map_err(name_taken_or_unavailable)?;
    insert_version(c, m.id, &secret.first)
        .map(|_| ())
        .map_err(unavailable)
}

/// A constraint failure on insert means the name is taken; anything else, the store is unavailable.
fn name_taken_or_unavailable(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::NameTaken
        }
        e => unavailable(e),
    }
}

fn read_vault(r: &Row<'_>) -> rusqlite::Result<Result<VaultRecord, StoreError>> {
    let id: String = r.get(0)?;
    let tenant: String = r.get(1)?;
    let workspace: String = r.get(2)?;
    let name: String = r.get(3)?;
    let created_at: String = r.get(4)?;
    Ok((|| {
        Ok(VaultRecord {
            id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("vault id {id:?}")))?,
            tenant: TenantId::new(tenant),
            workspace,
            name,
            created_at: parse_ts(&created_at)?,
        })
    })())
}

/// The statement of [`Store::list_vaults`] and its values in placeholder order; `None` when
/// nothing can match (a non-admin without workspaces). Only the filters given appear, so each
/// shape keeps its own plan (a workspace filter is a range of the (tenant, workspace, name)
/// index).
fn vault_list_statement(q: &VaultQuery) -> Result<Option<(String, Vec<Value>)>, StoreError> {
    let mut sql = String::from(
        "SELECT id, tenant, workspace, name, created_at FROM vaults WHERE tenant = ?1",
    );
    let mut values = vec![Value::Text(q.tenant.as_str().to_owned())];
    if let Some(w) = &q.workspace {
        values.push(Value::Text(w.clone()));
        sql.push_str(&format!(" AND workspace = ?{}", values.len()));
    }
    if let Some(visible) = &q.visible_workspaces {
        if visible.is_empty() {
            return Ok(None);
        }
        // One JSON array bound as one value: one statement shape whatever the count.
        let list = serde_json::to_string(visible)
            .map_err(|e| StoreError::Corrupt(format!("workspace list: {e}")))?;
        values.push(Value::Text(list));
        sql.push_str(&format!(
            " AND workspace IN (SELECT value FROM json_each(?{}))",
            values.len()
        ));
    }
    if let Some(after) = q.after {
        values.push(Value::Text(after.to_string()));
        sql.push_str(&format!(" AND id > ?{}", values.len()));
    }
    values.push(Value::Integer(i64::from(q.limit)));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", values.len()));
    Ok(Some((sql, values)))
}

fn insert_version(conn: &Connection, id: SecretId, v: &VersionRecord) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO secret_versions
         (secret_id, version, kek_id, wrapped_dek, sealed_value, created_at, sealed_at,
          recovery_kek_id, recovery_wrapped_dek, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        id.to_string(),
        v.version,
        v.kek_id,
        v.wrapped_dek,
        v.sealed_value,
        ts(v.created_at),
        v.recovery.as_ref().map(|r| r.kek_id.as_str()),
        v.recovery.as_ref().map(|r| r.wrapped_dek.as_slice()),
        v.created_by,
    ])
}

/// Runs a statement without parameters or rows (the writer's BEGIN, SAVEPOINT, RELEASE and
/// COMMIT) through the statement cache, so it is parsed once per connection, not once per use.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn writer_loop(conn: Connection, wal: PathBuf, jobs: mpsc::Receiver<Job>) {
    // A checkpoint that readers kept from finishing: retried after each batch and when idle.
    let mut checkpoint_due = false;
    loop {
        let first = if checkpoint_due {
            match jobs.recv_timeout(CHECKPOINT_RETRY) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    checkpoint_due = !truncate_wal(&conn);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = run_cached(&conn, "BEGIN IMMEDIATE") {
            for job in batch {
                // Run nothing; tell every caller the store is unavailable.
                drop(job);
                tracing::error!(error = %e, "SQLite BEGIN failed");
            }
            continue;
        }
        let mut completions = Vec::with_capacity(batch.len());
        let mut shreds = false;
        for job in batch {
            // Each job in its own savepoint: a failing job (a name conflict) undoes only itself.
            let _ = run_cached(&conn, "SAVEPOINT job");
            let ran = job(&conn);
            // A failed job's changes are rolled back before its savepoint ends.
            if ran.ok || run_cached(&conn, "ROLLBACK TO job").is_ok() {
                let _ = run_cached(&conn, "RELEASE job");
            }
            shreds |= ran.ok && ran.shreds;
            completions.push(ran.done);
        }
        match run_cached(&conn, "COMMIT") {
            Ok(()) => {
                // Removed key material leaves the WAL before its removal is acknowledged.
                if shreds {
                    checkpoint_due = !truncate_wal(&conn);
                }
                completions.into_iter().for_each(|done| done(None));
                if !shreds && (checkpoint_due || file_len(&wal) > WAL_LIMIT_BYTES) {
                    checkpoint_due = !truncate_wal(&conn);
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::error!(error = %e, "SQLite COMMIT failed");
                let msg = e.to_string();
                completions
                    .into_iter()
                    .for_each(|done| done(Some(msg.clone())));
            }
        }
    }
}

impl SqliteStore {
    /// Reader connections at most (besides the writer's one).
    pub const READ_POOL: usize = READ_POOL;
    /// The WAL size past which the writer checkpoints and truncates the WAL.
    pub const WAL_LIMIT_BYTES: u64 = WAL_LIMIT_BYTES;

    /// Opens (creating if needed) the database file, applies migrations, starts the writer.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let (conn, path) = tokio::task::spawn_blocking(move || {
            create_private(&path)?;
            let conn = open_conn(&path)?;
            conn.execute_batch(migrate::LEDGER).map_err(unavailable)?;
            for (version, sql) in migrate::SQLITE {
                let done: Option<i64> = conn
                    .query_row(
                        "SELECT version FROM rcrt_schema_migrations WHERE version = ?1",
                        [version],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(unavailable)?;
                if done.is_none() {
                    let tx = conn.unchecked_transaction().map_err(unavailable)?;
                    tx.execute_batch(sql).map_err(unavailable)?;
                    tx.execute(
                        "INSERT INTO rcrt_schema_migrations (version, applied_at) VALUES (?1, ?2)",
                        params![version, ts(OffsetDateTime::now_utc())],
                    )
                    .map_err(unavailable)?;
                    tx.commit().map_err(unavailable)?;
                }
            }
            // A crash may have left removed rows' pages in the WAL: fold it in and truncate it.
            if !truncate_wal(&conn) {
                tracing::warn!("SQLite WAL not truncated at open (another process reads it?)");
            }
            Ok::<_, StoreError>((conn, path))
        })
        .await
        .map_err(unavailable)??;
        let (tx, rx) = mpsc::sync_channel::<Job>(4096);
        let wal = PathBuf::from(format!("{path}-wal"));
        std::thread::Builder::new()
            .name("rcrt-sqlite-writer".into())
            .spawn(move || writer_loop(conn, wal, rx))
            .map_err(unavailable)?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(READ_POOL)),
            }),
        })
    }

    /// `EXPLAIN QUERY PLAN` of the statement [`Store::list`] runs for `q`, one line per step
    /// (empty when `q` can match nothing). For tests and diagnostics.
    pub async fn list_plan(&self, q: &ListQuery) -> Result<Vec<String>, StoreError> {
        let Some((sql, values)) = list_statement(q) else {
            return Ok(Vec::new());
        };
        self.read(move |c| {
            let mut st = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(unavailable)?;
            let rows = st
                .query_map(params_from_iter(values), |r| r.get::<_, String>(3))
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)).collect()
        })
        .await
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_job(false, f).await
    }

    /// A write that removes or replaces key material: the writer truncates the WAL before
    /// answering, so no copy of the old bytes stays in `-wal`.
    async fn write_shredding<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_job(true, f).await
    }

    async fn write_job<T: Send + 'static>(
        &self,
        shreds: bool,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_maybe_shredding(move |c| f(c).map(|t| (t, shreds)))
            .await
    }

    /// A write that says itself whether it removed key material (the `bool` it returns with
    /// its result): when it did, the writer truncates the WAL before answering, as after
    /// [`SqliteStore::write_shredding`]; when it did not (a capped write that destroyed no
    /// version, a purge with nothing due), the WAL is left alone.
    async fn write_maybe_shredding<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<(T, bool), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let (result, ok, shreds) = match f(conn) {
                Ok((t, shreds)) => (Ok(t), true, shreds),
                Err(e) => (Err(e), false, false),
            };
            let done: Completion = Box::new(move |commit_error| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(StoreError::Unavailable(e)),
                    None => result,
                });
            });
            Ran { ok, shreds, done }
        });
        // Queue the job without leaving the task while the queue has room (almost always); only
        // a full queue blocks, so that send waits off the async workers.
        match self.writer.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                let writer = self.writer.clone();
                tokio::task::spawn_blocking(move || writer.send(job))
                    .await
                    .map_err(unavailable)?
                    .map_err(|_| writer_stopped())?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(writer_stopped()),
        }
        rx.await.map_err(|_| writer_stopped())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        // At most READ_POOL reads run (and READ_POOL connections exist); the rest wait here.
        let permit = readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(unavailable)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = readers.idle.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(&readers.path)?,
            };
            // `f` runs its statements to the end, so no read transaction outlives it to pin the
            // WAL against checkpoints.
            let result = f(&conn);
            if let Ok(mut idle) = readers.idle.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(unavailable)?
    }

    /// A short read run on the calling task, without the hand-off to a blocking thread that
    /// [`SqliteStore::read`] makes (a thread switch each way, most of a point lookup's cost).
    /// Only for lookups of a row or two by primary key, which take microseconds from the page
    /// cache (a reader in WAL mode does not wait for the writer); never for scans, sorts or
    /// anything whose cost grows with the table or the answer. Takes a pool permit like any
    /// read; opening a new connection (file system work) still goes to a blocking thread.
    async fn read_short<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = &self.readers;
        let permit = readers.permits.acquire().await.map_err(unavailable)?;
        let pooled = readers.idle.lock().ok().and_then(|mut p| p.pop());
        let Some(conn) = pooled else {
            drop(permit);
            return self.read(f).await;
        };
        // No await from here on: the connection goes back to the pool even if the caller's
        // future is dropped.
        let result = f(&conn);
        if let Ok(mut idle) = readers.idle.lock() {
            idle.push(conn);
        }
        drop(permit);
        result
    }
}

/// The version columns (`version, kek_id, wrapped_dek, sealed_value, created_at,
/// recovery_kek_id, recovery_wrapped_dek, created_by`) starting at column `first`.
fn read_version(
    row: &Row<'_>,
    first: usize,
) -> rusqlite::Result<Result<VersionRecord, StoreError>> {
    let version = row.get(first)?;
    let kek_id = row.get(first + 1)?;
    let wrapped_dek = row.get(first + 2)?;
    let sealed_value = row.get(first + 3)?;
    let created_at: String = row.get(first + 4)?;
    let recovery_kek_id = row.get(first + 5)?;
    let recovery_wrapped_dek = row.get(first + 6)?;
    let created_by = row.get(first + 7)?;
    Ok((|| {
        Ok(VersionRecord {
            version,
            kek_id,
            wrapped_dek,
            sealed_value,
            created_at: parse_ts(&created_at)?,
            recovery: recovery_from_stored(recovery_kek_id, recovery_wrapped_dek)?,
            created_by,
        })
    })())
}

/// The audit columns in the order [`read_audit`] reads them.
const AUDIT_COLS: &str = "id, timestamp, action, secret_id, tenant, user_id, reason, outcome,
    request_id, token_id, chain_lane, chain_seq, chain_hash, version";

fn read_audit(r: &Row<'_>) -> rusqlite::Result<Result<AuditRecord, StoreError>> {
    let id: i64 = r.get(0)?;
    let timestamp: String = r.get(1)?;
    let secret_id: Option<String> = r.get(3)?;
    let token_id: Option<String> = r.get(9)?;
    let lane: Option<i32> = r.get(10)?;
    let seq: Option<i64> = r.get(11)?;
    let hash: Option<Vec<u8>> = r.get(12)?;
    let record = AuditRecord {
        id,
        timestamp: OffsetDateTime::UNIX_EPOCH,
        action: r.get(2)?,
        secret_id: None,
        token_id: None,
        tenant: r.get(4)?,
        user_id: r.get(5)?,
        reason: r.get(6)?,
        outcome: r.get(7)?,
        request_id: r.get(8)?,
        version: r.get(13)?,
        chain: None,
    };
    Ok((|| {
        Ok(AuditRecord {
            timestamp: parse_ts(&timestamp)?,
            secret_id: secret_id.as_deref().map(parse_id).transpose()?,
            token_id: token_id.as_deref().map(parse_token_id).transpose()?,
            chain: chain_from_stored(id, lane, seq, hash.as_deref())?,
            ..record
        })
    })())
}

/// Runs an audit SELECT and reads its rows.
fn query_audits(
    c: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(unavailable)?;
    let rows = st.query_map(values, read_audit).map_err(unavailable)?;
    rows.map(|r| r.map_err(unavailable)?).collect()
}

fn parse_token_id(s: &str) -> Result<TokenId, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("token id {s:?}")))
}

const TOKEN_COLS: &str = "id, tenant, name, principal, roles, workspaces, secret_hash, created_by,
    created_at, expires_at, revoked_at, parent_id";

fn read_token(r: &Row<'_>) -> rusqlite::Result<Result<TokenRecord, StoreError>> {
    let id: String = r.get(0)?;
    let tenant: String = r.get(1)?;
    let name: String = r.get(2)?;
    let principal: String = r.get(3)?;
    let roles: String = r.get(4)?;
    let workspaces: String = r.get(5)?;
    let hash: Vec<u8> = r.get(6)?;
    let created_by: String = r.get(7)?;
    let created_at: String = r.get(8)?;
    let expires_at: Option<String> = r.get(9)?;
    let revoked_at: Option<String> = r.get(10)?;
    let parent: Option<String> = r.get(11)?;
    Ok((|| {
        let json = |text: &str| {
            serde_json::from_str::<Vec<String>>(text)
                .map_err(|_| StoreError::Corrupt("token roles or workspaces".into()))
        };
        Ok(TokenRecord {
            id: parse_token_id(&id)?,
            tenant: TenantId::new(tenant),
            name,
            principal,
            roles: roles_from_stored(&json(&roles)?)?,
            workspaces: json(&workspaces)?,
            secret_hash: hash_from_stored(&hash)?,
            created_by,
            created_at: parse_ts(&created_at)?,
            expires_at: expires_at.as_deref().map(parse_ts).transpose()?,
            revoked_at: revoked_at.as_deref().map(parse_ts).transpose()?,
            parent: parent.as_deref().map(parse_token_id).transpose()?,
        })
    })())
}

fn insert_token(c: &Connection, t: &TokenRecord) -> Result<(), StoreError> {
    let json = |v: &[String]| serde_json::to_string(v).map_err(unavailable);
    let (roles, workspaces) = (json(&roles_to_stored(t.roles))?, json(&t.workspaces)?);
    c.prepare_cached(
        "INSERT INTO auth_tokens (id, tenant, name, principal, roles, workspaces, secret_hash,
             created_by, created_at, expires_at, revoked_at, parent_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut st| {
        st.execute(params![
            t.id.to_string(),
            t.tenant.as_str(),
            t.name,
            t.principal,
            roles,
            workspaces,
            &t.secret_hash[..],
            t.created_by,
            ts(t.created_at),
            t.expires_at.map(ts),
            t.revoked_at.map(ts),
            t.parent.map(|p| p.to_string()),
        ])
    })
    .map(|_| ())
    .map_err(name_taken_or_unavailable)
}

fn query_token(c: &Connection, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM auth_tokens WHERE id = ?1"
    ))
    .and_then(|mut st| st.query_row(params![id.to_string()], read_token).optional())
    .map_err(unavailable)?
    .transpose()
}

/// [`Store::kek_backlog`] without a recovery KEK: versions whose main KEK is not ?1. Written as
/// two ranges (below and above ?1) because `kek_id <> ?1` is not searchable in an index and
/// would read every version; each branch is a range of the `secret_versions_kek_pair` index
/// (migration 7), empty outside a rotation.
pub(crate) const KEK_BACKLOG: &str = "SELECT kek_id, recovery_kek_id, COUNT(*) FROM (
       SELECT kek_id, recovery_kek_id FROM secret_versions WHERE kek_id < ?1
       UNION ALL
       SELECT kek_id, recovery_kek_id FROM secret_versions WHERE kek_id > ?1
     )
     GROUP BY kek_id, recovery_kek_id
     ORDER BY kek_id, recovery_kek_id IS NOT NULL, recovery_kek_id";

/// [`KEK_BACKLOG`] with a recovery KEK ?2: also the versions under ?1 whose recovery wrap is
/// missing or under another KEK, as three more ranges of the same index (NULL, below ?2, above
/// ?2), for the same reason.
pub(crate) const KEK_BACKLOG_WITH_RECOVERY: &str = "SELECT kek_id, recovery_kek_id, COUNT(*) FROM (
       SELECT kek_id, recovery_kek_id FROM secret_versions WHERE kek_id < ?1
       UNION ALL
       SELECT kek_id, recovery_kek_id FROM secret_versions WHERE kek_id > ?1
       UNION ALL
       SELECT kek_id, recovery_kek_id FROM secret_versions
         WHERE kek_id = ?1 AND recovery_kek_id IS NULL
       UNION ALL
       SELECT kek_id, recovery_kek_id FROM secret_versions
         WHERE kek_id = ?1 AND recovery_kek_id < ?2
       UNION ALL
       SELECT kek_id, recovery_kek_id FROM secret_versions
         WHERE kek_id = ?1 AND recovery_kek_id > ?2
     )
     GROUP BY kek_id, recovery_kek_id
     ORDER BY kek_id, recovery_kek_id IS NOT NULL, recovery_kek_id";

/// Inserts an idempotency record, or takes over an expired one with its key (not purged yet);
/// [`StoreError::IdempotencyKeyTaken`] if its key is held by a record that has not expired
/// (the job then fails, so nothing it wrote is kept).
fn insert_idempotency(c: &Connection, r: &IdempotencyRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO idempotency_keys
         (tenant, principal, key, fingerprint, outcome, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (tenant, principal, key) DO UPDATE
            SET fingerprint = excluded.fingerprint, outcome = excluded.outcome,
                created_at = excluded.created_at, expires_at = excluded.expires_at
          WHERE idempotency_keys.expires_at <= excluded.created_at",
    )
    .and_then(|mut st| {
        st.execute(params![
            r.tenant.as_str(),
            r.principal,
            r.key,
            &r.fingerprint[..],
            r.outcome,
            ts(r.created_at),
            ts(r.expires_at),
        ])
    })
    .and_then(|n| {
        // No row: the conflict's WHERE kept a live record.
        if n == 0 {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                None,
            ))
        } else {
            Ok(())
        }
    })
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::IdempotencyKeyTaken
        }
        e => unavailable(e),
    })
}

/// Removes the idempotency record this job inserted, when the write it belonged to did not
/// happen (only successful writes are remembered).
fn forget_idempotency(c: &Connection, r: &IdempotencyRecord) -> Result<(), StoreError> {
    c.prepare_cached(
        "DELETE FROM idempotency_keys WHERE tenant = ?1 AND principal = ?2 AND key = ?3",
    )
    .and_then(|mut st| st.execute(params![r.tenant.as_str(), r.principal, r.key]))
    .map(|_| ())
    .map_err(unavailable)
}

/// A live secret's current version number, if this tenant has the live secret.
fn live_current_version(
    c: &Connection,
    tenant: &TenantId,
    id: SecretId,
) -> Result<Option<Version>, StoreError> {
    c.prepare_cached(
        "SELECT current_version FROM secrets
         WHERE id = ?1 AND tenant = ?2 AND deleted_at IS NULL",
    )
    .and_then(|mut st| {
        st.query_row(params![id.to_string(), tenant.as_str()], |r| r.get(0))
            .optional()
    })
    .map_err(unavailable)
}

/// The metadata of a live secret this job has just written (it must be there).
fn written_meta(c: &Connection, tenant: &TenantId, id: SecretId) -> Result<SecretMeta, StoreError> {
    query_meta(c, tenant, id, Liveness::Live)?
        .ok_or_else(|| StoreError::Corrupt("secret missing after its own write".into()))
}

/// Destroys one version of a secret: its row (wrapped DEK, sealed value) is deleted, which
/// `secure_delete` overwrites in the database file, and a `destroyed_versions` record of it
/// (created_at and created_by copied) is written. False if the secret has no such version row.
/// The caller writes through the shredding path, so no copy stays in the WAL either.
fn destroy_one(
    c: &Connection,
    id: SecretId,
    version: Version,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let recorded = c
        .prepare_cached(
            "INSERT INTO destroyed_versions
             (secret_id, version, created_at, created_by, destroyed_at)
             SELECT secret_id, version, created_at, created_by, ?3 FROM secret_versions
             WHERE secret_id = ?1 AND version = ?2",
        )
        .and_then(|mut st| st.execute(params![id.to_string(), version, ts(at)]))
        .map_err(unavailable)?;
    if recorded == 0 {
        return Ok(false);
    }
    c.prepare_cached("DELETE FROM secret_versions WHERE secret_id = ?1 AND version = ?2")
        .and_then(|mut st| st.execute(params![id.to_string(), version]))
        .map_err(unavailable)?;
    Ok(true)
}

/// The version cap: destroys the secret's versions beyond the `keep` newest (at least the
/// current one is always kept), oldest first, each with a `destroy_version` audit row cloned
/// from the write's `audit`. Returns how many it destroyed.
fn destroy_beyond(
    c: &Connection,
    id: SecretId,
    keep: u32,
    at: OffsetDateTime,
    audit: &AuditEntry,
) -> Result<usize, StoreError> {
    let mut doomed: Vec<Version> = c
        .prepare_cached(
            "SELECT version FROM secret_versions WHERE secret_id = ?1
             ORDER BY version DESC LIMIT -1 OFFSET ?2",
        )
        .and_then(|mut st| {
            st.query_map(params![id.to_string(), keep.max(1)], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(unavailable)?;
    doomed.reverse();
    for &version in &doomed {
        destroy_one(c, id, version, at)?;
        insert_audit(
            c,
            &AuditEntry {
                action: AuditAction::DestroyVersion,
                version: Some(version),
                reason: None,
                ..audit.clone()
            },
        )?;
    }
    Ok(doomed.len())
}

/// A version's history entry: `version, created_at, created_by, destroyed_at` (NULL unless
/// destroyed), with the secret's current version number to tell current from kept.
fn read_version_info(
    r: &Row<'_>,
    current: Version,
) -> rusqlite::Result<Result<VersionInfo, StoreError>> {
    let version: Version = r.get(0)?;
    let created_at: String = r.get(1)?;
    let created_by: String = r.get(2)?;
    let destroyed_at: Option<String> = r.get(3)?;
    Ok((|| {
        let destroyed_at = destroyed_at.as_deref().map(parse_ts).transpose()?;
        Ok(VersionInfo {
            version,
            created_at: parse_ts(&created_at)?,
            created_by,
            state: match destroyed_at {
                Some(_) => VersionState::Destroyed,
                None if version == current => VersionState::Current,
                None => VersionState::Kept,
            },
            destroyed_at,
        })
    })())
}

/// The live secrets of every tenant that expire at or before ?1, read as a range of the
/// partial `secrets_expires_at` index (migration 0008), never a scan of all secrets.
pub(crate) const COUNT_EXPIRING: &str =
    "SELECT count(*) FROM secrets WHERE expires_at <= ?1 AND deleted_at IS NULL";

/// Up to ?2 soft-deleted secrets of every tenant whose recovery window ended at ?1, oldest
/// first, read in order from the partial `secrets_purge_at` index (no sort).
pub(crate) const PURGE_DUE: &str =
    "SELECT id, tenant FROM secrets WHERE purge_at <= ?1 ORDER BY purge_at LIMIT ?2";

#[async_trait]
impl Store for SqliteStore {
    async fn add_version_with(
        &self,
        tenant: &TenantId,
        id: SecretId,
        record: VersionRecord,
        options: AddVersionOptions,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError> {
        let tenant = tenant.clone();
        // Shreds only when the cap destroyed a version.
        self.write_maybe_shredding(move |c| {
            // The key first: a taken key fails the job before anything else is written.
            if let Some(key) = &options.idempotency {
                insert_idempotency(c, key)?;
            }
            let Some(current) = live_current_version(c, &tenant, id)? else {
                if let Some(key) = &options.idempotency {
                    forget_idempotency(c, key)?;
                }
                return Ok((None, false));
            };
            if current.checked_add(1) != Some(record.version) {
                return Err(StoreError::VersionConflict);
            }
            c.prepare_cached(
                "UPDATE secrets SET current_version = ?1, updated_at = ?2 WHERE id = ?3",
            )
            .and_then(|mut st| {
                st.execute(params![
                    record.version,
                    ts(record.created_at),
                    id.to_string()
                ])
            })
            .map_err(unavailable)?;
            insert_version(c, id, &record).map_err(unavailable)?;
            insert_audit(c, &audit)?;
            let destroyed = match options.keep {
                Some(keep) => destroy_beyond(c, id, keep, record.created_at, &audit)?,
                None => 0,
            };
            Ok((Some(written_meta(c, &tenant, id)?), destroyed > 0))
        })
        .await
    }

    async fn list_versions(
        &self,
        tenant: &TenantId,
        id: SecretId,
        before: Option<Version>,
        limit: u32,
    ) -> Result<Option<Vec<VersionInfo>>, StoreError> {
        let tenant = tenant.clone();
        self.read(move |c| {
            // One read transaction: the current version and the history agree.
            let tx = c.unchecked_transaction().map_err(unavailable)?;
            let Some(current) = live_current_version(&tx, &tenant, id)? else {
                return Ok(None);
            };
            let mut st = tx
                .prepare_cached(
                    "SELECT version, created_at, created_by, NULL FROM secret_versions
                     WHERE secret_id = ?1 AND (?2 IS NULL OR version < ?2)
                     UNION ALL
                     SELECT version, created_at, created_by, destroyed_at FROM destroyed_versions
                     WHERE secret_id = ?1 AND (?2 IS NULL OR version < ?2)
                     ORDER BY 1 DESC LIMIT ?3",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map(params![id.to_string(), before, limit], |r| {
                    read_version_info(r, current)
                })
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?)
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .await
    }

    async fn get_version(
        &self,
        tenant: &TenantId,
        id: SecretId,
        version: Version,
    ) -> Result<Option<(SecretMeta, VersionLookup)>, StoreError> {
        let tenant = tenant.clone();
        // Three primary-key lookups in one statement (one snapshot): short enough for the task.
        self.read_short(move |c| {
            let found = c
                .prepare_cached(concat!(
                    "SELECT ",
                    secret_and_version_cols!(),
                    ", d.destroyed_at
                     FROM secrets s
                     LEFT JOIN secret_versions v ON v.secret_id = s.id AND v.version = ?3
                     LEFT JOIN destroyed_versions d ON d.secret_id = s.id AND d.version = ?3
                     WHERE s.id = ?1 AND s.tenant = ?2 AND s.deleted_at IS NULL"
                ))
                .and_then(|mut st| {
                    st.query_row(params![id.to_string(), tenant.as_str(), version], |r| {
                        let meta = read_meta(r)?;
                        let kept = match r.get::<_, Option<i64>>(META_COLS)? {
                            Some(_) => Some(read_version(r, META_COLS)?),
                            None => None,
                        };
                        let destroyed: Option<String> = r.get(META_COLS + 8)?;
                        Ok((meta, kept, destroyed))
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            let Some((meta, kept, destroyed)) = found else {
                return Ok(None);
            };
            let lookup = match (kept, destroyed) {
                (Some(record), _) => VersionLookup::Kept(record?),
                (None, Some(at)) => VersionLookup::Destroyed(parse_ts(&at)?),
                (None, None) => VersionLookup::Missing,
            };
            Ok(Some((meta?, lookup)))
        })
        .await
    }

    async fn destroy_version(
        &self,
        tenant: &TenantId,
        id: SecretId,
        version: Version,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<DestroyOutcome, StoreError> {
        let tenant = tenant.clone();
        // The shredding path whenever a version's ciphertext went (the WAL is truncated before
        // the answer); the other outcomes wrote nothing.
        self.write_maybe_shredding(move |c| {
            let Some(current) = live_current_version(c, &tenant, id)? else {
                return Ok((DestroyOutcome::NotFound, false));
            };
            if version == current {
                return Ok((DestroyOutcome::IsCurrent, false));
            }
            if destroy_one(c, id, version, at)? {
                insert_audit(c, &audit)?;
                return Ok((DestroyOutcome::Destroyed, true));
            }
            let destroyed: bool = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM destroyed_versions
                                    WHERE secret_id = ?1 AND version = ?2)",
                )
                .and_then(|mut st| st.query_row(params![id.to_string(), version], |r| r.get(0)))
                .map_err(unavailable)?;
            let outcome = if destroyed {
                DestroyOutcome::AlreadyDestroyed
            } else {
                DestroyOutcome::NotFound
            };
            Ok((outcome, false))
        })
        .await
    }

    async fn update_attributes(
        &self,
        tenant: &TenantId,
        id: SecretId,
        attrs: SecretAttributes,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError> {
        let tenant = tenant.clone();
        self.write(move |c| {
            // updated_at stays: it is the current version's time.
            let n = c
                .prepare_cached(
                    "UPDATE secrets
                     SET description = ?3, labels = ?4, expires_at = ?5, max_versions = ?6
                     WHERE id = ?1 AND tenant = ?2 AND deleted_at IS NULL",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        id.to_string(),
                        tenant.as_str(),
                        attrs.description,
                        labels_to_stored(&attrs.labels),
                        attrs.expires_at.map(ts),
                        attrs.max_versions,
                    ])
                })
                .map_err(unavailable)?;
            if n == 0 {
                return Ok(None);
            }
            insert_audit(c, &audit)?;
            written_meta(c, &tenant, id).map(Some)
        })
        .await
    }

    async fn soft_delete(
        &self,
        tenant: &TenantId,
        id: SecretId,
        deletion: Deletion,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.clone();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE secrets SET deleted_at = ?3, purge_at = ?4
                     WHERE id = ?1 AND tenant = ?2 AND deleted_at IS NULL",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        id.to_string(),
                        tenant.as_str(),
                        ts(deletion.deleted_at),
                        ts(deletion.purge_at),
                    ])
                })
                .map_err(unavailable)?;
            if n == 0 {
                return Ok(false);
            }
            insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn get_deleted(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Result<Option<SecretMeta>, StoreError> {
        let tenant = tenant.clone();
        self.read_short(move |c| query_meta(c, &tenant, id, Liveness::Deleted))
            .await
    }

    async fn restore(
        &self,
        tenant: &TenantId,
        id: SecretId,
        now: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<Option<SecretMeta>, StoreError> {
        let tenant = tenant.clone();
        // The single writer runs this and any purge one after the other: a restore either
        // finds the secret still in its window or finds it gone.
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE secrets SET deleted_at = NULL, purge_at = NULL
                     WHERE id = ?1 AND tenant = ?2 AND deleted_at IS NOT NULL AND purge_at > ?3",
                )
                .and_then(|mut st| st.execute(params![id.to_string(), tenant.as_str(), ts(now)]))
                .map_err(unavailable)?;
            if n == 0 {
                return Ok(None);
            }
            insert_audit(c, &audit)?;
            written_meta(c, &tenant, id).map(Some)
        })
        .await
    }

    async fn purge_due(
        &self,
        now: OffsetDateTime,
        limit: u32,
        template: AuditEntry,
    ) -> Result<Vec<(TenantId, SecretId)>, StoreError> {
        // One job on the single writer, so two callers never see the same due secret; the
        // shredding path when it deleted anything.
        self.write_maybe_shredding(move |c| {
            let due: Vec<(String, String)> = c
                .prepare_cached(PURGE_DUE)
                .and_then(|mut st| {
                    st.query_map(params![ts(now), limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()
                })
                .map_err(unavailable)?;
            let mut purged = Vec::with_capacity(due.len());
            for (id, tenant) in due {
                let secret = parse_id(&id)?;
                let tenant = TenantId::new(tenant);
                // Its versions and destroyed-version records cascade.
                c.prepare_cached("DELETE FROM secrets WHERE id = ?1")
                    .and_then(|mut st| st.execute(params![id]))
                    .map_err(unavailable)?;
                insert_audit(
                    c,
                    &AuditEntry {
                        tenant: tenant.clone(),
                        secret_id: Some(secret),
                        ..template.clone()
                    },
                )?;
                purged.push((tenant, secret));
            }
            let shreds = !purged.is_empty();
            Ok((purged, shreds))
        })
        .await
    }

    async fn get_idempotency(
        &self,
        tenant: &TenantId,
        principal: &str,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (tenant, principal, key) = (tenant.clone(), principal.to_owned(), key.to_owned());
        // A primary-key lookup: short enough to run on the task.
        self.read_short(move |c| {
            let found = c
                .prepare_cached(
                    "SELECT fingerprint, outcome, created_at, expires_at FROM idempotency_keys
                     WHERE tenant = ?1 AND principal = ?2 AND key = ?3 AND expires_at > ?4",
                )
                .and_then(|mut st| {
                    st.query_row(params![tenant.as_str(), principal, key, ts(now)], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            let Some((fingerprint, outcome, created_at, expires_at)) = found else {
                return Ok(None);
            };
            Ok(Some(IdempotencyRecord {
                tenant,
                principal,
                key,
                fingerprint: fingerprint.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt("idempotency fingerprint is not 32 bytes".into())
                })?,
                outcome,
                created_at: parse_ts(&created_at)?,
                expires_at: parse_ts(&expires_at)?,
            }))
        })
        .await
    }

    async fn purge_idempotency(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write(move |c| {
            c.prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")
                .and_then(|mut st| st.execute(params![ts(now)]))
                .map(|n| n as u64)
                .map_err(unavailable)
        })
        .await
    }

    async fn count_expiring(&self, before: OffsetDateTime) -> Result<i64, StoreError> {
        self.read(move |c| {
            c.prepare_cached(COUNT_EXPIRING)
                .and_then(|mut st| st.query_row(params![ts(before)], |r| r.get(0)))
                .map_err(unavailable)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }

    fn pool_status(&self) -> PoolStatus {
        let readers = &self.readers;
        PoolStatus {
            max: READ_POOL,
            // A running read holds a permit (and its connection) until it is done.
            in_use: READ_POOL.saturating_sub(readers.permits.available_permits()),
            idle: readers.idle.lock().map_or(0, |idle| idle.len()),
        }
    }

    async fn create_secret(&self, secret: NewSecret, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(move |c| {
            insert_secret(c, &secret)?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    async fn get_meta(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Result<Option<SecretMeta>, StoreError> {
        let tenant = tenant.clone();
        // A primary-key lookup: short enough to run on the task.
        self.read_short(move |c| query_meta(c, &tenant, id, Liveness::Live))
            .await
    }

    async fn get_current(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Result<Option<(SecretMeta, VersionRecord)>, StoreError> {
        let tenant = tenant.clone();
        // Two primary-key lookups in one statement, so one snapshot (the metadata and the
        // version agree) without a BEGIN and ROLLBACK around them; short enough to run on the
        // task (every decrypt makes them).
        self.read_short(move |c| {
            let found = c
                .prepare_cached(concat!(
                    "SELECT ",
                    secret_and_version_cols!(),
                    " FROM secrets s
                     LEFT JOIN secret_versions v
                       ON v.secret_id = s.id AND v.version = s.current_version
                     WHERE s.id = ?1 AND s.tenant = ?2 AND s.deleted_at IS NULL"
                ))
                .and_then(|mut st| {
                    st.query_row(params![id.to_string(), tenant.as_str()], |r| {
                        let meta = read_meta(r)?;
                        // NULL version columns: the current version's row is missing.
                        let version = match r.get::<_, Option<i64>>(META_COLS)? {
                            Some(_) => Some(read_version(r, META_COLS)?),
                            None => None,
                        };
                        Ok((meta, version))
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            let Some((meta, version)) = found else {
                return Ok(None);
            };
            let meta = meta?;
            let Some(record) = version else {
                return Err(StoreError::Corrupt("current version row missing".into()));
            };
            Ok(Some((meta, record?)))
        })
        .await
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<SecretMeta>, StoreError> {
        let Some((sql, values)) = list_statement(q) else {
            return Ok(Vec::new());
        };
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql).map_err(unavailable)?;
            let rows = st
                .query_map(params_from_iter(values), read_meta)
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    async fn delete_secret(
        &self,
        tenant: &TenantId,
        id: SecretId,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.clone();
        self.write_shredding(move |c| {
            let n = c
                .prepare_cached("DELETE FROM secrets WHERE id = ?1 AND tenant = ?2")
                .and_then(|mut st| st.execute(params![id.to_string(), tenant.as_str()]))
                .map_err(unavailable)?;
            insert_audit(c, &audit)?;
            Ok(n > 0)
        })
        .await
    }

    async fn append_audits(&self, audits: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.write(move |c| {
            for a in &audits {
                insert_audit(c, a)?;
            }
            Ok(())
        })
        .await
    }

    async fn create_vault_with(
        &self,
        vault: VaultRecord,
        secrets: Vec<NewSecret>,
        audits: Vec<AuditEntry>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            if let Some(key) = &idempotency {
                insert_idempotency(c, key)?;
            }
            let inserted = c.execute(
                "INSERT INTO vaults (id, tenant, workspace, name, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    vault.id.to_string(),
                    vault.tenant.as_str(),
                    vault.workspace,
                    vault.name,
                    ts(vault.created_at)
                ],
            );
            inserted.map_err(name_taken_or_unavailable)?;
            for secret in &secrets {
                insert_secret(c, secret)?;
            }
            for a in &audits {
                insert_audit(c, a)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_vault(
        &self,
        tenant: &TenantId,
        id: VaultId,
    ) -> Result<Option<VaultRecord>, StoreError> {
        let tenant = tenant.clone();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, tenant, workspace, name, created_at FROM vaults WHERE id = ?1 AND tenant = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![id.to_string(), tenant.as_str()], read_vault)
                    .optional()
            })
            .map_err(unavailable)?
            .transpose()
        })
        .await
    }

    async fn find_vaults(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Vec<VaultRecord>, StoreError> {
        let (tenant, name) = (tenant.clone(), name.to_owned());
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, tenant, workspace, name, created_at FROM vaults
                     WHERE tenant = ?1 AND name = ?2 ORDER BY workspace",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map(params![tenant.as_str(), name], read_vault)
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    async fn list_vaults(&self, q: &VaultQuery) -> Result<Vec<VaultRecord>, StoreError> {
        let Some((sql, values)) = vault_list_statement(q)? else {
            return Ok(Vec::new());
        };
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql).map_err(unavailable)?;
            let rows = st
                .query_map(params_from_iter(values), read_vault)
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    async fn vault_secrets(
        &self,
        tenant: &TenantId,
        id: VaultId,
    ) -> Result<Vec<(SecretMeta, VersionRecord)>, StoreError> {
        let tenant = tenant.clone();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(concat!(
                    "SELECT ",
                    secret_and_version_cols!(),
                    " FROM secrets s
                     JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
                     WHERE s.vault_id = ?1 AND s.tenant = ?2 AND s.deleted_at IS NULL
                     ORDER BY s.name"
                ))
                .map_err(unavailable)?;
            let rows = st
                .query_map(params![id.to_string(), tenant.as_str()], |r| {
                    Ok((read_meta(r)?, read_version(r, META_COLS)?))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (meta, version) = r.map_err(unavailable)?;
                Ok((meta?, version?))
            })
            .collect()
        })
        .await
    }

    async fn delete_vault(
        &self,
        tenant: &TenantId,
        id: VaultId,
        audits: Vec<AuditEntry>,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.clone();
        self.write_shredding(move |c| {
            // Secrets first (their versions cascade), then the vault.
            c.execute(
                "DELETE FROM secrets WHERE vault_id = ?1 AND tenant = ?2",
                params![id.to_string(), tenant.as_str()],
            )
            .map_err(unavailable)?;
            let n = c
                .execute(
                    "DELETE FROM vaults WHERE id = ?1 AND tenant = ?2",
                    params![id.to_string(), tenant.as_str()],
                )
                .map_err(unavailable)?;
            for a in &audits {
                insert_audit(c, a)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn list_audit(
        &self,
        secret_id: Option<SecretId>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |c| {
            query_audits(
                c,
                &format!(
                    "SELECT {AUDIT_COLS} FROM secret_access_log
                     WHERE (?1 IS NULL OR secret_id = ?1)
                     ORDER BY id DESC LIMIT ?2"
                ),
                params![secret_id.map(|s| s.to_string()), limit],
            )
        })
        .await
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let (rest, args) = audit_query_sql(q, |n| format!("?{n}"));
        let sql = format!("SELECT {AUDIT_COLS} FROM secret_access_log {rest}");
        let values: Vec<Value> = args
            .into_iter()
            .map(|a| match a {
                AuditArg::Text(t) => Value::Text(t),
                AuditArg::Secret(id) => Value::Text(id.to_string()),
                AuditArg::Time(t) => Value::Text(ts(t)),
                AuditArg::Int(i) => Value::Integer(i),
            })
            .collect();
        self.read(move |c| query_audits(c, &sql, params_from_iter(values)))
            .await
    }

    async fn audit_chain_page(
        &self,
        after: Option<(i32, i64)>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let (lane, seq) = after.unwrap_or((i32::MIN, i64::MIN));
        self.read(move |c| {
            // The row comparison reads the (chain_lane, chain_seq) index in order; it is false
            // for unchained rows (NULL lane).
            query_audits(
                c,
                &format!(
                    "SELECT {AUDIT_COLS} FROM secret_access_log
                     WHERE (chain_lane, chain_seq) > (?1, ?2)
                     ORDER BY chain_lane, chain_seq LIMIT ?3"
                ),
                params![lane, seq, limit],
            )
        })
        .await
    }

    async fn unchained_audit(
        &self,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let after_id = after_id.unwrap_or(i64::MIN);
        self.read(move |c| {
            query_audits(
                c,
                &format!(
                    "SELECT {AUDIT_COLS} FROM secret_access_log
                     WHERE chain_lane IS NULL AND id > ?1
                     ORDER BY id LIMIT ?2"
                ),
                params![after_id, limit],
            )
        })
        .await
    }

    async fn audit_heads(&self) -> Result<Vec<ChainHead>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT lane, seq, hash FROM audit_chain_heads ORDER BY lane")
                .map_err(unavailable)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i32>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (lane, seq, hash) = r.map_err(unavailable)?;
                Ok(ChainHead {
                    lane,
                    seq,
                    hash: head_hash(lane, &hash)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn insert_audit_checkpoint(
        &self,
        checkpoint: &AuditCheckpoint,
    ) -> Result<(), StoreError> {
        let heads = heads_to_stored(&checkpoint.heads)?;
        let (created_at, key_id, signature) = (
            ts(chain::to_micros(checkpoint.created_at)),
            checkpoint.key_id.clone(),
            checkpoint.signature.clone(),
        );
        self.write(move |c| {
            c.execute(
                "INSERT INTO audit_checkpoints (created_at, key_id, heads, signature)
                 VALUES (?1, ?2, ?3, ?4)",
                params![created_at, key_id, heads, signature],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, created_at, key_id, heads, signature FROM audit_checkpoints
                     ORDER BY id",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (id, created_at, key_id, heads, signature) = r.map_err(unavailable)?;
                Ok(AuditCheckpoint {
                    id,
                    created_at: parse_ts(&created_at)?,
                    key_id,
                    heads: heads_from_stored(id, &heads)?,
                    signature,
                })
            })
            .collect()
        })
        .await
    }

    async fn audit_signing_keys(&self) -> Result<Vec<AuditSigningKey>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, public_key, kek_id, wrapped_key, created_at FROM audit_signing_keys
                     ORDER BY created_at, id",
                )
                .map_err(unavailable)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(unavailable)?;
            rows.map(|r| {
                let (id, public_key, kek_id, wrapped_key, created_at) = r.map_err(unavailable)?;
                Ok(AuditSigningKey {
                    id,
                    public_key,
                    kek_id,
                    wrapped_key,
                    created_at: parse_ts(&created_at)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn put_audit_signing_key(
        &self,
        key: &AuditSigningKey,
        audit: Option<AuditEntry>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO audit_signing_keys (id, public_key, kek_id, wrapped_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE
                 SET kek_id = excluded.kek_id, wrapped_key = excluded.wrapped_key",
                params![
                    key.id,
                    key.public_key,
                    key.kek_id,
                    key.wrapped_key,
                    ts(chain::to_micros(key.created_at)),
                ],
            )
            .map_err(unavailable)?;
            if let Some(a) = &audit {
                insert_audit(c, a)?;
            }
            Ok(())
        })
        .await
    }

    async fn kek_usage(&self) -> Result<Vec<KekUsage>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT kek_id, recovery_kek_id, COUNT(*) FROM secret_versions
                     GROUP BY kek_id, recovery_kek_id
                     ORDER BY kek_id, recovery_kek_id IS NOT NULL, recovery_kek_id",
                )
                .map_err(unavailable)?;
            let rows = st.query_map([], kek_usage).map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)).collect()
        })
        .await
    }
    async fn kek_backlog(
        &self,
        kek_id: &str,
        recovery_kek_id: Option<&str>,
    ) -> Result<Vec<KekUsage>, StoreError> {
        let kek_id = kek_id.to_owned();
        let recovery = recovery_kek_id.map(str::to_owned);
        self.read(move |c| {
            let rows = match &recovery {
                Some(recovery) => c
                    .prepare_cached(KEK_BACKLOG_WITH_RECOVERY)
                    .and_then(|mut st| {
                        st.query_map(params![kek_id, recovery], kek_usage)?
                            .collect::<Result<Vec<_>, _>>()
                    }),
                None => c.prepare_cached(KEK_BACKLOG).and_then(|mut st| {
                    st.query_map(params![kek_id], kek_usage)?
                        .collect::<Result<Vec<_>, _>>()
                }),
            };
            rows.map_err(unavailable)
        })
        .await
    }

    async fn scan_versions(
        &self,
        filter: &VersionFilter,
        after: Option<(SecretId, i64)>,
        limit: u32,
        with_values: bool,
    ) -> Result<Vec<StoredVersion>, StoreError> {
        let (param, recovery): (Option<String>, Option<String>) = match filter {
            VersionFilter::NotUnderKek(k) => (Some(k.clone()), None),
            VersionFilter::NeedsRewrap {
                kek_id,
                recovery_kek_id,
            } => (Some(kek_id.clone()), recovery_kek_id.clone()),
            VersionFilter::SealedBefore(t) => (Some(ts(*t)), None),
            VersionFilter::All => (None, None),
        };
        let sql = format!(
            "SELECT s.tenant, v.secret_id, v.version, v.kek_id, v.wrapped_dek,
                    CASE WHEN ?5 THEN v.sealed_value ELSE x'' END,
                    v.recovery_kek_id, v.recovery_wrapped_dek
             FROM secret_versions v JOIN secrets s ON s.id = v.secret_id
             WHERE {} AND (?2 IS NULL OR (v.secret_id, v.version) > (?2, ?3))
             ORDER BY v.secret_id, v.version LIMIT ?4",
            filter_sql(filter, "?1", "?6")
        );
        self.read(move |c| {
            let mut st = c.prepare_cached(&sql).map_err(unavailable)?;
            let rows = st
                .query_map(
                    params![
                        param,
                        after.map(|a| a.0.to_string()),
                        after.map(|a| a.1),
                        limit,
                        with_values,
                        recovery
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Vec<u8>>(4)?,
                            r.get::<_, Vec<u8>>(5)?,
                            r.get::<_, Option<String>>(6)?,
                            r.get::<_, Option<Vec<u8>>>(7)?,
                        ))
                    },
                )
                .map_err(unavailable)?;
            rows.map(|r| {
                let (tenant, id, version, kek_id, wrapped_dek, sealed_value, rk, rw) =
                    r.map_err(unavailable)?;
                Ok(StoredVersion {
                    tenant: TenantId::new(tenant),
                    secret_id: parse_id(&id)?,
                    version,
                    kek_id,
                    wrapped_dek,
                    sealed_value,
                    recovery: recovery_from_stored(rk, rw)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn replace_wrapped(&self, rows: Vec<Rewrapped>) -> Result<u64, StoreError> {
        // The old wrapped DEKs (and, on re-encryption, sealed values) must not stay in the WAL.
        self.write_shredding(move |c| {
            let mut st = c
                .prepare_cached(
                    "UPDATE secret_versions
                     SET kek_id = ?1, wrapped_dek = ?2,
                         sealed_value = COALESCE(?3, sealed_value),
                         sealed_at = COALESCE(?4, sealed_at),
                         recovery_kek_id = ?8, recovery_wrapped_dek = ?9
                     WHERE secret_id = ?5 AND version = ?6 AND wrapped_dek = ?7",
                )
                .map_err(unavailable)?;
            let mut changed = 0u64;
            for r in &rows {
                let (sealed, sealed_at) = match &r.resealed {
                    Some((v, t)) => (Some(v.as_slice()), Some(ts(*t))),
                    None => (None, None),
                };
                changed += st
                    .execute(params![
                        r.kek_id,
                        r.wrapped_dek,
                        sealed,
                        sealed_at,
                        r.secret_id.to_string(),
                        r.version,
                        r.old_wrapped_dek,
                        r.recovery.as_ref().map(|x| x.kek_id.as_str()),
                        r.recovery.as_ref().map(|x| x.wrapped_dek.as_slice()),
                    ])
                    .map_err(unavailable)? as u64;
            }
            Ok(changed)
        })
        .await
    }

    async fn create_token(&self, token: TokenRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.write(move |c| {
            insert_token(c, &token)?;
            insert_audit(c, &audit)?;
            Ok(())
        })
        .await
    }

    async fn ensure_token(
        &self,
        token: TokenRecord,
        audit: AuditEntry,
    ) -> Result<TokenRecord, StoreError> {
        self.write(move |c| {
            if let Some(existing) = query_token(c, token.id)? {
                return Ok(existing);
            }
            insert_token(c, &token)?;
            insert_audit(c, &audit)?;
            Ok(token)
        })
        .await
    }

    async fn create_first_token(
        &self,
        token: TokenRecord,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        // The single writer runs this check and insert with no other write between them.
        self.write(move |c| {
            let any: bool = c
                .query_row("SELECT EXISTS (SELECT 1 FROM auth_tokens)", [], |r| {
                    r.get(0)
                })
                .map_err(unavailable)?;
            if any {
                return Ok(false);
            }
            insert_token(c, &token)?;
            insert_audit(c, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn has_tokens(&self) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_row("SELECT EXISTS (SELECT 1 FROM auth_tokens)", [], |r| {
                r.get(0)
            })
            .map_err(unavailable)
        })
        .await
    }

    async fn find_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        // A primary-key lookup: short enough to run on the task.
        self.read_short(move |c| query_token(c, id)).await
    }

    async fn list_tokens(&self, q: &TokenQuery) -> Result<Vec<TokenRecord>, StoreError> {
        let q = q.clone();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLS} FROM auth_tokens
                     WHERE tenant = ?1
                       AND (?2 IS NULL OR created_by = ?2 OR principal = ?2)
                       AND (?3 IS NULL OR id > ?3)
                     ORDER BY id LIMIT ?4"
                ))
                .map_err(unavailable)?;
            let rows = st
                .query_map(
                    params![
                        q.tenant.as_str(),
                        q.related_to,
                        q.after.map(|a| a.to_string()),
                        q.limit
                    ],
                    read_token,
                )
                .map_err(unavailable)?;
            rows.map(|r| r.map_err(unavailable)?).collect()
        })
        .await
    }

    async fn revoke_token(
        &self,
        tenant: &TenantId,
        id: TokenId,
        at: OffsetDateTime,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.clone();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE auth_tokens SET revoked_at = COALESCE(revoked_at, ?1)
                     WHERE id = ?2 AND tenant = ?3",
                )
                .and_then(|mut st| st.execute(params![ts(at), id.to_string(), tenant.as_str()]))
                .map_err(unavailable)?;
            insert_audit(c, &audit)?;
            Ok(n > 0)
        })
        .await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let expires = ts(now + ttl);
        let now = ts(now);
        self.write(move |c| {
            c.execute(
                "INSERT INTO rcrt_leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE rcrt_leases.holder = excluded.holder OR rcrt_leases.expires_at < ?4",
                params![name, holder, expires, now],
            )
            .map(|n| n == 1)
            .map_err(unavailable)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM rcrt_leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |c| {
            c.query_row("SELECT value FROM rcrt_state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn set_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.map(str::to_owned));
        self.write(move |c| {
            match value {
                Some(v) => c.execute(
                    "INSERT INTO rcrt_state (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, v],
                ),
                None => c.execute("DELETE FROM rcrt_state WHERE key = ?1", params![key]),
            }
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// SQLite's plan for the backlog census on a migrated store: every branch searches the
    /// (kek_id, recovery_kek_id) index, none scans `secret_versions`. A plan that scans would
    /// make start-up and every re-wrap poll read the whole table again (631 ms at 1M versions),
    /// which no functional test notices on a small store.
    #[tokio::test]
    async fn kek_backlog_searches_the_index() {
        let dir = rcrt_testkit::TempDir::new();
        let path = dir.path().join("plan.db");
        let path = path.to_str().unwrap();
        drop(SqliteStore::open(path).await.unwrap());
        let c = Connection::open(path).unwrap();
        for (sql, params, branches) in [
            (KEK_BACKLOG, vec!["kek-b"], 2),
            (KEK_BACKLOG_WITH_RECOVERY, vec!["kek-b", "rec-1"], 5),
        ] {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let details: Vec<String> = st
                .query_map(params_from_iter(params.iter()), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let on_versions: Vec<&String> = details
                .iter()
                .filter(|d| d.contains("secret_versions"))
                .collect();
            assert_eq!(on_versions.len(), branches, "one per branch: {details:?}");
            assert!(
                on_versions.iter().all(|d| d.starts_with("SEARCH")
                    && d.contains("COVERING INDEX secret_versions_kek_pair")),
                "{details:?}"
            );
        }
    }

    /// A database written before migration 0008 opens with every lifecycle column at its
    /// default: secrets live with empty attributes, versions without an author, audit rows
    /// without a version (and the rows the CHECKs of 0008 judge are the old ones too).
    #[tokio::test]
    async fn migration_0008_upgrades_a_store_with_data() {
        let dir = rcrt_testkit::TempDir::new();
        let path = dir.path().join("old.db");
        let path = path.to_str().unwrap();
        let id = SecretId::new();
        {
            let c = Connection::open(path).unwrap();
            c.execute_batch(migrate::LEDGER).unwrap();
            for (version, sql) in migrate::SQLITE.iter().filter(|(v, _)| *v < 8) {
                c.execute_batch(sql).unwrap();
                c.execute(
                    "INSERT INTO rcrt_schema_migrations (version, applied_at) VALUES (?1, ?2)",
                    params![version, ts(OffsetDateTime::now_utc())],
                )
                .unwrap();
            }
            let t = ts(OffsetDateTime::now_utc());
            c.execute(
                "INSERT INTO secrets (id, tenant, name, scope_type, scope_id, current_version,
                                      created_at, updated_at)
                 VALUES (?1, 'acme', 'OLD', 'global', '', 1, ?2, ?2)",
                params![id.to_string(), t],
            )
            .unwrap();
            c.execute(
                "INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_dek,
                                              sealed_value, created_at, sealed_at)
                 VALUES (?1, 1, 'kek-a', x'0102', x'0304', ?2, ?2)",
                params![id.to_string(), t],
            )
            .unwrap();
            // An audit row from before the chain and the version column: unchained.
            c.execute(
                "INSERT INTO secret_access_log (timestamp, action, secret_id, tenant, user_id,
                                                outcome, request_id)
                 VALUES (?1, 'create', ?2, 'acme', 'old', 'success', 'r')",
                params![t, id.to_string()],
            )
            .unwrap();
        }
        let s = SqliteStore::open(path).await.unwrap();
        let tenant = TenantId::new("acme");
        let (meta, v) = s.get_current(&tenant, id).await.unwrap().unwrap();
        assert_eq!(meta.attrs, SecretAttributes::default());
        assert_eq!(meta.deleted, None);
        assert_eq!(v.created_by, "");
        let history = s
            .list_versions(&tenant, id, None, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].state, VersionState::Current);
        let old = s.unchained_audit(None, 10).await.unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!((old[0].version, old[0].chain.is_none()), (None, true));
    }

    /// `unchained_audit` reads the version column like every other audit reader (rows without a
    /// chain link only exist from before migration 0006 or by hand, so one is made by hand).
    #[tokio::test]
    async fn unchained_audit_reads_the_version() {
        let dir = rcrt_testkit::TempDir::new();
        let path = dir.path().join("unchained.db");
        let path = path.to_str().unwrap();
        let s = SqliteStore::open(path).await.unwrap();
        let c = Connection::open(path).unwrap();
        c.execute(
            "INSERT INTO secret_access_log (timestamp, action, tenant, user_id, outcome,
                                            request_id, version)
             VALUES (?1, 'decrypt', 'acme', 'u', 'success', 'r', 42)",
            params![ts(OffsetDateTime::now_utc())],
        )
        .unwrap();
        drop(c);
        let rows = s.unchained_audit(None, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].version, Some(42));
    }

    /// The expiring gauge and the purge job read ranges of their partial indexes (migration
    /// 0008), never every secret: both run periodically on every replica, whatever the size.
    #[tokio::test]
    async fn expiring_count_and_purge_read_their_partial_indexes() {
        let dir = rcrt_testkit::TempDir::new();
        let path = dir.path().join("plan.db");
        let path = path.to_str().unwrap();
        drop(SqliteStore::open(path).await.unwrap());
        let c = Connection::open(path).unwrap();
        let now = ts(OffsetDateTime::now_utc());
        for (sql, params, index) in [
            (
                COUNT_EXPIRING,
                vec![Value::Text(now.clone())],
                "secrets_expires_at",
            ),
            (
                PURGE_DUE,
                vec![Value::Text(now), Value::Integer(10)],
                "secrets_purge_at",
            ),
        ] {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let details: Vec<String> = st
                .query_map(params_from_iter(params), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(details.len(), 1, "{details:?}");
            assert!(
                details[0].starts_with(&format!("SEARCH secrets USING INDEX {index} (")),
                "{details:?}"
            );
        }
    }
}
