//! The real server with `KEK_PROVIDER=azure-keyvault`, against the Key Vault stand-in of
//! `rcrt-testkit` (`peers::azure_standin`: loopback HTTP following Key Vault's published REST
//! API 7.4 and Azure AD's client-credentials token endpoint; no real Key Vault runs here):
//!
//! * the full flow: secrets written and decrypted with the KEK in Key Vault, the KEK id named
//!   in `/ready` and `/admin/kek/status`, the client secret never in the server's output;
//! * a Key Vault rotation (a new key version) mid-run: old and new secrets decrypt;
//! * an outage mid-traffic (503 from the vault, then a vault that stops answering): writes and decrypts answer 503
//!   `kek_unavailable`, `/ready` 503, `rcrt_kek_configured` 0, nothing written or lost, and
//!   all recover without a restart once the vault answers again;
//! * a disabled key: 503 `kek_unavailable` until it is enabled again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::http::{
    client, create, create_ok, decrypt, kek_status, metric, metrics, send, start, verify_all,
};
use common::outage::FAST_PROVIDER;
use rcrt_testkit::peers::azure_standin::{AzureStandin, Kty, Outage};
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::Value;

const KEY: &str = "rcrt-kek";

/// A server using the stand-in's key, with short provider timeouts so outages show quickly.
fn start_server(standin: &AzureStandin, dir: &TempDir) -> ServerProcess {
    let secret_file = dir.path().join("azure-client-secret");
    std::fs::write(&secret_file, standin.client_secret()).unwrap();
    let url = standin.url();
    let secret_path = secret_file.to_str().unwrap().to_owned();
    let mut env = vec![
        ("AUTH_MODE", "disabled"),
        ("KEK_PROVIDER", "azure-keyvault"),
        ("AZURE_KEY_NAME", KEY),
        ("AZURE_KEY_VAULT_URL", &url),
        ("AZURE_AUTHORITY_HOST", &url),
        ("AZURE_TENANT_ID", AzureStandin::TENANT_ID),
        ("AZURE_CLIENT_ID", AzureStandin::CLIENT_ID),
        ("AZURE_CLIENT_SECRET_FILE", &secret_path),
    ];
    env.extend(FAST_PROVIDER);
    start(dir, &env)
}

