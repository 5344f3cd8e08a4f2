//! Contract test (issue 12): schemathesis, at the version `scripts/contract-test` pins, runs all
//! of its phases (examples, coverage, fuzzing, stateful) and checks against a real
//! `rcrt-server` on SQLite with token authentication, driven by the document the server serves
//! at `/openapi.json`. The test fails
//! - on any schemathesis failure (a 5xx, a response off its schema, an undocumented status or
//!   content type, bad input accepted, auth not enforced...), printing schemathesis' report;
//! - when the stateful phase did not follow the links from a created secret to its get,
//!   decrypt, update and delete (each must succeed at least once on a secret the run created);
//! - when the server panicked or stopped answering;
//! - when schemathesis is not installed: it never skips (`scripts/test` installs it).
//!
//! The run is bounded: a fixed seed, a few examples per operation, and a hard limit on the
//! whole schemathesis process ([`BUDGET`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

// Only the server configuration is used here.
#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{gen_kek, server_config};
use rcrt_crypto::ServiceToken;
use rcrt_testkit::{http_get_status, ServerProcess, TempDir};
use serde_json::Value;

/// The longest the schemathesis run may take (a normal run takes well under this).
const BUDGET: Duration = Duration::from_secs(150);

/// Exit code of `scripts/contract-test` when schemathesis is missing or not the pinned version
/// (schemathesis itself answers 1 for failures, 2 when it could not run).
const NOT_INSTALLED: i32 = 3;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/contract-test")
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One request of the run, from schemathesis' HAR report.
#[derive(Debug)]
struct Exchange {
    method: String,
    path: String,
    status: u16,
    body: String,
}

