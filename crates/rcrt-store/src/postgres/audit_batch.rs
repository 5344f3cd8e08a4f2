//! Group commit of single audit rows (the decrypt path's) on PostgreSQL.
//!
//! One commit per decrypt made PostgreSQL's commit work, not ours, the limit: about 142 µs of
//! PostgreSQL CPU per row committed alone, 13 µs per row at 32 rows a commit (see
//! `docs/benchmarks.md`). Callers queue their row and wait; a few writer tasks each take whatever
//! is waiting (up to [`MAX_BATCH`] rows), write it as the next links of one chain lane in one
//! transaction, and answer every caller only after the commit: no caller hears "written" before
//! its row is durable, and a batch that fails fails every caller in it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use rcrt_types::AuditEntry;
use tokio::sync::{mpsc, oneshot, Mutex};

use tokio_postgres::types::ToSql;

use super::{append_one, audit_err, pg_err, unavailable, AuditRow, SET_TENANT};
use crate::{chain, StoreError};

/// Writer tasks: while one commits, the others gather and write the next batches, so the commit
/// latency is overlapped without shrinking batches to single rows again.
const WRITERS: usize = 4;
/// Rows in one transaction at most: bounds a transaction's lock hold and a failure's reach.
const MAX_BATCH: usize = 128;
/// Rows waiting at most; further callers wait to queue (back-pressure, within their timeout).
const QUEUE: usize = 4096;

/// Takes a free chain lane for the transaction (as in the single-row insert, starting from a
/// lane that depends on the connection) and records it for the inserts that follow. No row when
/// every lane is held: the inserts then wait for the connection's own lane.
const PICK_LANE: &str = "SELECT set_config('rcrt.audit_lane', o.lane::text, true)
    FROM generate_series(0, 31) AS g(i),
         LATERAL (SELECT (g.i + pg_backend_pid()) % 32 AS lane) AS o
    WHERE pg_try_advisory_xact_lock(1919118446, o.lane)
    LIMIT 1";

/// The lane [`PICK_LANE`] took, or the connection's own lane when it took none.
macro_rules! batch_lane {
    () => {
        "COALESCE(NULLIF(current_setting('rcrt.audit_lane', true), '')::int4, pg_backend_pid() % 32)"
    };
}

/// Holds the batch's lane: no wait for the lane [`PICK_LANE`] took (the lock is re-entrant), a
/// wait for the connection's lane when every lane was held. A statement of its own so that the
/// head read after it takes its snapshot once the lock is held, and so sees the previous
/// holder's commit.
const HOLD_LANE: &str = concat!(
    "SELECT pg_advisory_xact_lock(1919118446, ",
    batch_lane!(),
    ")"
);

/// The held lane's head.
const READ_HEAD: &str = concat!(
    "SELECT lane, seq, hash FROM audit_chain_heads WHERE lane = ",
    batch_lane!()
);

/// One tenant's rows of the batch, their links computed by the writer from the head it read;
/// inserted in seq order, so that within a lane ids grow with seq (`rcrt audit verify` relies
/// on it).
const INSERT_ROWS: &str = "INSERT INTO secret_access_log
        (timestamp, action, secret_id, tenant, user_id, reason, outcome, request_id, token_id,
         version, chain_lane, chain_seq, chain_hash)
    SELECT t, a, s, $4::text, u, r, o, q, k, v, $10::int4, c, h
    FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::uuid[], $11::int8[], $12::bytea[], $13::int8[])
         WITH ORDINALITY AS x(t, a, s, u, r, o, q, k, c, h, v, n)
    ORDER BY n";

/// Moves the held lane's head past the batch: once per batch, not once per row.
const MOVE_HEAD: &str = "UPDATE audit_chain_heads SET seq = $2, hash = $3 WHERE lane = $1";

/// One queued row and the caller waiting for its commit.
struct Job {
    entry: AuditEntry,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue in front of the writer tasks. Dropping it (with its store) ends them once the queue
/// is empty.
pub(super) struct AuditBatcher {
    jobs: mpsc::Sender<Job>,
}

/// What every writer task shares.
struct Writer {
    pool: Pool,
    app_role: String,
    /// One batch as a whole, like any store operation.
    limit: Duration,
}

impl AuditBatcher {
    /// Starts the writer tasks on the current Tokio runtime.
    pub(super) fn spawn(pool: Pool, app_role: String, limit: Duration) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let writer = Arc::new(Writer {
            pool,
            app_role,
            limit,
        });
        for _ in 0..WRITERS {
            tokio::spawn(run(writer.clone(), queue.clone()));
        }
        Self { jobs }
    }

