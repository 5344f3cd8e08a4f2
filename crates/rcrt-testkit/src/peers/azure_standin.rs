//! A stand-in for Azure Key Vault (and the Azure AD token endpoint) on loopback.
//!
//! No real Key Vault can run on a test machine, so the `azure-keyvault` provider is tested
//! against this small HTTP server, which answers the requests the provider sends in the shapes
//! Microsoft publishes for the Key Vault REST API, version 7.4, and for the Microsoft identity
//! platform's OAuth 2.0 client-credentials grant. It is a test double written from the
//! published documentation, not a copy of the service: passing against it shows that the
//! provider speaks the documented protocol, not that it has been run against Azure.
//!
//! # What it follows
//! - Token endpoint: `POST /{tenant}/oauth2/v2.0/token`, form fields `grant_type=client_credentials`,
//!   `client_id`, `client_secret`, `scope=https://vault.azure.net/.default`; answers
//!   `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":"..."}`. Errors in
//!   the identity platform's shape `{"error","error_description","error_codes"}`: an unknown
//!   tenant is 400 `invalid_request` (AADSTS90002), an unknown client id 400
//!   `unauthorized_client` (AADSTS700016), a wrong secret 401 `invalid_client` (AADSTS7000215),
//!   another scope 400 `invalid_scope` (AADSTS70011), another grant 400 `unsupported_grant_type`.
//! - Get Key: `GET /keys/{name}`, `/keys/{name}/` and `/keys/{name}/{version}` answer a key
//!   bundle `{"key":{"kid","kty","key_ops","n","e"},"attributes":{"enabled","created","updated",
//!   "recoveryLevel","recoverableDays","exportable"}}`; the `kid` is
//!   `<url>/keys/{name}/{32 hex version}`. RSA keys carry their real modulus and exponent
//!   (base64url); `oct-HSM` keys (Managed HSM) carry no key material, as Managed HSM answers.
//! - Wrap Key / Unwrap Key: `POST /keys/{name}/{version}/wrapkey` and `.../unwrapkey` with
//!   `{"alg","value"}`, answering `{"kid","value"}`; `value` is base64url without padding.
//!   `RSA-OAEP-256` is real RSA-OAEP with SHA-256 and MGF1-SHA-256 (aws-lc-rs) under a real
//!   RSA-2048 key per version; `A256KW` on `oct-HSM` keys is real AES key wrap (RFC 3394).
//! - Every vault request must carry `api-version=7.4` (else 400 `BadParameter`) and
//!   `Authorization: Bearer <token issued here and not expired>` (else 401 `Unauthorized` with a
//!   `WWW-Authenticate: Bearer authorization="...", resource="https://vault.azure.net"` challenge).
//! - Errors in Key Vault's shape `{"error":{"code","message"[,"innererror":{"code"}]}}`: an
//!   unknown key or version is 404 `KeyNotFound`; unwrapKey (and, on `oct-HSM`, wrapKey) with
//!   a disabled key 403 `Forbidden` with inner code `KeyDisabled`, while wrapKey with a
//!   disabled RSA key still works (a public-key operation; as observed on a live vault and
//!   reported in Azure/azure-sdk-for-python#45342, not stated in the REST reference); an
//!   operation missing from `key_ops` 403 `Forbidden`; an algorithm the key
//!   type does not support, bad base64url or a ciphertext that does not decrypt 400
//!   `BadParameter`; an outage 503 `ServiceUnavailable` or 429 `Throttled` (with `Retry-After`).
//!
//! # What it does not follow
//! - Management operations (create, rotate, enable/disable, key_ops) are methods on
//!   [`AzureStandin`], not the REST calls (`POST /keys/{name}/create`, `/rotate`, `PATCH`).
//! - Disabling a key disables every version (Key Vault disables one version per call).
//! - One host serves both the identity platform and the vault; the challenge-based discovery
//!   the Azure SDKs use (an unauthenticated first request) is answered but not needed; only the
//!   `vault.azure.net` scope is accepted (not Managed HSM's `managedhsm.azure.net`); access
//!   tokens are opaque random strings, not signed JWTs; no RBAC or access policies beyond "the
//!   one client with the one secret may do everything"; no other operations (encrypt, sign,
//!   list, backup, ...), no other algorithms (RSA-OAEP, RSA1_5, A128KW, ...), no other API
//!   versions, no soft-delete, no key expiry (`exp`/`nbf`), no RSA-HSM key types or key sizes
//!   other than RSA-2048.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrap, AES_256};
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

