//! The real `rcrt-server` with `KEK_PROVIDER=pkcs11` on a SoftHSM2 token (Debian `softhsm2` and
//! `opensc`; the tests fail naming them when they are missing), on SQLite:
//!
//! * [`pkcs11_full_flow`]: create, decrypt, update, delete under a key on the token; 64
//!   concurrent decrypts; the KEK id names the token and key and is stable across a restart;
//!   the PIN never reaches the server's output.
//! * [`rotation_local_to_pkcs11_and_back`]: secrets under `LOCAL_KEK_BASE64`, moved to the token
//!   by the background re-wrap (`POST /admin/kek/rewrap`, `GET /admin/kek/status`), served by
//!   the token alone after a restart, then moved back to a new local KEK (`KEK_PROVIDER_OLD`)
//!   and served by it alone.
//! * [`failing_token`]: the token's files vanish under the running server: decrypts and writes
//!   answer 503 `kek_unavailable`, `/ready` 503, `rcrt_kek_configured` 0, nothing is written;
//!   when they return, the same server recovers by itself (sessions reopened, the module
//!   re-initialised) and every secret decrypts to its value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::gen_kek;
use common::http::{
    client, create, decrypt, kek_status, kill, metric, metrics, ready_kek_id, seed, send, start,
    verify_all,
};
use rcrt_keys::{remote_kek_id, ProviderKind};
use rcrt_testkit::peers::softhsm::SoftHsm;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

fn pkcs11_env(hsm: &SoftHsm) -> Vec<(String, String)> {
    let mut env = hsm.server_env();
    env.push(("AUTH_MODE".into(), "disabled".into()));
    env
}

