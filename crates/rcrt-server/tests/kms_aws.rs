//! The real `rcrt-server` with `KEK_PROVIDER=aws-kms` against a real `moto_server` on loopback
//! (PyPI `moto[server]`; the tests fail naming it when it is missing), on SQLite:
//!
//! * [`aws_kms_full_flow`]: secrets written and read under a KMS key; the KEK id is stable
//!   across a restart; the access keys never reach the server's output.
//! * [`rotation_local_to_aws_kms`]: secrets under `LOCAL_KEK_BASE64`, then `KEK_PROVIDER=aws-kms`
//!   with the local KEK as `LOCAL_KEK_BASE64_OLD`, `POST /admin/kek/rewrap` until done, then a
//!   restart without the old KEK decrypts everything.
//! * [`kms_paused_mid_traffic`]: moto stopped (SIGSTOP) under traffic: 503 `kek_unavailable`,
//!   `/ready` 503, `rcrt_kek_configured` 0; nothing written while down; after SIGCONT the same
//!   server recovers by itself and every secret decrypts to its value.
//! * [`dek_cache_serves_recent_reads_while_kms_is_down`]: `KEK_DEK_CACHE_TTL` on, KMS paused: a
//!   recently read secret is served from the cache, an unread one answers 503; the provider and
//!   cache metrics count it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{gen_kek, server_config};
use rcrt_testkit::peers::moto::MotoServer;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

/// A secret access key distinctive enough to look for in the server's output (moto takes any).
const SECRET_MARKER: &str = "moto-secret-9f1c2e7a5b";

fn kms_env(moto: &MotoServer) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_SECRET_ACCESS_KEY")
        .collect();
    env.push(("AWS_SECRET_ACCESS_KEY".into(), SECRET_MARKER.into()));
    env.push(("KEK_PROVIDER".into(), "aws-kms".into()));
    env.push(("AWS_KMS_KEY_ID".into(), moto.key_arn().into()));
    env.push(("AUTH_MODE".into(), "disabled".into()));
    env
}

