//! End-to-end tests: the real `rcrt-server` binary, driven over HTTP, on SQLite and PostgreSQL.
//!
//! The HTTP suite runs once per backend on one server (started with `RUST_LOG=debug`) and ends
//! with a leak check over everything that server printed, answered and (for SQLite) wrote to
//! disk. Start-up behaviour (KEK sources, KEK mismatch, bind checks) has tests of its own.
//!
//! Every request goes through [`Api`], which fails the test on any 500, checks that every error
//! body is `{"error":{"code","message"}}` and that no success body contains "error".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rcrt_testkit::{ServerConfig, ServerProcess, TempDir, TempPgDb};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

mod common;

use common::gen_kek;
use common::{server_config, Backend};

const JSON: &str = "application/json";
/// The server's default MAX_VALUE_BYTES.
const MAX_VALUE: usize = 65536;

// ---------------------------------------------------------------------------------------------
// Random material
// ---------------------------------------------------------------------------------------------

fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

/// A fresh KEK: 32 random bytes, standard base64 (44 characters ending with '=').
/// A distinctive 32-character token (URL-safe base64 of 24 random bytes).
fn token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(24))
}

/// A short unique suffix for names and scope ids.
fn uniq() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Backends and server processes
// ---------------------------------------------------------------------------------------------

/// A working directory, an optional PostgreSQL database and at most one running server.
/// Field order is drop order: the server dies before its database and directory go.
struct Env {
    server: Option<ServerProcess>,
    pg: Option<TempPgDb>,
    dir: TempDir,
    backend: Backend,
}

impl Env {
    async fn new(backend: Backend) -> Self {
        Self {
            server: None,
            pg: backend.database().await,
            dir: TempDir::new(),
            backend,
        }
    }

    fn config(&self, extra: &[(&str, &str)]) -> ServerConfig {
        server_config(self.pg.as_ref(), &self.dir, extra)
    }

    /// Starts a server (stopping any previous one); returns its base URL.
    fn start(&mut self, extra: &[(&str, &str)]) -> String {
        self.stop();
        let server = ServerProcess::start(&self.config(extra));
        let base = server.base_url();
        self.server = Some(server);
        base
    }

    fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }

    fn output(&self) -> String {
        self.server
            .as_ref()
            .map(ServerProcess::output)
            .unwrap_or_default()
    }

    fn run_to_exit(&self, extra: &[(&str, &str)]) -> (ExitStatus, String) {
        ServerProcess::run_to_exit(&self.config(extra))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client with global checks
// ---------------------------------------------------------------------------------------------

struct Exchange {
    method: String,
    path: String,
    status: u16,
    body: String,
}

struct ApiInner {
    client: reqwest::Client,
    base: String,
    /// Every distinctive secret value used against this server (for the leak checks).
    values: Mutex<Vec<String>>,
    /// Every response this server gave.
    log: Mutex<Vec<Exchange>>,
}

#[derive(Clone)]
struct Api(Arc<ApiInner>);

struct Call {
    api: Api,
    method: Method,
    path: String,
    rb: reqwest::RequestBuilder,
}

struct Resp {
    method: String,
    path: String,
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Api {
    fn new(base: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self(Arc::new(ApiInner {
            client,
            base,
            values: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        }))
    }

    /// A new distinctive secret value, remembered for the leak checks.
    fn secret(&self) -> String {
        let v = token();
        self.0.values.lock().unwrap().push(v.clone());
        v
    }

    fn values(&self) -> Vec<String> {
        self.0.values.lock().unwrap().clone()
    }

    fn call(&self, method: Method, path: &str) -> Call {
        let rb = self
            .0
            .client
            .request(method.clone(), format!("{}{}", self.0.base, path));
        Call {
            api: self.clone(),
            method,
            path: path.to_owned(),
            rb,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path).send().await
    }

    async fn create(
        &self,
        name: &str,
        value: &str,
        scope_type: &str,
        scope_id: Option<&str>,
    ) -> Value {
        let r = self
            .call(Method::POST, "/secrets")
            .json(&create_body(name, value, scope_type, scope_id))
            .send()
            .await
            .expect_status(201);
        assert_eq!(r.header("etag").as_deref(), Some("\"1\""), "{}", r.ctx());
        let v = r.json();
        assert_eq!(v["version"], 1, "{}", r.ctx());
        assert_eq!(v["name"], name, "{}", r.ctx());
        assert_eq!(v["scope_type"], scope_type, "{}", r.ctx());
        assert_eq!(v["scope_id"], json!(scope_id), "{}", r.ctx());
        assert!(
            v.get("value").is_none(),
            "create returned a value: {}",
            r.ctx()
        );
        let id = v["id"].as_str().unwrap();
        Uuid::parse_str(id).unwrap();
        assert_eq!(v["created_at"], v["updated_at"], "{}", r.ctx());
        // What was stored reads back exactly (timestamps survive the database round trip).
        let g = self.get(&format!("/secrets/{id}")).await.expect_status(200);
        assert_eq!(g.json(), v, "GET differs from the create response");
        v
    }

    async fn decrypt(&self, id: &str, reason: &str) -> Resp {
        self.call(Method::POST, &format!("/secrets/{id}/decrypt"))
            .json(&json!({ "reason": reason }))
            .send()
            .await
    }

    /// Decrypts (200 expected); returns (value, version).
    async fn decrypt_ok(&self, id: &str) -> (String, i64) {
        let r = self.decrypt(id, "e2e test").await.expect_status(200);
        let v = r.json();
        (
            v["value"].as_str().unwrap().to_owned(),
            v["version"].as_i64().unwrap(),
        )
    }

    async fn update(&self, id: &str, value: &str, if_match: Option<&str>) -> Resp {
        let mut c = self
            .call(Method::PUT, &format!("/secrets/{id}"))
            .json(&json!({ "value": value }));
        if let Some(m) = if_match {
            c = c.header("if-match", m);
        }
        c.send().await
    }

    async fn metric(&self, name: &str) -> u64 {
        let r = self.get("/metrics").await.expect_status(200);
        r.body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<u64>().ok())?
            })
            .unwrap_or_else(|| panic!("metric {name} missing:\n{}", r.body))
    }
}

fn create_body(name: &str, value: &str, scope_type: &str, scope_id: Option<&str>) -> Value {
    let mut v = json!({"name": name, "value": value, "scope_type": scope_type});
    if let Some(s) = scope_id {
        v["scope_id"] = json!(s);
    }
    v
}

impl Call {
    fn json(mut self, v: &Value) -> Self {
        self.rb = self.rb.json(v);
        self
    }

    /// A body sent as is, with the given Content-Type (or none).
    fn raw(mut self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        if let Some(ct) = content_type {
            self.rb = self.rb.header("content-type", ct);
        }
        self.rb = self.rb.body(body.into());
        self
    }

    fn header(mut self, k: &str, v: impl AsRef<[u8]>) -> Self {
        let v = reqwest::header::HeaderValue::from_bytes(v.as_ref()).unwrap();
        self.rb = self.rb.header(k, v);
        self
    }

    /// Sends; fails on a 500, on a malformed error body and on "error" in a success body.
    async fn send(self) -> Resp {
        let Self {
            api,
            method,
            path,
            rb,
        } = self;
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: request failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        api.record(Resp {
            method: method.to_string(),
            path,
            status,
            headers,
            body,
        })
    }
}

impl Api {
    /// Sends a JSON body over a plain socket, writing it on another thread while the answer is
    /// read. For bodies over the limit: the server answers 413 and closes without reading the
    /// rest, which makes an ordinary client fail with "broken pipe" instead of showing the answer.
    async fn send_oversized(&self, method: &str, path: &str, body: Vec<u8>) -> Resp {
        let addr = self.0.base.trim_start_matches("http://").to_owned();
        let (method, path) = (method.to_owned(), path.to_owned());
        let (m, p) = (method.clone(), path.clone());
        let raw = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut writer = stream.try_clone().unwrap();
            let head = format!(
                "{m} {p} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {JSON}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let w = std::thread::spawn(move || {
                // Errors are expected once the server has answered and closed.
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(&body);
            });
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = w.join();
            buf
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {text:?}"));
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: bad status line: {head:?}"));
        let mut headers = HeaderMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(
                    reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
                    reqwest::header::HeaderValue::from_str(v.trim()).unwrap(),
                );
            }
        }
        self.record(Resp {
            method,
            path,
            status,
            headers,
            body: body.to_owned(),
        })
    }

    /// Logs a response and applies the checks every response must pass.
    fn record(&self, r: Resp) -> Resp {
        let status = r.status;
        self.0.log.lock().unwrap().push(Exchange {
            method: r.method.clone(),
            path: r.path.clone(),
            status,
            body: r.body.clone(),
        });
        assert_ne!(status, 500, "HTTP 500: {}", r.ctx());
        assert!(
            r.headers.contains_key("x-request-id"),
            "no x-request-id: {}",
            r.ctx()
        );
        if status >= 400 {
            let ct = r.header("content-type").unwrap_or_default();
            assert!(ct.starts_with(JSON), "error without JSON type: {}", r.ctx());
            let v: Value = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", r.ctx()));
            let code = v["error"]["code"].as_str();
            let message = v["error"]["message"].as_str();
            assert!(
                code.is_some_and(|c| !c.is_empty()) && message.is_some_and(|m| !m.is_empty()),
                "error body lacks error.code/error.message: {}",
                r.ctx()
            );
        } else {
            assert!(
                !r.body.contains("error"),
                "success body contains \"error\": {}",
                r.ctx()
            );
        }
        r
    }
}

