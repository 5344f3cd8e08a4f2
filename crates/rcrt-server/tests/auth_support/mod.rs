//! Support for `tests/auth.rs`: test-only keys made with the `openssl` CLI, token minting, an
//! in-test JWKS server, a real `rcrt-server` process per configuration, a small HTTP client,
//! an audit-log reader (SQLite via rusqlite, PostgreSQL as the database owner, so row-level
//! security does not hide rows from the test) and a collector of failed checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rcrt_testkit::{ServerConfig, ServerProcess, TempDir, TempPgDb};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_rcrt-server");
pub const ISSUER: &str = "https://idp.rcrt.test";
pub const AUDIENCE: &str = "rcrt-secrets";

pub fn uniq() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Keys (generated with the openssl CLI at test time; nothing is committed)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048 → RS256.
    Rsa,
    /// EC P-256 → ES256.
    Ec,
    /// Ed25519 → EdDSA.
    Ed,
}

/// A private key (PKCS#8 PEM) and its public key (SPKI PEM, on disk for JWT_PUBLIC_KEY_FILE).
pub struct KeyPair {
    pub kind: KeyKind,
    pub private_pem: Vec<u8>,
    pub public_pem: Vec<u8>,
    pub public_path: PathBuf,
    /// The SPKI DER of the public key.
    pub public_der: Vec<u8>,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hex_decode(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

impl KeyPair {
    pub fn generate(dir: &Path, name: &str, kind: KeyKind) -> Self {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub.pem"));
        let p = private.to_str().unwrap();
        match kind {
            KeyKind::Rsa => openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                p,
            ]),
            KeyKind::Ec => openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-pkeyopt",
                "ec_param_enc:named_curve",
                "-out",
                p,
            ]),
            KeyKind::Ed => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
        };
        openssl(&[
            "pkey",
            "-in",
            p,
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ]);
        let public_der = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        Self {
            kind,
            private_pem: std::fs::read(&private).unwrap(),
            public_pem: std::fs::read(&public).unwrap(),
            public_path: public,
            public_der,
        }
    }

    pub fn alg(&self) -> Algorithm {
        match self.kind {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::Ec => Algorithm::ES256,
            KeyKind::Ed => Algorithm::EdDSA,
        }
    }

    /// A signer with this private key and its algorithm.
    pub fn signer(&self) -> Signer {
        let key = match self.kind {
            KeyKind::Rsa => EncodingKey::from_rsa_pem(&self.private_pem),
            KeyKind::Ec => EncodingKey::from_ec_pem(&self.private_pem),
            KeyKind::Ed => EncodingKey::from_ed_pem(&self.private_pem),
        }
        .expect("private key PEM");
        Signer {
            key,
            alg: self.alg(),
            kid: None,
        }
    }

    /// The public key as a JWK, derived from the openssl output (RSA: the modulus printed by
    /// `openssl rsa -modulus`, e = 65537 = "AQAB"; P-256: the uncompressed point at the end of
    /// the SPKI DER; Ed25519: the 32 raw bytes at the end of the SPKI DER).
    pub fn jwk(&self, kid: &str) -> Value {
        match self.kind {
            KeyKind::Rsa => {
                let out = openssl(&[
                    "rsa",
                    "-pubin",
                    "-in",
                    self.public_path.to_str().unwrap(),
                    "-noout",
                    "-modulus",
                ]);
                let text = String::from_utf8(out).unwrap();
                let hex = text.trim().strip_prefix("Modulus=").expect("Modulus=");
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": b64url(&hex_decode(hex)), "e": "AQAB"})
            }
            KeyKind::Ec => {
                let point = &self.public_der[self.public_der.len() - 65..];
                assert_eq!(point[0], 4, "uncompressed P-256 point");
                json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                       "x": b64url(&point[1..33]), "y": b64url(&point[33..])})
            }
            KeyKind::Ed => {
                let x = &self.public_der[self.public_der.len() - 32..];
                json!({"kty": "OKP", "kid": kid, "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
                       "x": b64url(x)})
            }
        }
    }
}

