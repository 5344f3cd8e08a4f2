//! Azure Key Vault / Managed HSM: `wrapKey` and `unwrapKey` (REST API 7.4) with an Azure AD
//! client-credentials token.
//!
//! - Sign-in: `POST <AZURE_AUTHORITY_HOST>/<tenant>/oauth2/v2.0/token` with
//!   `grant_type=client_credentials`, the client id and the secret read from
//!   `AZURE_CLIENT_SECRET_FILE`, scope `https://vault.azure.net/.default` (Managed HSM hosts,
//!   `*.managedhsm.azure.net`: `https://managedhsm.azure.net/.default`). The token is cached
//!   until shortly before its `expires_in` and fetched again when the vault answers 401.
//! - Key: `GET <vault>/keys/<name>` gives the current version's `kid`, its `kty`, `key_ops` and
//!   `attributes.enabled`. New wraps use the current version; `connect` and every health probe
//!   look it up again, so a rotation in Key Vault is picked up within one probe interval.
//! - Wrap: `RSA-OAEP-256` for `RSA` / `RSA-HSM` keys, `A256KW` for `oct-HSM` (Managed HSM). Key
//!   Vault's wrapKey takes no associated data, so the row is bound inside what Key Vault seals:
//!   `payload = SHA-256(ctx.encode(header)) (32) || DEK (32)`, checked on unwrap.
//! - Stored bytes: `0x01 | alg | u16 BE kid length | kid (with version) | wrapped value`. An
//!   unwrap goes to the version in the stored kid, so DEKs wrapped under old versions keep
//!   unwrapping after a rotation (as long as those versions stay enabled in Key Vault).
//! - KEK id: `remote_kek_id(azure-keyvault, "<vault origin>/keys/<lower-case name>")`, the same
//!   for every version of the key.
//!
//! Every call is one attempt (plus one token refresh on 401); the keyring's guard adds
//! retries, the circuit and timeouts around it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use rcrt_crypto::{CryptoError, Dek, KekId, WrapContext, WrappedDek};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::settings::{read_secret_file, AzureSettings, CallSettings};
use crate::{alg, remote_kek_id, KekBackend, KeyError, ProviderKind};

/// The Key Vault REST API version every request names.
pub const API_VERSION: &str = "7.4";
/// The default `AZURE_AUTHORITY_HOST`.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
const MANAGED_HSM_SCOPE: &str = "https://managedhsm.azure.net/.default";
const MANAGED_HSM_SUFFIX: &str = ".managedhsm.azure.net";
/// Answers larger than this are not Key Vault's (its key bundles are a few KiB).
const MAX_BODY: usize = 1 << 20;
const FORMAT_VERSION: u8 = 1;

/// base64url as Key Vault writes it (no padding); padding accepted when reading.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The wrap algorithm, from the key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrapAlg {
    /// RSA-OAEP with SHA-256 (RSA and RSA-HSM keys).
    RsaOaep256,
    /// AES key wrap, RFC 3394, 256-bit key (Managed HSM oct-HSM keys).
    A256Kw,
}

impl WrapAlg {
    fn jwa(self) -> &'static str {
        match self {
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::A256Kw => "A256KW",
        }
    }

    fn header_id(self) -> u8 {
        match self {
            Self::RsaOaep256 => alg::AZURE_RSA_OAEP_256,
            Self::A256Kw => alg::AZURE_AES_KW,
        }
    }

    fn from_header_id(id: u8) -> Option<Self> {
        match id {
            alg::AZURE_RSA_OAEP_256 => Some(Self::RsaOaep256),
            alg::AZURE_AES_KW => Some(Self::A256Kw),
            _ => None,
        }
    }
}

/// The key version new wraps use.
#[derive(Debug, Clone)]
struct CurrentKey {
    kid: String,
    version: String,
    alg: WrapAlg,
    /// `attributes.enabled` at the last lookup. Key Vault still answers wrapKey with a
    /// disabled RSA key (a public-key operation) while refusing unwrapKey, so wraps are
    /// refused here once a lookup has seen the key disabled, rather than writing DEKs that
    /// cannot be read back.
    enabled: bool,
}

