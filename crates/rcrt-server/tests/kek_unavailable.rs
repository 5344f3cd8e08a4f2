//! A running `rcrt-server` that holds only K1 while its store is re-wrapped to K2 underneath it
//! (an offline `rcrt kek rewrap` with the store shared, driven here through the core's
//! `Maintenance`, as the CLI does), on SQLite and on PostgreSQL:
//!
//! * decrypts and vault reads answer 503 `kek_unavailable` naming K2's id, never
//!   500 `decrypt_failed`; each is audited as a failure;
//! * `/ready` answers 503 `kek_unavailable` naming K2's id;
//! * `/metrics`: `rcrt_kek_unavailable_total` counts them, `rcrt_secret_decrypt_failures`
//!   does not, `rcrt_kek_configured` is 0;
//! * the background re-wrap reports `failed` without retrying those rows every poll;
//! * restarted with K2, everything reads again and `/ready` is 200.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::http::{client, create_ok, kek_status, metric, metrics, send};
use common::{server_config, Backend};
use rcrt_core::maintenance::{Maintenance, NoHook};
use rcrt_core::SystemClock;
use rcrt_crypto::Kek;
use rcrt_keys::LocalKeyring;
use rcrt_store::{PgStore, SqliteStore, Store};
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use serde_json::json;
use zeroize::Zeroizing;

/// A fresh KEK: its base64 (for the server) and the key (for the offline job).
fn gen_kek() -> (String, Kek) {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    (
        STANDARD.encode(bytes),
        Kek::from_bytes(Zeroizing::new(bytes)),
    )
}

async fn open_store(pg: Option<&TempPgDb>, dir: &TempDir) -> Arc<dyn Store> {
    match pg {
        Some(pg) => Arc::new(PgStore::connect(pg.url()).await.unwrap()),
        None => Arc::new(
            SqliteStore::open(dir.path().join("rcrt.db").to_str().unwrap())
                .await
                .unwrap(),
        ),
    }
}

async fn kek_rewrapped_underneath(backend: Backend) {
    let pg = backend.database().await;
    let dir = TempDir::new();
    let (k1_b64, k1) = gen_kek();
    let (k2_b64, k2) = gen_kek();
    let http = client("kek test");
    let k2_id = k2.id().as_str().to_owned();
    let server = ServerProcess::start(&server_config(
        pg.as_ref(),
        &dir,
        &[("LOCAL_KEK_BASE64", &k1_b64), ("AUTH_MODE", "disabled")],
    ));
    let base = server.base_url();
    let id = create_ok(&http, &base, "db-password", "s3cret").await;
    let (status, body) = send(
        http.post(format!("{base}/secrets/vaults"))
            .json(&json!({"workspace": "w1", "name": "payments", "secrets": {"KEY": "kv"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = send(http.get(format!("{base}/ready"))).await;
    assert_eq!(status, 200);

    // The offline re-wrap to K2 (K1 as old), on the store the server is using.
    let store = open_store(pg.as_ref(), &dir).await;
    let offline = Maintenance::new(
        store.clone(),
        Arc::new(LocalKeyring::new(k2, vec![k1])),
        Arc::new(SystemClock),
    );
    let (progress, failures) = offline.rewrap(100, &NoHook).await.unwrap();
    assert_eq!((progress.changed, failures.len()), (2, 0));

    // Decrypt: 503 naming K2, never 500.
    let (status, body) = send(
        http.post(format!("{base}/secrets/{id}/decrypt"))
            .json(&json!({"reason": "after the re-wrap"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&k2_id), "{message}");
    assert!(!body.to_string().contains("s3cret"), "{body}");
    // The vault read too.
    let (status, body) = send(http.get(format!("{base}/secrets/vault/payments"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&k2_id),
        "{body}"
    );
    // Audited as a failure, with the reason.
    let rows = store
        .list_audit(Some(id.parse().unwrap()), 10)
        .await
        .unwrap();
    assert_eq!(
        (
            rows[0].action.as_str(),
            rows[0].outcome.as_str(),
            rows[0].reason.as_deref()
        ),
        ("decrypt", "failure", Some("after the re-wrap"))
    );

    // /ready: 503 naming K2, once the census (at most 5 s old) has seen the re-wrap.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = send(http.get(format!("{base}/ready"))).await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "/ready stayed 200");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{k2_id} (2 versions)")),
        "{message}"
    );

    // The background re-wrap (K1 current) cannot touch K2's rows: its status says failed, with
    // those versions, and it does not retry them row by row every poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = kek_status(&http, &base).await;
        if status["rewrap"]["state"] == "failed" {
            break status;
        }
        assert!(Instant::now() < deadline, "re-wrap never failed: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["rewrap"]["failed"], 2, "{status}");
    assert_eq!(status["versions_per_kek"][&k2_id], 2, "{status}");
    assert!(
        !server
            .output()
            .contains("version could not be unwrapped with the configured KEKs"),
        "{}",
        server.output()
    );

    // Metrics: counted apart from decrypt failures; the KEK gauge is 0.
    let text = metrics(&http, &base).await;
    assert_eq!(metric(&text, "rcrt_kek_unavailable_total"), 2.0, "{text}");
    assert_eq!(metric(&text, "rcrt_secret_decrypt_failures"), 0.0, "{text}");
    assert_eq!(metric(&text, "rcrt_kek_configured"), 0.0, "{text}");
    let log = server.output();
    assert!(
        log.contains("a stored DEK is wrapped under a KEK this server does not hold")
            && log.contains(&k2_id),
        "{log}"
    );
    assert!(!log.contains(&k1_b64) && !log.contains(&k2_b64));
    drop(server);

    // Restarted with K2, everything reads again.
    let server = ServerProcess::start(&server_config(
        pg.as_ref(),
        &dir,
        &[("LOCAL_KEK_BASE64", &k2_b64), ("AUTH_MODE", "disabled")],
    ));
    let base = server.base_url();
    let (status, body) = send(
        http.post(format!("{base}/secrets/{id}/decrypt"))
            .json(&json!({"reason": "with K2"})),
    )
    .await;
    assert_eq!((status, body["value"].as_str()), (200, Some("s3cret")));
    let (status, body) = send(http.get(format!("{base}/ready"))).await;
    assert_eq!(
        (status, body["kek_id"].as_str()),
        (200, Some(k2_id.as_str()))
    );
    assert_eq!(
        metric(&metrics(&http, &base).await, "rcrt_kek_configured"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rewrapped_underneath_sqlite() {
    kek_rewrapped_underneath(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rewrapped_underneath_postgres() {
    kek_rewrapped_underneath(Backend::Postgres).await;
}