/// Signs tokens with one key, one algorithm and an optional `kid`.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
}

impl Signer {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            alg: Algorithm::HS256,
            kid: None,
        }
    }

    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    pub fn without_kid(mut self) -> Self {
        self.kid = None;
        self
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        encode(&header, claims, &self.key).expect("sign")
    }

    /// A validly signed token whose header also has the members of `extra` (which the JWT
    /// library's own header type cannot carry, e.g. `crit`).
    pub fn sign_with_header(&self, claims: &Value, extra: &Value) -> String {
        let mut header = json!({"alg": format!("{:?}", self.alg), "typ": "JWT"});
        if let Some(k) = &self.kid {
            header["kid"] = json!(k);
        }
        for (k, v) in extra.as_object().unwrap() {
            header[k] = v.clone();
        }
        let message = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, self.alg).expect("sign");
        format!("{message}.{sig}")
    }
}

/// Who a token speaks for.
#[derive(Debug, Clone)]
pub struct Who {
    pub sub: String,
    pub owner: String,
    pub roles: Vec<&'static str>,
    pub workspaces: Vec<String>,
}

impl Who {
    pub fn new(sub: &str, owner: &str, roles: &[&'static str], workspaces: &[&str]) -> Self {
        Self {
            sub: sub.to_owned(),
            owner: owner.to_owned(),
            roles: roles.to_vec(),
            workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
        }
    }

    /// Valid claims: right issuer and audience, valid for ten minutes.
    pub fn claims(&self) -> Value {
        let t = now();
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": self.sub,
            "owner_id": self.owner,
            "roles": self.roles,
            "workspaces": self.workspaces,
            "iat": t,
            "nbf": t - 5,
            "exp": t + 600,
        })
    }
}

pub const ALL_ROLES: [&str; 6] = [
    "secrets.admin",
    "secrets.read",
    "secrets.decrypt",
    "secrets.write",
    "tokens.create",
    "rcrt.operator",
];

/// `{"alg":"none"}` (plus `kid` if given), the payload, and an empty (or the given) signature.
pub fn unsigned_token(alg: &str, kid: Option<&str>, claims: &Value, signature: &str) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = json!(k);
    }
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        signature
    )
}

// ---------------------------------------------------------------------------------------------
// In-test JWKS server
// ---------------------------------------------------------------------------------------------

pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        Self::start_with_cache_control(keys, None).await
    }

    /// A JWKS server that answers with `Cache-Control: <cache_control>` when given.
    pub async fn start_with_cache_control(keys: Vec<Value>, cache_control: Option<&str>) -> Self {
        let keys = Arc::new(Mutex::new(keys));
        let hits = Arc::new(AtomicUsize::new(0));
        let (k, h) = (keys.clone(), hits.clone());
        let cc = cache_control.map(str::to_owned);
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (k, h, cc) = (k.clone(), h.clone(), cc.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let keys = k.lock().unwrap().clone();
                    let mut resp = axum::response::IntoResponse::into_response(axum::Json(
                        json!({ "keys": keys }),
                    ));
                    if let Some(cc) = cc {
                        resp.headers_mut()
                            .insert("cache-control", cc.parse().unwrap());
                    }
                    resp
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            keys,
            hits,
            task,
        }
    }

    /// How many times the key set was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn add_key(&self, jwk: Value) {
        self.keys.lock().unwrap().push(jwk);
    }

    /// Stops publishing the key with this `kid`.
    pub fn remove_key(&self, kid: &str) {
        self.keys.lock().unwrap().retain(|k| k["kid"] != kid);
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the server gets its verification keys.
pub enum KeySource {
    Jwks(String),
    PublicKeyFile(PathBuf),
    Hs256SecretFile(PathBuf),
}

fn gen_kek() -> String {
    let mut b = Vec::new();
    b.extend_from_slice(Uuid::new_v4().as_bytes());
    b.extend_from_slice(Uuid::new_v4().as_bytes());
    STANDARD.encode(b)
}

/// A running server with AUTH_MODE=jwt. Field order is drop order: the process dies before its
/// database and its working directory go.
pub struct Server {
    _process: ServerProcess,
    pg: Option<TempPgDb>,
    sqlite: Option<PathBuf>,
    _dir: TempDir,
    pub base: String,
    http: reqwest::Client,
}

/// One row of `secret_access_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub action: String,
    pub secret_id: Option<String>,
    pub tenant: String,
    pub user_id: String,
    pub reason: Option<String>,
    pub outcome: String,
    pub request_id: String,
}