/// Why one HTTP exchange failed, before it is tied to a KEK id.
#[derive(Debug)]
enum CallError {
    /// Network, timeout, 408, 429, 5xx: worth retrying.
    Unavailable(String),
    /// The service answered and refused (403, 404, other 4xx).
    Refused(String),
    /// 401: the token was not accepted.
    Unauthorized(String),
    /// 400 `BadParameter`: the request's content was refused (on unwrap: the ciphertext).
    BadParameter(String),
}

impl CallError {
    fn reason(&self) -> &str {
        match self {
            Self::Unavailable(r)
            | Self::Refused(r)
            | Self::Unauthorized(r)
            | Self::BadParameter(r) => r,
        }
    }
}

struct CachedToken {
    value: Zeroizing<String>,
    refresh_at: Instant,
    generation: u64,
}

/// Client-credentials sign-in with a cached token.
struct Auth {
    token_url: String,
    tenant_id: String,
    client_id: String,
    client_secret: Zeroizing<String>,
    scope: &'static str,
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Zeroizing<String>,
    #[serde(default)]
    token_type: Option<String>,
    /// A number from the v2.0 endpoint (a string from some older ones).
    expires_in: serde_json::Value,
}

#[derive(Deserialize, Default)]
struct AadError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct KvErrorBody {
    error: KvError,
}

#[derive(Deserialize)]
struct KvError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, alias = "innerError")]
    innererror: Option<KvInner>,
}

#[derive(Deserialize)]
struct KvInner {
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct KeyBundle {
    key: JsonWebKey,
    #[serde(default)]
    attributes: Option<KeyAttributes>,
}

#[derive(Deserialize)]
struct JsonWebKey {
    kid: String,
    kty: String,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    n: Option<String>,
}

#[derive(Deserialize)]
struct KeyAttributes {
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct KeyOperationResult {
    value: Zeroizing<String>,
}

/// A KEK in Azure Key Vault or Managed HSM.
pub struct AzureKek {
    id: KekId,
    /// `scheme://host[:port]` of the vault, as Key Vault writes it in `kid`s.
    origin: String,
    /// The key's name as configured.
    name: String,
    http: reqwest::Client,
    auth: Auth,
    current: Mutex<CurrentKey>,
}

impl std::fmt::Debug for AzureKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureKek")
            .field("id", &self.id)
            .field("key", &format_args!("{}/keys/{}", self.origin, self.name))
            .field("tenant_id", &self.auth.tenant_id)
            .field("client_id", &self.auth.client_id)
            .field("client_secret", &"[REDACTED]")
            .finish()
    }
}

/// Checks an `https` URL (or `http` on 127.0.0.1, for tests) with nothing after the host, and
/// returns its origin.
fn checked_origin(var: &str, raw: &str) -> Result<url::Url, KeyError> {
    let url = url::Url::parse(raw.trim())
        .map_err(|e| KeyError::Config(format!("{var} {:?} is not a URL: {e}", raw.trim())))?;
    let loopback = url.host_str() == Some("127.0.0.1");
    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
        return Err(KeyError::Config(format!(
            "{var} must be an https:// URL (http:// only for 127.0.0.1 in tests), not {:?}",
            raw.trim()
        )));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || !(url.path().is_empty() || url.path() == "/")
    {
        return Err(KeyError::Config(format!(
            "{var} must be the bare host URL, like https://NAME.vault.azure.net/ (no path, query or user info)"
        )));
    }
    Ok(url)
}

/// The token scope for a vault: Managed HSM hosts have their own resource.
fn scope_for(vault: &url::Url) -> &'static str {
    if vault
        .host_str()
        .is_some_and(|h| h.to_ascii_lowercase().ends_with(MANAGED_HSM_SUFFIX))
    {
        MANAGED_HSM_SCOPE
    } else {
        VAULT_SCOPE
    }
}

