//! The real `rcrt-server` on its default SQLite store, under the load the fault-injection run
//! used: concurrent PUTs of one secret queue rather than fail, and the database files the
//! server creates are 0600.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

#[allow(dead_code)]
mod common;
use common::server_config;

fn kek() -> String {
    let bytes: Vec<u8> = (0..2)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .collect();
    STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_puts_on_one_secret_all_succeed_and_files_are_private() {
    let dir = TempDir::new();
    let kek = kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[("LOCAL_KEK_BASE64", &kek), ("RUST_LOG", "info")],
    ));
    let base = server.base_url();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/secrets"))
        .json(&json!({"name": "HOT", "value": "v1", "scope_type": "global"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // 50 PUTs without If-Match at once: each must be a 200 with its own new version.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, url) = (http.clone(), format!("{base}/secrets/{id}"));
        tasks.push(tokio::spawn(async move {
            let r = http
                .put(url)
                .json(&json!({ "value": format!("value {i}") }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_eq!(status, 200, "PUT {i}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()["version"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=51).collect::<Vec<_>>());
    let current: Value = http
        .get(format!("{base}/secrets/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["version"], 51);
    let log = server.output();
    assert!(!log.contains("request failed"), "{log}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for name in ["rcrt.db", "rcrt.db-wal", "rcrt.db-shm"] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
}

/// SQLite held by another process (an open write transaction, as a backup tool or a stuck
/// admin session would) under decrypt, create and read load for 6 s, longer than the 5 s busy
/// timeout: reads keep working, writes (decrypts write their audit row) wait and then answer 503
/// `store_unavailable`, nothing hangs or fails otherwise, and everything recovers once the lock
/// goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_locked_by_another_process_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let dir = TempDir::new();
    let kek = kek();
    let server = ServerProcess::start(&server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]));
    let base = server.base_url();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/secrets"))
        .json(&json!({"name": "LOCKED", "value": "v1", "scope_type": "global"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    // (kind, finished at, took, status)
    type Outcome = (&'static str, Instant, Duration, u16);
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (base, id, stop, results, http) =
                (base.clone(), id.clone(), stop.clone(), results.clone(), http.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Workers 6 and 7 only read, so reads are not stuck behind a worker's write.
                    let pick = if w >= 6 { 2 } else { n % 3 };
                    let (kind, rb) = match pick {
                        0 => ("create", http.post(format!("{base}/secrets")).json(
                            &json!({"name": format!("l-{w}-{n}"), "value": "v", "scope_type": "global"}),
                        )),
                        1 => ("decrypt", http
                            .post(format!("{base}/secrets/{id}/decrypt"))
                            .json(&json!({"reason": "load"}))),
                        _ => ("read", http.get(format!("{base}/secrets/{id}"))),
                    };
                    let t = Instant::now();
                    let status = rb
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    results.lock().unwrap().push((kind, Instant::now(), t.elapsed(), status));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Another process takes SQLite's write lock and sits on it.
    let db = dir.path().join("rcrt.db");
    let locked_at = Instant::now();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_secs(6));
        conn.execute_batch("COMMIT").unwrap();
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(health, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        t.elapsed()
    );
    tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    let released_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let results = results.lock().unwrap().clone();
    for (kind, _, took, status) in &results {
        assert!(matches!(status, 200 | 201 | 503), "{kind}: status {status}");
        // At most one busy timeout of waiting behind the lock, plus the batch ahead of it.
        assert!(*took < Duration::from_secs(11), "{kind} took {took:?}");
    }
    let in_window = |a: Instant, b: Instant| {
        results
            .iter()
            .filter(move |(_, end, _, _)| *end > a && *end < b)
    };
    let reads: Vec<_> = in_window(locked_at + Duration::from_millis(200), released_at)
        .filter(|r| r.0 == "read")
        .collect();
    assert!(
        !reads.is_empty() && reads.iter().all(|r| r.3 == 200),
        "reads during the lock: {reads:?}"
    );
    assert!(
        results.iter().any(|r| r.3 == 503),
        "no write gave up during a 6 s lock (busy timeout 5 s)"
    );
    let after: Vec<_> = in_window(released_at + Duration::from_secs(1), Instant::now()).collect();
    assert!(
        !after.is_empty() && after.iter().all(|r| r.3 != 503),
        "not recovered: {after:?}"
    );
    eprintln!(
        "{} requests, {} answered 503 during the lock, {} after it (all 2xx)",
        results.len(),
        results.iter().filter(|r| r.3 == 503).count(),
        after.len()
    );
    assert!(!server.output().contains("panicked"));
}
