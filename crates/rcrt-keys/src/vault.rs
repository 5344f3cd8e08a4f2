//! HashiCorp Vault / OpenBao: Transit (the key stays in Vault) and KV (the guide's flow).
//!
//! [`TransitKek`] wraps each DEK with `POST /v1/<mount>/encrypt/<name>` and unwraps it with
//! `/decrypt/`, binding the row (KEK id, secret id, version, header) as `associated_data` (or as
//! the derivation `context` for a derived key). Each Transit key version is a KEK id of its own
//! (`<namespace>/<mount>/<name>#v<N>`), so a Transit rotation followed by our re-wrap moves rows
//! from one version to the next, and the start-up check sees rows under a version Vault no longer
//! decrypts. [`read_kv_kek`] is the guide's `vault kv get -field=value secret/rcrt/kek` without
//! a shell: the KEK itself is read once at start and used as a local KEK.
//!
//! The Transit backend keeps its token alive: each [`KekBackend::probe`] (the keyring's health
//! task, every `KEK_PROVIDER_PROBE_INTERVAL` and every circuit cooldown) looks the token up and,
//! when it is renewable and less than half of its period (or of its TTL at creation) is left,
//! renews it. A token that reaches its max TTL cannot be renewed: a token from
//! `VAULT_TOKEN_FILE` is read again when Vault answers 403 and the file has changed (Vault
//! Agent's sink, or any tool that renews the file), and the call is repeated once with the new
//! token. What it does not do: log in, or retry (the [`crate::Keyring`]'s guard does, except at
//! connect and for the one KV read, which retry here).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcrt_crypto::{CryptoError, Dek, Kek, KekId, WrapContext, WrappedDek};
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::settings::{read_secret_file, CallSettings, VaultSettings};
use crate::{alg, remote_kek_id, KekBackend, KeyError, ProviderKind};

/// The wrapped-DEK header this provider writes.
const HEADER: [u8; 2] = [0x01, alg::VAULT_TRANSIT];

/// Transit key types that are AEADs (accept `associated_data`, or `context` when derived).
const AEAD_TYPES: [&str; 4] = [
    "aes128-gcm96",
    "aes256-gcm96",
    "chacha20-poly1305",
    "xchacha20-poly1305",
];

/// What a Vault request gave when it did not succeed.
enum Failure {
    /// No answer (connect error, timeout, broken connection, unreadable body).
    Unreachable(String),
    /// An HTTP answer other than 2xx, with Vault's `errors` joined.
    Status(u16, String),
}

/// A JSON value whose strings are wiped when it is dropped (Vault's answers and our requests
/// carry DEKs and KEKs in base64).
struct WipedJson(Value);

