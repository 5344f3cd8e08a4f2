//! KEK rotation, end to end: the real `rcrt-server` binary re-wrapping every DEK from an old KEK
//! to a new one in the background, on SQLite and on PostgreSQL.
//!
//! * [`rotation_end_to_end_sqlite`] / [`rotation_end_to_end_postgres`]: secrets under K1, restart
//!   with K2 (+ K1 as old) and a slow re-wrap, decrypt while it runs, wait for it to complete, then
//!   run with K2 alone. Starting with K2 alone while K1 rows remain is refused, naming K1's id.
//! * [`crash_during_rewrap_sqlite`] / [`crash_during_rewrap_postgres`]: SIGKILL in the middle of a
//!   re-wrap; the restarted server waits for the dead holder's lease, takes over and finishes.
//! * [`two_replicas_postgres`]: two servers on one database re-wrap while a client keeps writing
//!   new versions through both.
//! * [`admin_rewrap_sqlite`] / [`admin_rewrap_postgres`]: `REWRAP_AUTO=false`, then
//!   `POST /admin/kek/rewrap`, `GET /admin/kek/status` and `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcrt_testkit::{ServerConfig, ServerProcess, TempDir, TempPgDb};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

mod common;

use common::gen_kek;
use common::{server_config, Backend};

/// Requests in flight when seeding or verifying many secrets.
const IN_FLIGHT: usize = 12;

// ---------------------------------------------------------------------------------------------
// Random material
// ---------------------------------------------------------------------------------------------

/// A distinctive secret value.
fn token() -> String {
    format!("v-{}", Uuid::new_v4().simple())
}

