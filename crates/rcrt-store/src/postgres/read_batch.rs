//! Grouped reads of the decrypt path on PostgreSQL.
//!
//! Every decrypt reads one secret: a tenant setting and one statement. Under load PostgreSQL's
//! per-statement work, not the rows, was the cost: on 2 cores, 8 clients each reading one secret
//! per statement ran 18.9k reads/s, the same clients reading 8 ids per statement 57k reads/s
//! (pgbench, `docs/benchmarks.md`). Callers queue their (tenant, id) and wait; a few reader
//! tasks each take whatever is waiting (up to [`MAX_BATCH`]), read each tenant's ids with one
//! statement after that tenant's setting (row-level security checks every row against it), and
//! answer each caller with its own secret. Nothing waits for a batch to fill: a batch is
//! whatever arrived while the previous one was being read.

use std::collections::HashMap;
use std::sync::Arc;

use rcrt_types::{SecretId, TenantId};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::batching::{self, next_batch, within, Queue, Worker};
use super::{meta, pg_err, unavailable, version, SET_TENANT, VERSION_AT};
use crate::{SecretMeta, StoreError, VersionRecord};

/// Reader tasks: while one waits for PostgreSQL, the others gather and send the next batches.
const READERS: usize = 4;
/// Ids in one batch at most.
const MAX_BATCH: usize = 64;
/// Reads waiting at most; further callers wait to queue (back-pressure, within their timeout).
const QUEUE: usize = 4096;

/// [`super::GET_CURRENT`] for many ids (`$1`) of one tenant (`$2`).
const GET_CURRENT_MANY: &str =
    select_current_pg!("WHERE s.id = ANY($1) AND s.tenant = $2 AND s.deleted_at IS NULL");

/// The two parameters of [`SET_TENANT`] or of [`GET_CURRENT_MANY`].
type Params<'a> = [&'a (dyn ToSql + Sync); 2];

/// What a read finds: a live secret's metadata and current version, or nothing.
pub(super) type Found = Option<(SecretMeta, VersionRecord)>;

/// One queued read and the caller waiting for it.
struct Job {
    tenant: TenantId,
    id: SecretId,
    done: oneshot::Sender<Result<Found, StoreError>>,
}

/// The queue in front of the reader tasks. Dropping it (with its store) ends them once the queue
/// is empty.
pub(super) struct ReadBatcher {
    jobs: mpsc::Sender<Job>,
}

impl ReadBatcher {
    /// Starts the reader tasks on the current Tokio runtime.
    pub(super) fn spawn(worker: Arc<Worker>) -> Self {
        Self {
            jobs: batching::spawn(QUEUE, READERS, worker, run),
        }
    }

    /// Queues the read of `id` as `tenant` and waits for its batch. `None` when the reader tasks
    /// are gone (their runtime shut down): the caller then reads the secret itself.
    pub(super) async fn get(
        &self,
        tenant: &TenantId,
        id: SecretId,
    ) -> Option<Result<Found, StoreError>> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            tenant: tenant.clone(),
            id,
            done,
        };
        self.jobs.send(job).await.ok()?;
        Some(batching::answer(answer, "reader").await)
    }
}

async fn run(reader: Arc<Worker>, queue: Queue<Job>) {
    loop {
        let Some(batch) = next_batch(&queue, MAX_BATCH).await else {
            return;
        };
        // A caller that gave up (its own timeout) needs no answer.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.done.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        let result = within(reader.limit, read(&reader, &batch)).await;
        match result {
            Ok(found) => {
                for job in batch {
                    // An id asked twice in one batch: each caller gets its copy.
                    let row = found.get(&(job.tenant.clone(), job.id)).cloned().flatten();
                    let _ = job.done.send(Ok(row));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Reads every job's secret in one round trip: per tenant, its setting and one statement for
/// its ids (PostgreSQL runs a connection's requests in order). Every job has an entry in the
/// answer, `None` when its secret was not found.
async fn read(
    reader: &Worker,
    batch: &[Job],
) -> Result<HashMap<(TenantId, SecretId), Found>, StoreError> {
    let c = reader.pool.get().await.map_err(unavailable)?;
    let set_tenant = c.prepare_cached(SET_TENANT).await.map_err(pg_err)?;
    let select = c.prepare_cached(GET_CURRENT_MANY).await.map_err(pg_err)?;
    let mut by_tenant: HashMap<&str, Vec<uuid::Uuid>> = HashMap::new();
    for job in batch {
        by_tenant
            .entry(job.tenant.as_str())
            .or_default()
            .push(job.id.as_uuid());
    }
    let role = reader.app_role.as_str();
    let params: Vec<(Params<'_>, Params<'_>)> = by_tenant
        .iter()
        .map(|(tenant, ids)| -> (Params<'_>, Params<'_>) { ([tenant, &role], [ids, tenant]) })
        .collect();
    let pending = params.iter().map(|(set, select_params)| {
        let set = c.execute(&set_tenant, set);
        let rows = c.query(&select, select_params);
        async move { tokio::try_join!(set, rows).map(|(_, rows)| rows) }
    });
    let answers = futures_util::future::try_join_all(pending)
        .await
        .map_err(pg_err)?;
    let mut found: HashMap<(TenantId, SecretId), Found> = batch
        .iter()
        .map(|j| ((j.tenant.clone(), j.id), None))
        .collect();
    for rows in answers {
        for row in rows {
            let m = meta(&row)?;
            let v = version(&row, VERSION_AT)?;
            found.insert((m.tenant.clone(), m.id), Some((m, v)));
        }
    }
    Ok(found)
}
