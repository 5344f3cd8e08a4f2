//! A hostile client against a real `rcrt-server` process (issue 9).
//!
//! 1. The barrage: a few thousand malformed requests from a fixed seed (random and mutated
//!    bodies, deep nesting, invalid UTF-8, huge headers and header floods, smuggling attempts,
//!    bad chunking, wrong methods, odd paths) with idle connections open alongside. No answer is
//!    a 5xx, every error body the application writes is JSON with `error.code` (hyper itself
//!    refuses broken framing with an empty-bodied 4xx before any route runs), `/health` answers
//!    throughout, and the log shows no panic.
//! 2. Request ids: ours in the audit log and `X-Request-Id`; the caller's, bounded and
//!    sanitised, only as `X-Client-Request-Id` and a separate log field (item 15).
//! 3. A `value` of the wrong type is never echoed in the error (item 16).
//! 4. `AUTH_MODE=disabled` answers only loopback `Host` names (item 13).
//! 5. A JWT whose `alg` carries a newline and an escape sequence forges no log line (item 14).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::server_config;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The barrage's seed: a failure names the request, and the same seed makes it again.
const SEED: u64 = 0x5eed_0009_cafe_f00d;

fn port_of(server: &ServerProcess) -> u16 {
    server
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A raw answer: status, headers (lower-case names) and body.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` on a new connection and reads one answer (by its `Content-Length`), or `None`
/// when the server closes without one. Panics after 10 s without either.
async fn send_raw(port: u16, raw: &[u8]) -> Option<Answer> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and close before it has read everything (413, 431, 400).
    let _ = s.write_all(raw).await;
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                // A HEAD answer announces a length but carries no body.
                let head_request = raw.starts_with(b"HEAD ");
                let len: usize = if head_request {
                    0
                } else {
                    headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0)
                };
                while buf.len() < end + 4 + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = buf[end + 4..].iter().take(len).copied().collect();
                return Some(Answer {
                    status,
                    headers,
                    body,
                });
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no answer and no close within 10 s"))
}

/// A request with `Host`, `Connection: close` and, for a body, its length and a JSON type.
fn request(method: &str, path: &str, extra: &[(&str, &[u8])], body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    for (k, v) in extra {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(b) = body {
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut b = vec![0u8; rng.random_range(0..=max)];
    rng.fill_bytes(&mut b);
    b
}

/// A valid body for one of the routes that take one, to mutate.
fn valid_body(rng: &mut StdRng) -> Vec<u8> {
    let bodies = [
        json!({"name": "hostile", "value": "v", "scope_type": "global"}),
        json!({"value": "new value"}),
        json!({"reason": "ticket 1"}),
        json!({"workspace": "ws", "name": "vault", "secrets": {"A": "1", "B": "2"}}),
        json!({"name": "t", "roles": ["secrets.read"], "ttl": "1h"}),
    ];
    serde_json::to_vec(pick(rng, &bodies)).unwrap()
}

fn mutate(rng: &mut StdRng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=8) {
        if b.is_empty() {
            break;
        }
        let i = rng.random_range(0..b.len());
        match rng.random_range(0..6) {
            0 => b[i] = rng.random(),
            1 => {
                b.remove(i);
            }
            2 => b.insert(i, *pick(rng, b"{}[]\",:\\0-e.\xff\x00")),
            3 => b.truncate(i),
            4 => {
                let dup = b[i..].to_vec();
                b.extend_from_slice(&dup);
            }
            _ => {
                let insert = pick(
                    rng,
                    &[
                        &b"\"\\ud800\""[..],
                        b"1e999999",
                        b"-0",
                        b"null",
                        b"\"\xc3\x28\"",
                        b"\"\xed\xa0\x80\"",
                        b"[[[[[[[[",
                        b"{\"value\":{}}",
                    ],
                )
                .to_vec();
                b.splice(i..i, insert);
            }
        }
    }
    b
}

const BODY_ROUTES: [(&str, &str); 8] = [
    ("POST", "/secrets"),
    ("PUT", "/secrets/00000000-0000-7000-8000-000000000000"),
    (
        "POST",
        "/secrets/00000000-0000-7000-8000-000000000000/decrypt",
    ),
    ("POST", "/secrets/vaults"),
    ("PUT", "/secrets/vaults/vault/keys/A"),
    ("POST", "/auth/tokens"),
    ("POST", "/admin/kek/rewrap"),
    ("PUT", "/secrets/not-a-uuid"),
];

/// One hostile request from the seeded generator, with a description for failures.
fn hostile_request(rng: &mut StdRng, n: usize) -> (String, Vec<u8>) {
    let (method, path) = *pick(rng, &BODY_ROUTES);
    match n % 12 {
        0 => {
            let b = random_bytes(rng, 2048);
            (
                format!("random body to {method} {path}"),
                request(method, path, &[], Some(&b)),
            )
        }
        1 | 2 => {
            let valid = valid_body(rng);
            let b = mutate(rng, valid);
            (
                format!(
                    "mutated body {:?} to {method} {path}",
                    String::from_utf8_lossy(&b)
                ),
                request(method, path, &[], Some(&b)),
            )
        }
        3 => {
            let depth = rng.random_range(100..20_000);
            let open = *pick(rng, &[&b"["[..], b"{\"a\":", b"{\"value\":"]);
            let b = open.repeat(depth);
            (
                format!("nesting {depth} deep to {method} {path}"),
                request(method, path, &[], Some(&b)),
            )
        }
        4 => {
            let mut b = b"{\"name\":\"".to_vec();
            b.extend(random_bytes(rng, 64).into_iter().map(|x| x | 0x80));
            b.extend_from_slice(b"\",\"value\":\"\xff\xfe\",\"scope_type\":\"global\"}");
            (
                "invalid UTF-8 in strings".into(),
                request("POST", "/secrets", &[], Some(&b)),
            )
        }
        5 => {
            let size = rng.random_range(8_000..600_000);
            let v = vec![b'a'; size];
            (
                format!("one header of {size} bytes"),
                request("GET", "/secrets", &[("X-Big", &v)], None),
            )
        }
        6 => {
            let count = rng.random_range(50..3_000);
            let mut raw =
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".to_vec();
            for i in 0..count {
                raw.extend_from_slice(format!("X-Flood-{i}: {i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"\r\n");
            (format!("{count} headers"), raw)
        }
        7 => {
            let smuggles: [&[u8]; 10] = [
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}{}{}{",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;ext=\x01\r\n{}\r\n0\r\n\r\n",
                b"POST /secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Folded: a\r\n b\r\n\r\n",
                b"GET /health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n",
            ];
            let i = rng.random_range(0..smuggles.len());
            (format!("smuggling attempt {i}"), smuggles[i].to_vec())
        }
        8 => {
            let m = *pick(
                rng,
                &[
                    "PATCH", "DELETE", "TRACE", "OPTIONS", "CONNECT", "FOO", "get", "HEAD",
                ],
            );
            let p = *pick(
                rng,
                &[
                    "/health",
                    "/secrets",
                    "/secrets/vaults",
                    "/auth/tokens",
                    "/metrics",
                ],
            );
            (format!("{m} {p}"), request(m, p, &[], None))
        }
        9 => {
            let long = format!("/secrets/{}", "a".repeat(rng.random_range(100..60_000)));
            let paths = [
                "/secrets/../../etc/passwd".to_owned(),
                "/%2e%2e/%2e%2e/".to_owned(),
                "/secrets/%00".to_owned(),
                "/secrets/%ff%fe/decrypt".to_owned(),
                "//secrets".to_owned(),
                "/secrets?limit=-1&limit=abc&cursor=%ff".to_owned(),
                "/secrets?scope_type=%00&x=1".to_owned(),
                "/secrets/vault/%2F%2F?workspace=%ff".to_owned(),
                "/secrets/00000000-0000-7000-8000-000000000000/decrypt/extra".to_owned(),
                "*".to_owned(),
                "/secrets/\u{9b}31m\u{2028}INFO-forged".to_owned(),
                "http://127.0.0.1/secrets".to_owned(),
                long,
            ];
            let p = pick(rng, &paths).clone();
            let shown: String = p.chars().take(80).collect();
            (format!("GET {shown}"), request("GET", &p, &[], None))
        }
        10 => {
            let mut v = random_bytes(rng, 200);
            v.retain(|b| *b != b'\r' && *b != b'\n');
            let name = *pick(
                rng,
                &[
                    "X-Access-Reason",
                    "X-Request-Id",
                    "Authorization",
                    "X-API-Key",
                    "If-Match",
                    "Content-Type",
                ],
            );
            (
                format!("{name} with random bytes"),
                request(
                    "POST",
                    "/secrets/00000000-0000-7000-8000-000000000000/decrypt",
                    &[(name, &v)],
                    Some(b"{}"),
                ),
            )
        }
        _ => {
            let ct = *pick(
                rng,
                &[
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "application/json; charset=\u{ff}",
                    "multipart/form-data; boundary=x",
                    "application/jsonx",
                ],
            );
            let b = valid_body(rng);
            let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: ", b.len()).into_bytes();
            raw.extend_from_slice(ct.as_bytes());
            raw.extend_from_slice(b"\r\n\r\n");
            raw.extend_from_slice(&b);
            (format!("content type {ct:?} to {method} {path}"), raw)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_barrage() {
    const REQUESTS: usize = 3000;
    const WORKERS: usize = 24;
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &kek),
            ("HTTP_HEADER_TIMEOUT", "2s"),
            ("HTTP_BODY_TIMEOUT", "2s"),
        ],
    ));
    let port = port_of(&server);

    // Idle connections alongside, and /health every 50 ms throughout.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let done = Arc::new(AtomicBool::new(false));
    let pinger = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut pings = 0u32;
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let a = send_raw(port, &request("GET", "/health", &[], None)).await;
                assert_eq!(a.map(|a| a.status), Some(200), "/health during the barrage");
                slowest = slowest.max(t.elapsed());
                pings += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (pings, slowest)
        })
    };

    let mut rng = StdRng::seed_from_u64(SEED);
    let requests: Vec<(String, Vec<u8>)> = (0..REQUESTS)
        .map(|n| hostile_request(&mut rng, n))
        .collect();
    let requests = Arc::new(requests);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let requests = requests.clone();
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            let mut bare = 0usize;
            for (n, (what, raw)) in requests.iter().enumerate().skip(w).step_by(WORKERS) {
                let head = raw.starts_with(b"HEAD ");
                let Some(a) = send_raw(port, raw).await else {
                    bare += 1;
                    continue;
                };
                *statuses.entry(a.status).or_default() += 1;
                if a.status >= 500 {
                    failures.push(format!("#{n} {what}: {} {}", a.status, a.text()));
                } else if a.status >= 400 && !a.body.is_empty() {
                    if a.json()["error"]["code"].as_str().is_none() {
                        failures.push(format!(
                            "#{n} {what}: {} non-JSON error {:?}",
                            a.status,
                            a.text()
                        ));
                    }
                } else if a.status >= 400
                    && !head
                    && !matches!(a.status, 400 | 408 | 413 | 414 | 431)
                {
                    failures.push(format!("#{n} {what}: {} with an empty body", a.status));
                }
            }
            (failures, statuses, bare)
        }));
    }
    let mut failures = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut bare = 0;
    for w in workers {
        let (f, s, b) = w.await.unwrap();
        failures.extend(f);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        bare += b;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (pings, slowest) = pinger.await.unwrap();
    drop(idle);
    eprintln!("barrage: {REQUESTS} requests in {took:?}; statuses {statuses:?}; closed without an answer: {bare}; /health {pings} times, slowest {slowest:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(pings >= 5, "/health answered only {pings} times");
    assert!(slowest < Duration::from_secs(2), "/health took {slowest:?}");
    // Most requests reach the application and get its JSON errors.
    let app_answers: usize = statuses
        .iter()
        .filter(|(s, _)| **s >= 400)
        .map(|(_, n)| n)
        .sum();
    assert!(app_answers > REQUESTS / 2, "{statuses:?}");
    let log = server.output();
    assert!(!log.contains("panicked"), "panic in the log:\n{log}");
    assert!(!log.contains("ERROR"), "an error in the log:\n{log}");
    for c in ['\u{1b}', '\u{9b}', '\u{7}', '\u{2028}'] {
        assert!(!log.contains(c), "{c:?} in the log:\n{log}");
    }
}

/// `secret_access_log.request_id` for every row, read from the SQLite file.
fn audit_request_ids(dir: &TempDir) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut st = conn
        .prepare("SELECT request_id FROM secret_access_log ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn caller_request_ids_never_reach_the_audit_log() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]));
    let port = port_of(&server);
    let created = send_raw(
        port,
        &request(
            "POST",
            "/secrets",
            &[],
            Some(br#"{"name":"rid","value":"v","scope_type":"global"}"#),
        ),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/secrets/{id}/decrypt");

    let long = format!("forged-{}", "x".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        (
            "plain",
            b"client-id-1".to_vec(),
            Some("client-id-1".to_owned()),
        ),
        (
            "long",
            long.clone().into_bytes(),
            Some(long[..128].to_owned()),
        ),
        (
            "tab, space and bytes over 0x7f",
            b"a\tb c\xff\xfe[31mINFO forged".to_vec(),
            Some("abc[31mINFOforged".to_owned()),
        ),
    ];
    let mut ours = Vec::new();
    for (what, raw_id, kept) in &cases {
        let a = send_raw(
            port,
            &request(
                "POST",
                &path,
                &[("X-Request-Id", raw_id)],
                Some(br#"{"reason":"rid test"}"#),
            ),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200, "{what}: {}", a.text());
        let our_id = a.header("x-request-id").unwrap().to_owned();
        uuid::Uuid::parse_str(&our_id)
            .unwrap_or_else(|_| panic!("{what}: X-Request-Id {our_id:?} is not ours"));
        assert_eq!(a.header("x-client-request-id"), kept.as_deref(), "{what}");
        ours.push(our_id);
    }
    // A literal newline cannot be sent in a header: hyper refuses the request.
    let a = send_raw(
        port,
        b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: a\rINFO forged\r\n\r\n",
    )
    .await;
    assert!(a.as_ref().is_none_or(|a| a.status == 400), "{a:?}");

    let rows = audit_request_ids(&dir);
    for (our_id, (what, raw_id, _)) in ours.iter().zip(&cases) {
        assert!(
            rows.contains(our_id),
            "{what}: no audit row with our id {our_id}: {rows:?}"
        );
        let raw = String::from_utf8_lossy(raw_id);
        assert!(
            rows.iter()
                .all(|r| !r.contains("forged") && !r.contains("client-id") && *r != raw),
            "{what}: the caller's id reached the audit log: {rows:?}"
        );
    }
    for r in &rows {
        uuid::Uuid::parse_str(r).unwrap_or_else(|_| panic!("audit request_id {r:?} is not ours"));
    }
    // The log has both, apart.
    let log = server.output();
    assert!(
        log.contains(&format!("request_id={}", ours[0]))
            && log.contains("client_request_id=client-id-1"),
        "{log}"
    );
    assert!(
        !log.contains(&"x".repeat(129)),
        "an unbounded caller id in the log"
    );
}

#[tokio::test]
async fn wrong_typed_values_are_not_echoed() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]));
    let port = port_of(&server);
    let wrong = [
        json!(987654321),
        json!(-987654321.5),
        json!({"inner": "sekrit-object-content"}),
        json!(["sekrit-array-content", 987654321]),
        json!(true),
    ];
    let id = "00000000-0000-7000-8000-000000000000";
    for v in &wrong {
        let bodies = [
            (
                "POST",
                "/secrets".to_owned(),
                json!({"name": "n", "value": v, "scope_type": "global"}),
            ),
            ("PUT", format!("/secrets/{id}"), json!({"value": v})),
            (
                "PUT",
                "/secrets/vaults/vault/keys/A".to_owned(),
                json!({"value": v}),
            ),
            (
                "POST",
                "/secrets/vaults".to_owned(),
                json!({"workspace": "ws", "name": "vault", "secrets": {"A": v}}),
            ),
            (
                "POST",
                "/secrets/vaults".to_owned(),
                json!({"workspace": "ws", "name": "vault", "secrets": v}),
            ),
        ];
        // An object as `secrets` is the right type: only the other shapes are wrong there.
        let skip = usize::from(v.is_object());
        for (method, path, body) in bodies.into_iter().rev().skip(skip) {
            let a = send_raw(
                port,
                &request(
                    method,
                    &path,
                    &[],
                    Some(&serde_json::to_vec(&body).unwrap()),
                ),
            )
            .await
            .unwrap();
            let text = a.text();
            assert_eq!(a.status, 400, "{method} {path} {body}: {text}");
            assert_eq!(a.json()["error"]["code"], "invalid_json", "{text}");
            for leak in ["987654321", "sekrit", "true"] {
                assert!(
                    !text.contains(leak),
                    "{method} {path} {body}: the error echoes the value: {text}"
                );
            }
        }
    }
    // Other fields keep serde's detail.
    let a = send_raw(
        port,
        &request(
            "POST",
            "/secrets",
            &[],
            Some(br#"{"name": 5, "value": "v", "scope_type": "global"}"#),
        ),
    )
    .await
    .unwrap();
    assert!(a.text().contains("name"), "{}", a.text());
}

#[tokio::test]
async fn without_authentication_only_loopback_hosts_are_served() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &kek),
            ("ALLOWED_HOSTS", "rcrt.internal"),
        ],
    ));
    let port = port_of(&server);
    let get = |host: Option<String>, target: &str| {
        let mut raw = format!("GET {target} HTTP/1.1\r\n");
        if let Some(h) = host {
            raw.push_str(&format!("Host: {h}\r\n"));
        }
        raw.push_str("Connection: close\r\n\r\n");
        raw.into_bytes()
    };
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("LOCALHOST:{port}"),
        format!("rcrt.internal:{port}"),
    ] {
        let a = send_raw(port, &get(Some(host.clone()), "/secrets"))
            .await
            .unwrap();
        assert_eq!(a.status, 200, "Host {host}: {}", a.text());
    }
    for host in [
        Some(format!("rebind.attacker.example:{port}")),
        Some("attacker.example".to_owned()),
        Some(format!("127.0.0.1.nip.io:{port}")),
        Some(format!("localhost.attacker.example:{port}")),
        Some(format!("10.0.0.5:{port}")),
        Some(format!("user@localhost:{port}")),
        Some(String::new()),
        None,
    ] {
        for path in [
            "/secrets",
            "/ready",
            "/metrics",
            "/secrets/vaults/x",
            "/nope",
        ] {
            let a = send_raw(port, &get(host.clone(), path)).await.unwrap();
            assert_eq!(a.status, 421, "Host {host:?} {path}: {}", a.text());
            assert_eq!(
                a.json()["error"]["code"],
                "host_not_allowed",
                "{}",
                a.text()
            );
        }
        // A rebinding page may still see that something listens; /health is all it gets.
        let a = send_raw(port, &get(host.clone(), "/health")).await.unwrap();
        assert_eq!(a.status, 200, "Host {host:?} /health");
    }
    // Two Host headers, and an absolute-form target naming another host.
    let a = send_raw(
        port,
        format!("GET /secrets HTTP/1.1\r\nHost: localhost:{port}\r\nHost: attacker.example\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        a.is_none_or(|a| a.status == 421 || a.status == 400),
        "two Host headers"
    );
    let a = send_raw(
        port,
        &get(
            Some(format!("localhost:{port}")),
            "http://attacker.example/secrets",
        ),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 421, "{}", a.text());
    // A POST from a rebinding page creates nothing either.
    let a = send_raw(
        port,
        &{
            let body = br#"{"name":"rebound","value":"v","scope_type":"global"}"#;
            let mut raw = format!("POST /secrets HTTP/1.1\r\nHost: attacker.example:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            raw.extend_from_slice(body);
            raw
        },
    )
    .await
    .unwrap();
    assert_eq!(a.status, 421);

    // With authentication on, the Host is not checked (a proxy in front may use any name).
    let dir2 = TempDir::new();
    let server2 = ServerProcess::start(&server_config(
        None,
        &dir2,
        &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "token")],
    ));
    let a = send_raw(
        port_of(&server2),
        &get(Some("secrets.example.com".into()), "/secrets"),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 401, "{}", a.text());
}

#[tokio::test]
async fn a_jwt_alg_with_a_newline_forges_no_log_line() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let secret = dir.path().join("hs256.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-hostile").unwrap();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &kek),
            ("AUTH_MODE", "jwt"),
            ("JWT_ISSUER", "https://idp.test"),
            ("JWT_AUDIENCE", "rcrt"),
            ("JWT_HS256_SECRET_FILE", secret.to_str().unwrap()),
            ("RUST_LOG", "debug"),
        ],
    ));
    let port = port_of(&server);
    let forged = "2026-01-01T00:00:00.000000Z  INFO rcrt_server: FORGED admin login ok";
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let claims = b64(
        &json!({"sub": "x", "owner_id": "t", "iss": "https://idp.test", "aud": "rcrt", "exp": 4_000_000_000u64}),
    );
    let headers = [
        json!({"alg": format!("HS256\n{forged}\u{1b}[2K\u{1b}[1A"), "typ": "JWT"}),
        json!({"alg": "HS256", "typ": "JWT", "kid": format!("k\n{forged}")}),
        json!({"alg": "none\r\n\u{1b}]0;FORGED\u{7}", "typ": "JWT"}),
    ];
    for h in &headers {
        let token = format!("{}.{claims}.c2ln", b64(h));
        let a = send_raw(
            port,
            &request(
                "GET",
                "/secrets",
                &[("Authorization", format!("Bearer {token}").as_bytes())],
                None,
            ),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 401, "{}", a.text());
        assert!(!a.text().contains("FORGED"), "{}", a.text());
    }
    // The refusals are logged, by class.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = server.output();
        if log.matches("request not authenticated").count() >= headers.len()
            || Instant::now() > deadline
        {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        log.matches("request not authenticated").count() >= headers.len(),
        "{log}"
    );
    assert!(!log.contains("FORGED"), "attacker text in the log:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence in the log:\n{log}"
    );
    assert!(!log.contains('\u{7}'), "a BEL in the log:\n{log}");
}
