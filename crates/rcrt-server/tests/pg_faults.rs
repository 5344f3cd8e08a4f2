//! PostgreSQL faults and leaks, against real `rcrt-server` processes:
//!
//! 1. At `RUST_LOG=trace` and `RUST_LOG=debug` (and with a filter naming the client's targets)
//!    the database client never logs statement parameters: neither the value, the reason, the
//!    wrapped DEK nor the sealed value (in any form a log could print them) is in the output.
//! 2. A frozen database (a TCP proxy in front of PostgreSQL that stops forwarding, as a
//!    SIGSTOPped server looks to its clients) gives 503 `store_unavailable` within 5 s and
//!    `/ready` 503 within 1 s; once it thaws, everything recovers by itself.
//! 3. A stopped database under load (every connection closed, new ones refused) gives 503 to
//!    every request during the outage, none slower than 5 s, and recovers once it is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::server_config;
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use serde_json::{json, Value};

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The forms a log line could print `bytes` in: hex (both cases, with PostgreSQL's `\x`), and
/// Rust's `Debug` of a byte slice (`[1, 2, 3]`), plus base64.
fn byte_forms(bytes: &[u8]) -> Vec<String> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let debug = format!("{bytes:?}");
    vec![
        hex.clone(),
        hex.to_uppercase(),
        format!("\\\\x{hex}"),
        // A long enough piece of the Debug list that it cannot occur by chance.
        debug[..debug.len().min(60)].to_owned(),
        STANDARD.encode(bytes),
    ]
}

async fn log_leak_check(level: &str) {
    let db = TempPgDb::create().await;
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        Some(&db),
        &dir,
        &[("LOCAL_KEK_BASE64", &kek), ("RUST_LOG", level)],
    ));
    let base = server.base_url();
    let value = format!("leakvalue{}", uuid::Uuid::new_v4().simple());
    let reason = format!("leakreason{}", uuid::Uuid::new_v4().simple());
    let (status, created) = post(
        &base,
        "/secrets",
        json!({"name": "LEAK", "value": value, "scope_type": "global"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, out) = post(
        &base,
        &format!("/secrets/{id}/decrypt"),
        json!({ "reason": reason }),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["value"], value.as_str());

    // The stored blobs, read straight from the database.
    let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT wrapped_dek, sealed_value FROM secret_versions WHERE secret_id = $1",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap();
    let wrapped: Vec<u8> = row.get(0);
    let sealed: Vec<u8> = row.get(1);
    drop(client);

    let output = server.output();
    // The server really logged verbosely (nothing here logs at trace unless a client is
    // allowed to, so DEBUG lines are what shows the level in effect).
    assert!(
        output.contains("DEBUG"),
        "no DEBUG lines: RUST_LOG={level} not in effect:\n{output}"
    );
    let mut needles = vec![("the value", value.clone()), ("the reason", reason.clone())];
    for f in byte_forms(&wrapped) {
        needles.push(("the wrapped DEK", f));
    }
    for f in byte_forms(&sealed) {
        needles.push(("the sealed value", f));
    }
    let mut found: Vec<String> = needles
        .iter()
        .filter(|(_, n)| output.contains(n.as_str()))
        .map(|(what, n)| format!("{what} ({n})"))
        .collect();
    if output.contains("with parameters") {
        found.push("statement parameters".into());
    }
    assert!(
        found.is_empty(),
        "in the server output at RUST_LOG={level}: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parameters_in_logs_at_trace() {
    log_leak_check("trace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parameters_in_logs_at_debug() {
    log_leak_check("debug").await;
}

/// A filter that names the client's query target explicitly does not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parameters_in_logs_when_the_filter_names_the_client() {
    log_leak_check("debug,tokio_postgres::query=trace,tokio_postgres[]=trace").await;
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that can be frozen: while frozen it accepts
/// connections and reads what either side sends but forwards nothing, which is what a
/// SIGSTOPped PostgreSQL looks like to its clients (the kernel still accepts and acknowledges).
/// It can also be stopped: every connection through it is closed and new ones are closed at
/// once, which is what a stopped (or restarting) PostgreSQL looks like.
struct FreezableProxy {
    port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
    stopped: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let (stopped, _) = tokio::sync::watch::channel(false);
        let (watch, stop_watch) = (frozen.clone(), stopped.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *stop_watch.borrow() {
                    continue; // dropped: the client sees the connection closed
                }
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, watch.subscribe(), stop_watch.subscribe()));
                tokio::spawn(pump(sr, cw, watch.subscribe(), stop_watch.subscribe()));
            }
        });
        Self {
            port,
            frozen,
            stopped,
        }
    }

    fn set_stopped(&self, stopped: bool) {
        self.stopped.send_replace(stopped);
    }

    fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

/// Copies `from` to `to`, holding every chunk while the proxy is frozen, and closing both
/// when it is stopped.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host:port replaced by 127.0.0.1:`port`; also returns the old host:port.
fn via_proxy(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (user, hostport) = authority.rsplit_once('@').unwrap();
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    (
        format!("{scheme}://{user}@127.0.0.1:{port}/{path}"),
        hostport,
    )
}

async fn timed_request(rb: reqwest::RequestBuilder) -> (Duration, u16, Value) {
    let t = Instant::now();
    let r = rb.timeout(Duration::from_secs(15)).send().await;
    let elapsed = t.elapsed();
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (elapsed, status, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (elapsed, 0, json!({ "client_error": e.to_string() })),
    }
}

