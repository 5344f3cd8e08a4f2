//! The web console's server side through a real `rcrt-server` (the browser tests in
//! `console-tests/` drive the pages themselves):
//!
//! 1. sessions, on SQLite and PostgreSQL: `/ui` and its files with their security headers and
//!    no data; sign-in with a service token exchanged for an `HttpOnly`, `SameSite=Strict`
//!    cookie holding a session of the same authority (never the credential); `X-CSRF-Token`
//!    required on every state change made with the cookie; only session tokens count as a
//!    cookie; sign-out revokes the session (audited); a narrower token's session stays narrow
//!    and ends with it;
//! 2. sign-in with a JWT where `AUTH_MODE=jwt`, whose session works although service tokens
//!    are not accepted as bearer credentials;
//! 3. cross-site state changes refused for every client, also without authentication;
//!    `CONSOLE=disabled` serves no console and ignores the cookie.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod auth_support;
#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::{gen_kek, server_config, Backend};
use rcrt_crypto::ServiceToken;
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

struct Resp {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }
    fn error(self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json()["error"]["code"], code, "{}", self.text);
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

struct Env {
    server: ServerProcess,
    http: reqwest::Client,
    _pg: Option<TempPgDb>,
    _dir: TempDir,
    admin: String,
}

impl Env {
    async fn start(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let pg = backend.database().await;
        let admin = ServiceToken::generate()
            .unwrap()
            .expose_secret()
            .to_string();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, format!("{admin}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let kek = gen_kek();
        let mut env = vec![
            ("LOCAL_KEK_BASE64", kek.as_str()),
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", file.to_str().unwrap()),
        ];
        env.extend_from_slice(extra);
        let server = ServerProcess::start(&server_config(pg.as_ref(), &dir, &env));
        Self {
            server,
            http: client(),
            _pg: pg,
            _dir: dir,
            admin,
        }
    }

    /// A request with the given extra headers (a cookie, a CSRF value, a bearer token...).
    async fn req(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Resp {
        send(
            &self.http,
            &self.server.base_url(),
            method,
            path,
            headers,
            body,
        )
        .await
    }

    async fn sign_in(&self, credential: &str) -> Session {
        let r = self
            .req(
                Method::POST,
                "/ui/session",
                &[],
                Some(&json!({ "credential": credential })),
            )
            .await
            .expect(201);
        Session::from_sign_in(&r)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let mut rb = http.request(method, format!("{base}{path}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

/// A signed-in console: its cookie (as a browser would send it back) and CSRF value.
struct Session {
    cookie: String,
    csrf: String,
    body: Value,
    set_cookie: String,
}

impl Session {
    fn from_sign_in(r: &Resp) -> Self {
        let set_cookie = r.header("set-cookie").to_owned();
        let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
        let body = r.json();
        Self {
            cookie,
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
            body,
            set_cookie,
        }
    }

    /// Headers of a same-origin request from the console page.
    fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("cookie", self.cookie.as_str()),
            ("x-csrf-token", self.csrf.as_str()),
            ("sec-fetch-site", "same-origin"),
        ]
    }

    fn cookie_only(&self) -> Vec<(&str, &str)> {
        vec![("cookie", self.cookie.as_str())]
    }
}

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
];

fn assert_console_headers(r: &Resp, what: &str) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(r.header(name), *value, "{what}: {name}");
    }
    let csp = r.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp} lacks {directive}"
        );
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
}

// =============================================================================================
// 1. Sessions
// =============================================================================================