impl Resp {
    fn ctx(&self) -> String {
        let mut body = self.body.clone();
        if body.len() > 600 {
            body.truncate(600);
            body.push('…');
        }
        format!("{} {} -> {} {}", self.method, self.path, self.status, body)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.ctx()))
    }

    #[track_caller]
    fn expect_status(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status: {}", self.ctx());
        self
    }

    #[track_caller]
    fn expect_error(self, status: u16, code: &str) -> Self {
        assert_eq!(self.status, status, "unexpected status: {}", self.ctx());
        assert_eq!(
            self.json()["error"]["code"].as_str(),
            Some(code),
            "unexpected error code: {}",
            self.ctx()
        );
        self
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP suite: one server per backend, checks run one after another, failures collected
// ---------------------------------------------------------------------------------------------

type CheckFut = Pin<Box<dyn Future<Output = ()> + Send>>;
type CheckFn = fn(Api) -> CheckFut;

macro_rules! checks {
    ($($f:ident),* $(,)?) => {
        vec![$((stringify!($f), (|a: Api| -> CheckFut { Box::pin($f(a)) }) as CheckFn)),*]
    };
}

async fn http_suite(backend: Backend) {
    let t0 = Instant::now();
    let mut env = Env::new(backend).await;
    let kek = gen_kek();
    let base = env.start(&[("LOCAL_KEK_BASE64", &kek), ("RUST_LOG", "debug")]);
    let api = Api::new(base);

    let mut failures = Vec::new();
    for (name, check) in checks![
        check_health_ready,
        check_guide_flow,
        check_decrypt_reasons,
        check_bad_requests,
        check_not_found_and_routing,
        check_unsupported_media_type,
        check_conflicts_and_scopes,
        check_sizes,
        check_update_and_if_match,
        check_pagination,
        check_concurrent_updates,
        check_concurrent_creates,
        check_concurrent_reads_and_deletes,
        check_metrics,
        check_leak_flow,
    ] {
        let started = Instant::now();
        match tokio::spawn(check(api.clone())).await {
            Ok(()) => eprintln!("[{backend:?}] ok   {name} ({:?})", started.elapsed()),
            Err(e) => {
                let msg = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "panic".to_owned()),
                    Err(e) => e.to_string(),
                };
                eprintln!("[{backend:?}] FAIL {name}: {msg}");
                failures.push(format!("{name}: {msg}"));
            }
        }
    }

    // Leak check over the whole run (every check above used distinctive values).
    let output = env.output();
    env.stop();
    let problems = leak_problems(&env, &api, &kek, &output);
    for p in &problems {
        eprintln!("[{backend:?}] LEAK {p}");
    }
    failures.extend(problems.into_iter().map(|p| format!("leak check: {p}")));
    eprintln!("[{backend:?}] suite took {:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{backend:?}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_suite_sqlite() {
    http_suite(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_suite_postgres() {
    http_suite(Backend::Postgres).await;
}

async fn check_health_ready(api: Api) {
    let r = api.get("/health").await.expect_status(200);
    assert_eq!(r.json()["status"], "ok");
    let r = api.get("/ready").await.expect_status(200);
    let v = r.json();
    assert_eq!(v["status"], "ready", "{}", r.ctx());
    let kek_id = v["kek_id"].as_str().unwrap();
    assert!(
        kek_id.len() == 16 && kek_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        r.ctx()
    );
}

/// The guide's "Example Production Setup Script": POST the test secret, check the response has
/// no "error", take `.id`, DELETE it.
async fn check_guide_flow(api: Api) {
    for round in 0..2 {
        // The second round is the script run again (e.g. on the next deploy): the name is free
        // again after the DELETE.
        let r = api
            .call(Method::POST, "/secrets")
            .raw(
                Some(JSON),
                r#"{"name":"test","value":"test","scope_type":"global"}"#,
            )
            .send()
            .await;
        assert_eq!(r.status, 201, "round {round}: {}", r.ctx());
        assert!(!r.body.contains("error"), "{}", r.ctx());
        let v = r.json();
        let id = v["id"].as_str().expect("id").to_owned();
        Uuid::parse_str(&id).unwrap();
        assert!(v.get("value").is_none(), "{}", r.ctx());
        assert_eq!(r.header("etag").as_deref(), Some("\"1\""));

        let r = api.get(&format!("/secrets/{id}")).await.expect_status(200);
        assert_eq!(r.json()["name"], "test");
        assert_eq!(r.json()["scope_type"], "global");
        assert_eq!(r.json()["scope_id"], Value::Null);

        let r = api
            .call(Method::DELETE, &format!("/secrets/{id}"))
            .send()
            .await
            .expect_status(204);
        assert!(r.body.is_empty(), "{}", r.ctx());
        api.get(&format!("/secrets/{id}"))
            .await
            .expect_error(404, "not_found");
        api.call(Method::DELETE, &format!("/secrets/{id}"))
            .send()
            .await
            .expect_error(404, "not_found");
        api.decrypt(&id, "after delete")
            .await
            .expect_error(404, "not_found");
    }

    // `curl -d` without -H sends application/x-www-form-urlencoded: the script's own check must
    // see an error (it greps for "error"), not a body it would take an id from.
    let r = api
        .call(Method::POST, "/secrets")
        .raw(
            Some("application/x-www-form-urlencoded"),
            r#"{"name":"test","value":"test","scope_type":"global"}"#,
        )
        .send()
        .await
        .expect_error(415, "unsupported_media_type");
    assert!(r.body.contains("error"));
}

async fn check_decrypt_reasons(api: Api) {
    let value = api.secret();
    let m = api
        .create(&format!("dec-{}", uniq()), &value, "global", None)
        .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let path = format!("/secrets/{id}/decrypt");

    // Reason in the body.
    let r = api.decrypt(&id, "deploy pipeline").await.expect_status(200);
    assert_eq!(
        r.json(),
        json!({"value": value, "version": 1}),
        "{}",
        r.ctx()
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));

    // Reason in X-Access-Reason, empty body without a Content-Type.
    let r = api
        .call(Method::POST, &path)
        .header("x-access-reason", "incident 42")
        .send()
        .await
        .expect_status(200);
    assert_eq!(r.json()["value"], value.as_str());
    // ... with an explicit empty body and a JSON type, and with `{}`.
    api.call(Method::POST, &path)
        .header("x-access-reason", "incident 42")
        .raw(Some(JSON), "")
        .send()
        .await
        .expect_status(200);
    api.call(Method::POST, &path)
        .header("x-access-reason", "incident 42")
        .raw(Some(JSON), "{}")
        .send()
        .await
        .expect_status(200);

    // No reason anywhere.
    api.call(Method::POST, &path)
        .send()
        .await
        .expect_error(400, "reason_required");
    for body in [
        "{}",
        r#"{"reason":""}"#,
        r#"{"reason":null}"#,
        r#"{"reason":"   "}"#,
        r#"{"reason":"\t\n "}"#,
    ] {
        let r = api
            .call(Method::POST, &path)
            .raw(Some(JSON), body)
            .send()
            .await;
        assert_eq!(r.status, 400, "body {body}: {}", r.ctx());
        assert_eq!(r.code(), "reason_required", "body {body}: {}", r.ctx());
        assert!(!r.body.contains(&value), "{}", r.ctx());
    }
    // Whitespace-only header.
    api.call(Method::POST, &path)
        .header("x-access-reason", "   ")
        .send()
        .await
        .expect_error(400, "reason_required");
    // Non-ASCII header bytes.
    api.call(Method::POST, &path)
        .header("x-access-reason", b"caf\xe9")
        .send()
        .await
        .expect_error(400, "invalid_request");
    // Reason length limit: 1024 characters is fine, 1025 is not.
    api.decrypt(&id, &"r".repeat(1024)).await.expect_status(200);
    api.decrypt(&id, &"r".repeat(1025))
        .await
        .expect_error(400, "invalid_request");
    // Body problems.
    api.call(Method::POST, &path)
        .raw(Some(JSON), "reason=x")
        .send()
        .await
        .expect_error(400, "invalid_json");
    api.call(Method::POST, &path)
        .raw(Some(JSON), r#"{"reason":5}"#)
        .send()
        .await
        .expect_error(400, "invalid_json");
    api.call(Method::POST, &path)
        .raw(Some(JSON), r#"{"reason":"x","why":"y"}"#)
        .send()
        .await
        .expect_error(400, "invalid_json");
    api.call(Method::POST, &path)
        .raw(Some("text/plain"), r#"{"reason":"x"}"#)
        .send()
        .await
        .expect_error(415, "unsupported_media_type");

    // Values round-trip byte for byte (escapes, NUL, non-ASCII).
    let marker = api.secret();
    for v in [
        format!("{marker}\nline2\t\"quoted\" \\ back\u{0}nul ☃ 𝄞"),
        " leading and trailing ".to_owned(),
    ] {
        let m = api
            .create(&format!("rt-{}", uniq()), &v, "global", None)
            .await;
        let (got, version) = api.decrypt_ok(m["id"].as_str().unwrap()).await;
        assert_eq!(got, v);
        assert_eq!(version, 1);
    }
    // An empty value round-trips too when the request allows it (refused otherwise: see the
    // api_rules suite).
    let mut body = create_body(&format!("rt-{}", uniq()), "", "global", None);
    body["allow_empty"] = json!(true);
    let r = api
        .call(Method::POST, "/secrets")
        .json(&body)
        .send()
        .await
        .expect_status(201);
    let (got, version) = api.decrypt_ok(r.json()["id"].as_str().unwrap()).await;
    assert_eq!((got.as_str(), version), ("", 1));
}

async fn check_bad_requests(api: Api) {
    let post = |body: &str| {
        api.call(Method::POST, "/secrets")
            .raw(Some(JSON), body.to_owned())
            .send()
    };
    // Malformed JSON.
    for body in [
        "{not json",
        r#"{"name":"a","value":"b","scope_type":"global""#,
        "",
        "\u{feff}{}",
        r#"{"name":"a","value":"\ud800","scope_type":"global"}"#,
    ] {
        let r = post(body).await;
        assert_eq!(r.status, 400, "{body:?}: {}", r.ctx());
        assert_eq!(r.code(), "invalid_json", "{body:?}: {}", r.ctx());
    }
    api.call(Method::POST, "/secrets")
        .raw(
            Some(JSON),
            b"{\"name\":\"n\",\"value\":\"\xff\xfe\",\"scope_type\":\"global\"}".to_vec(),
        )
        .send()
        .await
        .expect_error(400, "invalid_json");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    post(&deep).await.expect_error(400, "invalid_json");

    // Wrong shapes and types, missing and unknown fields.
    let secret = api.secret();
    for body in [
        json!(null),
        json!([]),
        json!("x"),
        json!({"name": 5, "value": secret, "scope_type": "global"}),
        json!({"name": "n", "value": 123, "scope_type": "global"}),
        json!({"name": "n", "value": [secret], "scope_type": "global"}),
        json!({"name": "n", "value": secret, "scope_type": true}),
        json!({"name": "n", "value": secret, "scope_type": "workspace", "scope_id": 7}),
        json!({"name": "n", "scope_type": "global"}),
        json!({"value": secret, "scope_type": "global"}),
        json!({"name": "n", "value": secret}),
        json!({"name": "n", "value": secret, "scope_type": "global", "owner": "me"}),
    ] {
        let r = api.call(Method::POST, "/secrets").json(&body).send().await;
        assert_eq!(r.status, 400, "{body}: {}", r.ctx());
        assert_eq!(r.code(), "invalid_json", "{body}: {}", r.ctx());
        assert!(!r.body.contains(&secret), "value echoed: {}", r.ctx());
    }
    post(&format!(
        r#"{{"name":"a","name":"b","value":"{secret}","scope_type":"global"}}"#
    ))
    .await
    .expect_error(400, "invalid_json");

    // Rule violations: scope type, scope id, names.
    let n = format!("bad-{}", uniq());
    let too_long = "x".repeat(129);
    for (name, st, sid) in [
        (n.as_str(), "Global", None),
        (n.as_str(), "team", None),
        (n.as_str(), "", None),
        (n.as_str(), "global", Some("ws-1")),
        (n.as_str(), "global", Some("")),
        (n.as_str(), "workspace", None),
        (n.as_str(), "agent", None),
        (n.as_str(), "workspace", Some("")),
        (n.as_str(), "workspace", Some("a b")),
        (n.as_str(), "agent", Some("x/y")),
        ("a b", "global", None),
        ("", "global", None),
        (too_long.as_str(), "global", None),
        ("ünïcode", "global", None),
        ("a\nb", "global", None),
        ("../etc", "workspace", Some("a b")),
    ] {
        let r = api
            .call(Method::POST, "/secrets")
            .json(&create_body(name, &secret, st, sid))
            .send()
            .await;
        assert_eq!(r.status, 400, "{name:?} {st:?} {sid:?}: {}", r.ctx());
        assert_eq!(r.code(), "invalid_request", "{}", r.ctx());
        assert!(!r.body.contains(&secret), "value echoed: {}", r.ctx());
    }
    // The longest name and scope id that are allowed.
    let longest: String = (0..4).map(|_| token()).collect::<String>()[..128].to_owned();
    api.create(&longest, "v", "global", None).await;
    let sid: String = format!("ws-1:a.b_c@d-{}", "z".repeat(115));
    assert_eq!(sid.len(), 128);
    api.create("n", "v", "workspace", Some(&sid)).await;

    // Invalid ids in the path.
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let r = api
            .call(method.clone(), "/secrets/not-a-uuid")
            .json(&json!({"value": "v"}))
            .send()
            .await;
        assert_eq!(r.status, 400, "{}", r.ctx());
        assert_eq!(r.code(), "invalid_id", "{}", r.ctx());
    }
    api.decrypt("not-a-uuid", "why")
        .await
        .expect_error(400, "invalid_id");
    for path in [
        "/secrets/%FF",
        "/secrets/12345678-1234-1234-1234-12345678901",
        "/secrets/%20",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, 400, "{}", r.ctx());
    }

    // List parameters.
    for q in [
        "limit=0",
        "limit=abc",
        "limit=-1",
        "limit=1001",
        "limit=99999999999",
        "limit=",
        "cursor=abc",
        "scope_type=bogus",
        "scope_type=Global",
        "scope_type=%FF",
        "foo=1",
    ] {
        let r = api.get(&format!("/secrets?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.ctx());
        assert_eq!(r.code(), "invalid_request", "{q}: {}", r.ctx());
    }
    api.get("/secrets?limit=1000").await.expect_status(200);
    api.get(&format!("/secrets?cursor={}", Uuid::new_v4()))
        .await
        .expect_status(200);

    // If-Match: a malformed field is 400; a well-formed tag that names no version is 412
    // (RFC 9110 compares entity-tags byte for byte).
    let m = api
        .create(&format!("im-{}", uniq()), "v", "global", None)
        .await;
    let id = m["id"].as_str().unwrap();
    for bad in ["abc", "W/3", "\"1"] {
        let r = api.update(id, "v2", Some(bad)).await;
        assert_eq!(r.status, 400, "If-Match {bad}: {}", r.ctx());
    }
    for other in ["\"0\"", "\"-1\"", "\"\"", "\"1.5\"", "\"01\""] {
        let r = api.update(id, "v2", Some(other)).await;
        assert_eq!(r.status, 412, "If-Match {other}: {}", r.ctx());
    }
    // `If-Match: *` matches any current version (RFC 9110).
    api.update(id, "v2", Some("*")).await.expect_status(200);
}

async fn check_not_found_and_routing(api: Api) {
    let unknown = Uuid::new_v4().to_string();
    api.get(&format!("/secrets/{unknown}"))
        .await
        .expect_error(404, "not_found");
    api.update(&unknown, "v", None)
        .await
        .expect_error(404, "not_found");
    api.update(&unknown, "v", Some("\"1\""))
        .await
        .expect_error(404, "not_found");
    api.call(Method::DELETE, &format!("/secrets/{unknown}"))
        .send()
        .await
        .expect_error(404, "not_found");
    api.decrypt(&unknown, "why")
        .await
        .expect_error(404, "not_found");

    // Unknown routes.
    for path in [
        "/",
        "/nope",
        "/secrets/",
        &format!("/secrets/{unknown}/versions"),
        "/v1/secrets",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status, 404, "{}", r.ctx());
        assert_eq!(r.code(), "not_found", "{}", r.ctx());
    }
    // Wrong methods on known paths.
    for (method, path) in [
        (Method::POST, "/health".to_owned()),
        (Method::DELETE, "/secrets".to_owned()),
        (Method::PUT, "/secrets".to_owned()),
        (Method::PATCH, "/secrets".to_owned()),
        (Method::POST, format!("/secrets/{unknown}")),
        (Method::GET, format!("/secrets/{unknown}/rollback")),
        (Method::GET, format!("/secrets/{unknown}/decrypt")),
        (Method::POST, "/metrics".to_owned()),
        (Method::OPTIONS, "/secrets".to_owned()),
    ] {
        let r = api.call(method, &path).send().await;
        assert_eq!(r.status, 405, "{}", r.ctx());
        assert_eq!(r.code(), "method_not_allowed", "{}", r.ctx());
    }
}

async fn check_unsupported_media_type(api: Api) {
    let value = api.secret();
    let body = create_body(&format!("ct-{}", uniq()), &value, "global", None).to_string();
    for ct in [None, Some("text/plain"), Some("application/xml"), Some("")] {
        let r = api
            .call(Method::POST, "/secrets")
            .raw(ct, body.clone())
            .send()
            .await;
        assert_eq!(r.status, 415, "{ct:?}: {}", r.ctx());
        assert_eq!(r.code(), "unsupported_media_type", "{}", r.ctx());
    }
    // Parameters and case do not matter.
    api.call(Method::POST, "/secrets")
        .raw(Some("Application/JSON; charset=utf-8"), body)
        .send()
        .await
        .expect_status(201);
    let m = api
        .create(&format!("ct-{}", uniq()), "v", "global", None)
        .await;
    api.call(
        Method::PUT,
        &format!("/secrets/{}", m["id"].as_str().unwrap()),
    )
    .raw(None, r#"{"value":"v2"}"#)
    .send()
    .await
    .expect_error(415, "unsupported_media_type");
}

async fn check_conflicts_and_scopes(api: Api) {
    let name = format!("dup-{}", uniq());
    let (ws_a, ws_b) = (format!("ws-a-{}", uniq()), format!("ws-b-{}", uniq()));
    let v = api.secret();
    api.create(&name, &v, "global", None).await;
    let r = api
        .call(Method::POST, "/secrets")
        .json(&create_body(&name, &v, "global", None))
        .send()
        .await
        .expect_error(409, "name_taken");
    assert!(!r.body.contains(&v), "{}", r.ctx());
    // The same name in other scopes is fine, once per scope.
    api.create(&name, &v, "workspace", Some(&ws_a)).await;
    api.call(Method::POST, "/secrets")
        .json(&create_body(&name, &v, "workspace", Some(&ws_a)))
        .send()
        .await
        .expect_error(409, "name_taken");
    api.create(&name, &v, "workspace", Some(&ws_b)).await;
    let agent = api.create(&name, &v, "agent", Some(&ws_a)).await;
    api.call(Method::POST, "/secrets")
        .json(&create_body(&name, &v, "agent", Some(&ws_a)))
        .send()
        .await
        .expect_error(409, "name_taken");
    // Names are case-sensitive.
    api.create(&name.to_uppercase(), &v, "global", None).await;

    // Listing by scope returns exactly that scope.
    let r = api
        .get(&format!("/secrets?scope_type=workspace&scope_id={ws_a}"))
        .await
        .expect_status(200);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", r.ctx());
    assert_eq!(items[0]["scope_type"], "workspace");
    assert_eq!(items[0]["scope_id"], ws_a.as_str());
    let r = api
        .get(&format!("/secrets?scope_type=agent&scope_id={ws_a}"))
        .await
        .expect_status(200);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", r.ctx());
    assert_eq!(items[0]["id"], agent["id"]);
    // A scope id alone: the workspace and the agent scope of that id (it used to be a 400).
    let r = api
        .get(&format!("/secrets?scope_id={ws_a}"))
        .await
        .expect_status(200);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{}", r.ctx());
    assert_eq!(items[0]["name"], name.as_str(), "{}", r.ctx());
    assert_eq!(items[1]["name"], name.as_str(), "{}", r.ctx());
    let mut types: Vec<&str> = items
        .iter()
        .map(|i| i["scope_type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["agent", "workspace"], "{}", r.ctx());

    // Filtering by type only returns only that type.
    let r = api
        .get("/secrets?scope_type=agent&limit=1000")
        .await
        .expect_status(200);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert!(items.iter().any(|i| i["id"] == agent["id"]), "{}", r.ctx());
    assert!(
        items.iter().all(|i| i["scope_type"] == "agent"),
        "{}",
        r.ctx()
    );
    let r = api
        .get("/secrets?scope_type=global&limit=1000")
        .await
        .expect_status(200);
    let items = r.json()["items"].as_array().unwrap().clone();
    assert!(
        items
            .iter()
            .all(|i| i["scope_type"] == "global" && i["scope_id"].is_null()),
        "{}",
        r.ctx()
    );

    // A deleted name can be used again in its scope.
    let id = agent["id"].as_str().unwrap();
    api.call(Method::DELETE, &format!("/secrets/{id}"))
        .send()
        .await
        .expect_status(204);
    api.create(&name, &v, "agent", Some(&ws_a)).await;
}

async fn check_sizes(api: Api) {
    let name = || format!("size-{}", uniq());
    // Exactly the limit is accepted and round-trips.
    let exact = "a".repeat(MAX_VALUE);
    let m = api.create(&name(), &exact, "global", None).await;
    let id = m["id"].as_str().unwrap().to_owned();
    let (got, _) = api.decrypt_ok(&id).await;
    assert_eq!(got.len(), MAX_VALUE);
    assert!(got == exact);
    // One byte more (counted in UTF-8 bytes, not characters).
    api.call(Method::POST, "/secrets")
        .json(&create_body(
            &name(),
            &"a".repeat(MAX_VALUE + 1),
            "global",
            None,
        ))
        .send()
        .await
        .expect_error(413, "value_too_large");
    api.call(Method::POST, "/secrets")
        .json(&create_body(
            &name(),
            &"é".repeat(MAX_VALUE / 2 + 1),
            "global",
            None,
        ))
        .send()
        .await
        .expect_error(413, "value_too_large");
    // 200 KB value: over the value limit, under the body limit.
    let tok = api.secret();
    let big = tok.repeat(200_000 / tok.len());
    let r = api
        .call(Method::POST, "/secrets")
        .json(&create_body(&name(), &big, "global", None))
        .send()
        .await
        .expect_error(413, "value_too_large");
    assert!(!r.body.contains(&tok), "{}", r.ctx());
    api.update(&id, &big, None)
        .await
        .expect_error(413, "value_too_large");
    assert_eq!(
        api.decrypt_ok(&id).await.1,
        1,
        "a refused update changed the version"
    );
    // A value at the limit made only of bytes JSON escapes six-fold still fits the body limit.
    let escaped = "\u{1}".repeat(MAX_VALUE);
    let m = api.create(&name(), &escaped, "global", None).await;
    let (got, _) = api.decrypt_ok(m["id"].as_str().unwrap()).await;
    assert!(got == escaped);
    // 1 MB body: over the body limit.
    let huge = "b".repeat(1024 * 1024);
    for (method, path, body) in [
        (
            "POST",
            "/secrets".to_owned(),
            create_body(&name(), &huge, "global", None),
        ),
        ("PUT", format!("/secrets/{id}"), json!({ "value": huge })),
        (
            "POST",
            format!("/secrets/{id}/decrypt"),
            json!({ "reason": huge }),
        ),
    ] {
        api.send_oversized(method, &path, body.to_string().into_bytes())
            .await
            .expect_error(413, "payload_too_large");
    }
    // The server still answers normally afterwards.
    assert_eq!(api.decrypt_ok(&id).await.1, 1);
}

async fn check_update_and_if_match(api: Api) {
    let v1 = api.secret();
    let m = api
        .create(&format!("upd-{}", uniq()), &v1, "workspace", Some("ws-upd"))
        .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let created_at = m["created_at"].as_str().unwrap().to_owned();

    // PUT without If-Match: version 2.
    let v2 = api.secret();
    let r = api.update(&id, &v2, None).await.expect_status(200);
    assert_eq!(r.header("etag").as_deref(), Some("\"2\""), "{}", r.ctx());
    let u = r.json();
    assert_eq!(u["version"], 2);
    assert_eq!(u["id"], id.as_str());
    assert_eq!(u["name"], m["name"]);
    assert_eq!(u["scope_id"], "ws-upd");
    assert_eq!(u["created_at"], created_at.as_str());
    assert!(u["updated_at"].as_str().unwrap() >= created_at.as_str());
    assert!(u.get("value").is_none());
    assert_eq!(api.decrypt_ok(&id).await, (v2.clone(), 2));
    let r = api.get(&format!("/secrets/{id}")).await.expect_status(200);
    assert_eq!(r.json()["version"], 2);
    assert_eq!(r.header("etag").as_deref(), Some("\"2\""));

    // If-Match with the current version works.
    let v3 = api.secret();
    let r = api.update(&id, &v3, Some("\"2\"")).await.expect_status(200);
    assert_eq!(r.json()["version"], 3);
    // Stale and future versions: 412, nothing changes.
    for stale in ["\"1\"", "\"2\"", "\"99\""] {
        let v = api.secret();
        let r = api
            .update(&id, &v, Some(stale))
            .await
            .expect_error(412, "version_mismatch");
        assert!(!r.body.contains(&v), "{}", r.ctx());
    }
    assert_eq!(api.decrypt_ok(&id).await, (v3, 3));
    // RFC 9110: If-Match compares strongly, so even the weak form of the current version
    // fails (412, nothing written); `*` matches whatever is current.
    let v4 = api.secret();
    api.update(&id, &v4, Some("W/\"3\""))
        .await
        .expect_error(412, "version_mismatch");
    assert_eq!(api.decrypt_ok(&id).await.1, 3);
    api.update(&id, &v4, Some("*")).await.expect_status(200);
    let v5 = api.secret();
    let r = api.update(&id, &v5, Some("\"4\"")).await.expect_status(200);
    assert_eq!(r.json()["version"], 5);
    assert_eq!(api.decrypt_ok(&id).await, (v5, 5));

    // Update body problems.
    let path = format!("/secrets/{id}");
    for body in [
        r#"{}"#,
        r#"{"value":5}"#,
        r#"{"value":"x","name":"y"}"#,
        "nope",
    ] {
        let r = api
            .call(Method::PUT, &path)
            .raw(Some(JSON), body)
            .send()
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.ctx());
        assert_eq!(r.code(), "invalid_json", "{}", r.ctx());
    }
    assert_eq!(api.decrypt_ok(&id).await.1, 5);
}

async fn check_pagination(api: Api) {
    // Five secrets in a scope of their own, listed two at a time.
    let ws = format!("ws-page-{}", uniq());
    let mut created = Vec::new();
    for i in 0..5 {
        let v = api.secret();
        let m = api
            .create(&format!("p{i}"), &v, "workspace", Some(&ws))
            .await;
        created.push(m["id"].as_str().unwrap().to_owned());
    }
    let walk = |ws: String, limit: u32| {
        let api = api.clone();
        async move {
            let mut pages = Vec::new();
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = format!("/secrets?scope_type=workspace&scope_id={ws}&limit={limit}");
                if let Some(c) = &cursor {
                    q.push_str(&format!("&cursor={c}"));
                }
                let r = api.get(&q).await.expect_status(200);
                let v = r.json();
                let items = v["items"].as_array().unwrap();
                pages.push(items.len());
                for it in items {
                    assert!(it.get("value").is_none(), "{}", r.ctx());
                    assert_eq!(it["scope_id"], ws.as_str(), "{}", r.ctx());
                    seen.push(it["id"].as_str().unwrap().to_owned());
                }
                match v["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => {
                        assert_eq!(v["next_cursor"], Value::Null, "{}", r.ctx());
                        break;
                    }
                }
                assert!(pages.len() < 20, "pagination does not end: {pages:?}");
            }
            (pages, seen)
        }
    };
    let (pages, seen) = walk(ws.clone(), 2).await;
    assert_eq!(pages, vec![2, 2, 1]);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an item was listed twice: {seen:?}"
    );
    assert_eq!(unique, created.iter().cloned().collect::<BTreeSet<_>>());
    // The listing is ordered by id.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    // A page that ends exactly at the end: no empty trailing page.
    let (pages, _) = walk(ws.clone(), 5).await;
    assert_eq!(pages, vec![5]);
    let (pages, seen1) = walk(ws.clone(), 1).await;
    assert_eq!(pages, vec![1; 5]);
    assert_eq!(seen1, seen);
    let ws4 = format!("ws-page4-{}", uniq());
    for i in 0..4 {
        api.create(&format!("q{i}"), "v", "workspace", Some(&ws4))
            .await;
    }
    let (pages, _) = walk(ws4, 2).await;
    assert_eq!(pages, vec![2, 2]);

    // Unfiltered listing also walks every secret once.
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let q = match &cursor {
            Some(c) => format!("/secrets?limit=7&cursor={c}"),
            None => "/secrets?limit=7".to_owned(),
        };
        let v = api.get(&q).await.expect_status(200).json();
        all.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "duplicates in the full listing");
    for id in &created {
        assert!(unique.contains(id));
    }
    // Default page (no limit) returns them too.
    let v = api
        .get(&format!("/secrets?scope_type=workspace&scope_id={ws}"))
        .await
        .expect_status(200)
        .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 5);
    assert_eq!(v["next_cursor"], Value::Null);
}