fn required<'a>(value: &'a Option<String>, var: &str) -> Result<&'a str, KeyError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(KeyError::Config(format!(
            "KEK_PROVIDER=azure-keyvault needs {var}"
        ))),
    }
}

/// A Key Vault key name: 1-127 letters, digits and dashes.
fn valid_key_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Text from the service, made safe and short for an error message.
fn clean(text: &str) -> String {
    let first = text
        .split(['\r', '\n'])
        .next()
        .unwrap_or("")
        .split(" Trace ID:")
        .next()
        .unwrap_or("");
    first
        .chars()
        .filter(|c| !c.is_control())
        .take(240)
        .collect()
}

/// A request body whose buffer is wiped when the HTTP client drops it (it may hold the client
/// secret or a DEK).
fn wiped_on_drop(text: &Zeroizing<String>) -> reqwest::Body {
    let owned: Zeroizing<Vec<u8>> = Zeroizing::new(text.as_bytes().to_vec());
    reqwest::Body::from(bytes::Bytes::from_owner(owned))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a whole answer, refusing huge ones, into a buffer that is wiped when dropped (key
/// material comes back in unwrap answers).
async fn read_body(resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, CallError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(CallError::Unavailable(
            "the answer is too large to be Key Vault's".into(),
        ));
    }
    let bytes = resp.bytes().await.map_err(|e| {
        CallError::Unavailable(format!("reading the answer failed: {}", reqwest_reason(&e)))
    })?;
    if bytes.len() > MAX_BODY {
        return Err(CallError::Unavailable(
            "the answer is too large to be Key Vault's".into(),
        ));
    }
    let copy = Zeroizing::new(bytes.to_vec());
    // Best effort: wipe the transport's buffer too when this is its only handle.
    if let Ok(mut original) = bytes.try_into_mut() {
        original[..].zeroize();
    }
    Ok(copy)
}

/// A transport error's kind, without the URL's query or anything from the request.
fn reqwest_reason(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({})", clean(&detail))
    }
}

fn classify_vault_error(status: reqwest::StatusCode, body: &[u8]) -> CallError {
    let parsed = serde_json::from_slice::<KvErrorBody>(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.error.code.clone())
        .unwrap_or_default();
    let mut reason = format!("Key Vault answered HTTP {}", status.as_u16());
    if let Some(b) = &parsed {
        if !code.is_empty() {
            reason.push(' ');
            reason.push_str(&clean(&code));
        }
        if let Some(inner) = b.error.innererror.as_ref().and_then(|i| i.code.as_deref()) {
            reason.push('/');
            reason.push_str(&clean(inner));
        }
        if let Some(m) = b.error.message.as_deref() {
            reason.push_str(": ");
            reason.push_str(&clean(m));
        }
    }
    match status.as_u16() {
        401 => CallError::Unauthorized(reason),
        400 if code == "BadParameter" => CallError::BadParameter(reason),
        408 | 429 | 500..=599 => CallError::Unavailable(reason),
        _ => CallError::Refused(reason),
    }
}