fn start(dir: &TempDir, env: &[(String, String)]) -> ServerProcess {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cfg = server_config(None, dir, &pairs);
    tokio::task::block_in_place(|| ServerProcess::start(&cfg))
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
        .header("X-Access-Reason", "kms test")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_full_flow() {
    let moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let env = kms_env(&moto);
    let http = client();

    let mut server = start(&dir, &env);
    let base = server.base_url();
    let kek_id = ready_kek_id(&http, &base).await;
    assert!(kek_id.starts_with("aws-kms:"), "{kek_id}");

    let mut secrets = seed(&http, &base, "flow", 5).await;
    // A second version of one secret.
    let (id, _) = secrets
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let (status, body) = send(
        http.put(format!("{base}/secrets/{id}"))
            .json(&json!({"value": "second version"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    secrets.insert(id, "second version".into());
    verify_all(&http, &base, &secrets, "first start").await;

    let (status, st) = send(http.get(format!("{base}/admin/kek/status"))).await;
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["current_kek_id"], kek_id.as_str(), "{st}");
    assert_eq!(st["versions_per_kek"][&kek_id], 6, "{st}");

    // Restart: the same KEK id (derived from the configured key), everything still reads.
    kill(&mut server);
    let server = start(&dir, &env);
    let base = server.base_url();
    assert_eq!(ready_kek_id(&http, &base).await, kek_id);
    verify_all(&http, &base, &secrets, "after a restart").await;
    assert_eq!(
        metric(&metrics(&http, &base).await, "rcrt_kek_configured"),
        1.0
    );

    let out = server.output();
    assert!(
        !out.contains(SECRET_MARKER),
        "the secret access key reached the log:\n{out}"
    );
    for v in secrets.values() {
        assert!(
            !out.contains(v.as_str()),
            "a secret value reached the log:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_local_to_aws_kms() {
    let moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let http = client();
    let local = gen_kek();

    // Under the local KEK.
    let mut s1 = start(
        &dir,
        &[
            ("LOCAL_KEK_BASE64".to_owned(), local.clone()),
            ("AUTH_MODE".to_owned(), "disabled".to_owned()),
        ],
    );
    let b1 = s1.base_url();
    let local_id = ready_kek_id(&http, &b1).await;
    let secrets = seed(&http, &b1, "rot", 25).await;
    kill(&mut s1);

    // aws-kms current, the local KEK old; re-wrap on request.
    let mut env = kms_env(&moto);
    env.push(("REWRAP_AUTO".into(), "false".into()));
    let mut with_old = env.clone();
    with_old.push(("LOCAL_KEK_BASE64_OLD".into(), local.clone()));
    let mut s2 = start(&dir, &with_old);
    let b2 = s2.base_url();
    let kms_id = ready_kek_id(&http, &b2).await;
    assert!(kms_id.starts_with("aws-kms:"), "{kms_id}");
    // Old rows read through the old local KEK, new ones go to KMS.
    verify_all(&http, &b2, &secrets, "before the re-wrap").await;
    let mut all = secrets.clone();
    all.extend(seed(&http, &b2, "rot-new", 3).await);

    let (status, st) = send(http.post(format!("{b2}/admin/kek/rewrap"))).await;
    assert_eq!(status, 202, "{st}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let (status, st) = send(http.get(format!("{b2}/admin/kek/status"))).await;
        assert_eq!(status, 200, "{st}");
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
    let per_kek = st["versions_per_kek"].as_object().unwrap();
    assert_eq!(
        per_kek.get(&kms_id).and_then(Value::as_u64),
        Some(28),
        "{st}"
    );
    assert!(
        per_kek.get(&local_id).and_then(Value::as_u64).unwrap_or(0) == 0,
        "{st}"
    );
    kill(&mut s2);

    // Without the old KEK: everything decrypts through KMS.
    let s3 = start(&dir, &env);
    let b3 = s3.base_url();
    assert_eq!(ready_kek_id(&http, &b3).await, kms_id);
    verify_all(&http, &b3, &all, "after the re-wrap, without the local KEK").await;
    let out = format!("{}{}", s2.output(), s3.output());
    assert!(!out.contains(&local), "the local KEK reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_paused_mid_traffic() {
    let moto = Arc::new(tokio::task::block_in_place(MotoServer::start));
    let dir = TempDir::new();
    let http = client();
    let mut env = kms_env(&moto);
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
    moto.pause();
    let paused_at = Instant::now();

    // While down: decrypts and writes 503 kek_unavailable, /ready 503, rcrt_kek_configured 0.
    let id = secrets.lock().unwrap().keys().next().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = decrypt(&http, &base, &id).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
            let text = serde_json::to_string(&body).unwrap();
            assert!(!text.contains(SECRET_MARKER), "{text}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "decrypts kept answering 200 with KMS paused"
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
            "/ready {status} {body}, rcrt_kek_configured {configured} with KMS paused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep it down a little longer, under traffic (the circuit is open by now).
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(paused_at.elapsed())).await;

    moto.resume();
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
        !out.contains(SECRET_MARKER),
        "the secret access key reached the log"
    );
}

/// `KEK_DEK_CACHE_TTL`: with KMS paused, a secret read a moment ago is still served from the DEK
/// cache (the documented trade-off: a cached DEK outlives a KMS outage or key disable by at most
/// the TTL), a secret not read since start answers 503, and `/metrics` counts the hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dek_cache_serves_recent_reads_while_kms_is_down() {
    let moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let http = client();
    let mut env = kms_env(&moto);
    for (k, v) in [
        ("KEK_DEK_CACHE_TTL", "60s"),
        ("KEK_PROVIDER_TIMEOUT", "300ms"),
        ("KEK_PROVIDER_RETRIES", "0"),
        ("KEK_PROVIDER_PROBE_INTERVAL", "1h"),
    ] {
        env.push((k.into(), v.into()));
    }
    let server = start(&dir, &env);
    let base = server.base_url();
    let secrets = seed(&http, &base, "cache", 2).await;
    let mut all = secrets.iter();
    let (warm, warm_value) = all.next().unwrap();
    let (cold, _) = all.next().unwrap();
    let (status, body) = decrypt(&http, &base, warm).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some(warm_value.as_str()))
    );

    moto.pause();
    let (status, body) = decrypt(&http, &base, warm).await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some(warm_value.as_str())),
        "a cached DEK needs no KMS call: {body}"
    );
    let (status, body) = decrypt(&http, &base, cold).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("kek_unavailable")),
        "an uncached DEK needs KMS: {body}"
    );
    moto.resume();

    let text = metrics(&http, &base).await;
    assert!(
        metric(&text, "rcrt_kek_dek_cache_total{result=\"hit\"}") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "rcrt_kek_dek_cache_total{result=\"miss\"}") >= 2.0);
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("rcrt_kek_provider_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "the failed unwrap is counted:\n{text}");
    assert!(
        text.contains(
            "rcrt_kek_provider_request_duration_seconds_bucket{provider=\"aws-kms\",op=\"unwrap\""
        ),
        "{text}"
    );
}
