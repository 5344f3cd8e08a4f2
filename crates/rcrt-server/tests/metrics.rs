//! `/metrics` of real `rcrt-server` processes:
//!
//! 1. Every `rcrt_*` metric that a query of the Grafana dashboard (deploy/grafana) or an alert of
//!    deploy/prometheus/rules.yaml uses is exported, and the guide's counter keeps its name
//!    `rcrt_secret_decrypt_failures` (no `_total`).
//! 2. Requests are counted and timed by route template (`/secrets/{id}`), never by path.
//! 3. No metric value or label holds a secret value, id, name or access reason.
//! 4. A failed audit write (a trigger that refuses audit rows, on SQLite and on PostgreSQL)
//!    answers 503 and counts in `rcrt_audit_write_failures_total`.
//! 5. `rcrt_kek_configured` is 0 while the store refuses connections and 1 again after.
//! 6. A stored ciphertext that fails to decrypt counts in `rcrt_secret_decrypt_failures`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{server_config, Backend};
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use serde_json::{json, Value};

const RULES: &str = include_str!("../../../deploy/prometheus/rules.yaml");
const DASHBOARD: &str = include_str!("../../../deploy/grafana/rcrt-dashboard.json");

fn start(pg: Option<&TempPgDb>, dir: &TempDir) -> ServerProcess {
    start_with(pg, dir, &[])
}

fn start_with(pg: Option<&TempPgDb>, dir: &TempDir, extra: &[(&str, &str)]) -> ServerProcess {
    let kek = gen_kek();
    let mut env = vec![
        ("LOCAL_KEK_BASE64", kek.as_str()),
        ("AUTH_MODE", "disabled"),
    ];
    env.extend_from_slice(extra);
    ServerProcess::start(&server_config(pg, dir, &env))
}

async fn send(
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
    reason: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        req = req.json(&body);
    }
    if let Some(reason) = reason {
        req = req.header("X-Access-Reason", reason);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn create(base: &str, name: &str, value: &str) -> (u16, Value) {
    send(
        reqwest::Method::POST,
        format!("{base}/secrets"),
        Some(json!({"name": name, "value": value, "scope_type": "global"})),
        None,
    )
    .await
}

async fn decrypt(base: &str, id: &str, reason: Option<&str>) -> (u16, Value) {
    send(
        reqwest::Method::POST,
        format!("{base}/secrets/{id}/decrypt"),
        None,
        reason,
    )
    .await
}

async fn scrape(base: &str) -> String {
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    r.text().await.unwrap()
}

/// The value of the sample written exactly as `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The names of every sample in the exposition (histograms' `_bucket`, `_sum`, `_count`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// Every `rcrt_*` metric name in `text`.
fn rcrt_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("rcrt_") {
        // Only whole identifiers: not the tail of a longer one.
        let starts_word = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if starts_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The PromQL of every dashboard panel target.
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(expr)) = m.get("expr") {
                    out.push(expr.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::from_str(DASHBOARD).unwrap(), &mut out);
    out
}

/// The `expr:` blocks of rules.yaml (a block scalar runs until the next key at its indent).
fn rule_exprs() -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = RULES.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut expr = rest.trim().trim_start_matches('|').to_owned();
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && next_indent <= indent {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        out.push(expr);
    }
    out
}

