//! The background re-wrap leaves audit rows: start, progress, end, over a real SQLite store;
//! a start row that cannot be written stops the pass before any version changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcrt_core::maintenance::Maintenance;
use rcrt_core::rewrap_job::{RewrapJob, RewrapSettings, RewrapState, RewrapStatus};
use rcrt_core::{CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{AuditRecord, SqliteStore, Store};
use rcrt_types::{Principal, Scope};
use zeroize::Zeroizing;

fn kek(b: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([b; 32]))
}

async fn wait_for(job: &RewrapJob, what: &str, ok: impl Fn(&RewrapStatus) -> bool) -> RewrapStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = job.status().await.unwrap();
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn seeded(n: usize) -> (rcrt_testkit::TempDir, std::path::PathBuf, Arc<dyn Store>) {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    let svc = Service::new(
        store.clone(),
        Arc::new(LocalKeyring::new(kek(1), vec![])),
        Arc::new(SystemClock),
        Limits::default(),
    );
    let ctx = RequestContext {
        principal: Principal::anonymous(),
        request_id: "seed".into(),
    };
    for i in 0..n {
        svc.create(
            &ctx,
            CreateSecret {
                name: format!("S{i}").parse().unwrap(),
                scope: Scope::global(),
                value: Zeroizing::new("v".into()),
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    }
    (dir, path, store)
}

fn job_over(store: Arc<dyn Store>, batch_size: u32) -> Arc<RewrapJob> {
    RewrapJob::new(
        Arc::new(Maintenance::new(
            store,
            Arc::new(LocalKeyring::new(kek(2), vec![kek(1)])),
            Arc::new(SystemClock),
        )),
        RewrapSettings {
            batch_size,
            max_rows_per_sec: 0,
            auto_start: false,
            poll: Duration::from_millis(50),
            lease_ttl: Duration::from_secs(30),
        },
    )
}

fn rows_of<'a>(all: &'a [AuditRecord], action: &str) -> Vec<&'a AuditRecord> {
    all.iter().filter(|r| r.action == action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_writes_start_progress_and_end_rows() {
    let (_dir, _path, store) = seeded(120).await;
    let current = kek(2).id().clone();
    let job = job_over(store.clone(), 1);
    let handle = job.spawn();
    job.trigger();
    let done = wait_for(&job, "completed", |s| s.state == RewrapState::Completed).await;
    assert_eq!((done.remaining, done.rewrapped_total), (0, 120), "{done:?}");
    handle.abort();

    // Oldest first.
    let mut all = store.list_audit(None, 1000).await.unwrap();
    all.reverse();
    let start = rows_of(&all, "rewrap_start");
    let progress = rows_of(&all, "rewrap_progress");
    let end = rows_of(&all, "rewrap_end");
    assert_eq!((start.len(), end.len()), (1, 1), "{all:#?}");
    // 120 batches of one version: a progress row every 50 batches at least.
    assert!(progress.len() >= 2, "{progress:#?}");
    let (start, end) = (start[0], end[0]);
    let reason = start.reason.as_deref().unwrap();
    assert!(reason.contains(current.as_str()), "{reason}");
    assert!(reason.contains("120 versions to do"), "{reason}");
    assert!(reason.contains("recovery KEK none"), "{reason}");
    assert!(
        progress
            .iter()
            .any(|p| p.reason.as_deref().unwrap().contains("50 re-wrapped")),
        "{progress:#?}"
    );
    let reason = end.reason.as_deref().unwrap();
    assert!(reason.contains("120 re-wrapped, 0 failed"), "{reason}");
    assert_eq!(end.outcome, "success");
    // One pass: one request id, one actor; rows in order, no secret named.
    assert!(start.request_id.starts_with("rewrap-"), "{start:?}");
    for r in progress.iter().chain([&start, &end]) {
        assert_eq!(r.request_id, start.request_id);
        assert!(r.user_id.starts_with("rcrt-server@"), "{r:?}");
        assert_eq!((r.tenant.as_str(), r.secret_id), ("default", None));
    }
    assert!(start.id < progress[0].id && progress.last().unwrap().id < end.id);
}

/// Fail closed: when the start row cannot be written, no version is re-wrapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_row_that_cannot_be_written_stops_the_pass() {
    let (_dir, path, store) = seeded(3).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER no_rewrap_rows BEFORE INSERT ON secret_access_log
           WHEN NEW.action = 'rewrap_start'
         BEGIN SELECT RAISE(ABORT, 'audit down'); END;",
    )
    .unwrap();
    let job = job_over(store.clone(), 10);
    let handle = job.spawn();
    job.trigger();
    let failed = wait_for(&job, "failed", |s| s.state == RewrapState::Failed).await;
    assert_eq!(
        (failed.remaining, failed.rewrapped_total),
        (3, 0),
        "{failed:?}"
    );
    handle.abort();
    let all = store.list_audit(None, 1000).await.unwrap();
    assert!(rows_of(&all, "rewrap_end").is_empty(), "{all:#?}");
}