impl Server {
    pub async fn start(backend: Backend, keys: KeySource) -> Self {
        Self::start_with(backend, keys, "jwt").await
    }

    /// A server with `AUTH_MODE=auth_mode` (`jwt` or `jwt,token`).
    pub async fn start_with(backend: Backend, keys: KeySource, auth_mode: &str) -> Self {
        let dir = TempDir::new();
        let pg = match backend {
            Backend::Sqlite => None,
            // Panics (fails the test) if PostgreSQL is unreachable: never skipped.
            Backend::Postgres => Some(TempPgDb::create().await),
        };
        let sqlite = (backend == Backend::Sqlite).then(|| dir.path().join("rcrt.db"));
        let db_url = match (&pg, &sqlite) {
            (Some(pg), _) => pg.url().to_owned(),
            (None, Some(p)) => format!("sqlite:{}", p.display()),
            (None, None) => unreachable!(),
        };
        let (var, value) = match keys {
            KeySource::Jwks(url) => ("JWT_JWKS_URL", url),
            KeySource::PublicKeyFile(p) => ("JWT_PUBLIC_KEY_FILE", p.display().to_string()),
            KeySource::Hs256SecretFile(p) => ("JWT_HS256_SECRET_FILE", p.display().to_string()),
        };
        let env: Vec<(String, String)> = [
            ("AUTH_MODE", auth_mode.to_owned()),
            ("JWT_ISSUER", ISSUER.to_owned()),
            ("JWT_AUDIENCE", AUDIENCE.to_owned()),
            (var, value),
            ("DB_URL", db_url),
            ("LOCAL_KEK_BASE64", gen_kek()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let cfg = ServerConfig {
            binary: PathBuf::from(BIN),
            env,
            workdir: dir.path().to_owned(),
        };
        let process = ServerProcess::start(&cfg);
        let base = process.base_url();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            _process: process,
            pg,
            sqlite,
            _dir: dir,
            base,
            http,
        }
    }

    /// A request. `authorization` is the whole header value (`None`: no header at all).
    pub async fn req(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(a) = authorization {
            rb = rb.header("authorization", a);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Resp {
            what: format!("{method} {path}"),
            status,
            headers,
            text,
        }
    }

    /// A client that sends `Authorization: Bearer <token>`.
    pub fn as_token(&self, token: &str) -> Api<'_> {
        Api {
            srv: self,
            auth: format!("Bearer {token}"),
        }
    }

    /// Every row of `secret_access_log`, oldest first, read directly from the database.
    pub async fn audit(&self) -> Vec<AuditRow> {
        if let Some(path) = &self.sqlite {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let mut st = conn
                .prepare(
                    "SELECT action, secret_id, tenant, user_id, reason, outcome, request_id
                     FROM secret_access_log ORDER BY id",
                )
                .unwrap();
            let rows = st
                .query_map([], |r| {
                    Ok(AuditRow {
                        action: r.get(0)?,
                        secret_id: r.get(1)?,
                        tenant: r.get(2)?,
                        user_id: r.get(3)?,
                        reason: r.get(4)?,
                        outcome: r.get(5)?,
                        request_id: r.get(6)?,
                    })
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            return rows;
        }
        let pg = self.pg.as_ref().expect("a database");
        let (client, conn) = tokio_postgres::connect(pg.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        // As the database owner (not rcrt_app): row-level security does not apply.
        let rows = client
            .query(
                "SELECT action, secret_id::text, tenant, user_id, reason, outcome, request_id
                 FROM secret_access_log ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| AuditRow {
                action: r.get(0),
                secret_id: r.get(1),
                tenant: r.get(2),
                user_id: r.get(3),
                reason: r.get(4),
                outcome: r.get(5),
                request_id: r.get(6),
            })
            .collect();
        drop(client);
        let _ = task.await;
        rows
    }
}

/// Runs the server with AUTH_MODE=jwt plus `env` on SQLite, expecting it to refuse to start.
pub fn run_to_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = TempDir::new();
    let mut all: Vec<(String, String)> = vec![
        ("AUTH_MODE".into(), "jwt".into()),
        ("LOCAL_KEK_BASE64".into(), gen_kek()),
        (
            "DB_URL".into(),
            format!("sqlite:{}", dir.path().join("rcrt.db").display()),
        ),
    ];
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    ServerProcess::run_to_exit(&ServerConfig {
        binary: PathBuf::from(BIN),
        env: all,
        workdir: dir.path().to_owned(),
    })
}

#[derive(Debug)]
pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The response as one line, for failure messages.
    pub fn ctx(&self) -> String {
        format!("{} -> {} {}", self.what, self.status, self.text)
    }

    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}", self.ctx());
        self
    }
}

