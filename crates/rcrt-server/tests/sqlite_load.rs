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