    /// Queues `entry` and waits for its batch's commit. `Err(entry)` when the writer tasks are
    /// gone (their runtime shut down): the caller then writes the row itself.
    pub(super) async fn append(
        &self,
        entry: AuditEntry,
    ) -> Result<Result<(), StoreError>, AuditEntry> {
        let (done, answer) = oneshot::channel();
        if let Err(refused) = self.jobs.send(Job { entry, done }).await {
            return Err(refused.0.entry);
        }
        Ok(answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the audit writer stopped before answering".into(),
            ))
        }))
    }
}

async fn run(writer: Arc<Writer>, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        // A caller that gave up (its own timeout) was told "failed" and sent no value: its row
        // is not needed.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.done.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let entries: Vec<&AuditEntry> = batch.iter().map(|j| &j.entry).collect();
        let result = tokio::time::timeout(writer.limit, writer.write(&entries))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {:?}",
                    writer.limit
                )))
            });
        if let Err(e) = &result {
            tracing::warn!(rows = batch.len(), error = %e, "audit batch failed");
        }
        for job in batch {
            let _ = job.done.send(result.clone());
        }
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// One tenant's rows of a batch, as [`INSERT_ROWS`] binds them.
struct TenantRows<'a> {
    tenant: &'a str,
    timestamps: Vec<time::OffsetDateTime>,
    actions: Vec<&'a str>,
    secret_ids: Vec<Option<uuid::Uuid>>,
    user_ids: Vec<&'a str>,
    reasons: Vec<Option<&'a str>>,
    outcomes: Vec<&'a str>,
    request_ids: Vec<&'a str>,
    token_ids: Vec<Option<uuid::Uuid>>,
    seqs: Vec<i64>,
    hashes: Vec<Vec<u8>>,
    versions: Vec<Option<i64>>,
}

impl<'a> TenantRows<'a> {
    fn new(tenant: &'a str) -> Self {
        Self {
            tenant,
            timestamps: Vec::new(),
            actions: Vec::new(),
            secret_ids: Vec::new(),
            user_ids: Vec::new(),
            reasons: Vec::new(),
            outcomes: Vec::new(),
            request_ids: Vec::new(),
            token_ids: Vec::new(),
            seqs: Vec::new(),
            hashes: Vec::new(),
            versions: Vec::new(),
        }
    }

    fn push(&mut self, row: &AuditRow<'a>, seq: i64, hash: [u8; 32]) {
        self.timestamps.push(row.timestamp);
        self.actions.push(row.action);
        self.secret_ids.push(row.secret_id);
        self.user_ids.push(&row.a.user_id);
        self.reasons.push(row.a.reason.as_deref());
        self.outcomes.push(row.outcome);
        self.request_ids.push(&row.a.request_id);
        self.token_ids.push(row.token_id);
        self.seqs.push(seq);
        self.hashes.push(hash.to_vec());
        self.versions.push(row.a.version);
    }
}

/// A pooled connection inside a transaction that [`Writer::write`] began with a plain `BEGIN`
/// sent along with its first statements. It goes back to the pool only through
/// [`InTransaction::committed`]. Dropped before that (a failed statement, or the writer's
/// timeout dropping the write), it closes the connection instead, and PostgreSQL rolls the
/// transaction back: no later user of the pool inherits an open or aborted transaction.
struct InTransaction(Option<deadpool_postgres::Client>);