fn with(env: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// `POST /admin/kek/rewrap`, then `GET /admin/kek/status` until nothing remains; returns the
/// last status.
async fn rewrap_to_completion(
    http: &reqwest::Client,
    server: &ServerProcess,
    current: &str,
) -> Value {
    let base = server.base_url();
    let (status, body) = send(http.post(format!("{base}/admin/kek/rewrap"))).await;
    assert_eq!(status, 202, "POST /admin/kek/rewrap: {body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = kek_status(http, &base).await;
        let only_current = st["versions_per_kek"]
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k == current));
        if st["rewrap"]["remaining"] == 0 && st["rewrap"]["state"] == "completed" && only_current {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "re-wrap to {current} did not complete: {st}\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_full_flow() {
    let hsm = tokio::task::block_in_place(SoftHsm::new);
    let dir = TempDir::new();
    let env = pkcs11_env(&hsm);
    let http = client("pkcs11 test");
    let mut server = start(&dir, &env);
    let base = server.base_url();

    let kek_id = ready_kek_id(&http, &base).await;
    assert_eq!(
        kek_id,
        remote_kek_id(
            ProviderKind::Pkcs11,
            &format!("{}/{}", hsm.token_label(), hsm.key_label())
        )
        .as_str()
    );

    // Create, decrypt, update, decrypt, delete.
    let (status, body) = create(&http, &base, "db-password", "s3cret-v1").await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["value"].as_str(), body["version"].as_i64()),
        (Some("s3cret-v1"), Some(1))
    );
    let (status, body) = send(
        http.put(format!("{base}/secrets/{id}"))
            .json(&json!({"value": "s3cret-v2"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["value"].as_str(), body["version"].as_i64()),
        (Some("s3cret-v2"), Some(2))
    );
    let (status, body) = send(http.delete(format!("{base}/secrets/{id}"))).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_eq!(status, 404, "{body}");

    // Concurrent decrypts share the session pool; every one gets its own value.
    let secrets = seed(&http, &base, "conc", 16).await;
    let ids: Vec<(String, String)> = secrets.clone().into_iter().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (http, base, (id, value)) = (http.clone(), base.clone(), ids[i % ids.len()].clone());
        tasks.spawn(async move {
            let (status, body) = decrypt(&http, &base, &id).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["value"].as_str(), Some(value.as_str()), "{body}");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    // A restart: the same KEK id, everything still decrypts.
    kill(&mut server);
    let server = start(&dir, &env);
    let base = server.base_url();
    assert_eq!(ready_kek_id(&http, &base).await, kek_id);
    verify_all(&http, &base, &secrets, "after a restart").await;
    let output = server.output();
    assert!(
        !output.contains(hsm.pin()),
        "the PIN is in the output:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_local_to_pkcs11_and_back() {
    let hsm = tokio::task::block_in_place(SoftHsm::new);
    let dir = TempDir::new();
    let http = client("pkcs11 test");
    let (k1, k3) = (gen_kek(), gen_kek());
    let auth = [("AUTH_MODE", "disabled")];

    // 1. Local KEK K1.
    let local1 = with(&[], &[("LOCAL_KEK_BASE64", &k1), auth[0]]);
    let mut server = start(&dir, &local1);
    let base = server.base_url();
    let k1_id = ready_kek_id(&http, &base).await;
    let mut secrets = seed(&http, &base, "rot-a", 12).await;
    kill(&mut server);

    // 2. The token's key current, K1 old: the re-wrap moves every DEK onto the token.
    let to_hsm = with(&pkcs11_env(&hsm), &[("LOCAL_KEK_BASE64_OLD", &k1)]);
    let mut server = start(&dir, &to_hsm);
    let base = server.base_url();
    let hsm_id = ready_kek_id(&http, &base).await;
    assert!(hsm_id.starts_with("pkcs11:"), "{hsm_id}");
    assert_ne!(hsm_id, k1_id);
    verify_all(
        &http,
        &base,
        &secrets,
        "pkcs11 current, K1 old, before the re-wrap",
    )
    .await;
    secrets.extend(seed(&http, &base, "rot-b", 4).await);
    rewrap_to_completion(&http, &server, &hsm_id).await;
    kill(&mut server);

    // 3. The token alone.
    let mut server = start(&dir, &pkcs11_env(&hsm));
    let base = server.base_url();
    verify_all(&http, &base, &secrets, "pkcs11 alone").await;
    kill(&mut server);

    // 4. Back to a new local KEK K3, the token's key old.
    let mut back = with(
        &hsm.module_env(),
        &[
            ("LOCAL_KEK_BASE64", &k3),
            ("KEK_PROVIDER_OLD", "pkcs11"),
            ("KEK_REF_OLD", hsm.key_label()),
            auth[0],
        ],
    );
    back.retain(|(k, _)| k != "KEK_PROVIDER" && k != "KEK_REF");
    let mut server = start(&dir, &back);
    let base = server.base_url();
    let k3_id = ready_kek_id(&http, &base).await;
    verify_all(
        &http,
        &base,
        &secrets,
        "K3 current, pkcs11 old, before the re-wrap",
    )
    .await;
    rewrap_to_completion(&http, &server, &k3_id).await;
    kill(&mut server);

    // 5. K3 alone, no PKCS#11 settings at all.
    let server = start(&dir, &with(&[], &[("LOCAL_KEK_BASE64", &k3), auth[0]]));
    verify_all(&http, &server.base_url(), &secrets, "K3 alone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_token() {
    let hsm = tokio::task::block_in_place(SoftHsm::new);
    let dir = TempDir::new();
    let env = with(
        &pkcs11_env(&hsm),
        &[
            ("KEK_PROVIDER_TIMEOUT", "2s"),
            ("KEK_PROVIDER_CIRCUIT_COOLDOWN", "1s"),
            ("KEK_PROVIDER_PROBE_INTERVAL", "1s"),
        ],
    );
    let http = client("pkcs11 test");
    let server = start(&dir, &env);
    let base = server.base_url();
    let kek_id = ready_kek_id(&http, &base).await;
    let secrets = seed(&http, &base, "before", 6).await;
    let some_id = secrets.keys().next().unwrap().clone();

    hsm.break_token(hsm.token_label());
    // Decrypts and writes: 503 kek_unavailable naming the KEK, never a decrypt failure.
    for _ in 0..3 {
        let (status, body) = decrypt(&http, &base, &some_id).await;
        assert_eq!(status, 503, "decrypt while the token is gone: {body}");
        assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    }
    let (status, body) = create(&http, &base, "while-down", "never-stored").await;
    assert_eq!(status, 503, "create while the token is gone: {body}");
    assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
    // /ready follows once the failures have opened the circuit.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = send(http.get(format!("{base}/ready"))).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "/ready still 200 with the token gone: {body}\n{}",
            server.output()
        );
        let (status, body) = decrypt(&http, &base, &some_id).await;
        assert_eq!(status, 503, "decrypt while the token is gone: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics(&http, &base).await;
    assert_eq!(metric(&text, "rcrt_kek_configured"), 0.0, "{text}");

    hsm.restore_token(hsm.token_label());
    // The same server recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = send(http.get(format!("{base}/ready"))).await;
        if status == 200 {
            assert_eq!(body["kek_id"], kek_id.as_str(), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready still {status} 30 s after the token came back: {body}\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    verify_all(&http, &base, &secrets, "after the token came back").await;
    let text = metrics(&http, &base).await;
    assert_eq!(metric(&text, "rcrt_kek_configured"), 1.0, "{text}");
    // Nothing was written while it was gone: the name is free.
    let (status, body) = create(&http, &base, "while-down", "stored-now").await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = decrypt(&http, &base, &id).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("stored-now")),
        "{body}"
    );
    let output = server.output();
    assert!(
        !output.contains(hsm.pin()),
        "the PIN is in the output:\n{output}"
    );
}
