//! PostgreSQL faults and leaks, against real `rcrt-server` processes:
//!
//! 1. At `RUST_LOG=trace` and `RUST_LOG=debug` (and with a filter naming the client's targets)
//!    the database client never logs statement parameters: neither the value, the reason, the
//!    wrapped DEK nor the sealed value (in any form a log could print them) is in the output.
//! 2. A frozen database (a TCP proxy in front of PostgreSQL that stops forwarding, as a
//!    SIGSTOPped server looks to its clients) gives 503 `store_unavailable` within 5 s and
//!    `/ready` 503 within 1 s; once it thaws, everything recovers by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::server_config;
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use serde_json::{json, Value};

fn gen_kek() -> String {
    let mut b = Vec::new();
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    STANDARD.encode(b)
}

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
struct FreezableProxy {
    port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let watch = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, watch.subscribe()));
                tokio::spawn(pump(sr, cw, watch.subscribe()));
            }
        });
        Self { port, frozen }
    }

    fn set_frozen(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

/// Copies `from` to `to`, holding every chunk while the proxy is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
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