async fn sessions(backend: Backend) {
    let env = Env::start(backend, &[]).await;
    let admin = [("authorization", format!("Bearer {}", env.admin))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let value = "console-test-value-6f1d";
    let created = env
        .req(
            Method::POST,
            "/secrets",
            &admin,
            Some(&json!({"name": "db-password", "value": value, "scope_type": "global"})),
        )
        .await
        .expect(201)
        .json();
    let id = created["id"].as_str().unwrap().to_owned();

    // The page and its files: static, with the headers, and nothing of the store in them.
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let r = env.req(Method::GET, path, &[], None).await.expect(200);
        assert!(r.header("content-type").starts_with(kind), "{path}");
        assert_console_headers(&r, path);
        assert!(
            !r.text.contains(value) && !r.text.contains("db-password"),
            "{path}"
        );
    }
    let page = env.req(Method::GET, "/ui", &[], None).await.text;
    assert!(
        !page.contains("<script>") && !page.contains(" onclick="),
        "inline script"
    );
    env.req(Method::GET, "/ui/..%2Fapp.js", &[], None)
        .await
        .error(404, "not_found");
    env.req(Method::GET, "/ui/nothing.js", &[], None)
        .await
        .error(404, "not_found");

    // A bad credential: one 401, no cookie.
    for bad in ["", "rcrt_nope", "not-a-jwt"] {
        let r = env
            .req(
                Method::POST,
                "/ui/session",
                &[],
                Some(&json!({ "credential": bad })),
            )
            .await;
        assert!(r.header("set-cookie").is_empty());
        r.error(401, "unauthorized");
    }
    // The body must be JSON (a cross-site form cannot send it).
    let r = env
        .req(
            Method::POST,
            "/ui/session",
            &[("content-type", "application/x-www-form-urlencoded")],
            None,
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);

    let s = env.sign_in(&env.admin).await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(s.set_cookie.contains(attr), "{}", s.set_cookie);
    }
    assert!(
        !s.set_cookie.contains("Secure"),
        "no TLS here: {}",
        s.set_cookie
    );
    assert!(!s.set_cookie.contains(&env.admin) && !s.body.to_string().contains(&env.admin));
    assert_eq!(s.body["principal"]["user_id"], "bootstrap-admin");
    assert_eq!(s.body["operator"], true);
    assert_eq!(s.body["auth"], "token");
    assert_eq!(s.csrf.len(), 64);
    let session_token = s.cookie.strip_prefix("rcrt_console=").unwrap().to_owned();
    let session_id = ServiceToken::parse(&session_token).unwrap().id();
    let session_id = uuid::Uuid::from_bytes(session_id).to_string();

    // Reads with the cookie alone; the session answers its CSRF value again.
    let r = env
        .req(Method::GET, "/secrets", &s.cookie_only(), None)
        .await;
    assert_eq!(r.expect(200).json()["items"].as_array().unwrap().len(), 1);
    let again = env
        .req(Method::GET, "/ui/session", &s.cookie_only(), None)
        .await
        .expect(200)
        .json();
    assert_eq!(again["csrf_token"], s.csrf.as_str());
    assert_eq!(again["session_id"], session_id.as_str());
    assert_eq!(again["expires_at"], s.body["expires_at"]);
    // The session's token works from the cookie only: not as a bearer credential, nor to open
    // another session.
    let bearer = format!("Bearer {session_token}");
    env.req(
        Method::GET,
        "/secrets",
        &[("authorization", bearer.as_str())],
        None,
    )
    .await
    .error(401, "unauthorized");
    env.req(
        Method::POST,
        "/ui/session",
        &[],
        Some(&json!({ "credential": session_token })),
    )
    .await
    .error(401, "unauthorized");
    // A token minted from the console lives as long as the admin token could make it (the
    // bootstrap token never expires), not only as long as the session.
    let minted = env
        .req(
            Method::POST,
            "/auth/tokens",
            &s.headers(),
            Some(&json!({"name": "new service", "roles": ["secrets.read"], "ttl": "30d"})),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(minted["created_by"], "bootstrap-admin");

    // State changes with the cookie need the session's CSRF value: none, a wrong one, another
    // session's.
    let other = env.sign_in(&env.admin).await;
    let body = json!({"name": "new", "value": "v", "scope_type": "global"});
    for csrf in [None, Some("0".repeat(64)), Some(other.csrf.clone())] {
        let mut h = s.cookie_only();
        if let Some(c) = &csrf {
            h.push(("x-csrf-token", c.as_str()));
        }
        env.req(Method::POST, "/secrets", &h, Some(&body))
            .await
            .error(403, "csrf_failed");
        env.req(Method::DELETE, &format!("/secrets/{id}"), &h, None)
            .await
            .error(403, "csrf_failed");
    }
    let listed = env.req(Method::GET, "/secrets", &admin, None).await.json();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "nothing was written"
    );
    // With it: a create and a decrypt (audited with its reason, like any decrypt).
    env.req(Method::POST, "/secrets", &s.headers(), Some(&body))
        .await
        .expect(201);
    let shown = env
        .req(
            Method::POST,
            &format!("/secrets/{id}/decrypt"),
            &s.headers(),
            Some(&json!({"reason": "console reveal"})),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(shown["value"], value);
    // The same request from another site's page: refused whatever it carries.
    for (name, v) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.example"),
    ] {
        let mut h: Vec<(&str, &str)> = vec![
            ("cookie", s.cookie.as_str()),
            ("x-csrf-token", s.csrf.as_str()),
        ];
        h.push((name, v));
        env.req(Method::POST, "/secrets", &h, Some(&body))
            .await
            .error(403, "cross_site_request");
    }

    // Only a session counts as a cookie: the admin token itself in it is refused, and two
    // cookies of the name (one planted) are trusted neither.
    let planted = format!("rcrt_console={}", env.admin);
    env.req(
        Method::GET,
        "/secrets",
        &[("cookie", planted.as_str())],
        None,
    )
    .await
    .error(401, "unauthorized");
    let two = format!("{}; {planted}", s.cookie);
    env.req(Method::GET, "/secrets", &[("cookie", two.as_str())], None)
        .await
        .error(401, "unauthorized");
    // And a session token is no way around the reserved name.
    env.req(
        Method::POST,
        "/auth/tokens",
        &admin,
        Some(&json!({"name": "console:session", "roles": ["secrets.read"]})),
    )
    .await
    .error(400, "invalid_request");

    // The session is a token of the tenant: listed, and its creation audited.
    let tokens = env
        .req(Method::GET, "/auth/tokens", &admin, None)
        .await
        .expect(200)
        .json();
    let listed = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == session_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["name"], "console:session");
    assert_eq!(listed["status"], "active");

    // Sign-out needs the CSRF value too, revokes the session and clears the cookie.
    env.req(Method::DELETE, "/ui/session", &s.cookie_only(), None)
        .await
        .error(403, "csrf_failed");
    let out = env
        .req(Method::DELETE, "/ui/session", &s.headers(), None)
        .await
        .expect(204);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    for (m, p) in [(Method::GET, "/secrets"), (Method::GET, "/ui/session")] {
        env.req(m, p, &s.cookie_only(), None)
            .await
            .error(401, "unauthorized");
    }
    // The other session lives on.
    env.req(Method::GET, "/secrets", &other.cookie_only(), None)
        .await
        .expect(200);
    let audit = env
        .req(Method::GET, "/audit?user_id=bootstrap-admin", &admin, None)
        .await
        .expect(200)
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["token_id"] == session_id.as_str())
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(actions.contains(&"token_create"), "{audit}");
    assert!(actions.contains(&"token_revoke"), "{audit}");

    // A narrower token: its session has exactly its roles and workspaces, and ends with it.
    let narrow = env
        .req(
            Method::POST,
            "/auth/tokens",
            &admin,
            Some(&json!({"name": "team-a reader", "principal": "alice",
                "roles": ["secrets.read", "secrets.decrypt"], "workspaces": ["team-a"],
                "ttl": "120s"})),
        )
        .await
        .expect(201)
        .json();
    for w in ["team-a", "team-b"] {
        env.req(
            Method::POST,
            "/secrets",
            &admin,
            Some(
                &json!({"name": format!("{w}-key"), "value": "v", "scope_type": "workspace",
                "scope_id": w}),
            ),
        )
        .await
        .expect(201);
    }
    let n = env.sign_in(narrow["token"].as_str().unwrap()).await;
    assert_eq!(n.body["principal"]["user_id"], "alice");
    assert_eq!(n.body["principal"]["workspaces"], json!(["team-a"]));
    assert_eq!(n.body["operator"], false);
    let ends = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert!(ends(&n.body["expires_at"]) <= ends(&narrow["expires_at"]));
    let r = env
        .req(
            Method::GET,
            "/secrets?scope_type=workspace&scope_id=team-a",
            &n.cookie_only(),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["items"][0]["name"], "team-a-key");
    // Another workspace's listing shows nothing, as the API shows that token.
    let r = env
        .req(
            Method::GET,
            "/secrets?scope_type=workspace&scope_id=team-b",
            &n.cookie_only(),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(r["items"], json!([]), "{r}");
    env.req(Method::POST, "/secrets", &n.headers(), Some(&body))
        .await
        .error(403, "forbidden");
    env.req(Method::GET, "/admin/kek/status", &n.cookie_only(), None)
        .await
        .error(403, "forbidden");
    // Revoking the token a session was opened with ends the session.
    env.req(
        Method::DELETE,
        &format!("/auth/tokens/{}", narrow["id"].as_str().unwrap()),
        &admin,
        None,
    )
    .await
    .expect(204);
    env.req(Method::GET, "/secrets", &n.cookie_only(), None)
        .await
        .error(401, "unauthorized");
    // Behind a TLS proxy the cookie is Secure.
    let r = env
        .req(
            Method::POST,
            "/ui/session",
            &[("x-forwarded-proto", "https")],
            Some(&json!({ "credential": env.admin })),
        )
        .await
        .expect(201);
    assert!(r.header("set-cookie").contains("Secure"));
}

