//! Service tokens end to end: real `rcrt-server` processes on SQLite and PostgreSQL.
//!
//! 1. The lifecycle: bootstrap admin token, minting, both headers, scopes, no escalation, bad
//!    tokens (one identical 401), expiry, revocation, audit rows, no token or hash in any log
//!    or listing.
//! 2. Two replicas on one PostgreSQL: the bootstrap file raced by both leaves one token, and a
//!    revocation on one replica stops the token on the other within the cache bound (5 s).
//! 3. Bootstrap without a file: token mode writes one admin token (0600) once, also when two
//!    replicas race; bad bootstrap files stop start-up naming the file, never its content.
//! 4. The default off loopback is token mode; `AUTH_MODE=disabled` there starts with a warning.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::gen_kek;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{server_config, Backend};
use rcrt_crypto::ServiceToken;
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use reqwest::Method;
use serde_json::{json, Value};

/// Writes a fresh token to `dir/name` with `mode`; returns the path and the token text.
fn token_file(dir: &Path, name: &str, mode: u32) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let text = ServiceToken::generate()
        .unwrap()
        .expose_secret()
        .to_string();
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (path, text)
}

/// The hex of a token's stored hash, to look for in logs and answers.
fn hash_hex(token: &str) -> String {
    let h = ServiceToken::parse(token).unwrap().hash();
    h.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

struct Resp {
    what: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn ctx(&self) -> String {
        format!("{} -> {} {}", self.what, self.status, self.text)
    }
    fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}", self.ctx());
        self
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a request presents its credential.
#[derive(Clone, Copy)]
enum Header<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
    Raw(&'a str, &'a [u8]),
    None,
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(base: String) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { base, http }
    }

    async fn req(
        &self,
        method: Method,
        path: &str,
        auth: Header<'_>,
        body: Option<&Value>,
    ) -> Resp {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        rb = match auth {
            Header::Bearer(t) => rb.header("authorization", format!("Bearer {t}")),
            Header::ApiKey(t) => rb.header("x-api-key", t),
            Header::Raw(name, value) => rb.header(
                name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            ),
            Header::None => rb,
        };
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.unwrap();
        Resp {
            what: format!("{method} {path}"),
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    async fn mint(&self, auth: Header<'_>, body: Value) -> Resp {
        self.req(Method::POST, "/auth/tokens", auth, Some(&body))
            .await
    }

    async fn create(&self, auth: Header<'_>, name: &str, scope: (&str, Option<&str>)) -> String {
        let mut body =
            json!({"name": name, "value": format!("value of {name}"), "scope_type": scope.0});
        if let Some(id) = scope.1 {
            body["scope_id"] = json!(id);
        }
        let r = self
            .req(Method::POST, "/secrets", auth, Some(&body))
            .await
            .expect(201);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    async fn decrypt(&self, auth: Header<'_>, id: &str) -> Resp {
        self.req(
            Method::POST,
            &format!("/secrets/{id}/decrypt"),
            auth,
            Some(&json!({"reason": "token test"})),
        )
        .await
    }
}

/// Audit rows (action, token_id, user_id, outcome), read straight from the database.
async fn audit_rows(
    pg: Option<&TempPgDb>,
    dir: &TempDir,
) -> Vec<(String, Option<String>, String, String)> {
    let sql = "SELECT action, token_id, user_id, outcome FROM secret_access_log ORDER BY id";
    match pg {
        None => {
            let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut st = conn.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        Some(pg) => {
            let (client, conn) = tokio_postgres::connect(pg.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query(&sql.replace("token_id", "token_id::text"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect()
        }
    }
}

async fn pg_token_count(pg: &TempPgDb) -> i64 {
    let (client, conn) = tokio_postgres::connect(pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM auth_tokens", &[])
        .await
        .unwrap()
        .get(0)
}

// =============================================================================================
// 1. The lifecycle
// =============================================================================================

async fn lifecycle(backend: Backend) {
    let dir = TempDir::new();
    let pg = backend.database().await;
    let (boot_path, admin) = token_file(dir.path(), "boot-token", 0o600);
    let kek = gen_kek();
    let cfg = server_config(
        pg.as_ref(),
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &kek),
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", boot_path.to_str().unwrap()),
            ("RUST_LOG", "trace"),
        ],
    );
    let server = ServerProcess::start(&cfg);
    let c = Client::new(server.base_url());
    let admin_h = Header::Bearer(&admin);
    assert!(
        !dir.path().join("bootstrap-token").exists(),
        "with a bootstrap file no other token file is written"
    );

    // The bootstrap token is a tenant admin and the operator.
    c.req(Method::GET, "/admin/kek/status", admin_h, None)
        .await
        .expect(200);
    let w1 = c
        .create(admin_h, "w1-secret", ("workspace", Some("w1")))
        .await;
    let w2 = c
        .create(admin_h, "w2-secret", ("workspace", Some("w2")))
        .await;
    let global = c.create(admin_h, "global-secret", ("global", None)).await;

    // Minting: 201, shown once, no-store, the metadata; never the hash.
    let r = c
        .mint(
            admin_h,
            json!({"name": "deploy bot", "principal": "deploy-bot", "roles": ["secrets.read", "secrets.decrypt"], "workspaces": ["w1"], "ttl": "1h"}),
        )
        .await
        .expect(201);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.ctx());
    let reader_meta = r.json();
    let reader = reader_meta["token"].as_str().unwrap().to_owned();
    assert!(ServiceToken::parse(&reader).is_ok(), "{}", r.ctx());
    assert_eq!(reader_meta["principal"], "deploy-bot");
    assert_eq!(reader_meta["created_by"], "bootstrap-admin");
    assert_eq!(reader_meta["tenant"], "default");
    assert_eq!(reader_meta["status"], "active");
    assert_eq!(
        reader_meta["roles"],
        json!(["secrets.read", "secrets.decrypt"])
    );
    assert!(!r.text.contains(&hash_hex(&reader)));
    let reader_id = reader_meta["id"].as_str().unwrap().to_owned();

    // Both headers; exactly the JWT scope rules; the audit names the token's principal.
    for h in [Header::Bearer(&reader), Header::ApiKey(&reader)] {
        let r = c.decrypt(h, &w1).await.expect(200);
        assert_eq!(r.json()["value"], "value of w1-secret");
        c.decrypt(h, &global).await.expect(200);
        c.decrypt(h, &w2).await.expect(404);
        let r = c
            .req(Method::POST, "/secrets", h, Some(&json!({"name": "x", "value": "v", "scope_type": "workspace", "scope_id": "w1"})))
            .await
            .expect(403);
        assert!(r.text.contains("forbidden"), "{}", r.ctx());
        c.req(Method::GET, "/admin/kek/status", h, None)
            .await
            .expect(403);
    }

    // Bad tokens: one identical 401 for all, with WWW-Authenticate, and no handler reached.
    let unknown = ServiceToken::generate()
        .unwrap()
        .expose_secret()
        .to_string();
    let mut wrong_secret = reader.clone();
    let last = wrong_secret.len() - 1;
    wrong_secret.replace_range(last.., if reader.ends_with('0') { "1" } else { "0" });
    let oversized = format!("{reader}{}", "0".repeat(1100));
    let truncated = reader[..reader.len() - 10].to_owned();
    let upper = reader.to_uppercase();
    let header_cases: Vec<(&str, Header<'_>)> = vec![
        ("unknown", Header::Bearer(&unknown)),
        ("wrong secret", Header::Bearer(&wrong_secret)),
        ("wrong secret as api key", Header::ApiKey(&wrong_secret)),
        ("truncated", Header::Bearer(&truncated)),
        ("oversized", Header::Bearer(&oversized)),
        ("upper case", Header::Bearer(&upper)),
        ("malformed", Header::Bearer("rcrt_not-a-token")),
        (
            "jwt-shaped with jwt off",
            Header::Bearer("eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
        ),
        ("no credential", Header::None),
        (
            "basic scheme",
            Header::Raw("authorization", b"Basic YWRtaW46YWRtaW4="),
        ),
        (
            "non-ascii",
            Header::Raw("authorization", "Bearer rcrt_\u{e9}t\u{e9}".as_bytes()),
        ),
        (
            "non-ascii api key",
            Header::Raw("x-api-key", b"rcrt_\xff\xfe"),
        ),
    ];
    let before = audit_rows(pg.as_ref(), &dir).await.len();
    let mut first_body: Option<String> = None;
    for (label, h) in &header_cases {
        for (method, path, body) in [
            (Method::GET, "/secrets".to_owned(), None),
            (
                Method::POST,
                format!("/secrets/{w1}/decrypt"),
                Some(json!({"reason": "probe"})),
            ),
            (Method::DELETE, format!("/secrets/{global}"), None),
            (
                Method::POST,
                "/auth/tokens".to_owned(),
                Some(json!({"name": "x", "roles": ["secrets.read"]})),
            ),
            (Method::DELETE, format!("/auth/tokens/{reader_id}"), None),
        ] {
            let r = c.req(method, &path, *h, body.as_ref()).await;
            assert_eq!(r.status, 401, "{label}: {}", r.ctx());
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{label}");
            let first = first_body.get_or_insert_with(|| r.text.clone());
            assert_eq!(&r.text, first, "{label}: every refusal reads the same");
        }
    }
    assert_eq!(
        audit_rows(pg.as_ref(), &dir).await.len(),
        before,
        "a 401 writes nothing"
    );
    c.decrypt(Header::Bearer(&reader), &global)
        .await
        .expect(200);

    // No escalation: refused with 403 and nothing minted.
    let minter = c
        .mint(admin_h, json!({"name": "ci", "principal": "ci", "roles": ["secrets.read", "tokens.create"], "workspaces": ["w1"], "ttl": "2h"}))
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // JSON Schema's `integer` includes a whole number written as a float: 600.0 and 6e2 are
    // 600 seconds, like 600.
    for ttl in [json!(600), json!(600.0), json!(6e2)] {
        let v = c
            .mint(
                admin_h,
                json!({"name": "float ttl", "roles": ["secrets.read"], "ttl": ttl}),
            )
            .await
            .expect(201)
            .json();
        let at = |field: &str| {
            let t = v[field].as_str().unwrap();
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(
            (at("expires_at") - at("created_at")).whole_seconds(),
            600,
            "ttl {ttl}: {v}"
        );
    }
    let listed_before = c
        .req(Method::GET, "/auth/tokens", admin_h, None)
        .await
        .expect(200)
        .json()["items"]
        .as_array()
        .unwrap()
        .len();
    for (label, who, body) in [
        (
            "without tokens.create",
            reader.as_str(),
            json!({"name": "x", "roles": ["secrets.read"]}),
        ),
        (
            "a role it lacks",
            minter.as_str(),
            json!({"name": "x", "roles": ["secrets.write"]}),
        ),
        (
            "admin it lacks",
            minter.as_str(),
            json!({"name": "x", "roles": ["secrets.admin"]}),
        ),
        (
            "operator it lacks",
            minter.as_str(),
            json!({"name": "x", "roles": ["rcrt.operator"]}),
        ),
        (
            "a workspace it lacks",
            minter.as_str(),
            json!({"name": "x", "roles": ["secrets.read"], "workspaces": ["w2"]}),
        ),
        (
            "another principal",
            minter.as_str(),
            json!({"name": "x", "roles": ["secrets.read"], "principal": "deploy-bot"}),
        ),
        (
            "outliving itself",
            minter.as_str(),
            json!({"name": "x", "roles": ["secrets.read"], "ttl": "3h"}),
        ),
    ] {
        let r = c.mint(Header::Bearer(who), body).await;
        assert_eq!(r.status, 403, "{label}: {}", r.ctx());
        assert!(!r.text.contains("rcrt_"), "{label}: {}", r.ctx());
    }
    for (label, body) in [
        (
            "unknown role",
            json!({"name": "x", "roles": ["secrets.everything"]}),
        ),
        ("no roles", json!({"name": "x", "roles": []})),
        (
            "bad ttl",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": "soon"}),
        ),
        (
            "zero ttl",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": 0}),
        ),
        (
            "ttl over a year",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": "400d"}),
        ),
        (
            "fractional ttl",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": 1.5}),
        ),
        (
            "negative ttl",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": -60}),
        ),
        (
            "ttl past u64",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": 1e30}),
        ),
        (
            "empty ttl text",
            json!({"name": "x", "roles": ["secrets.read"], "ttl": ""}),
        ),
        (
            "control character",
            json!({"name": "a\nb", "roles": ["secrets.read"]}),
        ),
        (
            "unknown field",
            json!({"name": "x", "roles": ["secrets.read"], "tenant": "other"}),
        ),
    ] {
        let r = c.mint(admin_h, body).await;
        assert_eq!(r.status, 400, "{label}: {}", r.ctx());
    }
    // The minter's own narrower token works, inside its limits.
    let child = c
        .mint(
            Header::Bearer(&minter),
            json!({"name": "job 1", "roles": ["secrets.read"], "workspaces": ["w1"], "ttl": 600}),
        )
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.req(
        Method::GET,
        &format!("/secrets/{w1}"),
        Header::Bearer(&child),
        None,
    )
    .await
    .expect(200);
    c.decrypt(Header::Bearer(&child), &w1).await.expect(404);
    let listed = c
        .req(Method::GET, "/auth/tokens", admin_h, None)
        .await
        .expect(200);
    assert_eq!(
        listed.json()["items"].as_array().unwrap().len(),
        listed_before + 1
    );
    // The minter lists what it minted or acts as; never a secret or a hash.
    let mine = c
        .req(Method::GET, "/auth/tokens", Header::Bearer(&minter), None)
        .await
        .expect(200);
    let mine_json = mine.json();
    let names: Vec<&str> = mine_json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        mine.json()["items"].as_array().unwrap().len(),
        2,
        "{}",
        mine.ctx()
    );
    assert!(
        names.contains(&"ci") && names.contains(&"job 1"),
        "{names:?}"
    );
    for t in [&admin, &reader, &minter, &child] {
        for text in [&listed.text, &mine.text] {
            assert!(
                !text.contains(t.as_str())
                    && !text.contains(&t[38..])
                    && !text.contains(&hash_hex(t))
            );
        }
    }

    // Expiry.
    let short = c
        .mint(
            admin_h,
            json!({"name": "short", "roles": ["secrets.read"], "ttl": 1}),
        )
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.req(Method::GET, "/secrets", Header::Bearer(&short), None)
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .req(Method::GET, "/secrets", Header::Bearer(&short), None)
        .await
        .expect(401);
    assert_eq!(Some(&r.text), first_body.as_ref());

    // Revocation: at once on this replica; the minter may not revoke the reader (404).
    c.req(
        Method::DELETE,
        &format!("/auth/tokens/{reader_id}"),
        Header::Bearer(&minter),
        None,
    )
    .await
    .expect(404);
    c.decrypt(Header::Bearer(&reader), &w1).await.expect(200);
    c.req(
        Method::DELETE,
        &format!("/auth/tokens/{reader_id}"),
        admin_h,
        None,
    )
    .await
    .expect(204);
    let r = c.decrypt(Header::Bearer(&reader), &w1).await.expect(401);
    assert_eq!(Some(&r.text), first_body.as_ref());
    c.decrypt(Header::ApiKey(&reader), &w1).await.expect(401);
    c.req(Method::DELETE, "/auth/tokens/not-an-id", admin_h, None)
        .await
        .expect(400);
    c.req(
        Method::DELETE,
        &format!("/auth/tokens/{}", uuid::Uuid::new_v4()),
        admin_h,
        None,
    )
    .await
    .expect(404);
    let listed = c
        .req(Method::GET, "/auth/tokens", admin_h, None)
        .await
        .expect(200)
        .json();
    let revoked = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == reader_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());

    // The audit: who minted and revoked what, and the reader's decrypts as its principal.
    let rows = audit_rows(pg.as_ref(), &dir).await;
    let has = |action: &str, token: Option<&str>, user: &str, outcome: &str| {
        rows.iter()
            .any(|(a, t, u, o)| a == action && t.as_deref() == token && u == user && o == outcome)
    };
    assert!(
        has(
            "token_create",
            Some(&reader_id),
            "bootstrap-admin",
            "success"
        ),
        "{rows:?}"
    );
    assert!(
        has(
            "token_revoke",
            Some(&reader_id),
            "bootstrap-admin",
            "success"
        ),
        "{rows:?}"
    );
    assert!(
        has("token_revoke", Some(&reader_id), "ci", "denied"),
        "{rows:?}"
    );
    assert!(has("token_create", None, "ci", "denied"), "{rows:?}");
    assert!(has("decrypt", None, "deploy-bot", "success"), "{rows:?}");

    // Nothing of any token in the log, at trace level.
    let log = server.output();
    assert!(
        log.contains("request not authenticated"),
        "the refusals are logged"
    );
    for t in [
        &admin,
        &reader,
        &minter,
        &child,
        &short,
        &wrong_secret,
        &unknown,
    ] {
        assert!(!log.contains(&t[38..]), "a token's secret is in the log");
        assert!(!log.contains(&hash_hex(t)), "a token's hash is in the log");
    }
    // Log targets are `rcrt_server::...`; a token's prefix is followed by hex digits.
    let token_like = log.match_indices("rcrt_").any(|(i, _)| {
        log[i + 5..]
            .bytes()
            .take(8)
            .filter(u8::is_ascii_hexdigit)
            .count()
            == 8
    });
    assert!(!token_like, "something token-shaped is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_postgres() {
    lifecycle(Backend::Postgres).await;
}

// =============================================================================================
// 2. Two replicas on one PostgreSQL
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_bootstrap_token_and_see_revocations_within_5s() {
    let pg = TempPgDb::create().await;
    let secrets_dir = TempDir::new();
    let (boot_path, admin) = token_file(secrets_dir.path(), "boot", 0o400);
    let kek = gen_kek();
    let dirs = [TempDir::new(), TempDir::new()];
    let cfgs: Vec<_> = dirs
        .iter()
        .map(|d| {
            server_config(
                Some(&pg),
                d,
                &[
                    ("LOCAL_KEK_BASE64", &kek),
                    ("AUTH_MODE", "token"),
                    ("BOOTSTRAP_ADMIN_TOKEN_FILE", boot_path.to_str().unwrap()),
                ],
            )
        })
        .collect();
    // Both start at once and race to insert the bootstrap token.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ServerProcess::start(&cfgs[0]));
        let b = s.spawn(|| ServerProcess::start(&cfgs[1]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(pg_token_count(&pg).await, 1, "exactly one bootstrap token");
    let (ca, cb) = (Client::new(a.base_url()), Client::new(b.base_url()));
    let admin_h = Header::Bearer(&admin);
    for c in [&ca, &cb] {
        c.req(Method::GET, "/auth/tokens", admin_h, None)
            .await
            .expect(200);
    }
    let id = ca.create(admin_h, "shared", ("global", None)).await;
    let r = ca
        .mint(
            admin_h,
            json!({"name": "svc", "roles": ["secrets.decrypt"], "ttl": "1h"}),
        )
        .await
        .expect(201)
        .json();
    let token = r["token"].as_str().unwrap().to_owned();
    let token_id = r["id"].as_str().unwrap().to_owned();
    // B verifies it (and caches it).
    cb.decrypt(Header::Bearer(&token), &id).await.expect(200);
    ca.req(
        Method::DELETE,
        &format!("/auth/tokens/{token_id}"),
        admin_h,
        None,
    )
    .await
    .expect(204);
    let revoked_at = Instant::now();
    ca.decrypt(Header::Bearer(&token), &id).await.expect(401);
    loop {
        let r = cb.decrypt(Header::Bearer(&token), &id).await;
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.ctx());
        assert!(
            revoked_at.elapsed() < Duration::from_millis(5_500),
            "replica B still accepts a token revoked {:?} ago",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "revocation reached replica B after {:?}",
        revoked_at.elapsed()
    );
    drop((a, b));
}

// =============================================================================================
// 3. Bootstrap without a file; bad bootstrap files
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_writes_one_admin_token_file_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let kek = gen_kek();
    let cfg = server_config(
        None,
        &dir,
        &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "token")],
    );
    let path = dir.path().join("bootstrap-token");
    let mut server = ServerProcess::start(&cfg);
    let meta = std::fs::metadata(&path).expect("bootstrap-token written beside rcrt.db");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let token = text.strip_suffix('\n').unwrap().to_owned();
    let log = server.output();
    assert!(
        log.contains("bootstrap-token"),
        "the log names the file: {log}"
    );
    assert!(!log.contains(&token[5..]), "the log holds the token");
    let c = Client::new(server.base_url());
    c.req(
        Method::GET,
        "/admin/kek/status",
        Header::Bearer(&token),
        None,
    )
    .await
    .expect(200);
    c.req(Method::GET, "/secrets", Header::None, None)
        .await
        .expect(401);
    server.kill();

    // A restart leaves the file alone; with it gone, a restart does not write another.
    let modified = meta.modified().unwrap();
    let server = ServerProcess::start(&cfg);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
    drop(server);
    std::fs::remove_file(&path).unwrap();
    let server = ServerProcess::start(&cfg);
    assert!(!path.exists(), "a second admin token was written");
    Client::new(server.base_url())
        .req(Method::GET, "/secrets", Header::Bearer(&token), None)
        .await
        .expect(200);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("bootstrap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_without_a_file_create_one_admin_token() {
    let pg = TempPgDb::create().await;
    let kek = gen_kek();
    let dirs = [TempDir::new(), TempDir::new()];
    let cfgs: Vec<_> = dirs
        .iter()
        .map(|d| {
            server_config(
                Some(&pg),
                d,
                &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "token")],
            )
        })
        .collect();
    let servers = std::thread::scope(|s| {
        let a = s.spawn(|| ServerProcess::start(&cfgs[0]));
        let b = s.spawn(|| ServerProcess::start(&cfgs[1]));
        [a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(pg_token_count(&pg).await, 1);
    let files: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.path().join("bootstrap-token"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(files.len(), 1, "exactly one replica wrote the token");
    let token = std::fs::read_to_string(&files[0])
        .unwrap()
        .trim()
        .to_owned();
    for s in &servers {
        Client::new(s.base_url())
            .req(Method::GET, "/auth/tokens", Header::Bearer(&token), None)
            .await
            .expect(200);
    }
}

#[test]
fn bad_bootstrap_files_stop_start_up_naming_the_file_only() {
    let dir = TempDir::new();
    let secret_content = "hunter2-secret-content";
    let cases: Vec<(&str, Vec<u8>, u32, &str)> = vec![
        ("empty", vec![], 0o600, "is empty"),
        (
            "malformed",
            secret_content.as_bytes().to_vec(),
            0o600,
            "does not hold",
        ),
        ("binary", vec![0xff, 0xfe, b'\n'], 0o600, "does not hold"),
        (
            "world-readable",
            format!("{}\n", &*ServiceToken::generate().unwrap().expose_secret()).into_bytes(),
            0o644,
            "every user",
        ),
    ];
    for (name, content, mode, want) in cases {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::write(&path, &content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let work = TempDir::new();
        let cfg = server_config(
            None,
            &work,
            &[
                ("LOCAL_KEK_BASE64", &gen_kek()),
                ("AUTH_MODE", "token"),
                ("BOOTSTRAP_ADMIN_TOKEN_FILE", path.to_str().unwrap()),
            ],
        );
        let (status, out) = ServerProcess::run_to_exit(&cfg);
        assert!(!status.success(), "{name}: {out}");
        assert!(
            out.contains(path.to_str().unwrap()) && out.contains(want),
            "{name}: {out}"
        );
        assert!(out.contains("BOOTSTRAP_ADMIN_TOKEN_FILE"), "{name}: {out}");
        assert!(
            !out.contains(secret_content),
            "{name}: content echoed: {out}"
        );
        if let Ok(text) = std::str::from_utf8(&content) {
            let text = text.trim();
            if text.len() > 10 {
                assert!(!out.contains(&text[5..]), "{name}: content echoed");
            }
        }
        // Nothing was written: no token, and no token file.
        let conn = rusqlite::Connection::open(work.path().join("rcrt.db")).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM auth_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{name}");
        assert!(!work.path().join("bootstrap-token").exists(), "{name}");
    }
}

// =============================================================================================
// 4. Defaults off loopback
// =============================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_defaults_to_tokens_and_disabled_there_warns() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start_on(
        &server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]),
        "0.0.0.0",
    );
    let c = Client::new(server.base_url());
    c.req(Method::GET, "/secrets", Header::None, None)
        .await
        .expect(401);
    let token = std::fs::read_to_string(dir.path().join("bootstrap-token")).unwrap();
    c.req(Method::GET, "/secrets", Header::Bearer(token.trim()), None)
        .await
        .expect(200);
    assert!(
        server.output().contains("auth=token"),
        "{}",
        server.output()
    );
    drop(server);

    let dir = TempDir::new();
    let server = ServerProcess::start_on(
        &server_config(
            None,
            &dir,
            &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "disabled")],
        ),
        "0.0.0.0",
    );
    let c = Client::new(server.base_url());
    c.req(Method::GET, "/secrets", Header::None, None)
        .await
        .expect(200);
    let log = server.output();
    assert!(
        log.contains("WARN") && log.contains("ANYONE WHO CAN REACH THIS PORT"),
        "{log}"
    );
    assert!(!dir.path().join("bootstrap-token").exists());
}

/// The guide's "Example Production Setup Script", verbatim (`tests/data/`, copied from the
/// guide) except for its log file, which goes to the test's directory instead of `/var/log`,
/// against a server started with the defaults: loopback, port 8081, authentication disabled.
/// Its KEK source is HashiCorp Vault (a `vault` stand-in on PATH prints the KEK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_setup_script_passes_against_a_default_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start_at(
        &server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]),
        "127.0.0.1",
        8081,
    );
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let vault = bin.join("vault");
    std::fs::write(&vault, format!("#!/bin/sh\necho '{kek}'\n")).unwrap();
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = dir.path().join("rcrt-setup.log");
    let script = include_str!("data/guide-setup-rcrt-secrets.sh")
        .replace("/var/log/rcrt-setup.log", log.to_str().unwrap());
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("ENVIRONMENT", "production")
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env_remove("AWS_REGION")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("RCRT secrets service is operational"),
        "{stdout}"
    );
    assert!(!stdout.contains(&kek) && !stderr.contains(&kek));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("Production secrets service initialized"));
    // It cleaned up its test secret.
    let c = Client::new(server.base_url());
    let r = c
        .req(Method::GET, "/secrets", Header::None, None)
        .await
        .expect(200);
    assert_eq!(r.json()["items"], json!([]), "{}", r.ctx());
}