async fn check_concurrent_updates(api: Api) {
    let m = api
        .create(&format!("conc-{}", uniq()), &api.secret(), "global", None)
        .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (api, id, v) = (api.clone(), id.clone(), api.secret());
        set.spawn(async move {
            let r = api.update(&id, &v, None).await;
            (r.status, r.body, v)
        });
    }
    let mut versions = Vec::new();
    let mut by_version = std::collections::HashMap::new();
    while let Some(res) = set.join_next().await {
        let (status, body, v) = res.unwrap();
        assert_eq!(status, 200, "concurrent PUT: {body}");
        let ver = serde_json::from_str::<Value>(&body).unwrap()["version"]
            .as_i64()
            .unwrap();
        versions.push(ver);
        by_version.insert(ver, v);
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=21).collect::<Vec<i64>>());
    let r = api.get(&format!("/secrets/{id}")).await.expect_status(200);
    assert_eq!(r.json()["version"], 21);
    let (value, version) = api.decrypt_ok(&id).await;
    assert_eq!(version, 21);
    assert_eq!(Some(&value), by_version.get(&21));

    // Ten concurrent PUTs with the same If-Match: exactly one wins.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (api, id, v) = (api.clone(), id.clone(), api.secret());
        set.spawn(async move { api.update(&id, &v, Some("\"21\"")).await });
    }
    one_wins(set, 200, (412, "version_mismatch")).await;
    assert_eq!(api.decrypt_ok(&id).await.1, 22);
}