impl Auth {
    /// A token, from the cache unless it is due for refresh or is the one (by generation) the
    /// vault just refused.
    async fn token(
        &self,
        http: &reqwest::Client,
        refused: Option<u64>,
    ) -> Result<(Zeroizing<String>, u64), CallError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref() {
            if Instant::now() < t.refresh_at && refused != Some(t.generation) {
                return Ok((t.value.clone(), t.generation));
            }
        }
        let generation = cache.as_ref().map_or(1, |t| t.generation.wrapping_add(1));
        *cache = None;
        let (value, lifetime) = self.fetch(http).await?;
        // Refresh shortly before expiry: a quarter of the lifetime early, at most 5 minutes.
        let margin = (lifetime / 4).min(Duration::from_secs(300));
        let fresh = CachedToken {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
            generation,
        };
        *cache = Some(fresh);
        Ok((value, generation))
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(Zeroizing<String>, Duration), CallError> {
        let body = Zeroizing::new(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "client_credentials")
                .append_pair("client_id", &self.client_id)
                .append_pair("client_secret", &self.client_secret)
                .append_pair("scope", self.scope)
                .finish(),
        );
        let resp = http
            .post(&self.token_url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(wiped_on_drop(&body))
            .send()
            .await
            .map_err(|e| {
                CallError::Unavailable(format!("Azure AD token request: {}", reqwest_reason(&e)))
            })?;
        let status = resp.status();
        let text = read_body(resp).await?;
        if !status.is_success() {
            let err = serde_json::from_slice::<AadError>(&text).unwrap_or_default();
            let mut reason = format!("Azure AD answered HTTP {}", status.as_u16());
            if let Some(e) = err.error.as_deref() {
                reason.push(' ');
                reason.push_str(&clean(e));
            }
            if let Some(d) = err.error_description.as_deref() {
                reason.push_str(": ");
                reason.push_str(&clean(d));
            }
            return Err(match status.as_u16() {
                408 | 429 | 500..=599 => CallError::Unavailable(reason),
                _ => CallError::Refused(reason),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&text).map_err(|_| {
            CallError::Unavailable("Azure AD's token answer is not the expected JSON".into())
        })?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(CallError::Refused(
                "Azure AD issued a token that is not a Bearer token".into(),
            ));
        }
        let seconds = match &answer.expires_in {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        if answer.access_token.is_empty() {
            return Err(CallError::Refused("Azure AD issued an empty token".into()));
        }
        Ok((answer.access_token, Duration::from_secs(seconds)))
    }
}

impl AzureKek {
    /// Reads the settings and the client secret, signs in, checks that the key exists, is
    /// enabled, permits wrapKey and unwrapKey, and that a wrap and unwrap round trip works.
    /// Every failure is a [`KeyError::Config`] naming the vault and key, never the secret.
    pub async fn connect(
        key_name: &str,
        settings: &AzureSettings,
        call: &CallSettings,
    ) -> Result<Self, KeyError> {
        let key_name = key_name.trim();
        if !valid_key_name(key_name) {
            return Err(KeyError::Config(format!(
                "AZURE_KEY_NAME (KEK_REF) {key_name:?} is not a Key Vault key name (1-127 letters, digits and dashes)"
            )));
        }
        let vault = checked_origin(
            "AZURE_KEY_VAULT_URL",
            required(&settings.vault_url, "AZURE_KEY_VAULT_URL")?,
        )?;
        let origin = vault.origin().ascii_serialization();
        let tenant_id = required(&settings.tenant_id, "AZURE_TENANT_ID")?.to_owned();
        if !tenant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(KeyError::Config(format!(
                "AZURE_TENANT_ID {tenant_id:?} is not a tenant id or domain"
            )));
        }
        let client_id = required(&settings.client_id, "AZURE_CLIENT_ID")?.to_owned();
        let secret_path = settings.client_secret_file.as_ref().ok_or_else(|| {
            KeyError::Config(
                "KEK_PROVIDER=azure-keyvault needs AZURE_CLIENT_SECRET_FILE (the client secret is only read from a file)".into(),
            )
        })?;
        let client_secret = read_secret_file("AZURE_CLIENT_SECRET_FILE", secret_path)?;
        let authority = checked_origin(
            "AZURE_AUTHORITY_HOST",
            settings
                .authority_host
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or(DEFAULT_AUTHORITY_HOST),
        )?;
        let scope = scope_for(&vault);
        let loopback =
            vault.host_str() == Some("127.0.0.1") && authority.host_str() == Some("127.0.0.1");
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(call.timeout)
            .connect_timeout(call.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rcrt-secrets/", env!("CARGO_PKG_VERSION")));
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| {
            KeyError::Config(format!(
                "azure-keyvault: cannot set up the HTTP client: {e}"
            ))
        })?;
        let canonical = format!("{origin}/keys/{}", key_name.to_ascii_lowercase());
        let kek = Self {
            id: remote_kek_id(ProviderKind::AzureKeyVault, &canonical),
            origin: origin.clone(),
            name: key_name.to_owned(),
            auth: Auth {
                token_url: format!(
                    "{}/{tenant_id}/oauth2/v2.0/token",
                    authority.origin().ascii_serialization()
                ),
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                client_secret,
                scope,
                cache: tokio::sync::Mutex::new(None),
            },
            http,
            current: Mutex::new(CurrentKey {
                kid: String::new(),
                version: String::new(),
                alg: WrapAlg::RsaOaep256,
                enabled: false,
            }),
        };
        let at = format!("Azure Key Vault key {origin}/keys/{key_name}");
        if let Err(e) = kek.auth.token(&kek.http, None).await {
            return Err(KeyError::Config(format!(
                "azure-keyvault: signing in as client {client_id} in tenant {tenant_id} (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET_FILE) failed: {}",
                e.reason()
            )));
        }
        kek.refresh_current().await.map_err(|e| {
            KeyError::Config(format!(
                "azure-keyvault: {at} cannot be used: {}",
                reason_of(&e)
            ))
        })?;
        crate::probe_by_round_trip(&kek).await.map_err(|e| {
            KeyError::Config(format!(
                "azure-keyvault: {at} failed a wrapKey/unwrapKey round trip (the service principal needs wrapKey, unwrapKey and get on the key, e.g. the Key Vault Crypto User role): {}",
                reason_of(&e)
            ))
        })?;
        Ok(kek)
    }

    fn unavailable(&self, e: CallError) -> KeyError {
        self.to_key_error(e, false)
    }

    /// Ties a failed exchange to this KEK; `unwrap`: a `BadParameter` is the ciphertext.
    fn to_key_error(&self, e: CallError, unwrap: bool) -> KeyError {
        match e {
            CallError::Unavailable(reason) => KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AzureKeyVault,
                reason,
            },
            CallError::BadParameter(_) if unwrap => KeyError::Crypto(CryptoError::Decrypt),
            CallError::Refused(reason)
            | CallError::Unauthorized(reason)
            | CallError::BadParameter(reason) => KeyError::Refused {
                kek_id: self.id.clone(),
                provider: ProviderKind::AzureKeyVault,
                reason,
            },
        }
    }

