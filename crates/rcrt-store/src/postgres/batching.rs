//! What the batching tasks of [`super::audit_batch`] and [`super::read_batch`] share: taking
//! whatever is waiting from their queue, and bounding one batch's work.

use std::future::Future;
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