#[tokio::test]
async fn sessions_sqlite() {
    sessions(Backend::Sqlite).await;
}

#[tokio::test]
async fn sessions_postgres() {
    sessions(Backend::Postgres).await;
}

// =============================================================================================
// 2. JWT sign-in
// =============================================================================================

#[tokio::test]
async fn a_jwt_signs_in_where_tokens_are_not_accepted() {
    let dir = TempDir::new();
    let secret = dir.path().join("hs256.key");
    let key = [7u8; 48];
    std::fs::write(&secret, key).unwrap();
    let kek = gen_kek();
    let env = [
        ("LOCAL_KEK_BASE64", kek.as_str()),
        ("AUTH_MODE", "jwt"),
        ("JWT_ISSUER", auth_support::ISSUER),
        ("JWT_AUDIENCE", auth_support::AUDIENCE),
        ("JWT_HS256_SECRET_FILE", secret.to_str().unwrap()),
    ];
    let server = ServerProcess::start(&server_config(None, &dir, &env));
    let base = server.base_url();
    let http = client();
    let who = auth_support::Who::new("carol", "acme", &["secrets.read"], &["ops"]);
    let claims = who.claims();
    let jwt = auth_support::Signer::hs256(&key).sign(&claims);
    let r = send(
        &http,
        &base,
        Method::POST,
        "/ui/session",
        &[],
        Some(&json!({ "credential": jwt })),
    )
    .await
    .expect(201);
    let s = Session::from_sign_in(&r);
    assert_eq!(s.body["auth"], "jwt");
    assert_eq!(s.body["principal"]["tenant"], "acme");
    assert_eq!(s.body["principal"]["user_id"], "carol");
    // The session ends with the JWT (10 minutes), not after CONSOLE_SESSION_TTL (1 hour).
    let ends = time::OffsetDateTime::parse(
        s.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        ends.unix_timestamp() <= claims["exp"].as_i64().unwrap(),
        "{}",
        s.body
    );
    let max_age: u64 = s
        .set_cookie
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 600, "{}", s.set_cookie);
    send(
        &http,
        &base,
        Method::GET,
        "/secrets?scope_type=workspace&scope_id=ops",
        &s.cookie_only(),
        None,
    )
    .await
    .expect(200);
    // The session's token as a bearer credential: not accepted in jwt mode.
    let bearer = format!("Bearer {}", s.cookie.strip_prefix("rcrt_console=").unwrap());
    send(
        &http,
        &base,
        Method::GET,
        "/secrets",
        &[("authorization", bearer.as_str())],
        None,
    )
    .await
    .error(401, "unauthorized");
    send(
        &http,
        &base,
        Method::DELETE,
        "/ui/session",
        &s.headers(),
        None,
    )
    .await
    .expect(204);
    send(
        &http,
        &base,
        Method::GET,
        "/ui/session",
        &s.cookie_only(),
        None,
    )
    .await
    .error(401, "unauthorized");
}