pub fn create_body(name: &str, value: &str, scope_type: &str, scope_id: Option<&str>) -> Value {
    let mut v = json!({"name": name, "value": value, "scope_type": scope_type});
    if let Some(s) = scope_id {
        v["scope_id"] = json!(s);
    }
    v
}

/// Typed calls as one principal.
pub struct Api<'a> {
    pub srv: &'a Server,
    pub auth: String,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        self.srv
            .req(method, path, Some(&self.auth), body, &[])
            .await
    }

    pub async fn create(
        &self,
        name: &str,
        value: &str,
        scope_type: &str,
        scope_id: Option<&str>,
    ) -> Resp {
        let body = create_body(name, value, scope_type, scope_id);
        self.call(Method::POST, "/secrets", Some(&body)).await
    }

    /// Creates and returns the new id (201 required).
    pub async fn create_ok(
        &self,
        name: &str,
        value: &str,
        scope_type: &str,
        scope_id: Option<&str>,
    ) -> String {
        let r = self
            .create(name, value, scope_type, scope_id)
            .await
            .expect(201);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    pub async fn list_page(&self, query: &str) -> Resp {
        self.call(Method::GET, &format!("/secrets?{query}"), None)
            .await
    }

    /// Every item of a listing (following cursors), or the first non-200 response.
    pub async fn list_all(&self, filter: &str) -> Result<Vec<Value>, Resp> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("limit=1000{filter}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let r = self.list_page(&q).await;
            if r.status != 200 {
                return Err(r);
            }
            let v = r.json();
            items.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// The ids of every listed secret (panics unless the listing is allowed).
    pub async fn listed_ids(&self, filter: &str) -> BTreeSet<String> {
        self.list_all(filter)
            .await
            .unwrap_or_else(|r| panic!("listing failed: {}", r.ctx()))
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect()
    }

    pub async fn get(&self, id: &str) -> Resp {
        self.call(Method::GET, &format!("/secrets/{id}"), None)
            .await
    }

    pub async fn decrypt(&self, id: &str, reason: &str) -> Resp {
        self.call(
            Method::POST,
            &format!("/secrets/{id}/decrypt"),
            Some(&json!({ "reason": reason })),
        )
        .await
    }

    pub async fn update(&self, id: &str, value: &str) -> Resp {
        self.call(
            Method::PUT,
            &format!("/secrets/{id}"),
            Some(&json!({ "value": value })),
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Resp {
        self.call(Method::DELETE, &format!("/secrets/{id}"), None)
            .await
    }

    /// Any request with this caller's credential.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        self.call(method, path, body).await
    }

    pub async fn vault_create(
        &self,
        workspace: &str,
        name: &str,
        secrets: &BTreeMap<&str, &str>,
    ) -> Resp {
        let body = json!({"workspace": workspace, "name": name, "secrets": secrets});
        self.call(Method::POST, "/secrets/vaults", Some(&body))
            .await
    }

    /// Every vault of `GET /secrets/vaults` (following cursors, pages of `limit`), or the
    /// first non-200 response. `filter` is appended to the query (`&workspace=W`).
    pub async fn vault_list_all(&self, filter: &str, limit: u32) -> Result<Vec<Value>, Resp> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("limit={limit}{filter}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let r = self
                .call(Method::GET, &format!("/secrets/vaults?{q}"), None)
                .await;
            if r.status != 200 {
                return Err(r);
            }
            let v = r.json();
            let page = v["items"].as_array().cloned().unwrap_or_default();
            assert!(page.len() <= limit as usize, "{}", r.ctx());
            items.extend(page);
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(items),
            }
        }
    }

    pub async fn vault_meta(&self, id_or_name: &str) -> Resp {
        self.call(Method::GET, &format!("/secrets/vaults/{id_or_name}"), None)
            .await
    }

    pub async fn vault_values(&self, id_or_name: &str, reason: &str) -> Resp {
        self.srv
            .req(
                Method::GET,
                &format!("/secrets/vault/{id_or_name}"),
                Some(&self.auth),
                None,
                &[("x-access-reason", reason)],
            )
            .await
    }

    pub async fn vault_put(&self, id_or_name: &str, key: &str, value: &str) -> Resp {
        self.call(
            Method::PUT,
            &format!("/secrets/vaults/{id_or_name}/keys/{key}"),
            Some(&json!({ "value": value })),
        )
        .await
    }

    pub async fn vault_delete_key(&self, id_or_name: &str, key: &str) -> Resp {
        self.call(
            Method::DELETE,
            &format!("/secrets/vaults/{id_or_name}/keys/{key}"),
            None,
        )
        .await
    }

    pub async fn vault_delete(&self, id_or_name: &str) -> Resp {
        self.call(
            Method::DELETE,
            &format!("/secrets/vaults/{id_or_name}"),
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn get_path(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn kek_status(&self) -> Resp {
        self.call(Method::GET, "/admin/kek/status", None).await
    }

    pub async fn kek_rewrap(&self) -> Resp {
        self.call(Method::POST, "/admin/kek/rewrap", None).await
    }
}

// ---------------------------------------------------------------------------------------------
// Collected checks: every mismatch is reported, not only the first
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    pub fn that(&mut self, what: impl Display, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(what.to_string());
        }
    }

    pub fn eq<T: PartialEq + Debug>(&mut self, what: impl Display, actual: T, expected: T) {
        if actual == expected {
            self.passed += 1;
        } else {
            self.failed
                .push(format!("{what}: expected {expected:?}, got {actual:?}"));
        }
    }

    /// A status check; on a mismatch the response body is part of the message.
    pub fn status(&mut self, what: impl Display, r: &Resp, expected: u16) {
        if r.status == expected {
            self.passed += 1;
        } else {
            self.failed.push(format!(
                "{what}: expected {expected}, got {} ({} {})",
                r.status, r.what, r.text
            ));
        }
    }

    pub fn passed(&self) -> usize {
        self.passed
    }

    pub fn finish(self, title: &str) {
        assert!(
            self.failed.is_empty(),
            "{title}: {} of {} checks failed:\n  {}",
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed.join("\n  ")
        );
    }
}