/// Waits until `/ready` answers `want`, returning its body.
async fn ready_becomes(http: &reqwest::Client, base: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = send(http.get(format!("{base}/ready"))).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/ready stayed {status}, never {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every stored wrapped DEK (the server's SQLite store, read beside it).
fn wrapped_deks(dir: &TempDir) -> Vec<Vec<u8>> {
    let db = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
    let mut st = db
        .prepare("SELECT wrapped_dek FROM secret_versions")
        .unwrap();
    let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

fn assert_kek_unavailable(what: &str, status: u16, body: &Value) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["error"]["code"], "kek_unavailable", "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_rotation_and_outage_mid_traffic() {
    let standin = AzureStandin::start();
    let kid1 = standin.create_key(KEY, Kty::Rsa);
    let dir = TempDir::new();
    let http = client("azure kek test");
    let server = start_server(&standin, &dir);
    let base = server.base_url();

    let body = ready_becomes(&http, &base, 200).await;
    let kek_id = body["kek_id"].as_str().unwrap().to_owned();
    assert!(kek_id.starts_with("azure-keyvault:"), "{body}");
    let kek_status = kek_status(&http, &base).await;
    assert!(kek_status.to_string().contains(&kek_id), "{kek_status}");

    let mut secrets: Vec<(String, String)> = Vec::new();
    for i in 0..5 {
        let value = format!("value-{i}-{}", uuid::Uuid::new_v4());
        let id = create_ok(&http, &base, &format!("azure-{i}"), &value).await;
        secrets.push((id, value));
    }
    verify_all(
        &http,
        &base,
        &BTreeMap::from_iter(secrets.clone()),
        "before the rotation",
    )
    .await;

    // A new key version in Key Vault: picked up by the next probe (every second here); old
    // secrets still decrypt, new ones are wrapped under the new version.
    let kid2 = standin.rotate_key(KEY);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let value = format!("after-rotation-{}", uuid::Uuid::new_v4());
    let id = create_ok(&http, &base, "azure-rotated", &value).await;
    secrets.push((id, value));
    verify_all(
        &http,
        &base,
        &BTreeMap::from_iter(secrets.clone()),
        "after the rotation",
    )
    .await;
    let stored = wrapped_deks(&dir);
    let under = |kid: &str| {
        stored
            .iter()
            .filter(|w| w.windows(kid.len()).any(|x| x == kid.as_bytes()))
            .count()
    };
    assert_eq!(
        (under(&kid1), under(&kid2)),
        (5, 1),
        "versions' kids in the stored DEKs"
    );

    // Outage mid-traffic: 503 kek_unavailable, nothing written.
    standin.set_outage(Outage::Unavailable);
    let (status, body) = create(&http, &base, "during-outage", "never-stored").await;
    assert_kek_unavailable("write during the outage", status, &body);
    for (id, _) in &secrets {
        let (status, body) = decrypt(&http, &base, id).await;
        assert_kek_unavailable("decrypt during the outage", status, &body);
        assert!(!body.to_string().contains("value-"), "{body}");
    }
    let body = ready_becomes(&http, &base, 503).await;
    assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    assert_eq!(
        metric(&metrics(&http, &base).await, "rcrt_kek_configured"),
        0.0
    );

    // The vault answers again: everything recovers without a restart, nothing was lost.
    standin.set_outage(Outage::None);
    ready_becomes(&http, &base, 200).await;
    assert_eq!(
        metric(&metrics(&http, &base).await, "rcrt_kek_configured"),
        1.0
    );
    verify_all(
        &http,
        &base,
        &BTreeMap::from_iter(secrets.clone()),
        "after the outage",
    )
    .await;
    let (status, list) = send(http.get(format!("{base}/secrets"))).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), secrets.len(), "{list}");
    assert!(!names.contains(&"during-outage"), "{list}");
    let (status, created) = create(&http, &base, "after-outage", "v").await;
    assert_eq!(status, 201, "{created}");

    // The vault stops answering (requests hang): 503 within the provider timeout and
    // retries, not a hung request; recovery again without a restart.
    standin.set_outage(Outage::Hang);
    let started = Instant::now();
    let (status, body) = decrypt(&http, &base, &secrets[0].0).await;
    assert_kek_unavailable("decrypt while the vault hangs", status, &body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    ready_becomes(&http, &base, 503).await;
    standin.set_outage(Outage::None);
    ready_becomes(&http, &base, 200).await;
    let (status, body) = decrypt(&http, &base, &secrets[0].0).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some(secrets[0].1.as_str()))
    );

    let log = server.output();
    assert!(!log.contains(&standin.client_secret()), "{log}");
    assert!(!log.contains("eyJ0eXAi"), "no access token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_is_kek_unavailable_until_enabled() {
    let standin = AzureStandin::start();
    standin.create_key(KEY, Kty::Rsa);
    let dir = TempDir::new();
    let http = client("azure kek test");
    let server = start_server(&standin, &dir);
    let base = server.base_url();
    ready_becomes(&http, &base, 200).await;
    let (status, created) = create(&http, &base, "before", "kept").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // Disabled: Key Vault refuses unwrapKey at once; the next probe sees the key disabled and
    // from then on writes are refused too (Key Vault would still wrap under a disabled RSA
    // key, so without that check new secrets could be written that cannot be read).
    standin.set_key_enabled(KEY, false);
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_kek_unavailable("decrypt with the key disabled", status, &body);
    let body = ready_becomes(&http, &base, 503).await;
    assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    let (status, body) = create(&http, &base, "while-disabled", "x").await;
    assert_kek_unavailable("write with the key disabled", status, &body);
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_kek_unavailable("decrypt with the key disabled", status, &body);

    standin.set_key_enabled(KEY, true);
    ready_becomes(&http, &base, 200).await;
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("kept")),
        "{body}"
    );
    assert!(!server.output().contains(&standin.client_secret()));
}