// =============================================================================================
// 3. Cross-site requests without authentication; the console switched off
// =============================================================================================

#[tokio::test]
async fn cross_site_changes_are_refused_without_authentication() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", kek.as_str()),
            ("AUTH_MODE", "disabled"),
        ],
    ));
    let base = server.base_url();
    let http = client();
    let s = send(&http, &base, Method::GET, "/ui/session", &[], None)
        .await
        .expect(200)
        .json();
    assert_eq!(s["auth"], "disabled");
    assert_eq!(s["principal"]["user_id"], "anonymous");
    // On loopback names only, like the API: another Host (DNS rebinding) gets no page.
    send(&http, &base, Method::GET, "/ui", &[], None)
        .await
        .expect(200);
    send(
        &http,
        &base,
        Method::GET,
        "/ui",
        &[("host", "rebound.example")],
        None,
    )
    .await
    .error(421, "host_not_allowed");
    let created = send(
        &http,
        &base,
        Method::POST,
        "/secrets",
        &[("sec-fetch-site", "same-origin")],
        Some(&json!({"name": "k", "value": "v", "scope_type": "global"})),
    )
    .await
    .expect(201)
    .json();
    let id = created["id"].as_str().unwrap();
    // A page elsewhere posting a bodiless form to a loopback server: the very request a
    // browser would send without any preflight.
    for path in [
        format!("/secrets/{id}/versions/1/destroy"),
        "/admin/kek/rewrap".to_owned(),
    ] {
        send(
            &http,
            &base,
            Method::POST,
            &path,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://evil.example"),
            ],
            None,
        )
        .await
        .error(403, "cross_site_request");
    }
    // Reads from anywhere are not refused (a response is not readable cross-origin anyway).
    send(
        &http,
        &base,
        Method::GET,
        &format!("/secrets/{id}"),
        &[("sec-fetch-site", "cross-site")],
        None,
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn console_disabled_serves_nothing_and_ignores_the_cookie() {
    let env = Env::start(Backend::Sqlite, &[("CONSOLE", "disabled")]).await;
    for (m, p) in [
        (Method::GET, "/ui"),
        (Method::GET, "/ui/app.js"),
        (Method::GET, "/ui/session"),
    ] {
        env.req(m, p, &[], None).await.error(404, "not_found");
    }
    env.req(
        Method::POST,
        "/ui/session",
        &[],
        Some(&json!({ "credential": env.admin })),
    )
    .await
    .expect(404);
    // A session's token in the cookie: no credential as far as this server is concerned.
    let planted = format!("rcrt_console={}", env.admin);
    env.req(
        Method::GET,
        "/secrets",
        &[("cookie", planted.as_str())],
        None,
    )
    .await
    .error(401, "unauthorized");
}
