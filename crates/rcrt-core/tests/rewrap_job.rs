//! The background re-wrap's status after a database blip, over a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcrt_core::maintenance::Maintenance;
use rcrt_core::rewrap_job::{RewrapJob, RewrapSettings, RewrapState, RewrapStatus};
use rcrt_core::{CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{SqliteStore, Store};
use rcrt_types::{Principal, Scope};
use zeroize::Zeroizing;

fn kek(b: u8) -> Kek {
    Kek::from_bytes(Zeroizing::new([b; 32]))
}

async fn wait_for(job: &RewrapJob, what: &str, ok: impl Fn(&RewrapStatus) -> bool) -> RewrapStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = job.status().await.unwrap();
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store fails once, right after the last batch committed (renewing the lease): nothing is
/// left to do, so the status must say `completed`, not stay at `failed`; and with work left, the
/// job resumes by itself once the store answers again, even when it was started by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_blip_does_not_leave_the_status_at_failed() {
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
        request_id: "r1".into(),
    };
    for i in 0..5 {
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
    let conn = rusqlite::Connection::open(&path).unwrap();
    let job_over = |store: Arc<dyn Store>| {
        RewrapJob::new(
            Arc::new(Maintenance::new(
                store,
                Arc::new(LocalKeyring::new(kek(2), vec![kek(1)])),
                Arc::new(SystemClock),
            )),
            RewrapSettings {
                batch_size: 1000,
                max_rows_per_sec: 0,
                auto_start: false,
                poll: Duration::from_millis(50),
                lease_ttl: Duration::from_secs(30),
            },
        )
    };

    // 1. Every row is re-wrapped in the first batch; renewing the lease afterwards fails.
    conn.execute_batch(
        "CREATE TRIGGER blip BEFORE UPDATE ON rcrt_leases BEGIN SELECT RAISE(ABORT, 'blip'); END;",
    )
    .unwrap();
    let job = job_over(store.clone());
    let handle = job.spawn();
    job.trigger();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Maintenance::new(
        store.clone(),
        Arc::new(LocalKeyring::new(kek(2), vec![kek(1)])),
        Arc::new(SystemClock),
    )
    .remaining()
    .await
    .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "the batch never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the job time to hit the failing renewal and to poll again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.execute_batch("DROP TRIGGER blip").unwrap();
    let status = job.status().await.unwrap();
    assert_eq!(
        (status.state, status.remaining, status.failed),
        (RewrapState::Completed, 0, 0),
        "{status:?}"
    );
    assert_eq!(status.rewrapped_total, 5);
    handle.abort();

    // 2. With work left, a failing batch leaves `failed`; the job resumes by itself once the
    // store answers, although it was started by hand (auto_start off).
    svc.update(
        &ctx,
        svc.list(&ctx, None, None, None, None).await.unwrap().items[0].id,
        Zeroizing::new("v2".into()),
        None,
    )
    .await
    .unwrap(); // a version under KEK 1 (the service still writes with it)
    conn.execute_batch(
        "CREATE TRIGGER blip BEFORE UPDATE ON secret_versions BEGIN SELECT RAISE(ABORT, 'blip'); END;",
    )
    .unwrap();
    let job = job_over(store.clone());
    let handle = job.spawn();
    job.trigger();
    let failed = wait_for(&job, "failed", |s| s.state == RewrapState::Failed).await;
    assert_eq!(failed.remaining, 1, "{failed:?}");
    conn.execute_batch("DROP TRIGGER blip").unwrap();
    let done = wait_for(&job, "completed", |s| s.state == RewrapState::Completed).await;
    assert_eq!((done.remaining, done.failed), (0, 0), "{done:?}");
    handle.abort();
}

/// Unauthenticated `/metrics` and `/ready` read the cached backlog census: many callers
/// arriving together after it expires share one read instead of each running their own, and
/// none of them scans the versions table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cached_status_reads_share_one_scan() {
    let dir = rcrt_testkit::TempDir::new();
    let path = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).await.unwrap());
    let job = RewrapJob::new(
        Arc::new(Maintenance::new(
            store,
            Arc::new(LocalKeyring::new(kek(1), vec![])),
            Arc::new(SystemClock),
        )),
        RewrapSettings {
            auto_start: false,
            ..RewrapSettings::default()
        },
    );
    let reads = (0..64).map(|_| {
        let job = job.clone();
        tokio::spawn(async move { job.status_cached(Duration::from_secs(60)).await })
    });
    for read in reads.collect::<Vec<_>>() {
        read.await.unwrap().unwrap();
    }
    assert_eq!(job.backlog_reads(), 1);
    // An uncached status (the operator's GET /admin/kek/status) always reads the backlog again.
    job.status().await.unwrap();
    assert_eq!(job.backlog_reads(), 2);
    assert_eq!(job.census_scans(), 0);
}

/// The automatic checks (the re-wrap poll, the status, `/metrics`, `/ready`) read only the
/// versions not under the current KEK, never the whole table: with every version under the
/// current KEK (the normal state) and the poll running, no full census is taken. Before, each
/// poll and each expired cache ran `kek_usage()`, a scan of every version. The operator's full
/// census still counts everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_checks_never_scan_the_versions_table() {
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
        request_id: "r1".into(),
    };
    for i in 0..3 {
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
    svc.check_keks().await.unwrap();
    let job = RewrapJob::new(
        Arc::new(Maintenance::new(
            store,
            Arc::new(LocalKeyring::new(kek(1), vec![])),
            Arc::new(SystemClock),
        )),
        RewrapSettings {
            auto_start: true,
            poll: Duration::from_millis(5),
            ..RewrapSettings::default()
        },
    );
    let handle = job.spawn();
    // Wait for several polls by the count of backlog reads, not by the clock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while job.backlog_reads() < 5 {
        assert!(Instant::now() < deadline, "the poll never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = job.status().await.unwrap();
    assert_eq!((status.state, status.remaining), (RewrapState::Idle, 0));
    job.status_cached(Duration::ZERO).await.unwrap();
    assert!(job
        .unheld_keks_cached(Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    job.check_keks_cached(Duration::ZERO).await.unwrap();
    assert_eq!(
        job.census_scans(),
        0,
        "an automatic check scanned the table"
    );
    handle.abort();

    // The operator's full census counts every version, and is never older than the call: a
    // version written before the call is in its answer.
    let total = |usage: &[rcrt_store::KekUsage]| usage.iter().map(|u| u.versions).sum::<i64>();
    assert_eq!(total(&job.kek_usage().await.unwrap()), 3);
    assert_eq!(job.census_scans(), 1);
    svc.create(
        &ctx,
        CreateSecret {
            name: "S3".parse().unwrap(),
            scope: Scope::global(),
            value: Zeroizing::new("v".into()),
            attrs: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(total(&job.kek_usage().await.unwrap()), 4);
    assert_eq!(job.census_scans(), 2);
}
