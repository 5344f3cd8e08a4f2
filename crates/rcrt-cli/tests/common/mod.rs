//! Helpers shared by the `rcrt-cli` integration tests: running the real binaries, KEKs, the
//! server's HTTP API, seeding secrets and reading the store directly.
// Every test binary compiles this module but uses only part of it; the rest would warn as dead.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use rcrt_store::{Store, StoredVersion, VersionFilter};
use rcrt_testkit::ServerConfig;
use rcrt_types::SecretId;
use serde_json::{json, Value};

pub const RCRT: &str = env!("CARGO_BIN_EXE_rcrt");

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A process's bytes as text, lossily: a failing test must still show what was printed.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Status, stdout and stderr of a finished process, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A bare `rcrt` command with piped stdio: none of the caller's KEK, store or server variables
/// reach it, so each test decides what the binary sees.
pub fn rcrt_cmd() -> Command {
    let mut cmd = Command::new(RCRT);
    for var in [
        "LOCAL_KEK_BASE64",
        "LOCAL_KEK_BASE64_FILE",
        "LOCAL_KEK_BASE64_OLD",
        "LOCAL_KEK_BASE64_OLD_FILE",
        "DB_URL",
        "DATABASE_URL",
        "RCRT_URL",
        "RCRT_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub use rcrt_testkit::spawn_with_stdin;

/// Runs `cmd` to its end with `stdin` as its input.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    spawn_with_stdin(cmd, stdin)
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
        .wait_with_output()
        .unwrap()
}

/// Writes `content` to `path` with permission bits `mode` (set again afterwards, so the umask
/// and an existing file's bits do not count).
pub fn write_file(path: &Path, content: &str, mode: u32) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.write_all(content.as_bytes()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The runtime the tests drive the API and the store with (the binaries run beside it).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// KEKs
// ---------------------------------------------------------------------------------------------

/// A KEK as the guide writes it (base64) and the id `rcrt kek check` gives it.
#[derive(Clone, Debug)]
pub struct Kek {
    pub text: String,
    pub id: String,
}

/// A fresh KEK from `rcrt kek generate`; its id from `rcrt kek check --stdin`, which must match
/// the id generate printed.
pub fn new_kek() -> Kek {
    let out = rcrt_cmd().args(["kek", "generate"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let kek = text(&out.stdout).trim().to_owned();
    let id = kek_id(&kek);
    assert!(
        text(&out.stderr).contains(&id),
        "generate and check disagree on the id"
    );
    Kek { text: kek, id }
}

/// `rcrt kek check --stdin`'s id for a KEK.
pub fn kek_id(kek: &str) -> String {
    let check = run_with_stdin(
        rcrt_cmd().args(["kek", "check", "--stdin"]),
        &format!("{kek}\n"),
    );
    assert!(check.status.success(), "{}", show(&check));
    text(&check.stdout)
        .trim()
        .strip_prefix("KEK OK: id ")
        .unwrap_or_else(|| panic!("unexpected check output: {}", show(&check)))
        .to_owned()
}

/// Fails when any of `keks` appears in a process's stdout or stderr (`what` names the process).
pub fn assert_prints_no_kek(out: &Output, keks: &[Kek], what: &str) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for k in keks {
        assert!(
            !all.contains(&k.text),
            "{what} printed a KEK:\n{}",
            show(out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The server and its API
// ---------------------------------------------------------------------------------------------

/// A configuration for the workspace's `rcrt-server` with exactly `env`, run in `workdir`.
pub fn server_config(workdir: &Path, env: &[(&str, &str)]) -> ServerConfig {
    ServerConfig {
        binary: rcrt_testkit::server_binary(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        workdir: workdir.to_owned(),
    }
}

/// What a secret must decrypt to: its latest value and version.
#[derive(Clone, Debug)]
pub struct Expected {
    pub id: String,
    pub value: String,
    pub version: i64,
}

/// A client of a running server's HTTP API, with a bearer token when auth is on.
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
            token: None,
        }
    }

    pub fn with_token(base: String, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::new(base)
        }
    }

    /// Sends `req`; the status and the JSON body (`Null` when the body is not JSON).
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Sends `body` as JSON; the response body, which must come with `status`.
    async fn send_json(&self, req: reqwest::RequestBuilder, body: Value, status: u16) -> Value {
        let req = req
            .header("content-type", "application/json")
            .body(body.to_string());
        let (got, body) = self.send(req).await;
        assert_eq!(got, status, "{body}");
        body
    }

    /// Creates a global secret; its id.
    pub async fn create(&self, name: &str, value: &str) -> String {
        let body = json!({"name": name, "value": value, "scope_type": "global"});
        let url = format!("{}/secrets", self.base);
        let created = self.send_json(self.http.post(url), body, 201).await;
        created["id"].as_str().unwrap().to_owned()
    }

    /// Adds a version to a secret; the new version number.
    pub async fn update(&self, id: &str, value: &str) -> i64 {
        let url = format!("{}/secrets/{id}", self.base);
        let updated = self
            .send_json(self.http.put(url), json!({ "value": value }), 200)
            .await;
        updated["version"].as_i64().unwrap()
    }

    /// A secret's latest value and version, decrypted by the server.
    pub async fn decrypt(&self, id: &str) -> (String, i64) {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("{}/secrets/{id}/decrypt", self.base))
                    .header("x-access-reason", "rcrt-cli integration test"),
            )
            .await;
        assert_eq!(status, 200, "decrypt {id}: {body}");
        (
            body["value"].as_str().unwrap().to_owned(),
            body["version"].as_i64().unwrap(),
        )
    }

    /// `GET /admin/kek/status`.
    pub async fn kek_status(&self) -> Value {
        let (status, body) = self
            .send(self.http.get(format!("{}/admin/kek/status", self.base)))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Every secret must decrypt to its expected value and version.
    pub async fn assert_decrypts(&self, expected: &[Expected]) {
        for e in expected {
            let (value, version) = self.decrypt(&e.id).await;
            assert_eq!(
                (value.as_str(), version),
                (e.value.as_str(), e.version),
                "secret {}",
                e.id
            );
        }
    }
}

/// Creates secrets numbered `indices` through `api`, every fourth with a second version (so a
/// store holds both kinds); names and values carry a fresh run id, so they never collide.
pub async fn create_secrets(api: &Api, indices: impl IntoIterator<Item = usize>) -> Vec<Expected> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut out = Vec::new();
    for i in indices {
        let first = format!("v1-{run}-{i}");
        let id = api.create(&format!("test/{run}/s{i}"), &first).await;
        if i % 4 == 0 {
            let second = format!("v2-{run}-{i}");
            assert_eq!(api.update(&id, &second).await, 2);
            out.push(Expected {
                id,
                value: second,
                version: 2,
            });
        } else {
            out.push(Expected {
                id,
                value: first,
                version: 1,
            });
        }
    }
    out
}

/// How many versions the store must hold for `expected`.
pub fn total_versions(expected: &[Expected]) -> u64 {
    expected
        .iter()
        .map(|e| u64::try_from(e.version).unwrap())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The store, read directly
// ---------------------------------------------------------------------------------------------

/// Every stored version, keyed by (secret, version).
pub type Snapshot = BTreeMap<(SecretId, i64), StoredVersion>;

/// Every stored version as the store holds it (wrapped DEK, sealed value, KEK id).
pub async fn snapshot(store: &Arc<dyn Store>) -> Snapshot {
    store
        .scan_versions(&VersionFilter::All, None, 10000, true)
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.secret_id, r.version), r))
        .collect()
}

/// KEK id -> how many versions it wraps, as the store counts them.
pub async fn kek_usage(store: &Arc<dyn Store>) -> BTreeMap<String, u64> {
    let mut usage = BTreeMap::new();
    for u in store.kek_usage().await.unwrap() {
        *usage.entry(u.kek_id).or_default() += u64::try_from(u.versions).unwrap();
    }
    usage
}
