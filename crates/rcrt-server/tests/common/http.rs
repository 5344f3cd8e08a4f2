//! What the tests that drive a running server over HTTP share: a client, requests and their
//! answers, `/metrics`, seeding and checking secrets, and starting or killing a server from
//! inside a multi-threaded tokio test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

use super::server_config;

/// A client with a 30 s timeout whose every request carries `X-Access-Reason: <reason>`.
pub fn client(reason: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "X-Access-Reason",
        reqwest::header::HeaderValue::from_str(reason).unwrap(),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Sends `rb`: the status and the body (JSON, or the text as a JSON string).
pub async fn send(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `POST /secrets`: a global secret `name` holding `value`.
pub async fn create(http: &reqwest::Client, base: &str, name: &str, value: &str) -> (u16, Value) {
    send(
        http.post(format!("{base}/secrets"))
            .json(&json!({"name": name, "value": value, "scope_type": "global"})),
    )
    .await
}

/// [`create`], asserting 201: the new secret's id.
pub async fn create_ok(http: &reqwest::Client, base: &str, name: &str, value: &str) -> String {
    let (status, body) = create(http, base, name, value).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `POST /secrets/{id}/decrypt`, the reason in the client's header.
pub async fn decrypt(http: &reqwest::Client, base: &str, id: &str) -> (u16, Value) {
    send(http.post(format!("{base}/secrets/{id}/decrypt"))).await
}

/// The text of `/metrics`.
pub async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `name` (with its labels, if any) in `/metrics` text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Creates `n` secrets named `<prefix>-<i>`: id -> value.
pub async fn seed(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    n: usize,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let value = format!("value-{prefix}-{i}-{}", uuid::Uuid::new_v4().simple());
        let id = create_ok(http, base, &format!("{prefix}-{i}"), &value).await;
        out.insert(id, value);
    }
    out
}

/// Asserts that every secret decrypts to its value; `when` names the moment in messages.
pub async fn verify_all(
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

/// Asserts `/ready` is 200: the KEK id it names.
pub async fn ready_kek_id(http: &reqwest::Client, base: &str) -> String {
    let (status, body) = send(http.get(format!("{base}/ready"))).await;
    assert_eq!(status, 200, "/ready: {body}");
    body["kek_id"].as_str().unwrap().to_owned()
}

/// `GET /admin/kek/status`, asserting 200.
pub async fn kek_status(http: &reqwest::Client, base: &str) -> Value {
    let (status, st) = send(http.get(format!("{base}/admin/kek/status"))).await;
    assert_eq!(status, 200, "{st}");
    st
}

/// `POST /admin/kek/rewrap` (202), then `GET /admin/kek/status` every 200 ms until the re-wrap
/// has completed with nothing remaining (at most 60 s): that last status.
pub async fn rewrap_until_completed(http: &reqwest::Client, server: &ServerProcess) -> Value {
    let base = server.base_url();
    let (status, st) = send(http.post(format!("{base}/admin/kek/rewrap"))).await;
    assert_eq!(status, 202, "{st}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = kek_status(http, &base).await;
        if st["rewrap"]["state"] == "completed" && st["rewrap"]["remaining"] == 0 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "re-wrap not done after 60 s: {st}\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `env` as the `(&str, &str)` pairs [`server_config`] takes.
pub fn pairs<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect()
}

/// The server in `dir` on SQLite with `env`, started without blocking the other tasks of a
/// multi-threaded test (`block_in_place`).
pub fn start<K: AsRef<str>, V: AsRef<str>>(dir: &TempDir, env: &[(K, V)]) -> ServerProcess {
    let cfg = server_config(None, dir, &pairs(env));
    tokio::task::block_in_place(|| ServerProcess::start(&cfg))
}

/// Kills `server` without blocking the other tasks of a multi-threaded test.
pub fn kill(server: &mut ServerProcess) {
    tokio::task::block_in_place(|| server.kill());
}