impl Drop for WipedJson {
    fn drop(&mut self) {
        fn wipe(v: &mut Value) {
            match v {
                Value::String(s) => s.zeroize(),
                Value::Array(a) => a.iter_mut().for_each(wipe),
                Value::Object(o) => o.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// An HTTP client for one Vault: its address, token and namespace.
struct VaultClient {
    http: reqwest::Client,
    addr: String,
    token: std::sync::RwLock<Zeroizing<String>>,
    /// `VAULT_TOKEN_FILE`, read again after a 403.
    token_file: Option<std::path::PathBuf>,
    namespace: Option<String>,
    /// What [`VaultClient::keep_token_alive`] already warned about for the token in use.
    warned: TokenWarnings,
}

/// Warnings about the token's lifetime, each logged once per token (the probe runs every 30 s).
#[derive(Default)]
struct TokenWarnings {
    /// `lookup-self` was refused.
    no_lookup: AtomicBool,
    /// The token expires and is not renewable.
    not_renewable: AtomicBool,
    /// A renewal no longer extends the token (its max TTL is near).
    at_max_ttl: AtomicBool,
}

impl TokenWarnings {
    fn reset(&self) {
        for flag in [&self.no_lookup, &self.not_renewable, &self.at_max_ttl] {
            flag.store(false, Ordering::Relaxed);
        }
    }

    /// True the first time `flag` is raised.
    fn first(flag: &AtomicBool) -> bool {
        !flag.swap(true, Ordering::Relaxed)
    }
}

/// A whole number of seconds in a Vault answer (a JSON number, or a string of digits).
fn seconds(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClient")
            .field("addr", &self.addr)
            .field("token", &"[REDACTED]")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl VaultClient {
    fn new(settings: &VaultSettings, call: &CallSettings, what: &str) -> Result<Self, KeyError> {
        let addr = settings
            .addr
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                KeyError::Config(format!(
                    "{what}: VAULT_ADDR is not set: set it to the Vault or OpenBao address, e.g. https://vault.example.com:8200"
                ))
            })?;
        // An address with '@' may hold a user name or password: never echo it.
        let shown = if addr.contains('@') {
            String::new()
        } else {
            format!(" {addr:?}")
        };
        let url = url::Url::parse(addr).map_err(|e| {
            KeyError::Config(format!("{what}: VAULT_ADDR{shown} is not a URL: {e}"))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(KeyError::Config(format!(
                "{what}: VAULT_ADDR holds a user name or password (user:pass@): remove it; the token comes from VAULT_TOKEN_FILE (or VAULT_TOKEN)"
            )));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(KeyError::Config(format!(
                "{what}: VAULT_ADDR{shown} must start with https:// (or http://)"
            )));
        }
        let token = match (&settings.token, &settings.token_file) {
            (Some(_), Some(_)) => {
                return Err(KeyError::Config(format!(
                    "{what}: both VAULT_TOKEN and VAULT_TOKEN_FILE are set: set only one"
                )))
            }
            (Some(t), None) => {
                let t = Zeroizing::new(t.trim().to_owned());
                if t.is_empty() {
                    return Err(KeyError::Config(format!("{what}: VAULT_TOKEN is empty")));
                }
                t
            }
            (None, Some(path)) => read_secret_file("VAULT_TOKEN_FILE", path)?,
            (None, None) => {
                return Err(KeyError::Config(format!(
                    "{what}: no Vault token: set VAULT_TOKEN_FILE to a file holding the token (or VAULT_TOKEN)"
                )))
            }
        };
        if reqwest::header::HeaderValue::from_str(&token).is_err() {
            return Err(KeyError::Config(format!(
                "{what}: the Vault token holds characters an HTTP header cannot carry"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(call.timeout)
            .connect_timeout(call.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                KeyError::Config(format!(
                    "{what}: cannot read VAULT_CACERT file {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                KeyError::Config(format!(
                    "{what}: VAULT_CACERT file {} holds no usable PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(KeyError::Config(format!(
                    "{what}: VAULT_CACERT file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| KeyError::Config(format!("{what}: cannot build the HTTP client: {e}")))?;
        let namespace = settings
            .namespace
            .as_deref()
            .map(|n| n.trim().trim_matches('/').to_owned())
            .filter(|n| !n.is_empty());
        Ok(Self {
            http,
            addr: addr.trim_end_matches('/').to_owned(),
            token: std::sync::RwLock::new(token),
            token_file: settings.token_file.clone(),
            namespace,
            warned: TokenWarnings::default(),
        })
    }

    /// The token as a header value (marked sensitive).
    fn token_header(&self) -> Result<reqwest::header::HeaderValue, Failure> {
        let token = self
            .token
            .read()
            .map_err(|_| Failure::Unreachable("the token lock is poisoned".into()))?;
        let mut value = reqwest::header::HeaderValue::from_str(&token)
            .map_err(|_| Failure::Unreachable("the token cannot be sent".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// After a 403: reads `VAULT_TOKEN_FILE` again; true if it holds a new token (now in use).
    fn reload_token(&self) -> bool {
        let Some(path) = &self.token_file else {
            return false;
        };
        let Ok(fresh) = read_secret_file("VAULT_TOKEN_FILE", path) else {
            return false;
        };
        if reqwest::header::HeaderValue::from_str(&fresh).is_err() {
            return false;
        }
        match self.token.write() {
            Ok(mut token) if **token != *fresh => {
                *token = fresh;
                self.warned.reset();
                tracing::info!(file = %path.display(), "VAULT_TOKEN_FILE holds a new token: using it");
                true
            }
            _ => false,
        }
    }

    /// Keeps a renewable token alive (the Transit probe runs it): one `lookup-self`, and when the
    /// token is renewable with less than half of its period (or of its TTL at creation) left,
    /// one `renew-self` without an increment (Vault renews to the period, or by the TTL at
    /// creation, up to the max TTL). Never fails: whether the key is usable is the round
    /// trip's to say; what cannot be done is logged, once per token.
    async fn keep_token_alive(&self) {
        let info = match self
            .call(reqwest::Method::GET, "auth/token/lookup-self", None)
            .await
        {
            Ok(info) => info,
            Err(Failure::Status(403, _)) => {
                if TokenWarnings::first(&self.warned.no_lookup) {
                    tracing::warn!(
                        addr = %self.addr,
                        "Vault refused auth/token/lookup-self (403): the token has expired or been revoked, \
                         or its policy lacks read on auth/token/lookup-self and update on auth/token/renew-self \
                         (Vault's default policy has both): rcrt cannot renew it"
                    );
                }
                return;
            }
            // Sealed, throttled, down: the round trip that follows says so.
            Err(Failure::Status(status @ (412 | 429 | 500..=599), errors)) => {
                tracing::debug!(addr = %self.addr, status, %errors, "Vault token lookup failed");
                return;
            }
            Err(Failure::Status(status, errors)) => {
                tracing::warn!(addr = %self.addr, status, %errors, "Vault token lookup failed");
                return;
            }
            Err(Failure::Unreachable(reason)) => {
                tracing::debug!(addr = %self.addr, %reason, "Vault token lookup failed");
                return;
            }
        };
        // (The answer holds the token itself as `id`: read only the lifetime fields.)
        let data = info.0.get("data").unwrap_or(&Value::Null);
        let ttl = seconds(data.get("ttl"));
        let period = seconds(data.get("period"));
        let base = match period {
            0 => seconds(data.get("creation_ttl")),
            p => p,
        };
        let renewable = data.get("renewable").and_then(Value::as_bool) == Some(true);
        if ttl == 0 && base == 0 {
            // A token that does not expire (root, or created with no TTL).
            return;
        }
        if !renewable {
            if TokenWarnings::first(&self.warned.not_renewable) {
                tracing::warn!(
                    addr = %self.addr,
                    expires_in_s = ttl,
                    "the Vault token is not renewable: every call fails once it expires; \
                     use a periodic token, or have Vault Agent write new ones to VAULT_TOKEN_FILE"
                );
            }
            return;
        }
        if base == 0
            || ttl.saturating_mul(2) >= base
            || self.warned.at_max_ttl.load(Ordering::Relaxed)
        {
            return;
        }
        let body = WipedJson(json!({}));
        match self
            .call(reqwest::Method::POST, "auth/token/renew-self", Some(&body))
            .await
        {
            Ok(answer) => {
                let lease = seconds(answer.0.pointer("/auth/lease_duration"));
                if lease.saturating_mul(2) < base {
                    if TokenWarnings::first(&self.warned.at_max_ttl) {
                        tracing::warn!(
                            addr = %self.addr,
                            expires_in_s = lease,
                            "the Vault token is near its max TTL and cannot be renewed further: \
                             every call fails once it expires unless VAULT_TOKEN_FILE gets a new token (Vault Agent)"
                        );
                    }
                } else {
                    tracing::info!(addr = %self.addr, valid_for_s = lease, "renewed the Vault token");
                }
            }
            Err(Failure::Status(status, errors)) => {
                tracing::warn!(addr = %self.addr, status, %errors, expires_in_s = ttl, "renewing the Vault token failed");
            }
            Err(Failure::Unreachable(reason)) => {
                tracing::warn!(addr = %self.addr, %reason, expires_in_s = ttl, "renewing the Vault token failed");
            }
        }
    }

    /// One request to `/v1/<path>`; the answer's JSON on 2xx. A 403 with a renewed
    /// `VAULT_TOKEN_FILE` is repeated once with the new token.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&WipedJson>,
    ) -> Result<WipedJson, Failure> {
        match self.call_once(method.clone(), path, body).await {
            Err(Failure::Status(403, e)) => {
                if self.reload_token() {
                    self.call_once(method, path, body).await
                } else {
                    Err(Failure::Status(403, e))
                }
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&WipedJson>,
    ) -> Result<WipedJson, Failure> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        let token = self.token_header()?;
        req = req.header("X-Vault-Token", token);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns.as_str());
        }
        if let Some(body) = body {
            // The body holds a DEK in base64: its buffer is wiped when the client drops it.
            let bytes =
                Zeroizing::new(serde_json::to_vec(&body.0).map_err(|e| {
                    Failure::Unreachable(format!("cannot encode the request: {e}"))
                })?);
            req = req
                .header("Content-Type", "application/json")
                .body(reqwest::Body::from(bytes::Bytes::from_owner(bytes)));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Unreachable(describe_reqwest(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Unreachable(describe_reqwest(&e)))?;
        let bytes = Zeroizing::new(Vec::from(bytes));
        if (200..300).contains(&status) {
            if bytes.is_empty() {
                return Ok(WipedJson(Value::Null));
            }
            return serde_json::from_slice(&bytes).map(WipedJson).map_err(|e| {
                Failure::Unreachable(format!("answer is not JSON (HTTP {status}): {e}"))
            });
        }
        // Error answers carry no key material: `{"errors":["..."]}`.
        let errors = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("errors").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            })
            .unwrap_or_default();
        let errors: String = errors.chars().take(300).collect();
        Err(Failure::Status(status, errors))
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The innermost cause says what happened (connection refused, certificate, ...).
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

/// Runs `op` up to `1 + call.retries` times while it fails with [`KeyError::Unavailable`],
/// backing off `call.backoff`, doubled each time (start-up calls only; the guard retries the
/// rest).
async fn with_retries<T, F, Fut>(call: &CallSettings, mut op: F) -> Result<T, KeyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, KeyError>>,
{
    let mut backoff = call.backoff;
    let mut attempt = 0;
    loop {
        match op().await {
            Err(KeyError::Unavailable { .. }) if attempt < call.retries => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// A Transit key name or mount path: Vault's name rule (word characters, `-`, `.`), and `/`
/// between segments for a mount.
fn check_path(what: &str, value: &str, allow_slash: bool) -> Result<(), KeyError> {
    let ok = !value.is_empty()
        && value.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        && (allow_slash || !value.contains('/'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Config(format!(
            "vault-transit: {what} {value:?} is not a valid name (letters, digits, '_', '-', '.')"
        )))
    }
}

/// A KEK in Vault Transit.
pub struct TransitKek {
    client: VaultClient,
    /// `<namespace>/<mount>/<name>`, the canonical reference without the version.
    reference: String,
    encrypt_path: String,
    decrypt_path: String,
    derived: bool,
    /// The key version new wraps use (the key's `latest_version` at connect).
    current: u64,
    /// The id of `current`.
    id: KekId,
    /// Every version Vault decrypts (`min_decryption_version..=latest`), newest first, with ids.
    versions: Vec<(u64, KekId)>,
}

impl std::fmt::Debug for TransitKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitKek")
            .field("client", &self.client)
            .field("reference", &self.reference)
            .field("derived", &self.derived)
            .field("current", &self.current)
            .field("id", &self.id)
            .finish()
    }
}

/// The KEK id of version `version` of the Transit key `reference` (`<namespace>/<mount>/<name>`).
fn version_id(reference: &str, version: u64) -> KekId {
    remote_kek_id(
        ProviderKind::VaultTransit,
        &format!("{reference}#v{version}"),
    )
}

impl TransitKek {
    /// Connects and checks that the key exists and can be used: reads the key (its type must be
    /// an AEAD; notes `derived`, `latest_version`, `min_decryption_version`), then wraps and
    /// unwraps a throwaway DEK. New wraps use the key's latest version at connect.
    pub async fn connect(
        key_name: &str,
        settings: &VaultSettings,
        call: &CallSettings,
    ) -> Result<Self, KeyError> {
        let key_name = key_name.trim();
        let mount = settings
            .transit_mount
            .as_deref()
            .map(|m| m.trim().trim_matches('/'))
            .filter(|m| !m.is_empty())
            .unwrap_or("transit")
            .to_owned();
        check_path("KEK_REF (the Transit key name)", key_name, false)?;
        check_path("VAULT_TRANSIT_MOUNT", &mount, true)?;
        let client = VaultClient::new(settings, call, "vault-transit")?;
        let reference = format!(
            "{}/{mount}/{key_name}",
            client.namespace.as_deref().unwrap_or("")
        );
        let shown = format!(
            "Transit key {key_name:?} at mount {mount:?} of {}",
            client.addr
        );
        let policy_hint = format!(
            "the token's policy needs read on {mount}/keys/{key_name} and update on {mount}/encrypt/{key_name} and {mount}/decrypt/{key_name}"
        );
        let keys_path = format!("{mount}/keys/{key_name}");
        let unversioned = remote_kek_id(ProviderKind::VaultTransit, &reference);
        let (client_ref, shown_ref, hint_ref) = (&client, &shown, &policy_hint);
        let (keys_ref, mount_ref, id_ref) = (&keys_path, &mount, &unversioned);
        let info = with_retries(call, move || async move {
            let (client, shown, policy_hint) = (client_ref, shown_ref, hint_ref);
            let (keys_path, mount, unversioned) = (keys_ref, mount_ref, id_ref);
            match client.call(reqwest::Method::GET, keys_path, None).await {
                Ok(v) => Ok(v),
                Err(Failure::Status(404, _)) => Err(KeyError::Config(format!(
                    "vault-transit: there is no {shown}: create it with `vault write -f {mount}/keys/{key_name} type=aes256-gcm96` (or check KEK_REF, VAULT_TRANSIT_MOUNT and VAULT_NAMESPACE)"
                ))),
                Err(Failure::Status(401 | 403, e)) => Err(KeyError::Config(format!(
                    "vault-transit: the Vault token may not read the {shown} ({e}): {policy_hint}"
                ))),
                Err(f) => match classify(f, unversioned, false) {
                    KeyError::Refused { reason, .. } => Err(KeyError::Config(format!(
                        "vault-transit: reading the {shown} failed: {reason}"
                    ))),
                    other => Err(other),
                },
            }
        })
        .await?;
        let data = info.0.get("data").unwrap_or(&Value::Null);
        let key_type = data.get("type").and_then(Value::as_str).unwrap_or("");
        if !AEAD_TYPES.contains(&key_type)
            || data.get("supports_encryption").and_then(Value::as_bool) == Some(false)
            || data.get("supports_decryption").and_then(Value::as_bool) == Some(false)
        {
            return Err(KeyError::Config(format!(
                "vault-transit: the {shown} has type {key_type:?}, which cannot bind associated data: use a key of type {}",
                AEAD_TYPES.join(", ")
            )));
        }
        let derived = data
            .get("derived")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let latest = data
            .get("latest_version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let min = data
            .get("min_decryption_version")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1);
        if latest == 0 || min > latest {
            return Err(KeyError::Config(format!(
                "vault-transit: the {shown} reports no usable version (latest_version {latest}, min_decryption_version {min})"
            )));
        }
        for (flag, what) in [
            ("exportable", "exported (transit/export)"),
            (
                "allow_plaintext_backup",
                "backed up in plaintext (transit/backup)",
            ),
        ] {
            if data.get(flag).and_then(Value::as_bool) == Some(true) {
                tracing::warn!(
                    key = %key_name,
                    mount = %mount,
                    addr = %client.addr,
                    "the Vault Transit KEK has {flag}=true: its key material can be {what} by anyone with that permission, \
                     and the flag cannot be turned off; make KEKs without it"
                );
            }
        }
        let versions: Vec<(u64, KekId)> = (min..=latest)
            .rev()
            .map(|v| (v, version_id(&reference, v)))
            .collect();
        let kek = Self {
            id: version_id(&reference, latest),
            client,
            reference,
            encrypt_path: format!("{mount}/encrypt/{key_name}"),
            decrypt_path: format!("{mount}/decrypt/{key_name}"),
            derived,
            current: latest,
            versions,
        };
        with_retries(call, || crate::probe_by_round_trip(&kek))
            .await
            .map_err(|e| match e {
                KeyError::Refused { reason, .. } => KeyError::Config(format!(
                    "vault-transit: the {shown} cannot be used ({reason}): {policy_hint}"
                )),
                KeyError::Crypto(e) => KeyError::Config(format!(
                    "vault-transit: a test wrap and unwrap with the {shown} failed ({e})"
                )),
                other => other,
            })?;
        // Renews the token now if it is past half its life, and says once if it cannot be.
        kek.client.keep_token_alive().await;
        Ok(kek)
    }

    /// The Transit key version new wraps use.
    pub fn current_version(&self) -> u64 {
        self.current
    }

    /// The fields binding a wrap to its row: `associated_data`, or `context` for a derived key.
    fn binding(&self, ctx: &WrapContext<'_>) -> (&'static str, String) {
        let aad = STANDARD.encode(ctx.encode(&HEADER));
        if self.derived {
            ("context", aad)
        } else {
            ("associated_data", aad)
        }
    }
}

/// Maps a failed call to a [`KeyError`]. `decrypting`: Vault's "the ciphertext does not
/// authenticate" answers mean [`CryptoError::Decrypt`].
fn classify(failure: Failure, kek_id: &KekId, decrypting: bool) -> KeyError {
    let unavailable = |reason: String| KeyError::Unavailable {
        kek_id: kek_id.clone(),
        provider: ProviderKind::VaultTransit,
        reason,
    };
    let refused = |reason: String| KeyError::Refused {
        kek_id: kek_id.clone(),
        provider: ProviderKind::VaultTransit,
        reason,
    };
    match failure {
        Failure::Unreachable(reason) => unavailable(format!("Vault did not answer: {reason}")),
        Failure::Status(status, errors) => {
            let lower = errors.to_ascii_lowercase();
            match status {
                400 if decrypting
                    && (lower.contains("message authentication failed")
                        || lower.contains("invalid ciphertext")
                        || lower.contains("invalid version")) =>
                {
                    KeyError::Crypto(CryptoError::Decrypt)
                }
                // Sealed, standby trouble, throttling, internal errors: worth retrying.
                412 | 429 | 500..=599 => {
                    unavailable(format!("Vault answered HTTP {status}: {errors}"))
                }
                // 400 (version below min_decryption_version, key not found, ...), 401/403
                // (permission denied), 404 (no such key or mount): an operator must act.
                _ => refused(format!("Vault answered HTTP {status}: {errors}")),
            }
        }
    }
}

#[async_trait]
impl KekBackend for TransitKek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn unwrap_ids(&self) -> Vec<KekId> {
        self.versions.iter().map(|(_, id)| id.clone()).collect()
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::VaultTransit
    }

    fn describe(&self) -> String {
        format!(
            "vault-transit key {} v{} at {}",
            self.reference, self.current, self.client.addr
        )
    }

    /// Keeps the token alive ([`VaultClient::keep_token_alive`], which never fails), then wraps
    /// and unwraps a throwaway DEK.
    async fn probe(&self) -> Result<(), KeyError> {
        self.client.keep_token_alive().await;
        crate::probe_by_round_trip(self).await
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != &self.id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        let (field, binding) = self.binding(ctx);
        let body = WipedJson(json!({
            "plaintext": STANDARD.encode(dek.expose_secret()),
            "key_version": self.current,
            field: binding,
        }));
        let answer = self
            .client
            .call(reqwest::Method::POST, &self.encrypt_path, Some(&body))
            .await
            .map_err(|f| classify(f, &self.id, false))?;
        let ciphertext = answer
            .0
            .pointer("/data/ciphertext")
            .and_then(Value::as_str)
            .ok_or(KeyError::Crypto(CryptoError::Encrypt))?;
        if ciphertext_version(ciphertext) != Some(self.current) {
            // Vault used another version than asked: the row's KEK id would lie.
            return Err(KeyError::Crypto(CryptoError::Encrypt));
        }
        let mut out = Vec::with_capacity(HEADER.len() + ciphertext.len());
        out.extend_from_slice(&HEADER);
        out.extend_from_slice(ciphertext.as_bytes());
        Ok(WrappedDek::from_stored(out))
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        let version = self
            .versions
            .iter()
            .find(|(_, id)| id == ctx.kek_id)
            .map(|(v, _)| *v)
            .ok_or_else(|| KeyError::UnknownKek(ctx.kek_id.clone()))?;
        let bytes = wrapped.as_bytes();
        let text = bytes
            .strip_prefix(&HEADER[..])
            .ok_or(CryptoError::Format("not a Vault Transit wrapped DEK"))?;
        let ciphertext = std::str::from_utf8(text)
            .map_err(|_| CryptoError::Format("Vault Transit ciphertext is not text"))?;
        let found = ciphertext_version(ciphertext).ok_or(CryptoError::Format(
            "Vault Transit ciphertext without a vault:vN: prefix",
        ))?;
        if found != version {
            // A row relabelled with another version's KEK id.
            return Err(KeyError::Crypto(CryptoError::Decrypt));
        }
        let (field, binding) = self.binding(ctx);
        let body = WipedJson(json!({ "ciphertext": ciphertext, field: binding }));
        let answer = self
            .client
            .call(reqwest::Method::POST, &self.decrypt_path, Some(&body))
            .await
            .map_err(|f| classify(f, ctx.kek_id, true))?;
        let plaintext = answer
            .0
            .pointer("/data/plaintext")
            .and_then(Value::as_str)
            .ok_or(KeyError::Crypto(CryptoError::Decrypt))?;
        let decoded = Zeroizing::new(
            STANDARD
                .decode(plaintext)
                .map_err(|_| KeyError::Crypto(CryptoError::Decrypt))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if decoded.len() != key.len() {
            return Err(KeyError::Crypto(CryptoError::Decrypt));
        }
        key.copy_from_slice(&decoded);
        Ok(Dek::from_unwrapped(key))
    }
}

/// `N` of a `vault:vN:...` ciphertext.
fn ciphertext_version(ciphertext: &str) -> Option<u64> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (n, body) = rest.split_once(':')?;
    if body.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// A KV reference: `<mount>/<path>` with an optional `#<field>` (default `value`).
fn parse_kv_ref(key_ref: &str) -> Result<(String, String), KeyError> {
    let (path, field) = match key_ref.trim().split_once('#') {
        Some((p, f)) => (p, f.trim()),
        None => (key_ref.trim(), "value"),
    };
    let path = path.trim().trim_matches('/');
    let bad = path.is_empty()
        || !path.contains('/')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains(['?', '#', '%', ' ']));
    if bad {
        return Err(KeyError::Config(format!(
            "vault-kv: KEK_REF {key_ref:?} is not <mount>/<path>[#field], e.g. secret/rcrt/kek#value"
        )));
    }
    if field.is_empty() {
        return Err(KeyError::Config(format!(
            "vault-kv: KEK_REF {key_ref:?} names an empty field after '#'"
        )));
    }
    Ok((path.to_owned(), field.to_owned()))
}

/// Reads the KEK from a KV path once (`KEK_PROVIDER=vault-kv`): the guide's
/// `vault kv get -field=value secret/rcrt/kek`. `path` is `<mount>/<path>[#<field>]` (field
/// `value` by default); KV version 1 or 2 is detected as the `vault` CLI does. The value is
/// parsed as `LOCAL_KEK_BASE64` is, so the KEK keeps the id it has there. Unavailable answers
/// are retried up to `call.retries` times.
pub async fn read_kv_kek(
    path: &str,
    settings: &VaultSettings,
    call: &CallSettings,
) -> Result<Kek, KeyError> {
    let (path, field) = parse_kv_ref(path)?;
    let client = VaultClient::new(settings, call, "vault-kv")?;
    let shown = format!(
        "vault-kv secret {path} (field {field:?}) at {}",
        client.addr
    );
    let read_hint = "the token's policy needs read on it (for KV v2: on <mount>/data/<path>)";
    // Errors here name the path; a placeholder id stands for the KEK not read yet.
    let pending = remote_kek_id(ProviderKind::VaultKv, &path);
    let fail = |f: Failure| -> KeyError {
        match f {
            Failure::Status(404, _) => KeyError::Config(format!(
                "{shown}: not found: write it with `openssl rand -base64 32 | vault kv put {path} {field}=-`"
            )),
            Failure::Status(401 | 403, e) => {
                KeyError::Config(format!("{shown}: permission denied ({e}): {read_hint}"))
            }
            f => match classify(f, &pending, false) {
                KeyError::Unavailable { reason, .. } => KeyError::Unavailable {
                    kek_id: pending.clone(),
                    provider: ProviderKind::VaultKv,
                    reason: format!("{shown}: {reason}"),
                },
                KeyError::Refused { reason, .. } => KeyError::Config(format!("{shown}: {reason}")),
                other => other,
            },
        }
    };
    let (client_ref, fail_ref, path_ref, shown_ref) = (&client, &fail, &path, &shown);
    let answer = with_retries(call, move || async move {
        let (client, fail, path, shown) = (client_ref, fail_ref, path_ref, shown_ref);
        // As the CLI: which mount holds the path, and its KV version (404: an old Vault, v1).
        let (mount, version) = match client
            .call(
                reqwest::Method::GET,
                &format!("sys/internal/ui/mounts/{path}"),
                None,
            )
            .await
        {
            Ok(v) => {
                let data = v.0.get("data").unwrap_or(&Value::Null);
                let mount = data
                    .get("path")
                    .and_then(Value::as_str)
                    .map(|m| m.trim_matches('/').to_owned())
                    .unwrap_or_default();
                let version = data
                    .pointer("/options/version")
                    .and_then(Value::as_str)
                    .unwrap_or("1")
                    .to_owned();
                (mount, version)
            }
            Err(Failure::Status(404, _)) => (String::new(), "1".to_owned()),
            Err(f) => return Err(fail(f)),
        };
        let read_path = match (version.as_str(), path.strip_prefix(&format!("{mount}/"))) {
            ("2", Some(rest)) if !mount.is_empty() => format!("{mount}/data/{rest}"),
            ("2", _) => {
                return Err(KeyError::Config(format!(
                    "{shown}: names the KV v2 mount itself, not a secret under it"
                )))
            }
            _ => path.to_owned(),
        };
        let v = client
            .call(reqwest::Method::GET, &read_path, None)
            .await
            .map_err(fail)?;
        Ok((v, version == "2"))
    })
    .await?;
    let (answer, v2) = answer;
    let fields = if v2 {
        answer.0.pointer("/data/data")
    } else {
        answer.0.get("data")
    };
    let fields = fields.filter(|f| f.is_object()).ok_or_else(|| {
        KeyError::Config(format!(
            "{shown}: the secret holds no data (deleted or destroyed?)"
        ))
    })?;
    let value = match fields.get(&field) {
        None => {
            return Err(KeyError::Config(format!(
                "{shown}: the secret has no field {field:?}: write the KEK under that field, or name the field with KEK_REF=<path>#<field>"
            )))
        }
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(KeyError::Config(format!(
                "{shown}: field {field:?} is not a string"
            )))
        }
    };
    let source = format!("vault-kv {path}#{field}");
    // Whether the guide's published example may be used is the caller's rule: refused as the
    // current KEK (`KekPlan`), accepted as an old one, to re-wrap a store off it.
    crate::parse_kek(value, &source).map_err(|e| KeyError::Config(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_versions() {
        assert_eq!(ciphertext_version("vault:v1:abc"), Some(1));
        assert_eq!(ciphertext_version("vault:v12:abc"), Some(12));
        assert_eq!(ciphertext_version("vault:v:abc"), None);
        assert_eq!(ciphertext_version("vault:v1:"), None);
        assert_eq!(ciphertext_version("vault:vx:abc"), None);
        assert_eq!(ciphertext_version("vault:v+1:abc"), None);
        assert_eq!(ciphertext_version("v1:abc"), None);
    }

    #[test]
    fn kv_refs() {
        assert_eq!(
            parse_kv_ref("secret/rcrt/kek").unwrap(),
            ("secret/rcrt/kek".to_owned(), "value".to_owned())
        );
        assert_eq!(
            parse_kv_ref("/secret/rcrt/production#kek").unwrap(),
            ("secret/rcrt/production".to_owned(), "kek".to_owned())
        );
        assert!(parse_kv_ref("secret").is_err());
        assert!(parse_kv_ref("secret/../sys").is_err());
        assert!(parse_kv_ref("secret/x#").is_err());
        assert!(parse_kv_ref("").is_err());
    }

    #[test]
    fn ids_are_per_version_and_need_no_address() {
        let v1 = version_id("/transit/rcrt-kek", 1);
        assert_eq!(v1, version_id("/transit/rcrt-kek", 1));
        assert_ne!(v1, version_id("/transit/rcrt-kek", 2));
        assert_ne!(v1, version_id("ns1/transit/rcrt-kek", 1));
        assert!(v1.as_str().starts_with("vault-transit:"));
    }

    #[test]
    fn classification() {
        let id = version_id("/t/k", 1);
        let st = |s: u16, e: &str| Failure::Status(s, e.to_owned());
        assert!(matches!(
            classify(st(400, "cipher: message authentication failed"), &id, true),
            KeyError::Crypto(CryptoError::Decrypt)
        ));
        assert!(matches!(
            classify(
                st(
                    400,
                    "ciphertext or signature version is disallowed by policy (too old)"
                ),
                &id,
                true
            ),
            KeyError::Refused { .. }
        ));
        assert!(matches!(
            classify(st(403, "permission denied"), &id, true),
            KeyError::Refused { .. }
        ));
        assert!(matches!(
            classify(st(404, ""), &id, false),
            KeyError::Refused { .. }
        ));
        assert!(matches!(
            classify(st(503, "Vault is sealed"), &id, true),
            KeyError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(st(429, ""), &id, false),
            KeyError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(Failure::Unreachable("timed out".into()), &id, true),
            KeyError::Unavailable { .. }
        ));
    }

    #[test]
    fn settings_errors_name_no_token() {
        let call = CallSettings::default();
        let mut s = VaultSettings {
            token: Some(Zeroizing::new("s.sekrit-token".into())),
            ..Default::default()
        };
        let e = VaultClient::new(&s, &call, "vault-transit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAULT_ADDR"), "{e}");
        s.addr = Some("http://127.0.0.1:1".into());
        s.token_file = Some("/nonexistent".into());
        let e = VaultClient::new(&s, &call, "vault-transit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both VAULT_TOKEN and VAULT_TOKEN_FILE"), "{e}");
        s.token_file = None;
        let c = VaultClient::new(&s, &call, "vault-transit").unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
        s.token = None;
        let e = VaultClient::new(&s, &call, "vault-transit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("VAULT_TOKEN_FILE"), "{e}");
    }

    #[test]
    fn an_address_with_a_user_or_password_is_refused_without_echoing_it() {
        let call = CallSettings::default();
        let with = |addr: &str| VaultSettings {
            addr: Some(addr.into()),
            token: Some(Zeroizing::new("s.token".into())),
            ..Default::default()
        };
        for addr in [
            "https://vault-user:s3cr3t-pass@vault.example.com:8200",
            "https://vault-user@vault.example.com:8200",
            "http://:s3cr3t-pass@127.0.0.1:8200/",
        ] {
            let e = VaultClient::new(&with(addr), &call, "vault-transit").unwrap_err();
            assert!(matches!(e, KeyError::Config(_)), "{e:?}");
            let e = e.to_string();
            assert!(e.contains("user name or password"), "{e}");
            assert!(!e.contains("s3cr3t") && !e.contains("vault-user"), "{e}");
        }
        // A malformed address with '@' is not echoed either.
        for addr in ["vault-user:s3cr3t-pass@vault:8200", "ftp://u:s3cr3t@vault"] {
            let e = VaultClient::new(&with(addr), &call, "vault-kv")
                .unwrap_err()
                .to_string();
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        // Without userinfo the address is accepted and shown.
        let c =
            VaultClient::new(&with("https://vault.example.com:8200/"), &call, "vault-kv").unwrap();
        assert_eq!(c.addr, "https://vault.example.com:8200");
    }

    #[test]
    fn lifetime_seconds() {
        assert_eq!(seconds(Some(&json!(86400))), 86400);
        assert_eq!(seconds(Some(&json!("3600"))), 3600);
        assert_eq!(seconds(Some(&json!(-1))), 0);
        assert_eq!(seconds(Some(&Value::Null)), 0);
        assert_eq!(seconds(None), 0);
    }
}
