//! What the batching tasks of [`super::audit_batch`] and [`super::read_batch`] share: taking
//! whatever is waiting from their queue, and bounding one batch's work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use crate::StoreError;

/// Waits for a job, then takes whatever else is already waiting, up to `max` in all: nothing
/// waits for a batch to fill. `None` once the queue is closed and empty. Tasks sharing the
/// queue take turns: one gathers while the others work.
pub(super) async fn next_batch<J>(queue: &Mutex<mpsc::Receiver<J>>, max: usize) -> Option<Vec<J>> {
    let mut queue = queue.lock().await;
    let first = queue.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// `work`, or [`StoreError::Unavailable`] once `limit` has passed, like any store operation.
pub(super) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "PostgreSQL did not answer within {limit:?}"
        )))
    })
}

/// What every task of the batchers shares.
pub(super) struct Worker {
    pub(super) pool: deadpool_postgres::Pool,
    /// The request path's role (migration 0004).
    pub(super) app_role: String,
    /// One batch as a whole, like any store operation.
    pub(super) limit: Duration,
}

/// The receiving end of a batcher's queue, shared by its tasks.
pub(super) type Queue<J> = Arc<Mutex<mpsc::Receiver<J>>>;

/// Starts `tasks` tasks running `run` over one queue of `capacity` jobs, on the current Tokio
/// runtime. Dropping the returned sender (with its store) ends them once the queue is empty.
pub(super) fn spawn<J, F, Fut>(
    capacity: usize,
    tasks: usize,
    worker: Arc<Worker>,
    run: F,
) -> mpsc::Sender<J>
where
    J: Send + 'static,
    F: Fn(Arc<Worker>, Queue<J>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (jobs, queue) = mpsc::channel(capacity);
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..tasks {
        tokio::spawn(run(worker.clone(), queue.clone()));
    }
    jobs
}

/// A queued caller's answer; [`StoreError::Unavailable`] if the `task` dropped the job first.
pub(super) async fn answer<T>(
    rx: tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
    task: &str,
) -> Result<T, StoreError> {
    rx.await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "the {task} stopped before answering"
        )))
    })
}
