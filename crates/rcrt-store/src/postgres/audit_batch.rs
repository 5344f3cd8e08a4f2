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

use super::{append_one, audit_err, pg_err, unavailable, AuditRow, SET_TENANT};
use crate::StoreError;

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

/// A chained insert on the lane [`PICK_LANE`] took (taking its lock again does not wait), or on
/// the connection's lane, waiting for it.
const INSERT_ON_PICKED_LANE: &str = chained_insert!(
    "SELECT o.lane FROM (SELECT COALESCE(NULLIF(current_setting('rcrt.audit_lane', true), '')::int4,
                                         pg_backend_pid() % 32) AS lane) AS o,
            LATERAL (SELECT pg_advisory_xact_lock(1919118446, o.lane)) AS locked"
);

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

impl Writer {
    /// Writes `entries` in one transaction: one round trip for the transaction's statements,
    /// pipelined (PostgreSQL runs a connection's requests in order), then the commit.
    async fn write(&self, entries: &[&AuditEntry]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await.map_err(unavailable)?;
        if let [only] = entries {
            return append_one(&c, &self.app_role, only).await;
        }
        let set_tenant = c.prepare_cached(SET_TENANT).await.map_err(pg_err)?;
        let pick = c.prepare_cached(PICK_LANE).await.map_err(audit_err)?;
        let insert = c
            .prepare_cached(INSERT_ON_PICKED_LANE)
            .await
            .map_err(audit_err)?;
        // Rows grouped by tenant: row-level security checks each row against the session's
        // tenant, so the tenant is set once per group, not per row.
        let mut rows: Vec<AuditRow<'_>> = entries.iter().map(|e| AuditRow::new(e)).collect();
        rows.sort_by(|a, b| a.tenant.cmp(b.tenant));
        let params: Vec<_> = rows.iter().map(AuditRow::params).collect();
        let role = self.app_role.as_str();
        let tenants: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 2]> = rows
            .iter()
            .map(|r| -> [&(dyn tokio_postgres::types::ToSql + Sync); 2] { [&r.tenant, &role] })
            .collect();
        let tx = c.transaction().await.map_err(pg_err)?;
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(rows.len() + 2);
        for (i, row) in rows.iter().enumerate() {
            if i == 0 || rows[i - 1].tenant != row.tenant {
                pending.push(Box::pin(tx.execute(&set_tenant, &tenants[i])));
            }
            if i == 0 {
                pending.push(Box::pin(tx.execute(&pick, &[])));
            }
            pending.push(Box::pin(tx.execute(&insert, &params[i])));
        }
        futures_util::future::try_join_all(pending)
            .await
            .map_err(audit_err)?;
        tx.commit().await.map_err(pg_err)
    }
}