#[tokio::test]
async fn dashboard_and_alert_metrics_are_all_exported() {
    let dir = TempDir::new();
    let server = start(None, &dir);
    let base = server.base_url();
    let (status, created) = create(&base, "DASH", "dashboard-value").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(decrypt(&base, id, Some("dashboard check")).await.0, 200);
    // A failing request: no access reason.
    assert_eq!(decrypt(&base, id, None).await.0, 400);

    let text = scrape(&base).await;
    let exported = sample_names(&text);

    let queries = dashboard_queries();
    assert!(queries.len() >= 9, "dashboard queries: {queries:?}");
    let dashboard: BTreeSet<String> = queries.iter().flat_map(|q| rcrt_names(q)).collect();
    let exprs = rule_exprs();
    assert_eq!(exprs.len(), 5, "rules.yaml alerts: {exprs:?}");
    let rules: BTreeSet<String> = exprs.iter().flat_map(|e| rcrt_names(e)).collect();
    // The parsers found what the files are about (so the check below is not vacuous).
    for name in [
        "rcrt_http_requests_total",
        "rcrt_http_request_duration_seconds_bucket",
        "rcrt_secret_decrypt_failures",
        "rcrt_audit_write_failures_total",
        "rcrt_store_pool_connections",
        "rcrt_kek_rewrap_remaining",
        "rcrt_kek_configured",
        "rcrt_build_info",
    ] {
        assert!(dashboard.contains(name), "dashboard lacks {name}");
    }
    for name in [
        "rcrt_kek_configured",
        "rcrt_secret_decrypt_failures",
        "rcrt_kek_rewrap_remaining",
        "rcrt_kek_rewrapped_total",
        "rcrt_audit_write_failures_total",
    ] {
        assert!(rules.contains(name), "rules.yaml lacks {name}");
    }
    let missing: Vec<&String> = dashboard
        .union(&rules)
        .filter(|n| !exported.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\n{text}"
    );

    // The guide's names, exactly.
    assert!(text.contains("# TYPE rcrt_secret_decrypt_failures counter\n"));
    assert!(!text.contains("rcrt_secret_decrypt_failures_total"));
    assert_eq!(value(&text, "rcrt_secret_decrypt_failures"), Some(0.0));
    assert_eq!(value(&text, "rcrt_secret_decrypt_success_total"), Some(1.0));
    assert_eq!(value(&text, "rcrt_kek_configured"), Some(1.0));
    assert_eq!(value(&text, "rcrt_audit_write_failures_total"), Some(0.0));
    assert_eq!(value(&text, "rcrt_kek_rewrap_remaining"), Some(0.0));
    let build = format!(
        "rcrt_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &build), Some(1.0), "{text}");
    let max = value(&text, "rcrt_store_pool_max_connections").unwrap();
    let in_use = value(&text, "rcrt_store_pool_connections{state=\"in_use\"}").unwrap();
    let idle = value(&text, "rcrt_store_pool_connections{state=\"idle\"}").unwrap();
    assert!(max >= 1.0 && in_use + idle <= max, "{max} {in_use} {idle}");
    assert!(
        idle >= 1.0,
        "reads ran, so a reader connection is pooled: {idle}"
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_template_not_path() {
    let dir = TempDir::new();
    let server = start(None, &dir);
    let base = server.base_url();
    let (status, created) = create(&base, "ROUTE", "route-value").await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, _) = send(
            reqwest::Method::GET,
            format!("{base}/secrets/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let other = uuid::Uuid::new_v4();
    let (status, _) = send(
        reqwest::Method::GET,
        format!("{base}/secrets/{other}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send(
        reqwest::Method::GET,
        format!("{base}/no/such/{other}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let text = scrape(&base).await;
    let labels = |route: &str, method: &str, status: u16| {
        format!("{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}")
    };
    let ok = labels("/secrets/{id}", "GET", 200);
    assert_eq!(
        value(&text, &format!("rcrt_http_requests_total{ok}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("rcrt_http_request_duration_seconds_count{ok}")
        ),
        Some(2.0)
    );
    let inf = "rcrt_http_request_duration_seconds_bucket\
        {route=\"/secrets/{id}\",method=\"GET\",status=\"200\",le=\"+Inf\"}";
    assert_eq!(value(&text, inf), Some(2.0), "{text}");
    let not_found = labels("/secrets/{id}", "GET", 404);
    assert_eq!(
        value(&text, &format!("rcrt_http_requests_total{not_found}")),
        Some(1.0)
    );
    let created_label = labels("/secrets", "POST", 201);
    assert_eq!(
        value(&text, &format!("rcrt_http_requests_total{created_label}")),
        Some(1.0)
    );
    // A path that matched no route: one series for all of them, not one per path.
    let unmatched = labels("unmatched", "GET", 404);
    assert_eq!(
        value(&text, &format!("rcrt_http_requests_total{unmatched}")),
        Some(1.0)
    );
    for path_part in [id.as_str(), &other.to_string(), "/no/such"] {
        assert!(!text.contains(path_part), "{path_part} in /metrics");
    }
}

#[tokio::test]
async fn no_secret_value_in_metrics() {
    let dir = TempDir::new();
    let server = start(None, &dir);
    let base = server.base_url();
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let value_text = format!("value{mark}");
    let name = format!("NAME{mark}");
    let reason = format!("reason{mark}");
    let (status, created) = create(&base, &name, &value_text).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, out) = decrypt(&base, &id, Some(&reason)).await;
    assert_eq!((status, out["value"].as_str()), (200, Some(&*value_text)));
    let (status, _) = send(
        reqwest::Method::PUT,
        format!("{base}/secrets/{id}"),
        Some(json!({"value": format!("second{mark}")})),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        reqwest::Method::POST,
        format!("{base}/secrets/vaults"),
        Some(json!({"workspace": "ws", "name": format!("vault{mark}"),
                    "secrets": {"K": format!("vaultvalue{mark}")}})),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        reqwest::Method::GET,
        format!("{base}/secrets/vault/vault{mark}?workspace=ws"),
        None,
        Some(&reason),
    )
    .await;
    assert_eq!(status, 200);

    let text = scrape(&base).await;
    assert_eq!(value(&text, "rcrt_secret_decrypt_success_total"), Some(2.0));
    // The mark is in every value, name and reason; the id in every path.
    for secret in [mark.as_str(), id.as_str()] {
        assert!(!text.contains(secret), "{secret} in /metrics:\n{text}");
    }
    // Every label value is one of a known few kinds: route templates, methods, statuses, pool
    // states and the version.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.rsplit_once('}').unwrap().0;
        for pair in labels.split("\",") {
            let (key, val) = pair.split_once("=\"").unwrap();
            let val = val.trim_end_matches('"');
            let known = match key {
                "route" => val == "unmatched" || val.starts_with('/'),
                "method" => val.chars().all(|c| c.is_ascii_uppercase()) || val == "other",
                "status" | "le" => val.parse::<f64>().is_ok() || val == "+Inf",
                "state" => val == "in_use" || val == "idle",
                "version" => val == env!("CARGO_PKG_VERSION"),
                "within" => val == "7d" || val == "30d",
                _ => false,
            };
            assert!(known, "unexpected label {key}={val:?} in {line}");
        }
    }
}

/// Makes the store refuse every audit row, as a full disk or a broken audit table would.
async fn refuse_audit_rows(backend: Backend, dir: &TempDir, pg: Option<&TempPgDb>) {
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
            conn.execute_batch(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON secret_access_log \
                 BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END;",
            )
            .unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(pg.unwrap().url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$; \
                     CREATE TRIGGER refuse_audit BEFORE INSERT ON secret_access_log \
                     FOR EACH ROW EXECUTE FUNCTION refuse_audit();",
                )
                .await
                .unwrap();
        }
    }
}

async fn audit_write_failures_are_counted(backend: Backend) {
    let pg = backend.database().await;
    let dir = TempDir::new();
    // A pool size of its own, to see DB_POOL_SIZE reach the PostgreSQL pool (SQLite ignores it).
    let server = start_with(pg.as_ref(), &dir, &[("DB_POOL_SIZE", "3")]);
    let base = server.base_url();
    let (status, created) = create(&base, "AUDITED", "audited-value").await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let text = scrape(&base).await;
    assert_eq!(value(&text, "rcrt_audit_write_failures_total"), Some(0.0));

    refuse_audit_rows(backend, &dir, pg.as_ref()).await;
    // A decrypt whose audit row cannot be written releases nothing: 503.
    let (status, body) = decrypt(&base, &id, Some("audit failure check")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.get("value").is_none());
    // An audited write (row and change in one transaction) fails as a whole.
    let (status, _) = create(&base, "AUDITED2", "other-value").await;
    assert_eq!(status, 503);
    // A name clash is refused on purpose (its failure row cannot be written either: 503), and
    // counts once, for that failure row.
    let (status, _) = create(&base, "AUDITED", "clash").await;
    assert_eq!(status, 503);

    let text = scrape(&base).await;
    assert_eq!(
        value(&text, "rcrt_audit_write_failures_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "rcrt_http_requests_total{route=\"/secrets/{id}/decrypt\",method=\"POST\",status=\"503\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "rcrt_secret_decrypt_success_total"), Some(0.0));
    // Reads still work, so the store is ready and the KEK usable.
    assert_eq!(value(&text, "rcrt_kek_configured"), Some(1.0));
    if backend == Backend::Postgres {
        let max = value(&text, "rcrt_store_pool_max_connections").unwrap();
        let in_use = value(&text, "rcrt_store_pool_connections{state=\"in_use\"}").unwrap();
        let idle = value(&text, "rcrt_store_pool_connections{state=\"idle\"}").unwrap();
        assert_eq!(max, 3.0, "DB_POOL_SIZE=3: {text}");
        assert!(in_use + idle <= max && idle >= 1.0, "{text}");
    }
}

#[tokio::test]
async fn audit_write_failures_are_counted_sqlite() {
    audit_write_failures_are_counted(Backend::Sqlite).await;
}

#[tokio::test]
async fn audit_write_failures_are_counted_postgres() {
    audit_write_failures_are_counted(Backend::Postgres).await;
}

async fn admin(sql: String) {
    let (client, conn) =
        tokio_postgres::connect(&rcrt_testkit::pg_admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    client.batch_execute(&sql).await.unwrap();
}

/// Scrapes until `rcrt_kek_configured` is `want` (at most 20 s).
async fn kek_configured_becomes(base: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(base).await;
        let got = value(&text, "rcrt_kek_configured");
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rcrt_kek_configured stayed {got:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn kek_configured_follows_store_readiness() {
    let pg = TempPgDb::create().await;
    let db = pg
        .url()
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let dir = TempDir::new();
    let server = start(Some(&pg), &dir);
    let base = server.base_url();
    kek_configured_becomes(&base, 1.0).await;

    // The database refuses connections, and the server's are cut.
    admin(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}';"
    ))
    .await;
    kek_configured_becomes(&base, 0.0).await;
    let ready = reqwest::get(format!("{base}/ready")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    admin(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true;")).await;
    kek_configured_becomes(&base, 1.0).await;
}

#[tokio::test]
async fn decrypt_failures_count_under_the_guides_name() {
    let dir = TempDir::new();
    let server = start(None, &dir);
    let base = server.base_url();
    let (status, created) = create(&base, "TAMPERED", "tampered-value").await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    // Flip the stored ciphertext's last byte: its tag no longer verifies.
    let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
    let mut sealed: Vec<u8> = conn
        .query_row(
            "SELECT sealed_value FROM secret_versions WHERE secret_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    *sealed.last_mut().unwrap() ^= 1;
    let changed = conn
        .execute(
            "UPDATE secret_versions SET sealed_value = ?1 WHERE secret_id = ?2",
            rusqlite::params![sealed, id],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    for _ in 0..2 {
        let (status, body) = decrypt(&base, &id, Some("tamper check")).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "decrypt_failed");
    }
    let text = scrape(&base).await;
    assert_eq!(
        value(&text, "rcrt_secret_decrypt_failures"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value(&text, "rcrt_secret_decrypt_success_total"), Some(0.0));
    assert!(!text.contains("rcrt_secret_decrypt_failures_total"));
}