/// The API version the stand-in implements (and requires).
pub const API_VERSION: &str = "7.4";
/// The only scope the token endpoint grants.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The kind of key [`AzureStandin::create_key`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kty {
    /// A software-protected RSA-2048 key (`kty` `RSA`): `RSA-OAEP-256`.
    Rsa,
    /// A Managed HSM AES-256 key (`kty` `oct-HSM`): `A256KW`.
    OctHsm,
}

/// How the vault misbehaves, if at all ([`AzureStandin::set_outage`]). The token endpoint keeps
/// answering (it is another service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Normal service.
    None,
    /// Every vault request answers 503 `ServiceUnavailable`.
    Unavailable,
    /// Every vault request answers 429 `Throttled` with `Retry-After: 1`.
    Throttled,
    /// Vault requests are accepted but never answered (until the outage ends, or 30 s).
    Hang,
}

enum KeyMaterial {
    Rsa(
        Box<OaepPrivateDecryptingKey>,
        OaepPublicEncryptingKey,
        String,
        String,
    ),
    Aes(Box<[u8; 32]>),
}

struct KeyVersion {
    version: String,
    material: KeyMaterial,
    created: u64,
}

struct Key {
    kty: Kty,
    versions: Vec<KeyVersion>,
    enabled: bool,
    ops: Vec<String>,
}

struct Inner {
    base: String,
    client_secret: String,
    token_lifetime: u64,
    tokens: HashMap<String, Instant>,
    keys: HashMap<String, Key>,
    outage: Outage,
    token_requests: usize,
    vault_requests: usize,
    unauthorized: usize,
}

type Shared = Arc<Mutex<Inner>>;

