//! `LOG_FORMAT=json` on a real server: every line it writes is one JSON object, each request
//! leaves exactly one access line (target `rcrt::access`) with its id, method, route template,
//! status, latency and, when authenticated, principal and tenant; and a create and decrypt with a
//! known value, reason, token and KEK leave none of them, nor a name from a path or a query
//! string, anywhere in the logs (at `RUST_LOG=trace`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{gen_kek, server_config, Backend};
use rcrt_crypto::ServiceToken;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

/// One request as the client saw it, and what its access line must say.
struct Sent {
    request_id: String,
    method: &'static str,
    route: &'static str,
    status: u16,
    /// `Some((principal, tenant))` for an authenticated caller.
    caller: Option<(&'static str, &'static str)>,
}

fn bootstrap_token(dir: &Path) -> (String, String) {
    use std::os::unix::fs::PermissionsExt;
    let token = ServiceToken::generate()
        .unwrap()
        .expose_secret()
        .to_string();
    let path = dir.join("boot-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path.to_str().unwrap().to_owned(), token)
}

/// Every non-empty line of `log` as a JSON object; fails naming the first line that is not one.
fn json_lines(log: &str) -> Vec<serde_json::Map<String, Value>> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => m,
            _ => panic!("not one JSON object per line: {l:?}\n--- whole log:\n{log}"),
        })
        .collect()
}

async fn json_logs_and_access_lines(backend: Backend) {
    let dir = TempDir::new();
    let pg = backend.database().await;
    let kek = gen_kek();
    let (token_path, token) = bootstrap_token(dir.path());
    let server = ServerProcess::start(&server_config(
        pg.as_ref(),
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &kek),
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", &token_path),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "trace"),
        ],
    ));
    let base = server.base_url();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let value = format!("value-{tag}-sekret");
    let reason = format!("reason-{tag}-why");
    let vault = format!("vault-{tag}-name");
    let query = format!("query-{tag}-text");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut sent = Vec::new();
    let admin = Some(("bootstrap-admin", "default"));
    let mut record = |r: &reqwest::Response,
                      method: &'static str,
                      route: &'static str,
                      caller: Option<(&'static str, &'static str)>| {
        sent.push(Sent {
            request_id: r
                .headers()
                .get("x-request-id")
                .expect("x-request-id on every answer")
                .to_str()
                .unwrap()
                .to_owned(),
            method,
            route,
            status: r.status().as_u16(),
            caller,
        });
    };

    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    record(&r, "GET", "/health", None);

    let r = http
        .post(format!("{base}/secrets"))
        .bearer_auth(&token)
        .json(&json!({"name": format!("name-{tag}"), "value": value, "scope_type": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    record(&r, "POST", "/secrets", admin);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = http
        .post(format!("{base}/secrets/{id}/decrypt?note={query}"))
        .bearer_auth(&token)
        .header("X-Access-Reason", &reason)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    record(&r, "POST", "/secrets/{id}/decrypt", admin);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(&value),
        "the decrypt answered the value: {body}"
    );

    // A name in the path: the route template only may be logged.
    let r = http
        .get(format!("{base}/secrets/vaults/{vault}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    record(&r, "GET", "/secrets/vaults/{vault}", admin);

    // Refused: no caller to name.
    let r = http
        .get(format!("{base}/secrets/{id}"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    record(&r, "GET", "/secrets/{id}", None);

    let r = http
        .get(format!("{base}/no/such/{vault}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    record(&r, "GET", "unmatched", None);

    // The line is written before the answer leaves; allow the file a moment anyway.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let lines = json_lines(&server.output());
        let have = |s: &Sent| {
            lines
                .iter()
                .any(|l| l["target"] == "rcrt::access" && l["request_id"] == s.request_id)
        };
        if sent.iter().all(have) || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = server.output();

    // Every line: a timestamp, a level and a target.
    for l in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(l.get(key).is_some_and(Value::is_string), "{key}: {l:?}");
        }
    }

    // One access line per request, with its fields.
    for s in &sent {
        let access: Vec<_> = lines
            .iter()
            .filter(|l| l["target"] == "rcrt::access" && l["request_id"] == s.request_id)
            .collect();
        assert_eq!(
            access.len(),
            1,
            "one access line for {} {}:\n{log}",
            s.method,
            s.route
        );
        let a = access[0];
        assert_eq!(a["level"], "INFO", "{a:?}");
        assert_eq!(a["method"], s.method, "{a:?}");
        assert_eq!(a["route"], s.route, "{a:?}");
        assert_eq!(a["status"], s.status, "{a:?}");
        assert!(
            a["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{a:?}"
        );
        match s.caller {
            Some((principal, tenant)) => {
                assert_eq!(a["principal"], principal, "{a:?}");
                assert_eq!(a["tenant"], tenant, "{a:?}");
            }
            None => assert!(
                a.get("principal").is_none() && a.get("tenant").is_none(),
                "{a:?}"
            ),
        }
        assert!(a.get("path").is_none() && a.get("uri").is_none(), "{a:?}");
    }
    // No other access lines but the test kit's own /health probes at start.
    for l in lines.iter().filter(|l| l["target"] == "rcrt::access") {
        assert!(
            sent.iter().any(|s| l["request_id"] == s.request_id) || l["route"] == "/health",
            "an access line for no request sent: {l:?}"
        );
    }

    // Never a value, reason, token, KEK, a name from a path or a query string.
    for (what, secret) in [
        ("the value", value.as_str()),
        ("the reason", reason.as_str()),
        ("the token", token.as_str()),
        ("the KEK", kek.as_str()),
        ("a vault name from the path", vault.as_str()),
        ("the query string", query.as_str()),
        ("the tag", tag.as_str()),
    ] {
        assert!(!log.contains(secret), "{what} is in the log:\n{log}");
    }
}

#[tokio::test]
async fn json_logs_and_access_lines_sqlite() {
    json_logs_and_access_lines(Backend::Sqlite).await;
}

#[tokio::test]
async fn json_logs_and_access_lines_postgres() {
    json_logs_and_access_lines(Backend::Postgres).await;
}

/// Text stays the default; any other value than text or json stops the start, naming the
/// variable.
#[test]
fn log_format_text_by_default_and_bad_values_refused() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "disabled")],
    ));
    let log = server.output();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        !first.is_empty() && serde_json::from_str::<Value>(first).is_err(),
        "{log}"
    );
    drop(server);
    for (var, bad) in [
        ("LOG_FORMAT", "yaml"),
        ("AUDIT_CHECKPOINT_INTERVAL", "100ms"),
    ] {
        let (status, out) = ServerProcess::run_to_exit(&server_config(
            None,
            &dir,
            &[("LOCAL_KEK_BASE64", &kek), (var, bad)],
        ));
        assert_eq!(status.code(), Some(2), "{var}={bad}: {out}");
        assert!(out.contains(var), "{var}={bad}: {out}");
    }
}
