//! Group commit of single audit rows (the decrypt path's) on PostgreSQL.
//!
//! One commit per decrypt made PostgreSQL's commit work, not ours, the limit: about 142 µs of
//! PostgreSQL CPU per row committed alone, 13 µs per row at 32 rows a commit (see
//! `docs/benchmarks.md`). Callers queue their row and wait; a few writer tasks each take whatever
//! is waiting (up to [`MAX_BATCH`] rows), write it as the next links of one chain lane with one
//! call of `rcrt_append_audit` (migration 0012: one statement, one round trip, committed on
//! its own), and answer every caller only after the commit: no caller hears "written" before
//! its row is durable, and a batch that fails fails every caller in it.

use std::sync::Arc;

use rcrt_types::AuditEntry;
use tokio::sync::{mpsc, oneshot};

use tokio_postgres::types::ToSql;

use super::batching::{self, next_batch, within, Queue, Worker};
use super::{append_one, audit_err, pg_err, unavailable, AuditRow, SET_TENANT};
use crate::StoreError;

/// Writer tasks: while one commits, the others gather and write the next batches, so the commit
/// latency is overlapped without shrinking batches to single rows again.
const WRITERS: usize = 4;
/// Rows in one transaction at most: bounds a transaction's lock hold and a failure's reach.
const MAX_BATCH: usize = 128;
/// Rows waiting at most; further callers wait to queue (back-pressure, within their timeout).
const QUEUE: usize = 4096;

/// The batch's rows, as arrays in one order (sorted by tenant), to the function of migration
/// 0012, which takes a lane, links the rows, inserts them and moves the lane's head.
const APPEND_BATCH: &str = "SELECT rcrt_append_audit($1::timestamptz[], $2::text[], $3::uuid[],
    $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::uuid[], $10::bytea[],
    $11::int8[])";

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

impl AuditBatcher {
    /// Starts the writer tasks on the current Tokio runtime.
    pub(super) fn spawn(worker: Arc<Worker>) -> Self {
        Self {
            jobs: batching::spawn(QUEUE, WRITERS, worker, run),
        }
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
        Ok(batching::answer(answer, "audit writer").await)
    }
}

async fn run(writer: Arc<Worker>, queue: Queue<Job>) {
    loop {
        let Some(batch) = next_batch(&queue, MAX_BATCH).await else {
            return;
        };
        // A caller that gave up (its own timeout) was told "failed" and sent no value: its row
        // is not needed.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.done.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let entries: Vec<&AuditEntry> = batch.iter().map(|j| &j.entry).collect();
        let result = within(writer.limit, write(&writer, &entries)).await;
        if let Err(e) = &result {
            tracing::warn!(rows = batch.len(), error = %e, "audit batch failed");
        }
        for job in batch {
            let _ = job.done.send(result.clone());
        }
    }
}

/// Writes `entries` with one statement in one round trip: the app role and the first
/// tenant, pipelined with the call of [`APPEND_BATCH`] outside an explicit transaction, so
/// that the call commits as it returns. PostgreSQL runs a connection's requests in order.
async fn write(writer: &Worker, entries: &[&AuditEntry]) -> Result<(), StoreError> {
    let c = writer.pool.get().await.map_err(unavailable)?;
    if let [only] = entries {
        return append_one(&c, &writer.app_role, only).await;
    }
    let set_tenant = c.prepare_cached(SET_TENANT).await.map_err(pg_err)?;
    let append = c.prepare_cached(APPEND_BATCH).await.map_err(audit_err)?;
    // Each tenant's rows in one run: the function inserts a run under its tenant's setting
    // (row-level security checks every row against it). Stable: arrival order within one.
    let mut rows: Vec<AuditRow<'_>> = entries.iter().map(|e| AuditRow::new(e)).collect();
    rows.sort_by(|a, b| a.tenant.cmp(b.tenant));
    let timestamps: Vec<_> = rows.iter().map(|r| r.timestamp).collect();
    let actions: Vec<&str> = rows.iter().map(|r| r.action).collect();
    let secret_ids: Vec<_> = rows.iter().map(|r| r.secret_id).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant).collect();
    let user_ids: Vec<&str> = rows.iter().map(|r| r.a.user_id.as_str()).collect();
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.a.reason.as_deref()).collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    let request_ids: Vec<&str> = rows.iter().map(|r| r.a.request_id.as_str()).collect();
    let token_ids: Vec<_> = rows.iter().map(|r| r.token_id).collect();
    let contents: Vec<&[u8]> = rows.iter().map(|r| r.content.as_slice()).collect();
    let versions: Vec<Option<i64>> = rows.iter().map(|r| r.a.version).collect();
    let params: [&(dyn ToSql + Sync); 11] = [
        &timestamps,
        &actions,
        &secret_ids,
        &tenants,
        &user_ids,
        &reasons,
        &outcomes,
        &request_ids,
        &token_ids,
        &contents,
        &versions,
    ];
    let role = writer.app_role.as_str();
    let first_tenant = tenants.first().copied().unwrap_or_default();
    let set_params: [&(dyn ToSql + Sync); 2] = [&first_tenant, &role];
    tokio::try_join!(
        c.execute(&set_tenant, &set_params),
        c.query_one(&append, &params),
    )
    .map_err(audit_err)?;
    Ok(())
}