/// Waits for racing requests: exactly one answers `winner`, every other `loser` with its code.
async fn one_wins(
    mut set: tokio::task::JoinSet<Resp>,
    winner: u16,
    (loser, loser_code): (u16, &str),
) {
    let mut statuses = Vec::new();
    while let Some(res) = set.join_next().await {
        let r = res.unwrap();
        if r.status == loser {
            assert_eq!(r.code(), loser_code);
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    let mut expected = vec![loser; statuses.len().saturating_sub(1)];
    expected.push(winner);
    expected.sort_unstable();
    assert_eq!(statuses, expected);
}

async fn check_concurrent_creates(api: Api) {
    let name = format!("race-{}", uniq());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (api, name, v) = (api.clone(), name.clone(), api.secret());
        set.spawn(async move {
            api.call(Method::POST, "/secrets")
                .json(&create_body(&name, &v, "workspace", Some("ws-race")))
                .send()
                .await
        });
    }
    one_wins(set, 201, (409, "name_taken")).await;
}

/// Decrypts racing with updates always return a matching (value, version) pair; racing deletes
/// of one secret give one 204 and 404s.
async fn check_concurrent_reads_and_deletes(api: Api) {
    let v1 = api.secret();
    let m = api
        .create(&format!("cr-{}", uniq()), &v1, "global", None)
        .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (api, id, v) = (api.clone(), id.clone(), api.secret());
        writers.spawn(async move {
            let r = api.update(&id, &v, None).await.expect_status(200);
            (r.json()["version"].as_i64().unwrap(), v)
        });
    }
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (api, id) = (api.clone(), id.clone());
        readers.spawn(async move { api.decrypt_ok(&id).await });
    }
    let mut by_version = std::collections::HashMap::from([(1, v1)]);
    while let Some(res) = writers.join_next().await {
        let (ver, v) = res.unwrap();
        assert!(by_version.insert(ver, v).is_none(), "version {ver} twice");
    }
    while let Some(res) = readers.join_next().await {
        let (value, ver) = res.unwrap();
        assert_eq!(
            by_version.get(&ver),
            Some(&value),
            "decrypt returned a value that does not belong to version {ver}"
        );
    }

    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (api, id) = (api.clone(), id.clone());
        set.spawn(async move {
            if i % 2 == 0 {
                let r = api
                    .call(Method::DELETE, &format!("/secrets/{id}"))
                    .send()
                    .await;
                ("delete", r.status)
            } else {
                let r = api.update(&id, "late", None).await;
                ("update", r.status)
            }
        });
    }
    let mut deleted = 0;
    while let Some(res) = set.join_next().await {
        let (what, status) = res.unwrap();
        match (what, status) {
            ("delete", 204) => deleted += 1,
            ("delete", 404) | ("update", 200) | ("update", 404) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(deleted, 1, "exactly one DELETE should succeed");
    api.get(&format!("/secrets/{id}"))
        .await
        .expect_error(404, "not_found");
    api.decrypt(&id, "after delete")
        .await
        .expect_error(404, "not_found");
}

async fn check_metrics(api: Api) {
    let m = api
        .create(&format!("met-{}", uniq()), &api.secret(), "global", None)
        .await;
    let id = m["id"].as_str().unwrap();
    let before = api.metric("rcrt_secret_decrypt_success_total").await;
    api.decrypt_ok(id).await;
    let r = api.get("/metrics").await.expect_status(200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{}",
        r.ctx()
    );
    assert!(
        r.body.lines().any(|l| l == "rcrt_kek_configured 1"),
        "{}",
        r.body
    );
    assert_eq!(
        api.metric("rcrt_secret_decrypt_success_total").await,
        before + 1
    );
    // Refused decrypts (no reason, unknown id) are not decryption failures.
    api.call(Method::POST, &format!("/secrets/{id}/decrypt"))
        .send()
        .await
        .expect_error(400, "reason_required");
    api.decrypt(&Uuid::new_v4().to_string(), "x")
        .await
        .expect_error(404, "not_found");
    assert_eq!(api.metric("rcrt_secret_decrypt_failures").await, 0);
    assert_eq!(
        api.metric("rcrt_secret_decrypt_success_total").await,
        before + 1
    );
}

/// The leak-check flow: several distinctive secrets created, updated, decrypted, deleted, plus
/// failing requests carrying values. The scan itself runs after the suite (see `leak_problems`).
async fn check_leak_flow(api: Api) {
    let ws = format!("ws-leak-{}", uniq());
    let mut ids = Vec::new();
    for i in 0..4 {
        let v = api.secret();
        let m = api
            .create(&format!("leak-{i}"), &v, "workspace", Some(&ws))
            .await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let v = api.secret();
        api.update(id, &v, None).await.expect_status(200);
        assert_eq!(api.decrypt_ok(id).await, (v, 2));
    }
    // Failing requests that carry values.
    let v = api.secret();
    api.call(Method::POST, "/secrets")
        .json(&create_body("leak-0", &v, "workspace", Some(&ws)))
        .send()
        .await
        .expect_error(409, "name_taken");
    api.call(Method::POST, "/secrets")
        .json(&create_body("leak x", &v, "workspace", Some(&ws)))
        .send()
        .await
        .expect_error(400, "invalid_request");
    api.call(Method::POST, "/secrets")
        .raw(
            Some(JSON),
            format!(r#"{{"name":"leak-9","value":"{v}","scope_type":"workspace","scope_id":"{ws}","x":1}}"#),
        )
        .send()
        .await
        .expect_error(400, "invalid_json");
    api.call(Method::POST, "/secrets")
        .raw(Some(JSON), format!(r#"{{"name":"leak-9","value":"{v}"#))
        .send()
        .await
        .expect_error(400, "invalid_json");
    api.call(Method::POST, "/secrets")
        .raw(
            Some("text/plain"),
            format!(r#"{{"name":"leak-9","value":"{v}","scope_type":"global"}}"#),
        )
        .send()
        .await
        .expect_error(415, "unsupported_media_type");
    api.update(&ids[0], &v, Some("\"1\""))
        .await
        .expect_error(412, "version_mismatch");
    api.update(&Uuid::new_v4().to_string(), &v, None)
        .await
        .expect_error(404, "not_found");
    api.call(Method::PUT, &format!("/secrets/{}", ids[0]))
        .raw(Some(JSON), format!(r#"{{"value":"{v}","extra":"{v}"}}"#))
        .send()
        .await
        .expect_error(400, "invalid_json");
    // Delete half of them (crypto-shredding).
    for id in &ids[..2] {
        api.call(Method::DELETE, &format!("/secrets/{id}"))
            .send()
            .await
            .expect_status(204);
    }
    // Metadata and listings never carry values.
    let r = api
        .get(&format!("/secrets?scope_type=workspace&scope_id={ws}"))
        .await
        .expect_status(200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
}

/// Scans everything the suite's server printed, answered and wrote for secret values and the KEK.
fn leak_problems(env: &Env, api: &Api, kek: &str, output: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let values = api.values();
    if values.len() < 50 {
        problems.push(format!("only {} values were registered", values.len()));
    }
    let kek_raw = STANDARD.decode(kek).unwrap();
    let kek_forms = [kek.to_owned(), URL_SAFE_NO_PAD.encode(&kek_raw), {
        kek_raw
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }];

    // The server really ran at debug level, on the intended backend.
    if !output.contains("DEBUG") {
        problems.push("server output has no DEBUG lines; RUST_LOG=debug not in effect".into());
    }
    let store = match env.backend {
        Backend::Sqlite => "store=\"sqlite\"",
        Backend::Postgres => "store=\"postgresql\"",
    };
    if !output.contains(store) {
        problems.push(format!("server output does not say {store}"));
    }

    // Server output.
    for k in &kek_forms {
        if output.contains(k.as_str()) {
            problems.push("the KEK appears in the server output".into());
        }
    }
    for v in &values {
        if output.contains(v.as_str()) {
            problems.push(format!("secret value {v} appears in the server output"));
        }
    }

    // Responses: only a successful decrypt may carry a value; nothing carries the KEK.
    for e in api.0.log.lock().unwrap().iter() {
        let may_carry = e.method == "POST" && e.path.ends_with("/decrypt") && e.status == 200;
        if e.body.contains(kek) {
            problems.push(format!("the KEK appears in {} {}", e.method, e.path));
        }
        if may_carry {
            continue;
        }
        for v in &values {
            if e.body.contains(v.as_str()) {
                problems.push(format!(
                    "value {v} appears in the response to {} {} ({})",
                    e.method, e.path, e.status
                ));
            }
        }
    }

    // Files in the working directory (SQLite database, WAL, shm; the server log).
    let db = env.dir.path().join("rcrt.db");
    match env.backend {
        Backend::Sqlite => {
            if !db.exists() {
                problems.push("rcrt.db was not created in the working directory".into());
            }
        }
        Backend::Postgres => {
            if db.exists() {
                problems.push("rcrt.db exists although DB_URL named PostgreSQL".into());
            }
        }
    }
    let mut scanned = Vec::new();
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        scanned.push(format!("{name} ({} bytes)", bytes.len()));
        if contains_bytes(&bytes, &kek_raw) {
            problems.push(format!("raw KEK bytes appear in {name}"));
        }
        for k in &kek_forms {
            if contains_bytes(&bytes, k.as_bytes()) {
                problems.push(format!("the KEK appears in {name}"));
            }
        }
        for v in &values {
            if contains_bytes(&bytes, v.as_bytes()) {
                problems.push(format!("secret value {v} appears in {name}"));
            }
        }
    }
    eprintln!("[{:?}] leak scan: {}", env.backend, scanned.join(", "));
    problems
}

// ---------------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------------

async fn ready_kek_id(base: &str) -> String {
    let api = Api::new(base.to_owned());
    let r = api.get("/ready").await.expect_status(200);
    r.json()["kek_id"].as_str().unwrap().to_owned()
}

/// The KEK id the server reports for `kek` (a throwaway SQLite server).
async fn kek_id_of(kek: &str) -> String {
    let mut env = Env::new(Backend::Sqlite).await;
    let base = env.start(&[("LOCAL_KEK_BASE64", kek)]);
    ready_kek_id(&base).await
}

#[tokio::test]
async fn startup_missing_kek_refuses_with_hint() {
    let env = Env::new(Backend::Sqlite).await;
    let empty_file = env.dir.path().join("empty.kek");
    std::fs::write(&empty_file, "\n").unwrap();
    let empty_file = empty_file.to_string_lossy().into_owned();
    for extra in [
        vec![],
        vec![("LOCAL_KEK_BASE64", "")],
        vec![("LOCAL_KEK_BASE64_FILE", empty_file.as_str())],
    ] {
        let (status, out) = env.run_to_exit(&extra);
        assert!(!status.success(), "{extra:?}: {status}\n{out}");
        if extra.iter().any(|(k, _)| *k == "LOCAL_KEK_BASE64_FILE") {
            // The variable is set: the message names it and the file, not "missing".
            assert!(
                out.contains("LOCAL_KEK_BASE64_FILE")
                    && out.contains(&empty_file)
                    && out.contains("empty"),
                "{out}"
            );
        } else {
            assert!(out.contains("LOCAL_KEK_BASE64 missing"), "{extra:?}: {out}");
        }
        assert!(out.contains("openssl rand -base64 32"), "{extra:?}: {out}");
    }
}

#[tokio::test]
async fn startup_invalid_kek_refuses_without_echoing_it() {
    let env = Env::new(Backend::Sqlite).await;
    let k = gen_kek();
    let hex: String = random_bytes(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let bad = [
        k.trim_end_matches('=').to_owned(),   // 43 characters
        format!("{k}="),                      // 45 characters
        k[..30].to_owned(),                   // short
        format!("-{}", &k[1..]),              // URL-safe alphabet
        STANDARD.encode(random_bytes(31)),    // 31 bytes
        STANDARD.encode(random_bytes(33)),    // 33 bytes
        hex,                                  // `openssl rand -hex 32`
        format!("{} {}", &k[..22], &k[22..]), // a space inside
        format!("\"{k}\""),                   // quotes kept by a shell mistake
    ];
    for b in &bad {
        let (status, out) = env.run_to_exit(&[("LOCAL_KEK_BASE64", b.as_str())]);
        assert!(!status.success(), "{b}: {status}\n{out}");
        assert!(out.contains("Invalid KEK format"), "{b}: {out}");
        assert!(out.contains("openssl rand -base64 32"), "{b}: {out}");
        // Neither the value nor a recognisable piece of it.
        assert!(!out.contains(b.as_str()), "KEK echoed: {out}");
        let probe = b.trim_matches('"').trim_start_matches('-');
        assert!(!out.contains(&probe[..16]), "KEK piece echoed: {out}");
    }
    // The same from a file and from .env.
    let file = env.dir.path().join("bad.kek");
    std::fs::write(&file, format!("{}\n", bad[0])).unwrap();
    let (status, out) = env.run_to_exit(&[("LOCAL_KEK_BASE64_FILE", &file.to_string_lossy())]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("Invalid KEK format"), "{out}");
    assert!(!out.contains(&bad[0][..16]), "KEK echoed: {out}");
    std::fs::write(
        env.dir.path().join(".env"),
        format!("LOCAL_KEK_BASE64=\"{}\"\n", bad[1]),
    )
    .unwrap();
    let (status, out) = env.run_to_exit(&[]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("Invalid KEK format"), "{out}");
    assert!(!out.contains(&bad[1][..16]), "KEK echoed: {out}");
    // An old KEK in a bad format is refused too, without echo.
    std::fs::remove_file(env.dir.path().join(".env")).unwrap();
    let (status, out) = env.run_to_exit(&[
        ("LOCAL_KEK_BASE64", k.as_str()),
        ("LOCAL_KEK_BASE64_OLD", &bad[2]),
    ]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("Invalid KEK format"), "{out}");
    assert!(
        !out.contains(&bad[2][..16]) && !out.contains(&k),
        "KEK echoed: {out}"
    );
}

#[tokio::test]
async fn startup_kek_from_file_with_trailing_newline() {
    let k = gen_kek();
    let expected = kek_id_of(&k).await;
    let mut env = Env::new(Backend::Sqlite).await;
    let file = env.dir.path().join("rcrt_kek");
    // `echo "$KEK" > file` (as in the guide's `docker secret create`), CRLF, and no newline.
    for content in [format!("{k}\r\n"), k.clone(), format!("{k}\n")] {
        std::fs::write(&file, content).unwrap();
        let base = env.start(&[("LOCAL_KEK_BASE64_FILE", &file.to_string_lossy())]);
        assert_eq!(ready_kek_id(&base).await, expected);
    }
    let base = env.start(&[("LOCAL_KEK_BASE64_FILE", &file.to_string_lossy())]);
    let api = Api::new(base);
    let v = api.secret();
    let m = api.create("from-file", &v, "global", None).await;
    assert_eq!(api.decrypt_ok(m["id"].as_str().unwrap()).await, (v, 1));
    assert!(!env.output().contains(&k));
}

#[tokio::test]
async fn startup_kek_from_dotenv_with_quotes() {
    let k = gen_kek();
    let expected = kek_id_of(&k).await;
    let mut env = Env::new(Backend::Sqlite).await;
    // The guide: echo 'LOCAL_KEK_BASE64="..."' >> .env
    std::fs::write(
        env.dir.path().join(".env"),
        format!("# local settings\nLOCAL_KEK_BASE64=\"{k}\"\n"),
    )
    .unwrap();
    let base = env.start(&[]);
    assert_eq!(ready_kek_id(&base).await, expected);
    let api = Api::new(base);
    let m = api.create("from-dotenv", "v", "global", None).await;
    assert_eq!(
        api.decrypt_ok(m["id"].as_str().unwrap()).await,
        ("v".to_owned(), 1)
    );
    assert!(!env.output().contains(&k));
}

#[tokio::test]
async fn startup_kek_env_and_file_both_set_refuses() {
    let env = Env::new(Backend::Sqlite).await;
    let k = gen_kek();
    let file = env.dir.path().join("rcrt_kek");
    std::fs::write(&file, format!("{k}\n")).unwrap();
    let (status, out) = env.run_to_exit(&[
        ("LOCAL_KEK_BASE64", k.as_str()),
        ("LOCAL_KEK_BASE64_FILE", &file.to_string_lossy()),
    ]);
    assert!(!status.success(), "{status}\n{out}");
    assert!(out.contains("LOCAL_KEK_BASE64"), "{out}");
    assert!(out.contains("_FILE"), "{out}");
    assert!(!out.contains(&k), "KEK echoed: {out}");
}

/// An unknown AUTH_MODE stops start-up (the default off loopback, tokens, is in tests/tokens.rs).
#[tokio::test]
async fn startup_unknown_auth_mode_refuses() {
    let env = Env::new(Backend::Sqlite).await;
    let k = gen_kek();
    let (status, out) =
        env.run_to_exit(&[("LOCAL_KEK_BASE64", k.as_str()), ("AUTH_MODE", "magic")]);
    assert_eq!(status.code(), Some(2), "{status}\n{out}");
    assert!(out.contains("AUTH_MODE"), "{out}");
    assert!(!out.contains(&k), "KEK echoed: {out}");
}

/// A store with secrets under KEK 1 refuses KEK 2 (naming KEK 1's id) and starts with KEK 1
/// given as LOCAL_KEK_BASE64_OLD, where the old secrets still decrypt.
async fn kek_mismatch(backend: Backend) {
    let mut env = Env::new(backend).await;
    let (k1, k2, k3) = (gen_kek(), gen_kek(), gen_kek());
    let base = env.start(&[("LOCAL_KEK_BASE64", &k1)]);
    let id1 = ready_kek_id(&base).await;
    let api = Api::new(base);
    let v1 = api.secret();
    let s1 = api.create("rot-1", &v1, "global", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2 = api.secret();
    let s2 = api.create("rot-2", &v2, "agent", Some("a1")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same KEK again: the data survived the restart.
    let base = env.start(&[("LOCAL_KEK_BASE64", &k1)]);
    let api = Api::new(base);
    assert_eq!(api.decrypt_ok(&s1).await, (v1.clone(), 1));
    env.stop();

    // Another KEK: refused, naming the KEK id the store needs.
    let (status, out) = env.run_to_exit(&[("LOCAL_KEK_BASE64", &k2)]);
    assert!(!status.success(), "{status}\n{out}");
    assert!(
        out.contains(&id1),
        "output does not name KEK id {id1}:\n{out}"
    );
    assert!(
        !out.contains(&k1) && !out.contains(&k2),
        "KEK echoed: {out}"
    );
    for v in [&v1, &v2] {
        assert!(!out.contains(v.as_str()));
    }

    // The old KEK given as LOCAL_KEK_BASE64_OLD: starts, old secrets decrypt, new writes use
    // the new KEK. The background re-wrap is off so that the old DEKs really stay under KEK 1.
    let no_rewrap = ("REWRAP_AUTO", "false");
    let base = env.start(&[
        ("LOCAL_KEK_BASE64", &k2),
        ("LOCAL_KEK_BASE64_OLD", &k1),
        no_rewrap,
    ]);
    let id2 = ready_kek_id(&base).await;
    assert_ne!(id2, id1);
    let api = Api::new(base);
    assert_eq!(api.decrypt_ok(&s1).await, (v1.clone(), 1));
    assert_eq!(api.decrypt_ok(&s2).await, (v2.clone(), 1));
    let v1b = api.secret();
    api.update(&s1, &v1b, None).await.expect_status(200);
    assert_eq!(api.decrypt_ok(&s1).await, (v1b.clone(), 2));
    let v3 = api.secret();
    let s3 = api.create("rot-3", &v3, "global", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A comma-separated list of old KEKs (with a space), the needed one not first.
    let base = env.start(&[
        ("LOCAL_KEK_BASE64", &k2),
        ("LOCAL_KEK_BASE64_OLD", &format!("{k3}, {k1}")),
        no_rewrap,
    ]);
    let api = Api::new(base);
    assert_eq!(api.decrypt_ok(&s1).await, (v1b.clone(), 2));
    assert_eq!(api.decrypt_ok(&s2).await, (v2.clone(), 1));
    assert_eq!(api.decrypt_ok(&s3).await, (v3.clone(), 1));
    // Nothing was re-wrapped, so those decrypts used KEK 1.
    let st = api.get("/admin/kek/status").await.expect_status(200).json();
    assert!(
        st["versions_per_kek"][&id1].as_i64().unwrap_or(0) > 0,
        "{st}"
    );
    let out = env.output();
    env.stop();
    for k in [&k1, &k2, &k3] {
        assert!(!out.contains(k.as_str()), "KEK echoed: {out}");
    }

    // The guide's rotation, step 4-5: with the default background re-wrap every DEK moves to
    // KEK 2; then KEK 2 alone is enough.
    let base = env.start(&[("LOCAL_KEK_BASE64", &k2), ("LOCAL_KEK_BASE64_OLD", &k1)]);
    let api = Api::new(base);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = api.get("/admin/kek/status").await.expect_status(200).json();
        let body = st.to_string();
        assert!(!body.contains(&k1) && !body.contains(&k2), "KEK in status");
        if st["rewrap"]["remaining"] == 0 {
            let per_kek = st["versions_per_kek"].as_object().unwrap();
            assert_eq!(per_kek.keys().collect::<Vec<_>>(), vec![&id2], "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "re-wrap did not finish: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = env.start(&[("LOCAL_KEK_BASE64", &k2)]);
    let api = Api::new(base);
    assert_eq!(api.decrypt_ok(&s1).await, (v1b, 2));
    assert_eq!(api.decrypt_ok(&s2).await, (v2, 1));
    assert_eq!(api.decrypt_ok(&s3).await, (v3, 1));
    env.stop();

    // KEK 3 alone: refused, naming the id in use.
    let (status, out) = env.run_to_exit(&[("LOCAL_KEK_BASE64", &k3)]);
    assert!(!status.success(), "{status}\n{out}");
    assert!(
        out.contains(&id2),
        "output does not name KEK id {id2}:\n{out}"
    );
}

#[tokio::test]
async fn startup_kek_mismatch_sqlite() {
    kek_mismatch(Backend::Sqlite).await;
}

#[tokio::test]
async fn startup_kek_mismatch_postgres() {
    kek_mismatch(Backend::Postgres).await;
}

/// An empty store (new, or whose secrets were all deleted) starts with any valid KEK.
async fn empty_store_any_kek(backend: Backend) {
    let mut env = Env::new(backend).await;
    let base = env.start(&[("LOCAL_KEK_BASE64", &gen_kek())]);
    let api = Api::new(base);
    api.get("/ready").await.expect_status(200);
    // The store now exists (migrated) but holds nothing.
    let base = env.start(&[("LOCAL_KEK_BASE64", &gen_kek())]);
    let api = Api::new(base);
    let m = api
        .create("short-lived", &api.secret(), "global", None)
        .await;
    let id = m["id"].as_str().unwrap();
    api.update(id, "v2", None).await.expect_status(200);
    api.call(Method::DELETE, &format!("/secrets/{id}"))
        .send()
        .await
        .expect_status(204);
    // Every secret deleted (crypto-shredded): no DEK is left that needs the old KEK.
    let base = env.start(&[("LOCAL_KEK_BASE64", &gen_kek())]);
    let api = Api::new(base);
    api.get("/ready").await.expect_status(200);
    let v = api.secret();
    let m = api.create("short-lived", &v, "global", None).await;
    assert_eq!(api.decrypt_ok(m["id"].as_str().unwrap()).await, (v, 1));
}

#[tokio::test]
async fn startup_empty_store_any_kek_sqlite() {
    empty_store_any_kek(Backend::Sqlite).await;
}

#[tokio::test]
async fn startup_empty_store_any_kek_postgres() {
    empty_store_any_kek(Backend::Postgres).await;
}

#[tokio::test]
async fn startup_sqlite_db_url_forms() {
    // DB_URL as `sqlite:PATH` and DATABASE_URL as a bare path: the file named is used.
    for (var, url, file) in [
        ("DB_URL", "sqlite:custom.db", "custom.db"),
        ("DATABASE_URL", "other.sqlite", "other.sqlite"),
    ] {
        let mut env = Env::new(Backend::Sqlite).await;
        let k = gen_kek();
        let base = env.start(&[("LOCAL_KEK_BASE64", &k), (var, url)]);
        let api = Api::new(base);
        let v = api.secret();
        let id = api.create("db-url", &v, "global", None).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(env.dir.path().join(file).exists(), "{var}={url}");
        assert!(!env.dir.path().join("rcrt.db").exists(), "{var}={url}");
        let base = env.start(&[("LOCAL_KEK_BASE64", &k), (var, url)]);
        assert_eq!(Api::new(base).decrypt_ok(&id).await, (v, 1));
    }
}

/// PostgreSQL going away under a running server: 503 store_unavailable (never a 500, never a
/// value), `/health` still answers, `/ready` says not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_unavailable_postgres() {
    let mut env = Env::new(Backend::Postgres).await;
    let kek = gen_kek();
    let base = env.start(&[("LOCAL_KEK_BASE64", &kek)]);
    let api = Api::new(base);
    let v = api.secret();
    let id = api.create("doomed", &v, "global", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.decrypt_ok(&id).await, (v.clone(), 1));

    // DROP DATABASE ... WITH (FORCE): every connection of the server is terminated.
    drop(env.pg.take());

    api.get("/health").await.expect_status(200);
    api.get("/ready")
        .await
        .expect_error(503, "store_unavailable");
    api.get(&format!("/secrets/{id}"))
        .await
        .expect_error(503, "store_unavailable");
    api.get("/secrets")
        .await
        .expect_error(503, "store_unavailable");
    let r = api
        .decrypt(&id, "outage")
        .await
        .expect_error(503, "store_unavailable");
    assert!(!r.body.contains(&v));
    api.update(&id, &api.secret(), None)
        .await
        .expect_error(503, "store_unavailable");
    api.call(Method::POST, "/secrets")
        .json(&create_body("during-outage", &api.secret(), "global", None))
        .send()
        .await
        .expect_error(503, "store_unavailable");
    api.call(Method::DELETE, &format!("/secrets/{id}"))
        .send()
        .await
        .expect_error(503, "store_unavailable");
    // Input errors are still input errors.
    api.get("/secrets/not-a-uuid")
        .await
        .expect_error(400, "invalid_id");
    let out = env.output();
    assert!(!out.contains(&kek), "KEK in output");
    for value in api.values() {
        assert!(!out.contains(&value), "value in output");
    }
}
