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
//!   server recovers by itself and every secret decrypts to its value (the check in
//!   `common::outage`).
//! * [`dek_cache_serves_recent_reads_while_kms_is_down`]: `KEK_DEK_CACHE_TTL` on, KMS paused: a
//!   recently read secret is served from the cache, an unread one answers 503; the provider and
//!   cache metrics count it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;
use common::http::{
    client, decrypt, kek_status, kill, metric, metrics, ready_kek_id, rewrap_until_completed, seed,
    send, start, verify_all,
};
use common::outage::{paused_mid_traffic, Peer, FAST_PROVIDER};
use rcrt_testkit::peers::moto::MotoServer;
use rcrt_testkit::TempDir;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_full_flow() {
    let moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let env = kms_env(&moto);
    let http = client("kms test");

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

    let st = kek_status(&http, &base).await;
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
    let http = client("kms test");
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

    let st = rewrap_until_completed(&http, &s2).await;
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
    let moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let http = client("kms test");
    let mut env = kms_env(&moto);
    env.extend(FAST_PROVIDER.map(|(k, v)| (k.to_owned(), v.to_owned())));
    let server = start(&dir, &env);
    paused_mid_traffic(
        &server,
        &http,
        Peer {
            name: "KMS",
            pause: &|| moto.pause(),
            resume: &|| moto.resume(),
            credential: SECRET_MARKER,
            credential_name: "the secret access key",
        },
    )
    .await;
}

/// `KEK_DEK_CACHE_TTL`: with KMS paused, a secret read a moment ago is still served from the DEK
/// cache (the documented trade-off: a cached DEK outlives a KMS outage or key disable by at most
/// the TTL), a secret not read since start answers 503, and `/metrics` counts the hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dek_cache_serves_recent_reads_while_kms_is_down() {
    let moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let http = client("kms test");
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