/// A random index below `n`.
fn random_below(n: usize) -> usize {
    (Uuid::new_v4().as_u128() % n as u128) as usize
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A working directory (SQLite's `rcrt.db` lives there) and, for PostgreSQL, a database.
/// Declare servers after the `Env` so they are killed before the database is dropped.
struct Env {
    pg: Option<TempPgDb>,
    dir: TempDir,
}

impl Env {
    async fn new(backend: Backend) -> Self {
        Self {
            pg: backend.database().await,
            dir: TempDir::new(),
        }
    }

    fn config(&self, extra: &[(&str, &str)]) -> ServerConfig {
        server_config(self.pg.as_ref(), &self.dir, extra)
    }

    /// Starts a server and waits until it is healthy (the testkit blocks, so leave the runtime).
    fn start(&self, extra: &[(&str, &str)]) -> ServerProcess {
        let cfg = self.config(extra);
        tokio::task::block_in_place(|| ServerProcess::start(&cfg))
    }

    /// Runs a server expected to refuse to start; returns its exit status and output.
    async fn run_to_exit(&self, extra: &[(&str, &str)]) -> (ExitStatus, String) {
        let cfg = self.config(extra);
        tokio::task::spawn_blocking(move || ServerProcess::run_to_exit(&cfg))
            .await
            .unwrap()
    }
}

fn kill(server: &mut ServerProcess) {
    tokio::task::block_in_place(|| server.kill());
}

/// The environment for a server with `current` as its KEK and `old` as LOCAL_KEK_BASE64_OLD.
fn keks<'a>(current: &'a str, old: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    // These tests count every version they wrote: keep them all (the default cap is 10).
    let mut v = vec![("LOCAL_KEK_BASE64", current), ("MAX_VERSIONS", "100")];
    if let Some(old) = old {
        v.push(("LOCAL_KEK_BASE64_OLD", old));
    }
    v
}

/// Asserts that a server refused to start because the store holds DEKs under `missing_kek_id`,
/// and returns the number of versions the message says are under it.
fn assert_refused_for(
    status: ExitStatus,
    output: &str,
    missing_kek_id: &str,
    keys: &[&str],
) -> u64 {
    assert!(
        !status.success(),
        "the server should refuse to start while DEKs are under {missing_kek_id}; it exited with {status}:\n{output}"
    );
    assert!(
        output.contains("refusing to start"),
        "the refusal does not say it refuses to start:\n{output}"
    );
    for k in keys {
        assert!(
            !output.contains(k),
            "the refusal printed KEK material:\n{output}"
        );
    }
    // "...: <kek id> (<n> versions)..."
    let needle = format!("{missing_kek_id} (");
    let at = output.find(&needle).unwrap_or_else(|| {
        panic!("the refusal does not name the KEK id {missing_kek_id}:\n{output}")
    });
    let rest = &output[at + needle.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(
        rest[digits.len()..].starts_with(" versions)"),
        "the refusal does not count the versions under {missing_kek_id}:\n{output}"
    );
    digits.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
}

/// A secret and what it should decrypt to.
#[derive(Debug, Clone)]
struct Secret {
    id: String,
    value: String,
    version: i64,
}

impl Api {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder, what: &str, expected: u16) -> String {
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{what}: unexpected status; body: {body}");
        body
    }

    async fn send_json(&self, rb: reqwest::RequestBuilder, what: &str, expected: u16) -> Value {
        let body = self.send(rb, what, expected).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
    }

    async fn create(&self, base: &str, name: &str, value: &str) -> Secret {
        let v = self
            .send_json(
                self.http
                    .post(format!("{base}/secrets"))
                    .json(&json!({"name": name, "value": value, "scope_type": "global"})),
                "POST /secrets",
                201,
            )
            .await;
        assert_eq!(v["version"], 1, "{v}");
        Secret {
            id: v["id"].as_str().unwrap().to_owned(),
            value: value.to_owned(),
            version: 1,
        }
    }

    /// A new version; returns its number.
    async fn put(&self, base: &str, id: &str, value: &str) -> i64 {
        let v = self
            .send_json(
                self.http
                    .put(format!("{base}/secrets/{id}"))
                    .json(&json!({ "value": value })),
                "PUT /secrets/{id}",
                200,
            )
            .await;
        v["version"].as_i64().unwrap()
    }

    /// `(value, version)`, or the status and body of a failure.
    async fn try_decrypt(&self, base: &str, id: &str) -> Result<(String, i64), String> {
        let resp = self
            .http
            .post(format!("{base}/secrets/{id}/decrypt"))
            .header("X-Access-Reason", "x")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if status != 200 {
            return Err(format!("status {status}: {body}"));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        Ok((
            v["value"].as_str().unwrap_or_default().to_owned(),
            v["version"].as_i64().unwrap_or_default(),
        ))
    }

    async fn status(&self, base: &str) -> Value {
        self.send_json(
            self.http.get(format!("{base}/admin/kek/status")),
            "GET /admin/kek/status",
            200,
        )
        .await
    }

    async fn ready_kek_id(&self, base: &str) -> String {
        let v = self
            .send_json(self.http.get(format!("{base}/ready")), "GET /ready", 200)
            .await;
        v["kek_id"].as_str().unwrap().to_owned()
    }

    async fn metrics(&self, base: &str) -> String {
        self.send(
            self.http.get(format!("{base}/metrics")),
            "GET /metrics",
            200,
        )
        .await
    }

    /// `POST /admin/kek/rewrap`: 202 with the status.
    async fn trigger(&self, base: &str) -> Value {
        self.send_json(
            self.http.post(format!("{base}/admin/kek/rewrap")),
            "POST /admin/kek/rewrap",
            202,
        )
        .await
    }
}

/// Creates `n` secrets (every `twice_every`-th also gets a second version), `IN_FLIGHT` at a time.
async fn seed(api: &Api, base: &str, n: usize, twice_every: usize) -> Vec<Secret> {
    let prefix = Uuid::new_v4().simple().to_string()[..10].to_owned();
    let sem = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (api, base, sem, name) = (
            api.clone(),
            base.to_owned(),
            sem.clone(),
            format!("rot-{prefix}-{i:05}"),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let mut s = api.create(&base, &name, &token()).await;
            if i % twice_every == 0 {
                let value = token();
                s.version = api.put(&base, &s.id, &value).await;
                assert_eq!(s.version, 2);
                s.value = value;
            }
            (i, s)
        });
    }
    let mut out: Vec<(usize, Secret)> = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

/// Total versions of `secrets` (versions are numbered 1..=current).
fn version_count(secrets: &[Secret]) -> u64 {
    secrets.iter().map(|s| s.version as u64).sum()
}

/// Decrypts every secret (round-robin over `bases`) and asserts its latest value and version.
async fn verify_all(api: &Api, bases: &[String], secrets: &[Secret], when: &str) {
    let sem = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for (i, s) in secrets.iter().enumerate() {
        let (api, base, sem, s) = (
            api.clone(),
            bases[i % bases.len()].clone(),
            sem.clone(),
            s.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            match api.try_decrypt(&base, &s.id).await {
                Ok((value, version)) if value == s.value && version == s.version => None,
                Ok((value, version)) => Some(format!(
                    "{} via {base}: got version {version} value {value}, expected version {} value {}",
                    s.id, s.version, s.value
                )),
                Err(e) => Some(format!("{} via {base}: {e}", s.id)),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Some(f) = r.unwrap() {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{when}: {} of {} secrets did not decrypt to their latest value, e.g.:\n{}",
        failures.len(),
        secrets.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

fn state(status: &Value) -> &str {
    status["rewrap"]["state"].as_str().unwrap_or_default()
}

fn remaining(status: &Value) -> u64 {
    status["rewrap"]["remaining"].as_u64().unwrap()
}

fn rewrapped_total(status: &Value) -> u64 {
    status["rewrap"]["rewrapped_total"].as_u64().unwrap()
}

fn versions_per_kek(status: &Value) -> BTreeMap<String, u64> {
    status["versions_per_kek"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn configured(status: &Value) -> Vec<String> {
    status["configured_kek_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Polls `GET /admin/kek/status` until `done` holds; panics with the last status and the
/// server's output after `timeout`.
async fn wait_status(
    api: &Api,
    server: &ServerProcess,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = api.status(&server.base_url()).await;
        if done(&st) {
            return st;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last status: {st}\nserver output:\n{}",
                server.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completed(st: &Value) -> bool {
    remaining(st) == 0 && state(st) == "completed"
}

/// The value of a metric line `name value` in a Prometheus text body.
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {name} missing from /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

fn slow_rewrap<'a>(
    k_current: &'a str,
    k_old: &'a str,
    batch: &'a str,
    rate: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut v = keks(k_current, Some(k_old));
    v.push(("REWRAP_BATCH_SIZE", batch));
    v.push(("REWRAP_MAX_ROWS_PER_SEC", rate));
    v
}

// ---------------------------------------------------------------------------------------------
// 1. Rotation end to end
// ---------------------------------------------------------------------------------------------

async fn rotation_end_to_end(backend: Backend) {
    let env = Env::new(backend).await;
    let api = Api::new();
    let (k1, k2) = (gen_kek(), gen_kek());

    // Under K1: 200 secrets, every second one with two versions (300 versions).
    let mut s1 = env.start(&keks(&k1, None));
    let b1 = s1.base_url();
    let k1_id = api.ready_kek_id(&b1).await;
    let secrets = seed(&api, &b1, 200, 2).await;
    let total = version_count(&secrets);
    assert_eq!(total, 300);
    let st = api.status(&b1).await;
    assert_eq!(st["current_kek_id"], k1_id.as_str(), "{st}");
    assert_eq!(configured(&st), vec![k1_id.clone()], "{st}");
    assert_eq!(
        versions_per_kek(&st),
        BTreeMap::from([(k1_id.clone(), total)]),
        "{st}"
    );
    assert_eq!(remaining(&st), 0, "{st}");
    assert_eq!(
        state(&st),
        "idle",
        "nothing to re-wrap under K1 alone: {st}"
    );
    kill(&mut s1);

    // K2 current, K1 old, slow re-wrap (10 rows a batch, 200 rows/s: about 1.5 s).
    let restarted = Instant::now();
    let s2 = env.start(&slow_rewrap(&k2, &k1, "10", "200"));
    let b2 = s2.base_url();
    let k2_id = api.ready_kek_id(&b2).await;
    assert_ne!(k1_id, k2_id);

    let running = wait_status(
        &api,
        &s2,
        Duration::from_secs(10),
        "the re-wrap to run",
        |st| state(st) != "idle",
    )
    .await;
    assert_eq!(
        state(&running),
        "running",
        "the re-wrap should be running right after the restart: {running}"
    );
    assert!(remaining(&running) > 0, "{running}");
    assert_eq!(running["current_kek_id"], k2_id.as_str(), "{running}");
    assert_eq!(
        configured(&running),
        vec![k2_id.clone(), k1_id.clone()],
        "{running}"
    );

    // In the middle of the re-wrap, a second server with K2 alone must refuse to start.
    let refused = {
        let k2_only = env.config(&keks(&k2, None));
        tokio::task::spawn_blocking(move || ServerProcess::run_to_exit(&k2_only))
    };

    // Decrypt while the re-wrap runs: every value right, and the count only goes down.
    let mut decrypted_during = 0usize;
    let mut last_remaining = remaining(&running);
    let mut seen_partial = false;
    loop {
        let st = api.status(&b2).await;
        let r = remaining(&st);
        assert!(
            r <= last_remaining,
            "remaining went up from {last_remaining} to {r} with no writes: {st}"
        );
        last_remaining = r;
        if state(&st) != "running" || r == 0 {
            break;
        }
        seen_partial |= r < total;
        let mut set = JoinSet::new();
        for _ in 0..8 {
            let (api, b2, s) = (
                api.clone(),
                b2.clone(),
                secrets[random_below(secrets.len())].clone(),
            );
            set.spawn(async move { (api.try_decrypt(&b2, &s.id).await, s) });
        }
        while let Some(res) = set.join_next().await {
            let (got, s) = res.unwrap();
            assert_eq!(
                got,
                Ok((s.value.clone(), s.version)),
                "decrypt of {} during the re-wrap (remaining {r})",
                s.id
            );
            decrypted_during += 1;
        }
    }
    assert!(
        decrypted_during >= 16 && seen_partial,
        "too little overlap with the re-wrap: {decrypted_during} decrypts, partial progress seen: {seen_partial}"
    );

    let (status, output) = refused.await.unwrap();
    let n = assert_refused_for(status, &output, &k1_id, &[&k1, &k2]);
    assert!(
        n > 0 && n <= total,
        "the refusal counted {n} versions under K1 (of {total}):\n{output}"
    );

    let done = wait_status(
        &api,
        &s2,
        Duration::from_secs(60),
        "the re-wrap to complete",
        completed,
    )
    .await;
    // REWRAP_MAX_ROWS_PER_SEC=200 over 300 versions: no faster than 1.5 s.
    assert!(
        restarted.elapsed() >= Duration::from_millis(1400),
        "300 versions re-wrapped in {:?} despite REWRAP_MAX_ROWS_PER_SEC=200",
        restarted.elapsed()
    );
    println!(
        "{backend:?}: {decrypted_during} decrypts during the re-wrap, completed after {:?}",
        restarted.elapsed()
    );
    assert_eq!(
        versions_per_kek(&done),
        BTreeMap::from([(k2_id.clone(), total)]),
        "{done}"
    );
    assert_eq!(done["rewrap"]["failed"], 0, "{done}");
    assert_eq!(rewrapped_total(&done), total, "{done}");
    verify_all(
        &api,
        std::slice::from_ref(&b2),
        &secrets,
        "after the re-wrap, K2 + K1 old",
    )
    .await;
    drop(s2);

    // K2 alone now starts, and every secret decrypts to its latest value.
    let s3 = env.start(&keks(&k2, None));
    let b3 = s3.base_url();
    assert_eq!(api.ready_kek_id(&b3).await, k2_id);
    let st = api.status(&b3).await;
    assert_eq!(configured(&st), vec![k2_id.clone()], "{st}");
    assert_eq!(
        versions_per_kek(&st),
        BTreeMap::from([(k2_id.clone(), total)]),
        "{st}"
    );
    assert_eq!(remaining(&st), 0, "{st}");
    verify_all(&api, &[b3], &secrets, "K2 alone after the rotation").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_end_to_end_sqlite() {
    rotation_end_to_end(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_end_to_end_postgres() {
    rotation_end_to_end(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Crash (SIGKILL) during the re-wrap
// ---------------------------------------------------------------------------------------------

async fn crash_during_rewrap(backend: Backend) {
    let env = Env::new(backend).await;
    let api = Api::new();
    let (k1, k2) = (gen_kek(), gen_kek());

    // 1000 secrets under K1, every tenth with two versions (1100 versions).
    let mut s1 = env.start(&keks(&k1, None));
    let k1_id = api.ready_kek_id(&s1.base_url()).await;
    let secrets = seed(&api, &s1.base_url(), 1000, 10).await;
    let total = version_count(&secrets);
    assert_eq!(total, 1100);
    kill(&mut s1);

    // Slow re-wrap (10 rows a batch, 300 rows/s: about 3.7 s); SIGKILL after about 1.5 s.
    let mut s2 = env.start(&slow_rewrap(&k2, &k1, "10", "300"));
    let k2_id = api.ready_kek_id(&s2.base_url()).await;
    let started = Instant::now();
    wait_status(
        &api,
        &s2,
        Duration::from_secs(10),
        "the re-wrap to run",
        |st| state(st) == "running",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed())).await;
    let before_kill = wait_status(
        &api,
        &s2,
        Duration::from_secs(10),
        "partial progress",
        |st| remaining(st) > 0 && remaining(st) < total,
    )
    .await;
    assert_eq!(state(&before_kill), "running", "{before_kill}");
    kill(&mut s2);

    // Killed in the middle: K2 alone is refused, naming K1 and how many versions are left.
    let (status, output) = env.run_to_exit(&keks(&k2, None)).await;
    let left = assert_refused_for(status, &output, &k1_id, &[&k1, &k2]);
    assert!(
        left > 0 && left <= remaining(&before_kill),
        "after the kill {left} versions are left under K1; just before it {} were: {before_kill}",
        remaining(&before_kill)
    );

    // Restart with K2 + K1 old at full speed. The dead process's lease is still live (30 s
    // TTL), so this server must wait, then take over.
    let s3 = env.start(&keks(&k2, Some(&k1)));
    let b3 = s3.base_url();
    let first = wait_status(&api, &s3, Duration::from_secs(10), "a first pass", |st| {
        state(st) != "idle"
    })
    .await;
    assert_eq!(
        state(&first),
        "waiting",
        "the killed server's lease should make the new one wait: {first}"
    );
    assert_eq!(remaining(&first), left, "{first}");
    // Secrets still decrypt while nothing re-wraps (K1 rows through the old KEK).
    let sample: Vec<Secret> = (0..40)
        .map(|_| secrets[random_below(secrets.len())].clone())
        .collect();
    verify_all(
        &api,
        std::slice::from_ref(&b3),
        &sample,
        "while waiting for the lease",
    )
    .await;
    // A nudge is accepted (it cannot take a live lease, so it changes nothing yet).
    let nudged = api.trigger(&b3).await;
    assert_eq!(nudged["current_kek_id"], k2_id.as_str(), "{nudged}");

    let done = wait_status(
        &api,
        &s3,
        Duration::from_secs(50),
        "the re-wrap to resume and complete after the lease expired",
        completed,
    )
    .await;
    assert_eq!(
        versions_per_kek(&done),
        BTreeMap::from([(k2_id.clone(), total)]),
        "{done}"
    );
    assert_eq!(done["rewrap"]["failed"], 0, "{done}");
    assert_eq!(
        rewrapped_total(&done),
        left,
        "the restarted server should re-wrap exactly what the killed one left: {done}"
    );
    verify_all(&api, &[b3], &secrets, "after the resumed re-wrap").await;
    drop(s3);

    // And the rotation is over: K2 alone starts.
    let s4 = env.start(&keks(&k2, None));
    verify_all(&api, &[s4.base_url()], &secrets, "K2 alone after the crash").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_rewrap_sqlite() {
    crash_during_rewrap(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_rewrap_postgres() {
    crash_during_rewrap(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Two replicas on one PostgreSQL database, with writes during the re-wrap
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_postgres() {
    let env = Env::new(Backend::Postgres).await;
    let api = Api::new();
    let (k1, k2) = (gen_kek(), gen_kek());

    // 500 secrets under K1, every fifth with two versions (600 versions).
    let mut s0 = env.start(&keks(&k1, None));
    let k1_id = api.ready_kek_id(&s0.base_url()).await;
    let mut secrets = seed(&api, &s0.base_url(), 500, 5).await;
    let original = version_count(&secrets);
    assert_eq!(original, 600);
    kill(&mut s0);

    // Two replicas, started together, both K2 + K1 old (20 rows a batch, 500 rows/s).
    let cfg = slow_rewrap(&k2, &k1, "20", "500");
    let (a, b) = {
        let (ca, cb) = (env.config(&cfg), env.config(&cfg));
        let ta = tokio::task::spawn_blocking(move || ServerProcess::start(&ca));
        let tb = tokio::task::spawn_blocking(move || ServerProcess::start(&cb));
        (ta.await.unwrap(), tb.await.unwrap())
    };
    let bases = [a.base_url(), b.base_url()];
    let k2_id = api.ready_kek_id(&bases[0]).await;
    assert_eq!(api.ready_kek_id(&bases[1]).await, k2_id);

    // Writers: 5 tasks, each owning 10 of the first 50 secrets, PUT new values alternately
    // through both servers and remember the last value and version written.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let mut writers = JoinSet::new();
    for w in 0..5 {
        let mut owned: Vec<(usize, Secret)> = (w * 10..w * 10 + 10)
            .map(|i| (i, secrets[i].clone()))
            .collect();
        let (api, bases, stop, writes) = (api.clone(), bases.clone(), stop.clone(), writes.clone());
        writers.spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::SeqCst) {
                for (_, s) in owned.iter_mut() {
                    let value = token();
                    let base = &bases[n % 2];
                    n += 1;
                    let version = api.put(base, &s.id, &value).await;
                    assert_eq!(
                        version,
                        s.version + 1,
                        "PUT {} via {base}: unexpected version",
                        s.id
                    );
                    s.value = value;
                    s.version = version;
                    writes.fetch_add(1, Ordering::SeqCst);
                }
            }
            owned
        });
    }

    // Poll both servers until nothing is left under K1.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_remaining_after_writes = false;
    let mut polls = 0usize;
    let writes_when_done = loop {
        let base = &bases[polls % 2];
        polls += 1;
        let w = writes.load(Ordering::SeqCst);
        let st = api.status(base).await;
        if remaining(&st) == 0 {
            break w;
        }
        saw_remaining_after_writes |= w > 0;
        if Instant::now() > deadline {
            panic!(
                "the re-wrap did not finish in 60 s: {st}\nA:\n{}\nB:\n{}",
                a.output(),
                b.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done_at = Instant::now();
    // Keep writing a little after the end too, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = writers.join_next().await {
        for (i, s) in r.unwrap() {
            secrets[i] = s;
        }
    }
    let writes = writes.load(Ordering::SeqCst) as u64;
    assert!(
        saw_remaining_after_writes && writes_when_done > 0,
        "the writers did not overlap the re-wrap ({writes_when_done} writes before it ended)"
    );

    verify_all(&api, &bases, &secrets, "two replicas, through A/B").await;
    let swapped = [bases[1].clone(), bases[0].clone()];
    verify_all(&api, &swapped, &secrets, "two replicas, through B/A").await;

    let st_a = api.status(&bases[0]).await;
    let st_b = api.status(&bases[1]).await;
    for st in [&st_a, &st_b] {
        assert_eq!(remaining(st), 0, "{st}");
        assert_eq!(
            versions_per_kek(st),
            BTreeMap::from([(k2_id.clone(), original + writes)]),
            "{st}"
        );
        assert_eq!(st["rewrap"]["failed"], 0, "{st}");
        assert_ne!(state(st), "failed", "{st}");
    }
    let sum = rewrapped_total(&st_a) + rewrapped_total(&st_b);
    assert!(
        sum >= original,
        "the replicas re-wrapped {sum} versions together, fewer than the {original} under K1:\nA: {st_a}\nB: {st_b}"
    );
    assert!(
        [&st_a, &st_b].iter().any(|st| state(st) == "completed"),
        "neither replica reports the completed re-wrap:\nA: {st_a}\nB: {st_b}"
    );
    println!(
        "two replicas: {writes} writes, rewrapped A={} ({}) B={} ({})",
        rewrapped_total(&st_a),
        state(&st_a),
        rewrapped_total(&st_b),
        state(&st_b)
    );
    assert_eq!(
        configured(&st_a),
        vec![k2_id.clone(), k1_id.clone()],
        "{st_a}"
    );

    // Once the pass is over and the lease released, no replica should still say it waits for
    // another one: after a poll interval (5 s) each reports completed (or idle).
    tokio::time::sleep(Duration::from_millis(6500).saturating_sub(done_at.elapsed())).await;
    let st_a = api.status(&bases[0]).await;
    let st_b = api.status(&bases[1]).await;
    // A replica that lost the lease race reported "waiting" forever once (fixed in
    // RewrapJob::pass); this keeps it fixed.
    for (name, st) in [("A", &st_a), ("B", &st_b)] {
        assert!(
            matches!(state(st), "completed" | "idle"),
            "replica {name} still reports state {:?} with nothing left and no lease held, \
             {:?} after the re-wrap completed:\nA: {st_a}\nB: {st_b}",
            state(st),
            done_at.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The admin endpoint and metrics (REWRAP_AUTO=false)
// ---------------------------------------------------------------------------------------------

async fn admin_rewrap(backend: Backend) {
    let env = Env::new(backend).await;
    let api = Api::new();
    let (k1, k2) = (gen_kek(), gen_kek());

    let mut s1 = env.start(&keks(&k1, None));
    let k1_id = api.ready_kek_id(&s1.base_url()).await;
    let secrets = seed(&api, &s1.base_url(), 60, 3).await;
    let n = version_count(&secrets);
    assert_eq!(n, 80);
    kill(&mut s1);

    let mut cfg = keks(&k2, Some(&k1));
    cfg.push(("REWRAP_AUTO", "false"));
    let s2 = env.start(&cfg);
    let b2 = s2.base_url();
    let k2_id = api.ready_kek_id(&b2).await;

    let st = api.status(&b2).await;
    assert_eq!(state(&st), "idle", "{st}");
    assert_eq!(remaining(&st), n, "{st}");
    assert_eq!(rewrapped_total(&st), 0, "{st}");
    assert_eq!(st["current_kek_id"], k2_id.as_str(), "{st}");
    assert_eq!(configured(&st), vec![k2_id.clone(), k1_id.clone()], "{st}");
    assert_eq!(
        versions_per_kek(&st),
        BTreeMap::from([(k1_id.clone(), n)]),
        "{st}"
    );
    let m = api.metrics(&b2).await;
    assert_eq!(metric(&m, "rcrt_kek_rewrap_remaining"), n, "{m}");
    assert_eq!(metric(&m, "rcrt_kek_rewrapped_total"), 0, "{m}");

    // Nothing starts by itself, not even after a poll interval (5 s).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let st = api.status(&b2).await;
    assert_eq!(state(&st), "idle", "REWRAP_AUTO=false but it started: {st}");
    assert_eq!(remaining(&st), n, "REWRAP_AUTO=false but it started: {st}");

    let accepted = api.trigger(&b2).await;
    assert_eq!(accepted["current_kek_id"], k2_id.as_str(), "{accepted}");
    assert!(accepted["rewrap"]["remaining"].is_u64(), "{accepted}");

    let done = wait_status(
        &api,
        &s2,
        Duration::from_secs(30),
        "the triggered re-wrap",
        completed,
    )
    .await;
    assert_eq!(rewrapped_total(&done), n, "{done}");
    assert_eq!(done["rewrap"]["failed"], 0, "{done}");
    assert_eq!(
        versions_per_kek(&done),
        BTreeMap::from([(k2_id.clone(), n)]),
        "{done}"
    );
    let m = api.metrics(&b2).await;
    assert_eq!(metric(&m, "rcrt_kek_rewrap_remaining"), 0, "{m}");
    assert_eq!(metric(&m, "rcrt_kek_rewrapped_total"), n, "{m}");
    verify_all(
        &api,
        std::slice::from_ref(&b2),
        &secrets,
        "after the triggered re-wrap",
    )
    .await;

    // A second trigger with nothing left is accepted and changes nothing.
    api.trigger(&b2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = api.status(&b2).await;
    assert_eq!(remaining(&st), 0, "{st}");
    assert_eq!(rewrapped_total(&st), n, "{st}");
    assert_eq!(state(&st), "completed", "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rewrap_sqlite() {
    admin_rewrap(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rewrap_postgres() {
    admin_rewrap(Backend::Postgres).await;
}