/// Every request schemathesis made, in order (its HAR report).
fn exchanges(reports: &Path) -> Vec<Exchange> {
    let file = reports.join("requests.har");
    let har: Value = serde_json::from_slice(
        &std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    har["log"]["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            // http://127.0.0.1:PORT/path?query -> /path
            let path = url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{}", p.split('?').next().unwrap_or_default()))
                .unwrap_or_default();
            Exchange {
                method: e["request"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                path,
                status: e["response"]["status"].as_u64().unwrap_or_default() as u16,
                body: e["response"]["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }
        })
        .collect()
}

/// Asserts that the run followed a created secret's id to each of get, decrypt, update and
/// delete with success: random ids never name an existing secret, so a success on a created id
/// means the stateful phase linked the operations.
fn assert_links_followed(all: &[Exchange]) {
    let created: BTreeSet<String> = all
        .iter()
        .filter(|x| x.method == "POST" && x.path == "/secrets" && x.status == 201)
        .filter_map(|x| serde_json::from_str::<Value>(&x.body).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !created.is_empty(),
        "schemathesis never created a secret (no 201 from POST /secrets)"
    );
    let wanted = [
        ("GET", "", 200, "get"),
        ("POST", "/decrypt", 200, "decrypt"),
        ("PUT", "", 200, "update"),
        ("DELETE", "", 204, "delete"),
    ];
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    // Per created secret, which of the four it went through.
    let mut lifecycle: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for x in all {
        let Some(rest) = x.path.strip_prefix("/secrets/") else {
            continue;
        };
        for (method, suffix, status, name) in wanted {
            let id = match suffix {
                "" => Some(rest),
                s => rest.strip_suffix(s),
            };
            let Some(id) = id.filter(|id| !id.contains('/') && created.contains(*id)) else {
                continue;
            };
            if x.method == method && x.status == status {
                *seen.entry(name).or_default() += 1;
                lifecycle.entry(id).or_default().insert(name);
            }
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .map(|w| w.3)
        .filter(|n| !seen.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the stateful phase never reached {missing:?} on a secret it created \
         (links create -> get -> decrypt -> update -> delete; successes seen: {seen:?}, \
         {} secrets created, {} requests)",
        created.len(),
        all.len()
    );
    // Informative only: a whole lifecycle on one secret depends on the scenarios drawn.
    let whole = lifecycle.values().filter(|done| done.len() == 4).count();
    println!(
        "links followed on created secrets: {seen:?} ({} created, {whole} went through all four)",
        created.len()
    );
}

/// Whether `path` (`/secrets/abc`) fits the template (`/secrets/{id}`); the number of
/// parameters it took, to prefer the most literal template.
fn fits(template: &str, path: &str) -> Option<usize> {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != p.len() {
        return None;
    }
    let mut params = 0;
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') && t.ends_with('}') && !p.is_empty() {
            params += 1;
        } else if t != p {
            return None;
        }
    }
    Some(params)
}

/// Asserts that every operation of the document was reached (at least one answer that is not
/// 401 or 405: the request got past authentication to the handler), so that a document that
/// lost operations cannot pass by testing nothing; prints how each operation answered.
fn assert_every_operation_reached(spec: &Value, all: &[Exchange]) {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut statuses: BTreeMap<(String, String), BTreeMap<u16, usize>> = BTreeMap::new();
    let paths = spec["paths"].as_object().expect("the document has paths");
    for (template, item) in paths {
        for m in METHODS {
            if item.get(m).is_some() {
                statuses.insert((m.to_uppercase(), template.clone()), BTreeMap::new());
            }
        }
    }
    assert!(
        statuses.len() >= 20,
        "the document lists only {} operations",
        statuses.len()
    );
    for x in all {
        let best = paths
            .keys()
            .filter_map(|t| fits(t, &x.path).map(|n| (n, t)))
            .filter(|(_, t)| statuses.contains_key(&(x.method.clone(), (*t).clone())))
            .min();
        if let Some((_, t)) = best {
            let per = statuses.get_mut(&(x.method.clone(), t.clone())).unwrap();
            *per.entry(x.status).or_default() += 1;
        }
    }
    let mut unreached = Vec::new();
    for ((method, template), per) in &statuses {
        println!("{method:7} {template:45} {per:?}");
        if per.keys().all(|s| *s == 401 || *s == 405) {
            unreached.push(format!("{method} {template}"));
        }
    }
    assert!(
        unreached.is_empty(),
        "schemathesis never got past authentication on: {unreached:?}"
    );
}

/// Runs `scripts/contract-test` against `server`; its exit code and output. Killed (with its
/// children) and failed when it outlives [`BUDGET`].
fn run_schemathesis(server: &ServerProcess, token: &str, reports: &Path) -> (i32, String) {
    let log = reports.with_extension("log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("bash")
        .arg(script())
        .arg(server.base_url())
        .arg(reports)
        .env("RCRT_CONTRACT_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        // Its own process group, so that a run over budget is stopped with schemathesis.
        .process_group(0)
        .spawn()
        .expect("run bash scripts/contract-test");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BUDGET {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "schemathesis still running after {BUDGET:?}: stopped.\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("schemathesis ran for {:.1?}", started.elapsed());
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn schemathesis_finds_no_contract_failure() {
    let dir = TempDir::new();
    let token = ServiceToken::generate()
        .unwrap()
        .expose_secret()
        .to_string();
    let token_path = dir.path().join("admin-token");
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let kek = gen_kek();
    // The bootstrap admin token holds every role (rcrt.operator and audit.read included), so
    // every operation of the document is reachable.
    let cfg = server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &kek),
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", token_path.to_str().unwrap()),
            ("RUST_LOG", "warn"),
        ],
    );
    let server = ServerProcess::start(&cfg);
    // Under target/, one directory per run (runs at the same time must not write into each
    // other's reports), kept when the test fails to read the failures (schemathesis' output in
    // <dir>.log, the JUnit and HAR reports inside), removed when it passes.
    let reports = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "contract-reports-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));

    let (code, output) = run_schemathesis(&server, &token, &reports);
    assert_ne!(
        code, NOT_INSTALLED,
        "schemathesis is not installed (this test never skips). Run scripts/test, which installs \
         it, or: scripts/contract-test --install and export RCRT_TEST_SCHEMATHESIS_BIN=<the path \
         it prints>.\n{output}"
    );
    assert!(
        !output.contains(&token),
        "the token appeared in schemathesis' output"
    );
    assert_eq!(
        code,
        0,
        "schemathesis found contract failures (reports in {}):\n{output}\n--- server log (tail) ---\n{}",
        reports.display(),
        tail(&server.output(), 60)
    );
    println!("{}", tail(&output, 40));
    // The failures the hooks dropped as not the API's (opaque cursors, header values off their
    // own pattern), for the record.
    let dropped = std::fs::read_to_string(reports.join("dropped.txt")).unwrap_or_default();
    let mut why: BTreeMap<&str, usize> = BTreeMap::new();
    for line in dropped.lines() {
        // "METHOD /path -> 400: why"
        let reason = line.split_once(": ").map_or(line, |(_, r)| r);
        *why.entry(reason).or_default() += 1;
    }
    println!(
        "{} failures dropped as not the API's: {why:?}",
        dropped.lines().count()
    );

    let all = exchanges(&reports);
    // Independent of schemathesis' own checks: no answer of the whole run was a 5xx.
    let server_errors: Vec<String> = all
        .iter()
        .filter(|x| x.status >= 500)
        .map(|x| format!("{} {} -> {} {}", x.method, x.path, x.status, x.body))
        .collect();
    assert!(
        server_errors.is_empty(),
        "server errors during the run:\n{}",
        server_errors.join("\n")
    );
    let spec: Value =
        serde_json::from_slice(&std::fs::read(reports.join("openapi.json")).unwrap()).unwrap();
    assert_every_operation_reached(&spec, &all);
    assert_links_followed(&all);

    assert_eq!(
        http_get_status(server.port(), "/health"),
        Some(200),
        "the server stopped answering:\n{}",
        tail(&server.output(), 60)
    );
    let log = server.output();
    assert!(
        !log.contains("panicked"),
        "the server panicked during the run:\n{}",
        tail(&log, 60)
    );
    let _ = std::fs::remove_dir_all(&reports);
    let _ = std::fs::remove_file(reports.with_extension("log"));
}