/// A running stand-in on `127.0.0.1:<free port>` (its own thread and tokio runtime), stopped
/// when dropped.
pub struct AzureStandin {
    addr: SocketAddr,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AzureStandin {
    /// The tenant the token endpoint knows.
    pub const TENANT_ID: &'static str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    /// The one client (service principal) it knows.
    pub const CLIENT_ID: &'static str = "0f7a1c52-3f5b-4c1e-9a57-6d2b1f0e8c41";

    /// Starts it with a random client secret and no keys.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Shared = Arc::new(Mutex::new(Inner {
            base: format!("http://{addr}"),
            client_secret: format!("sp~{}", uuid::Uuid::new_v4().simple()),
            token_lifetime: 3599,
            tokens: HashMap::new(),
            keys: HashMap::new(),
            outage: Outage::None,
            token_requests: 0,
            vault_requests: 0,
            unauthorized: 0,
        }));
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/keys/{name}", get(get_key_latest))
            .route("/keys/{name}/", get(get_key_latest))
            .route("/keys/{name}/{version}", get(get_key_version))
            .route("/keys/{name}/{version}/wrapkey", post(wrap_key))
            .route("/keys/{name}/{version}/unwrapkey", post(unwrap_key))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`: both the vault URL (`AZURE_KEY_VAULT_URL`) and the authority
    /// host (`AZURE_AUTHORITY_HOST`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The client secret of [`AzureStandin::CLIENT_ID`].
    pub fn client_secret(&self) -> String {
        self.lock().client_secret.clone()
    }

    /// Creates a key with one version (enabled, `key_ops` wrapKey and unwrapKey) and returns
    /// that version's `kid`.
    pub fn create_key(&self, name: &str, kty: Kty) -> String {
        let mut s = self.lock();
        let v = new_version(kty);
        let kid = format!("{}/keys/{name}/{}", s.base, v.version);
        s.keys.insert(
            name.to_owned(),
            Key {
                kty,
                versions: vec![v],
                enabled: true,
                ops: vec!["wrapKey".into(), "unwrapKey".into()],
            },
        );
        kid
    }

    /// Adds a new version to a key (Key Vault's rotation) and returns its `kid`; old versions
    /// keep unwrapping.
    pub fn rotate_key(&self, name: &str) -> String {
        let mut s = self.lock();
        let base = s.base.clone();
        let key = s.keys.get_mut(name).expect("rotate an existing key");
        let v = new_version(key.kty);
        let kid = format!("{base}/keys/{name}/{}", v.version);
        key.versions.push(v);
        kid
    }

    /// Enables or disables every version of a key.
    pub fn set_key_enabled(&self, name: &str, enabled: bool) {
        self.lock()
            .keys
            .get_mut(name)
            .expect("an existing key")
            .enabled = enabled;
    }

    /// Replaces a key's permitted operations (`key_ops`).
    pub fn set_key_ops(&self, name: &str, ops: &[&str]) {
        self.lock().keys.get_mut(name).expect("an existing key").ops =
            ops.iter().map(|o| (*o).to_owned()).collect();
    }

    /// Starts or ends an outage of the vault.
    pub fn set_outage(&self, outage: Outage) {
        self.lock().outage = outage;
    }

    /// The `expires_in` of tokens issued from now on (seconds; default 3599).
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.lock().token_lifetime = seconds;
    }

    /// Forgets every token issued so far (the vault answers 401 to them), as when a token
    /// is revoked or the signing keys roll.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Token requests answered so far (any outcome).
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Vault requests received so far (any outcome).
    pub fn vault_requests(&self) -> usize {
        self.lock().vault_requests
    }

    /// Vault requests answered 401 so far.
    pub fn unauthorized_answers(&self) -> usize {
        self.lock().unauthorized
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap()
    }
}

impl Drop for AzureStandin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_version(kty: Kty) -> KeyVersion {
    let material = match kty {
        Kty::Rsa => {
            let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
            let public = private.public_key();
            let (n, e) = rsa_n_e(&public);
            KeyMaterial::Rsa(
                Box::new(OaepPrivateDecryptingKey::new(private).unwrap()),
                OaepPublicEncryptingKey::new(public).unwrap(),
                B64URL.encode(n),
                B64URL.encode(e),
            )
        }
        Kty::OctHsm => {
            let mut k = [0u8; 32];
            k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            KeyMaterial::Aes(Box::new(k))
        }
    };
    KeyVersion {
        version: uuid::Uuid::new_v4().simple().to_string(),
        material,
        created: now_secs(),
    }
}

/// The modulus and public exponent from an RSA public key's SubjectPublicKeyInfo DER.
fn rsa_n_e(public: &aws_lc_rs::rsa::PublicEncryptingKey) -> (Vec<u8>, Vec<u8>) {
    use aws_lc_rs::encoding::AsDer;
    let der = public.as_der().unwrap();
    let (_, spki, _) = der_next(der.as_ref());
    let (_, _alg, rest) = der_next(spki);
    let (_, bits, _) = der_next(rest);
    let (_, rsa, _) = der_next(&bits[1..]);
    let (_, n, rest) = der_next(rsa);
    let (_, e, _) = der_next(rest);
    let strip = |b: &[u8]| {
        let skip = b.iter().take_while(|&&x| x == 0).count();
        b[skip..].to_vec()
    };
    (strip(n), strip(e))
}

/// One DER element: (tag, content, rest).
fn der_next(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = input[1] as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    (tag, &input[start..start + len], &input[start + len..])
}

fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    (status, Json(json!({ "error": error }))).into_response()
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {} Correlation ID: {} Timestamp: 2026-01-01 00:00:00Z",
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4()
            ),
            "error_codes": [code],
            "timestamp": "2026-01-01 00:00:00Z",
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        })),
    )
        .into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

async fn token(State(state): State<Shared>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let mut s = state.lock().unwrap();
    s.token_requests += 1;
    if tenant != AzureStandin::TENANT_ID {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id != AzureStandin::CLIENT_ID {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }
    if form.get("client_secret") != Some(&s.client_secret) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID, for a secret added to app \
             '0f7a1c52-3f5b-4c1e-9a57-6d2b1f0e8c41'.",
        );
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    if scope != VAULT_SCOPE {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        );
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.standin.{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let lifetime = s.token_lifetime;
    s.tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }))
    .into_response()
}

/// The checks every vault request goes through, in Key Vault's order: outage, api-version,
/// bearer token. `Err` is the answer to send.
async fn admit(
    state: &Shared,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let outage = {
        let mut s = state.lock().unwrap();
        s.vault_requests += 1;
        s.outage
    };
    match outage {
        Outage::None => {}
        Outage::Unavailable => {
            return Err(kv_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry later.",
                None,
            ))
        }
        Outage::Throttled => {
            let mut r = kv_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return Err(r);
        }
        Outage::Hang => {
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && state.lock().unwrap().outage == Outage::Hang {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Err(kv_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
                None,
            ));
        }
    }
    match query.get("api-version").map(String::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!("The specified version ({other}) is not recognized. Consider using the latest supported version ({API_VERSION})."),
                None,
            ))
        }
        None => {
            return Err(kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The api-version query parameter is missing.",
                None,
            ))
        }
    }
    let mut s = state.lock().unwrap();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (ok, message) = match bearer {
        None => (false, "AKV10000: Request is missing a Bearer or PoP token."),
        Some(t) => match s.tokens.get(t) {
            Some(exp) if Instant::now() < *exp => (true, ""),
            Some(_) => (false, "AKV10022: Token expired."),
            None => (false, "AKV10032: Invalid issuer or token."),
        },
    };
    if ok {
        return Ok(());
    }
    s.unauthorized += 1;
    let mut r = kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", message, None);
    let challenge = format!(
        "Bearer authorization=\"{}/{}\", resource=\"https://vault.azure.net\"",
        s.base,
        AzureStandin::TENANT_ID
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_str(&challenge).unwrap(),
    );
    Err(r)
}

fn not_found(name: &str, version: &str) -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        &format!("A key with (name/id) {name}/{version} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command."),
        None,
    )
}

fn key_bundle(base: &str, name: &str, key: &Key, v: &KeyVersion) -> Value {
    let mut jwk = json!({
        "kid": format!("{base}/keys/{name}/{}", v.version),
        "kty": match key.kty { Kty::Rsa => "RSA", Kty::OctHsm => "oct-HSM" },
        "key_ops": key.ops,
    });
    if let KeyMaterial::Rsa(_, _, n, e) = &v.material {
        jwk["n"] = json!(n);
        jwk["e"] = json!(e);
    }
    json!({
        "key": jwk,
        "attributes": {
            "enabled": key.enabled,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
            "exportable": false,
        },
    })
}

async fn get_key_latest(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    get_key(state, name, String::new(), query, headers).await
}

async fn get_key_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    get_key(state, name, version, query, headers).await
}

async fn get_key(
    state: Shared,
    name: String,
    version: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&state, &query, &headers).await {
        return r;
    }
    let s = state.lock().unwrap();
    let Some(key) = s.keys.get(&name) else {
        return not_found(&name, &version);
    };
    let v = if version.is_empty() {
        key.versions.last()
    } else {
        key.versions.iter().find(|v| v.version == version)
    };
    match v {
        Some(v) => Json(key_bundle(&s.base, &name, key, v)).into_response(),
        None => not_found(&name, &version),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Wrap,
    Unwrap,
}

async fn wrap_key(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    key_op(state, name, version, query, headers, body, Op::Wrap).await
}

async fn unwrap_key(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    key_op(state, name, version, query, headers, body, Op::Unwrap).await
}

async fn key_op(
    state: Shared,
    name: String,
    version: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    op: Op,
) -> Response {
    if let Err(r) = admit(&state, &query, &headers).await {
        return r;
    }
    let op_name = match op {
        Op::Wrap => "wrapKey",
        Op::Unwrap => "unwrapKey",
    };
    let s = state.lock().unwrap();
    let Some(key) = s.keys.get(&name) else {
        return not_found(&name, &version);
    };
    let Some(v) = key.versions.iter().find(|v| v.version == version) else {
        return not_found(&name, &version);
    };
    // Key Vault answers wrapKey with a disabled RSA key (it needs only the public key) and
    // refuses unwrapKey, as reported from a live vault in Azure/azure-sdk-for-python#45342.
    let public_op = op == Op::Wrap && key.kty == Kty::Rsa;
    if !key.enabled && !public_op {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("Operation {op_name} is not allowed on a disabled key."),
            Some("KeyDisabled"),
        );
    }
    if !key.ops.iter().any(|o| o == op_name) {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("Operation {op_name} is not permitted on this key."),
            Some("KeyOperationForbidden"),
        );
    }
    let bad = |m: &str| kv_error(StatusCode::BAD_REQUEST, "BadParameter", m, None);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON.");
    };
    let alg = req["alg"].as_str().unwrap_or("");
    let Some(value) = req["value"].as_str() else {
        return bad("Property 'value' is required.");
    };
    let Ok(input) = B64URL.decode(value.trim_end_matches('=')) else {
        return bad("Property 'value' is not valid base64url.");
    };
    let output = match (&v.material, alg, op) {
        (KeyMaterial::Rsa(_, public, _, _), "RSA-OAEP-256", Op::Wrap) => {
            let mut out = vec![0u8; public.ciphertext_size()];
            match public.encrypt(&OAEP_SHA256_MGF1SHA256, &input, &mut out, None) {
                Ok(c) => c.to_vec(),
                Err(_) => return bad("The value is too long for this key and algorithm."),
            }
        }
        (KeyMaterial::Rsa(private, _, _, _), "RSA-OAEP-256", Op::Unwrap) => {
            let mut out = vec![0u8; private.min_output_size()];
            match private.decrypt(&OAEP_SHA256_MGF1SHA256, &input, &mut out, None) {
                Ok(p) => p.to_vec(),
                Err(_) => return bad("Bad Request: the ciphertext could not be decrypted."),
            }
        }
        (KeyMaterial::Aes(k), "A256KW", op) => {
            let kek = KeyEncryptionKey::new(&AES_256, &k[..]).unwrap();
            let mut out = vec![0u8; input.len() + 8];
            let r = match op {
                Op::Wrap => kek.wrap(&input, &mut out).map(|c| c.to_vec()),
                Op::Unwrap => kek.unwrap(&input, &mut out).map(|p| p.to_vec()),
            };
            match r {
                Ok(o) => o,
                Err(_) => return bad("Bad Request: the key could not be wrapped or unwrapped."),
            }
        }
        _ => return bad(&format!("Invalid algorithm '{alg}' for this key type.")),
    };
    Json(json!({
        "kid": format!("{}/keys/{name}/{}", s.base, v.version),
        "value": B64URL.encode(output),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c%3a"), "a/b c:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn rsa_components() {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let (n, e) = rsa_n_e(&private.public_key());
        assert_eq!(n.len(), 256);
        assert_eq!(e, vec![1, 0, 1]);
    }
}