    fn refused(&self, reason: impl Into<String>) -> KeyError {
        KeyError::Refused {
            kek_id: self.id.clone(),
            provider: ProviderKind::AzureKeyVault,
            reason: reason.into(),
        }
    }

    fn key_url(&self, version: &str, op: &str) -> String {
        let mut url = format!("{}/keys/{}", self.origin, self.name);
        if !version.is_empty() {
            url.push('/');
            url.push_str(version);
        }
        if !op.is_empty() {
            url.push('/');
            url.push_str(op);
        }
        url.push_str("?api-version=");
        url.push_str(API_VERSION);
        url
    }

    /// The version named by a `kid`, if the kid is a version of this key in this vault.
    fn version_of<'a>(&self, kid: &'a str) -> Option<&'a str> {
        let rest = kid.strip_prefix(self.origin.as_str()).or_else(|| {
            // Hosts compare without case.
            kid.get(..self.origin.len())
                .filter(|p| p.eq_ignore_ascii_case(&self.origin))
                .and_then(|_| kid.get(self.origin.len()..))
        })?;
        let rest = rest.strip_prefix("/keys/")?;
        let (name, version) = rest.split_once('/')?;
        let ok = name.eq_ignore_ascii_case(&self.name)
            && (1..=64).contains(&version.len())
            && version.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then_some(version)
    }

    /// One vault request with the cached token; on 401 the token is fetched again and the
    /// request sent once more.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Zeroizing<String>>,
    ) -> Result<Zeroizing<Vec<u8>>, CallError> {
        let (token, generation) = self.auth.token(&self.http, None).await?;
        match self.send_once(method.clone(), url, body, &token).await {
            Err(CallError::Unauthorized(_)) => {
                let (token, _) = self.auth.token(&self.http, Some(generation)).await?;
                match self.send_once(method, url, body, &token).await {
                    Err(CallError::Unauthorized(reason)) => Err(CallError::Refused(reason)),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Zeroizing<String>>,
        token: &str,
    ) -> Result<Zeroizing<Vec<u8>>, CallError> {
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(wiped_on_drop(body));
        }
        let resp = req.send().await.map_err(|e| {
            CallError::Unavailable(format!("Key Vault request: {}", reqwest_reason(&e)))
        })?;
        let status = resp.status();
        let text = read_body(resp).await?;
        if status.is_success() {
            Ok(text)
        } else if status.is_redirection() {
            Err(CallError::Refused(format!(
                "Key Vault answered a redirect (HTTP {}): check AZURE_KEY_VAULT_URL",
                status.as_u16()
            )))
        } else {
            Err(classify_vault_error(status, &text))
        }
    }

    /// Looks up the key's current version and checks it can wrap and unwrap.
    async fn refresh_current(&self) -> Result<(), KeyError> {
        let body = self
            .send(reqwest::Method::GET, &self.key_url("", ""), None)
            .await
            .map_err(|e| self.unavailable(e))?;
        let bundle: KeyBundle =
            serde_json::from_slice(&body).map_err(|_| KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AzureKeyVault,
                reason: "Key Vault's key answer is not the expected JSON".into(),
            })?;
        let enabled = bundle.attributes.and_then(|a| a.enabled) != Some(false);
        let alg = match bundle.key.kty.as_str() {
            "RSA" | "RSA-HSM" => WrapAlg::RsaOaep256,
            "oct-HSM" | "oct" => WrapAlg::A256Kw,
            other => {
                return Err(self.refused(format!(
                    "the key type is {}, not RSA, RSA-HSM or oct-HSM",
                    clean(other)
                )))
            }
        };
        if let Some(ops) = &bundle.key.key_ops {
            for needed in ["wrapKey", "unwrapKey"] {
                if !ops.iter().any(|o| o == needed) {
                    return Err(self.refused(format!("the key's key_ops do not permit {needed}")));
                }
            }
        }
        if alg == WrapAlg::RsaOaep256 {
            let bits = bundle
                .key
                .n
                .as_deref()
                .and_then(|n| B64URL.decode(n).ok())
                .map(|n| n.iter().skip_while(|&&b| b == 0).count() * 8);
            if bits.is_some_and(|b| b < 2048) {
                return Err(self.refused(
                    "the RSA key is shorter than 2048 bits (create it with --size 3072)",
                ));
            }
        }
        let Some(version) = self.version_of(&bundle.key.kid) else {
            return Err(self.refused(format!(
                "Key Vault named the key {}, which is not a version of {}/keys/{}",
                clean(&bundle.key.kid),
                self.origin,
                self.name
            )));
        };
        let fresh = CurrentKey {
            version: version.to_owned(),
            kid: bundle.key.kid.clone(),
            alg,
            enabled,
        };
        match self.current.lock() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        if !enabled {
            return Err(self.refused("the key is disabled in Key Vault"));
        }
        Ok(())
    }

    fn current(&self) -> CurrentKey {
        match self.current.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `SHA-256(ctx.encode(header))`: what binds a wrap to its row.
    fn binding(ctx: &WrapContext<'_>, header: [u8; 2]) -> ring::digest::Digest {
        ring::digest::digest(&ring::digest::SHA256, &ctx.encode(&header))
    }

    /// One wrapKey/unwrapKey request body.
    fn op_body(alg: WrapAlg, value: &[u8]) -> Zeroizing<String> {
        let mut encoded = Zeroizing::new(B64URL.encode(value));
        let body = Zeroizing::new(
            serde_json::json!({ "alg": alg.jwa(), "value": encoded.as_str() }).to_string(),
        );
        encoded.zeroize();
        body
    }
}

fn reason_of(e: &KeyError) -> String {
    match e {
        KeyError::Unavailable { reason, .. } | KeyError::Refused { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl KekBackend for AzureKek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::AzureKeyVault
    }

    fn describe(&self) -> String {
        format!("Azure Key Vault key {}/keys/{}", self.origin, self.name)
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != &self.id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        let current = self.current();
        if !current.enabled {
            return Err(
                self.refused("the key was disabled in Key Vault at the last lookup (health probe)")
            );
        }
        let header = [FORMAT_VERSION, current.alg.header_id()];
        let mut payload = Zeroizing::new([0u8; 64]);
        payload[..32].copy_from_slice(Self::binding(ctx, header).as_ref());
        payload[32..].copy_from_slice(dek.expose_secret());
        let body = Self::op_body(current.alg, &payload[..]);
        let answer = self
            .send(
                reqwest::Method::POST,
                &self.key_url(&current.version, "wrapkey"),
                Some(&body),
            )
            .await
            .map_err(|e| self.to_key_error(e, false))?;
        let result: KeyOperationResult =
            serde_json::from_slice(&answer).map_err(|_| KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AzureKeyVault,
                reason: "Key Vault's wrapKey answer is not the expected JSON".into(),
            })?;
        let wrapped = B64URL
            .decode(result.value.as_str())
            .map_err(|_| KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AzureKeyVault,
                reason: "Key Vault's wrapKey answer is not base64url".into(),
            })?;
        let kid = current.kid.as_bytes();
        let kid_len =
            u16::try_from(kid.len()).map_err(|_| self.refused("Key Vault's key id is too long"))?;
        if wrapped.is_empty() {
            return Err(self.refused("Key Vault's wrapKey answer is empty"));
        }
        let mut out = Vec::with_capacity(4 + kid.len() + wrapped.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&kid_len.to_be_bytes());
        out.extend_from_slice(kid);
        out.extend_from_slice(&wrapped);
        Ok(WrappedDek::from_stored(out))
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        let bytes = wrapped.as_bytes();
        let (header, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(CryptoError::Format("wrapped DEK too short"))?;
        let alg = match header {
            [FORMAT_VERSION, id] => WrapAlg::from_header_id(*id),
            _ => None,
        }
        .ok_or(CryptoError::Format("not an Azure Key Vault wrapped DEK"))?;
        let (len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(CryptoError::Format("wrapped DEK too short"))?;
        let kid_len = usize::from(u16::from_be_bytes(*len));
        let (kid, value) = (rest.get(..kid_len), rest.get(kid_len..));
        let (Some(kid), Some(value)) = (kid, value) else {
            return Err(CryptoError::Format("wrapped DEK too short").into());
        };
        if value.is_empty() {
            return Err(CryptoError::Format("wrapped DEK too short").into());
        }
        let kid = std::str::from_utf8(kid)
            .map_err(|_| CryptoError::Format("Azure key id is not text"))?;
        let version = self.version_of(kid).ok_or(CryptoError::Format(
            "wrapped under another Azure Key Vault key",
        ))?;
        let body = Self::op_body(alg, value);
        let answer = self
            .send(
                reqwest::Method::POST,
                &self.key_url(version, "unwrapkey"),
                Some(&body),
            )
            .await
            .map_err(|e| self.to_key_error(e, true))?;
        let result: KeyOperationResult =
            serde_json::from_slice(&answer).map_err(|_| KeyError::Unavailable {
                kek_id: self.id.clone(),
                provider: ProviderKind::AzureKeyVault,
                reason: "Key Vault's unwrapKey answer is not the expected JSON".into(),
            })?;
        let mut payload = Zeroizing::new(Vec::with_capacity(96));
        B64URL
            .decode_vec(result.value.as_str(), &mut payload)
            .map_err(|_| CryptoError::Decrypt)?;
        if payload.len() != 64 {
            return Err(CryptoError::Decrypt.into());
        }
        let expected = Self::binding(ctx, *header);
        let (bound, key) = payload.split_at(32);
        if !constant_time_eq(bound, expected.as_ref()) {
            return Err(CryptoError::Decrypt.into());
        }
        let mut dek = Zeroizing::new([0u8; 32]);
        dek.copy_from_slice(key);
        Ok(Dek::from_unwrapped(dek))
    }

    /// Looks the key up again (its current version, enabled, key_ops), then wraps and unwraps
    /// a throwaway DEK.
    async fn probe(&self) -> Result<(), KeyError> {
        self.refresh_current().await?;
        crate::probe_by_round_trip(self).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(checked_origin("V", "https://x.vault.azure.net/").is_ok());
        assert!(checked_origin("V", "http://127.0.0.1:8200").is_ok());
        assert!(checked_origin("V", "http://x.vault.azure.net/").is_err());
        assert!(checked_origin("V", "https://x.vault.azure.net/keys").is_err());
        assert!(checked_origin("V", "https://u:p@x.vault.azure.net/").is_err());
        assert_eq!(
            checked_origin("V", "https://X.Vault.Azure.NET:443/")
                .unwrap()
                .origin()
                .ascii_serialization(),
            "https://x.vault.azure.net"
        );
    }

    #[test]
    fn managed_hsm_has_its_own_scope() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            scope_for(&url("https://rcrt.vault.azure.net/")),
            "https://vault.azure.net/.default"
        );
        assert_eq!(
            scope_for(&url("https://rcrt-hsm.managedhsm.azure.net/")),
            "https://managedhsm.azure.net/.default"
        );
        assert_eq!(
            scope_for(&url("https://managedhsm.azure.net.example.com/")),
            "https://vault.azure.net/.default"
        );
    }

    #[test]
    fn key_names() {
        assert!(valid_key_name("rcrt-kek-1"));
        assert!(!valid_key_name(""));
        assert!(!valid_key_name("a/b"));
        assert!(!valid_key_name("a?b"));
        assert!(!valid_key_name(&"a".repeat(128)));
    }

    #[test]
    fn vault_errors_are_classified() {
        let body = br#"{"error":{"code":"Forbidden","message":"Operation wrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#;
        let e = classify_vault_error(reqwest::StatusCode::FORBIDDEN, body);
        assert!(
            matches!(&e, CallError::Refused(r) if r.contains("KeyDisabled")),
            "{e:?}"
        );
        let e = classify_vault_error(
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"error":{"code":"BadParameter","message":"x"}}"#,
        );
        assert!(matches!(e, CallError::BadParameter(_)));
        let e = classify_vault_error(
            reqwest::StatusCode::NOT_FOUND,
            br#"{"error":{"code":"KeyNotFound","message":"x"}}"#,
        );
        assert!(matches!(e, CallError::Refused(_)));
        for s in [429u16, 500, 502, 503, 504, 408] {
            let e = classify_vault_error(reqwest::StatusCode::from_u16(s).unwrap(), b"<html>");
            assert!(matches!(e, CallError::Unavailable(_)), "{s}");
        }
        let e = classify_vault_error(reqwest::StatusCode::UNAUTHORIZED, b"");
        assert!(matches!(e, CallError::Unauthorized(_)));
    }

    #[test]
    fn service_text_is_cleaned() {
        assert_eq!(
            clean("AADSTS7000215: Invalid client secret provided. Trace ID: abc\r\nCorrelation"),
            "AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(clean("a\u{1b}[31mb"), "a[31mb");
    }
}