impl InTransaction {
    fn client(&self) -> Result<&deadpool_postgres::Client, StoreError> {
        self.0
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("audit connection already released".into()))
    }

    /// COMMIT has answered: the connection is idle again and may be reused.
    fn committed(mut self) {
        drop(self.0.take());
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Writer {
    /// Writes `entries` in one transaction and two round trips: `BEGIN`, the tenant, a lane and
    /// its head; then the rows (one statement per tenant), the head moved once, and `COMMIT`.
    /// Statements of one round trip are pipelined (PostgreSQL runs a connection's requests in
    /// order; after a failed statement the rest fail too, and `COMMIT` rolls back). With
    /// PostgreSQL on another host every round trip is a network one: a separate `BEGIN` and
    /// `COMMIT` would double a batch's latency, and so the wait of every decrypt in it.
    async fn write(&self, entries: &[&AuditEntry]) -> Result<(), StoreError> {
        let c = self.pool.get().await.map_err(unavailable)?;
        if let [only] = entries {
            return append_one(&c, &self.app_role, only).await;
        }
        let set_tenant = c.prepare_cached(SET_TENANT).await.map_err(pg_err)?;
        let pick = c.prepare_cached(PICK_LANE).await.map_err(audit_err)?;
        let hold = c.prepare_cached(HOLD_LANE).await.map_err(audit_err)?;
        let read_head = c.prepare_cached(READ_HEAD).await.map_err(audit_err)?;
        let insert = c.prepare_cached(INSERT_ROWS).await.map_err(audit_err)?;
        let move_head = c.prepare_cached(MOVE_HEAD).await.map_err(audit_err)?;
        // Rows grouped by tenant: row-level security checks each row against the session's
        // tenant, so each tenant's rows go in one statement after its tenant is set.
        let mut rows: Vec<AuditRow<'_>> = entries.iter().map(|e| AuditRow::new(e)).collect();
        rows.sort_by(|a, b| a.tenant.cmp(b.tenant));
        let role = self.app_role.as_str();
        let first_tenant = rows.first().map_or("", |r| r.tenant);

        let first_params: [&(dyn ToSql + Sync); 2] = [&first_tenant, &role];
        let tx = InTransaction(Some(c));
        let c = tx.client()?;
        let (_, _, _, _, head) = tokio::try_join!(
            c.batch_execute("BEGIN"),
            c.execute(&set_tenant, &first_params),
            c.execute(&pick, &[]),
            c.execute(&hold, &[]),
            c.query_one(&read_head, &[]),
        )
        .map_err(audit_err)?;
        let lane: i32 = head.try_get(0).map_err(super::corrupt)?;
        let mut seq: i64 = head.try_get(1).map_err(super::corrupt)?;
        let stored: Vec<u8> = head.try_get(2).map_err(super::corrupt)?;
        let mut hash: [u8; 32] = stored
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("audit chain head of lane {lane}")))?;

        let mut groups: Vec<TenantRows<'_>> = Vec::new();
        for row in &rows {
            seq += 1;
            let content: [u8; 32] = row
                .content
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit content hash".into()))?;
            hash = chain::link_hash(&hash, &content, lane, seq);
            match groups.last_mut() {
                Some(g) if g.tenant == row.tenant => g.push(row, seq, hash),
                _ => {
                    let mut g = TenantRows::new(row.tenant);
                    g.push(row, seq, hash);
                    groups.push(g);
                }
            }
        }
        let hash = hash.to_vec();
        let head_params: [&(dyn ToSql + Sync); 3] = [&lane, &seq, &hash];
        let tenants: Vec<[&(dyn ToSql + Sync); 2]> = groups
            .iter()
            .map(|g| -> [&(dyn ToSql + Sync); 2] { [&g.tenant, &role] })
            .collect();
        let params: Vec<[&(dyn ToSql + Sync); 13]> = groups
            .iter()
            .map(|g| -> [&(dyn ToSql + Sync); 13] {
                [
                    &g.timestamps,
                    &g.actions,
                    &g.secret_ids,
                    &g.tenant,
                    &g.user_ids,
                    &g.reasons,
                    &g.outcomes,
                    &g.request_ids,
                    &g.token_ids,
                    &lane,
                    &g.seqs,
                    &g.hashes,
                    &g.versions,
                ]
            })
            .collect();
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(groups.len() * 2 + 1);
        for (i, p) in params.iter().enumerate() {
            if i > 0 {
                pending.push(Box::pin(c.execute(&set_tenant, &tenants[i])));
            }
            pending.push(Box::pin(c.execute(&insert, p)));
        }
        pending.push(Box::pin(c.execute(&move_head, &head_params)));
        pending.push(Box::pin(async {
            c.batch_execute("COMMIT").await.map(|()| 0)
        }));
        futures_util::future::try_join_all(pending)
            .await
            .map_err(audit_err)?;
        tx.committed();
        Ok(())
    }
}