/// The fault run: PostgreSQL frozen under requests, then thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_database_gives_503_within_bounds_and_recovers() {
    let db = TempPgDb::create().await;
    // Migrate the database directly, so the server's start-up is quick either way.
    drop(rcrt_store::PgStore::connect(db.url()).await.unwrap());
    let (_, upstream) = via_proxy(db.url(), 0);
    let proxy = FreezableProxy::start(upstream).await;
    let (proxied, _) = via_proxy(db.url(), proxy.port);
    let dir = TempDir::new();
    let kek = gen_kek();
    let mut cfg = server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]);
    cfg.env.push(("DB_URL".into(), proxied));
    let server = ServerProcess::start(&cfg);
    let base = server.base_url();
    let http = reqwest::Client::new();
    let (status, created) = post(
        &base,
        "/secrets",
        json!({"name": "FROZEN", "value": "v1", "scope_type": "global"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let decrypt = || {
        http.post(format!("{base}/secrets/{id}/decrypt"))
            .json(&json!({"reason": "fault run"}))
    };
    assert_eq!(timed_request(decrypt()).await.1, 200);

    proxy.set_frozen(true);
    let mut calls = Vec::new();
    for _ in 0..6 {
        calls.push(tokio::spawn(timed_request(decrypt())));
    }
    calls.push(tokio::spawn(timed_request(
        http.post(format!("{base}/secrets"))
            .json(&json!({"name": "WHILE-FROZEN", "value": "v", "scope_type": "global"})),
    )));
    let ready = tokio::spawn(timed_request(http.get(format!("{base}/ready"))));
    let health = timed_request(http.get(format!("{base}/health"))).await;
    assert_eq!(health.1, 200, "/health while frozen: {health:?}");
    let (t, status, body) = ready.await.unwrap();
    assert_eq!(status, 503, "/ready while frozen: {body}");
    assert!(t < Duration::from_secs(1), "/ready took {t:?} while frozen");
    for c in calls {
        let (t, status, body) = c.await.unwrap();
        assert_eq!(status, 503, "while frozen: {body}");
        assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
        assert!(
            t <= Duration::from_secs(5),
            "a request took {t:?} while frozen"
        );
    }
    // Later requests (the pool's connections all wait on the frozen server) are bounded too.
    let (t, status, _) = timed_request(decrypt()).await;
    assert_eq!(status, 503);
    assert!(t <= Duration::from_secs(5), "a later request took {t:?}");

    proxy.set_frozen(false);
    let thawed = Instant::now();
    loop {
        let ready = timed_request(http.get(format!("{base}/ready"))).await.1;
        let dec = timed_request(decrypt()).await.1;
        if ready == 200 && dec == 200 {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(10),
            "not recovered 10 s after the thaw: /ready {ready}, decrypt {dec}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the thaw", thawed.elapsed());
    assert!(!server.output().contains("panicked"));
}

/// PostgreSQL stopped under load (every connection closed, new ones refused), then started
/// again: requests answer 503 quickly, never hang, and everything recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_database_under_load_gives_503_and_recovers() {
    let db = TempPgDb::create().await;
    drop(rcrt_store::PgStore::connect(db.url()).await.unwrap());
    let (_, upstream) = via_proxy(db.url(), 0);
    let proxy = FreezableProxy::start(upstream).await;
    let (proxied, _) = via_proxy(db.url(), proxy.port);
    let dir = TempDir::new();
    let kek = gen_kek();
    let mut cfg = server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]);
    cfg.env.push(("DB_URL".into(), proxied));
    let server = ServerProcess::start(&cfg);
    let base = server.base_url();
    let (status, created) = post(
        &base,
        "/secrets",
        json!({"name": "STOPPED", "value": "v1", "scope_type": "global"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(Instant, Duration, u16)>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (base, id, stop, results) = (base.clone(), id.clone(), stop.clone(), results.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let rb = if n % 3 == 0 {
                        http.post(format!("{base}/secrets")).json(
                            &json!({"name": format!("load-{w}-{n}"), "value": "v", "scope_type": "global"}),
                        )
                    } else {
                        http.post(format!("{base}/secrets/{id}/decrypt"))
                            .json(&json!({"reason": "load"}))
                    };
                    let (t, status, _) = timed_request(rb).await;
                    results.lock().unwrap().push((Instant::now(), t, status));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.set_stopped(true);
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (t, status, _) = timed_request(reqwest::Client::new().get(format!("{base}/ready"))).await;
    assert_eq!(status, 503, "/ready while stopped");
    assert!(t < Duration::from_secs(1), "/ready took {t:?}");
    proxy.set_stopped(false);
    let started_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let results = results.lock().unwrap().clone();
    let during = |a: Instant, b: Instant| {
        results
            .iter()
            .filter(move |(end, _, _)| *end > a && *end < b)
    };
    for (_, t, status) in &results {
        assert!(matches!(status, 200 | 201 | 503), "status {status}");
        assert!(*t <= Duration::from_secs(5), "a request took {t:?}");
    }
    let outage: Vec<_> = during(stopped_at + Duration::from_millis(500), started_at).collect();
    assert!(
        !outage.is_empty() && outage.iter().all(|(_, _, s)| *s == 503),
        "{outage:?}"
    );
    let recovered: Vec<_> =
        during(started_at + Duration::from_millis(1500), Instant::now()).collect();
    assert!(
        !recovered.is_empty() && recovered.iter().all(|(_, _, s)| *s != 503),
        "not recovered 1.5 s after the start: {recovered:?}"
    );
    eprintln!(
        "{} requests; {} during the outage (all 503), {} after recovery (all 2xx)",
        results.len(),
        outage.len(),
        recovered.len()
    );
    assert!(!server.output().contains("panicked"));
}
