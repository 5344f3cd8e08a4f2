//! Authentication: turns a request's credential into a [`Principal`].
//!
//! The credential comes from `Authorization: Bearer <credential>` or `X-API-Key: <credential>`.
//! A service token (`rcrt_...`) is checked by `rcrt_core` against its stored hash; anything
//! else is taken for a JWT.
//!
//! The algorithm is pinned by the key, never taken from the token: an RSA key verifies RS256
//! only, a P-256 key ES256, an Ed25519 key EdDSA, an HS256 secret HS256. `alg: none` and RS/HS
//! confusion therefore cannot pass. `iss`, `aud`, `exp` and `nbf` are checked with 30 s leeway,
//! and every claim must have its type (a string `nbf` or an array `iss` is refused, not
//! skipped). A header with `crit` is refused: this verifier understands no extension.
//!
//! A JWKS is fetched over https (plain http only to a loopback host), at most 256 KiB, kept for
//! its `Cache-Control: max-age` (between 10 s and 1 h; 5 min without one), then fetched again, so
//! a key the identity provider removes stops working within that time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use rcrt_core::tokens::TokenAuthError;
use rcrt_core::Service;
use rcrt_types::{Principal, Role, TenantId};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use zeroize::Zeroizing;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// A JWKS is fetched again (for an unknown `kid` or once stale) at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(10);
/// How long a JWKS is used without `Cache-Control: max-age`.
const JWKS_DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The longest a JWKS is used before it is fetched again, whatever its `max-age`.
const JWKS_MAX_TTL: Duration = Duration::from_secs(3600);
/// The largest JWKS response read.
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// Why a request was not authenticated. The client sees one generic 401 (or a 503 when the
/// store could not be asked); this goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` or `X-API-Key` header.
    #[error("missing credential")]
    Missing,
    /// A credential of a kind this server does not accept (a token with tokens off, a JWT
    /// with JWTs off).
    #[error("credential kind not accepted here")]
    NotAccepted,
    /// A service token failed its check.
    #[error("service token refused: {0}")]
    Token(#[source] TokenAuthError),
    /// The token store could not be asked.
    #[error("token store unavailable")]
    Unavailable,
    /// The token failed a check (signature, algorithm, claims, time). A fixed class name, never
    /// text from the token: the JWT library's messages quote the attacker's header.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The key set could not be fetched (the error text escaped: it may quote the response).
    #[error("JWKS unavailable: {0}")]
    Jwks(String),
}

/// Why the JWT configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// A key file could not be read.
    #[error("cannot read {var} {path}: {error}")]
    File {
        /// The variable.
        var: &'static str,
        /// The path.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// A key could not be parsed.
    #[error("{0}")]
    Key(String),
}

/// Where verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// One PEM public key (RSA, P-256 or Ed25519) from a file.
    PublicKeyFile(std::path::PathBuf),
    /// A JWKS URL, cached and refetched on an unknown `kid`.
    JwksUrl(String),
    /// An HS256 shared secret from a file (at least 32 bytes).
    Hs256SecretFile(std::path::PathBuf),
}

enum Keys {
    Fixed(DecodingKey, Algorithm),
    Jwks {
        url: String,
        client: reqwest::Client,
        cache: RwLock<JwksCache>,
        last_fetch: Mutex<Option<Instant>>,
    },
}

/// The keys of the last JWKS fetched, and until when to use them without fetching again.
#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fresh_until: Option<Instant>,
}

/// `max-age` of a `Cache-Control` header, clamped to [`JWKS_REFETCH`, `JWKS_MAX_TTL`].
fn jwks_ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|v| {
        v.split(',')
            .filter_map(|d| d.trim().strip_prefix("max-age="))
            .find_map(|n| n.trim().parse::<u64>().ok())
    });
    match max_age {
        None => JWKS_DEFAULT_TTL,
        Some(secs) => Duration::from_secs(secs).clamp(JWKS_REFETCH, JWKS_MAX_TTL),
    }
}

/// Verifies tokens for one issuer and audience.
pub struct JwtVerifier {
    issuer: String,
    audience: String,
    keys: Keys,
}

/// The claims, with their types enforced: the JWT library checks `exp`, `nbf`, `iss` and `aud`
/// only when they parse as it expects and skips them otherwise, so a claim of the wrong type
/// (a string `nbf`, an array `iss`) must fail here.
#[derive(Deserialize)]
#[allow(dead_code)] // The time and issuer fields exist to be type-checked; the library compares them.
struct Claims {
    sub: String,
    owner_id: String,
    iss: String,
    aud: Audience,
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    workspaces: Vec<String>,
}

/// `aud`: one string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

fn pem_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), JwtConfigError> {
    let text = String::from_utf8_lossy(pem);
    // The PEM label says which kind of key it is; try the matching parser only.
    if text.contains("BEGIN RSA PUBLIC KEY") || text.contains("BEGIN PUBLIC KEY") {
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok((k, Algorithm::RS256));
        }
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Ok((k, Algorithm::ES256));
        }
        if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            return Ok((k, Algorithm::EdDSA));
        }
    }
    Err(JwtConfigError::Key(
        "JWT_PUBLIC_KEY_FILE must hold an RSA, P-256 or Ed25519 public key in PEM".into(),
    ))
}

/// The algorithm a JWK may verify: from its `alg` if present, else from its key type.
fn jwk_key(jwk: &Jwk) -> Option<(DecodingKey, Algorithm)> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    // A JWK that declares another algorithm than its key type allows is refused.
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => alg == Algorithm::EdDSA,
        Some(_) => false,
    };
    if !declared_ok {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok().map(|k| (k, alg))
}

impl JwtVerifier {
    /// A verifier for tokens from `issuer` to `audience`, with keys from `source`.
    pub fn new(
        issuer: String,
        audience: String,
        source: KeySource,
    ) -> Result<Self, JwtConfigError> {
        let read = |var: &'static str, path: &std::path::Path| {
            std::fs::read(path)
                .map(Zeroizing::new)
                .map_err(|error| JwtConfigError::File {
                    var,
                    path: path.display().to_string(),
                    error,
                })
        };
        let keys = match source {
            KeySource::PublicKeyFile(path) => {
                let (k, a) = pem_key(&read("JWT_PUBLIC_KEY_FILE", &path)?)?;
                Keys::Fixed(k, a)
            }
            KeySource::Hs256SecretFile(path) => {
                let bytes = read("JWT_HS256_SECRET_FILE", &path)?;
                // Only a trailing line break (from `echo`) is dropped: a random binary secret
                // may legitimately begin or end with any byte.
                let secret = bytes
                    .strip_suffix(b"\n")
                    .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
                    .unwrap_or(&bytes);
                if secret.len() < 32 {
                    return Err(JwtConfigError::Key(
                        "JWT_HS256_SECRET_FILE must hold at least 32 bytes".into(),
                    ));
                }
                Keys::Fixed(DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            KeySource::JwksUrl(url) => Keys::Jwks {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    // A redirect could lead from https to plain http: follow none.
                    .redirect(reqwest::redirect::Policy::none())
                    .https_only(url.starts_with("https:"))
                    .build()
                    .map_err(|e| JwtConfigError::Key(e.to_string()))?,
                url,
                cache: RwLock::new(JwksCache::default()),
                last_fetch: Mutex::new(None),
            },
        };
        Ok(Self {
            issuer,
            audience,
            keys,
        })
    }

    async fn fetch_jwks(&self) -> Result<(), AuthError> {
        let Keys::Jwks {
            url,
            client,
            cache,
            last_fetch,
        } = &self.keys
        else {
            return Ok(());
        };
        let mut last = last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let escaped = |e: reqwest::Error| AuthError::Jwks(e.to_string().escape_debug().to_string());
        let mut resp = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(escaped)?;
        let ttl = jwks_ttl(
            resp.headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        if resp
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
        {
            return Err(AuthError::Jwks(format!(
                "larger than {JWKS_MAX_BYTES} bytes"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(escaped)? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(AuthError::Jwks(format!(
                    "larger than {JWKS_MAX_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|_| AuthError::Jwks("the response is not a JWK set".into()))?;
        let keys: HashMap<_, _> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk_key(jwk)?)))
            .collect();
        *cache.write().await = JwksCache {
            keys,
            fresh_until: Some(Instant::now() + ttl),
        };
        Ok(())
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<(DecodingKey, Algorithm), AuthError> {
        match &self.keys {
            Keys::Fixed(k, a) => Ok((k.clone(), *a)),
            Keys::Jwks { cache, .. } => {
                let kid = kid.ok_or(AuthError::Invalid("token has no kid"))?;
                {
                    let c = cache.read().await;
                    let fresh = c.fresh_until.is_some_and(|t| Instant::now() < t);
                    if let (true, Some(found)) = (fresh, c.keys.get(kid)) {
                        return Ok(found.clone());
                    }
                }
                // Stale, or an unknown kid: fetch again (rate limited). If the fetch fails, a
                // stale set still answers: an identity provider's outage must not lock everyone
                // out, and a removed key is dropped at the next successful fetch.
                if let Err(e) = self.fetch_jwks().await {
                    tracing::warn!(error = %e, "JWKS fetch failed; using the keys fetched before");
                }
                cache
                    .read()
                    .await
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or(AuthError::Invalid("unknown kid"))
            }
        }
    }

    /// Verifies a token and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(self.verify_until(token).await?.0)
    }

    /// Verifies a token and returns its principal and its `exp`: when a session opened with it
    /// must end.
    pub async fn verify_until(
        &self,
        token: &str,
    ) -> Result<(Principal, time::OffsetDateTime), AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(jwt_error_class(&e)))?;
        if has_crit(token) {
            return Err(AuthError::Invalid("critical header extension"));
        }
        let (key, alg) = self.key_for(header.kid.as_deref()).await?;
        if header.alg != alg {
            return Err(AuthError::Invalid("algorithm does not match the key"));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(jwt_error_class(&e)))?;
        let c = data.claims;
        if c.sub.is_empty() || c.owner_id.is_empty() {
            return Err(AuthError::Invalid("sub and owner_id must not be empty"));
        }
        // Whole seconds (a fractional `exp` rounds down: the session ends no later).
        #[allow(clippy::cast_possible_truncation)]
        let exp = time::OffsetDateTime::from_unix_timestamp(c.exp.floor() as i64)
            .map_err(|_| AuthError::Invalid("exp out of range"))?;
        let principal = Principal {
            user_id: c.sub,
            tenant: TenantId::new(c.owner_id),
            roles: c.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            workspaces: c.workspaces,
            // A JWT's `exp` ends a session, not the authority behind it (the identity provider
            // issues the next one), so it does not cap the tokens its holder mints.
            expires_at: None,
        };
        Ok((principal, exp))
    }
}

/// True if the token's header has a `crit` member (RFC 7515 4.1.11: a recipient that does not
/// understand the listed extensions must refuse the token; this one understands none). The JWT
/// library ignores `crit`, so the header is read here as JSON.
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|h| h.get("crit").is_some())
}

/// A fixed name for what the JWT library refused: its own messages quote the token (an `alg`
/// string with a newline and an escape sequence wrote a forged log line), so only this goes to
/// the log.
fn jwt_error_class(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "malformed token",
        K::InvalidSignature => "invalid signature",
        K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::RsaFailedSigning | K::InvalidKeyFormat => {
            "unusable key"
        }
        K::MissingRequiredClaim(_) => "missing required claim",
        K::ExpiredSignature => "expired",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::InvalidSubject => "wrong subject",
        K::ImmatureSignature => "not yet valid",
        K::InvalidAlgorithm | K::MissingAlgorithm => "algorithm not allowed",
        K::Base64(_) => "malformed base64",
        K::Json(_) => "malformed header or claims",
        K::Utf8(_) => "malformed utf-8",
        K::Crypto(_) => "signature check failed",
        _ => "invalid token",
    }
}

/// How the server authenticates requests.
pub struct Authenticator {
    /// JWTs, if accepted.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Service tokens accepted.
    pub tokens: bool,
}

/// The credential a request presents: `Authorization: Bearer <c>` (scheme in any case), else
/// `X-API-Key: <c>`. `Ok(None)` when there is none.
pub fn credential<'a>(authorization: Option<&'a str>, api_key: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization.and_then(|h| {
        let (scheme, rest) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .or_else(|| api_key.map(str::trim))
        .filter(|c| !c.is_empty())
}

impl Authenticator {
    /// Every request is [`Principal::anonymous`].
    pub const DISABLED: Self = Self {
        jwt: None,
        tokens: false,
    };

    /// True when every request is [`Principal::anonymous`].
    pub fn is_disabled(&self) -> bool {
        self.jwt.is_none() && !self.tokens
    }

    /// The principal for a request's credential (see [`credential`]).
    pub async fn authenticate(
        &self,
        service: &Service,
        credential: Option<&str>,
    ) -> Result<Principal, AuthError> {
        if self.is_disabled() {
            return Ok(Principal::anonymous());
        }
        let credential = credential.ok_or(AuthError::Missing)?;
        if credential.starts_with(rcrt_crypto::TOKEN_PREFIX) {
            if !self.tokens {
                return Err(AuthError::NotAccepted);
            }
            return service
                .authenticate_token(credential)
                .await
                .map_err(|e| match e {
                    TokenAuthError::Unavailable(_) => AuthError::Unavailable,
                    other => AuthError::Token(other),
                });
        }
        match &self.jwt {
            Some(v) => v.verify(credential).await,
            None => Err(AuthError::NotAccepted),
        }
    }
}

impl Authenticator {
    /// Like [`Authenticator::authenticate`], for opening a console session: the principal, and
    /// when a session opened with this credential must end at the latest (a service token's
    /// expiry, a JWT's `exp`; `None`: no end of its own).
    pub async fn authenticate_for_session(
        &self,
        service: &Service,
        credential: &str,
    ) -> Result<(Principal, Option<time::OffsetDateTime>), AuthError> {
        match &self.jwt {
            Some(v) if !credential.starts_with(rcrt_crypto::TOKEN_PREFIX) => {
                let (principal, exp) = v.verify_until(credential).await?;
                Ok((principal, Some(exp)))
            }
            _ => {
                let principal = self.authenticate(service, Some(credential)).await?;
                let ends = principal.expires_at;
                Ok((principal, ends))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::credential;

    #[test]
    fn jwks_lifetime_follows_cache_control_within_bounds() {
        use super::jwks_ttl;
        use std::time::Duration;
        assert_eq!(jwks_ttl(None), Duration::from_secs(300));
        assert_eq!(
            jwks_ttl(Some("public, max-age=120")),
            Duration::from_secs(120)
        );
        assert_eq!(jwks_ttl(Some("max-age=0")), Duration::from_secs(10));
        assert_eq!(jwks_ttl(Some("max-age=999999")), Duration::from_secs(3600));
        assert_eq!(jwks_ttl(Some("no-cache")), Duration::from_secs(300));
        assert_eq!(jwks_ttl(Some("max-age=abc")), Duration::from_secs(300));
    }

    #[test]
    fn where_the_credential_comes_from() {
        assert_eq!(credential(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(credential(Some("bearer abc"), None), Some("abc"));
        assert_eq!(credential(Some("BEARER  abc "), None), Some("abc"));
        assert_eq!(credential(None, Some("abc")), Some("abc"));
        assert_eq!(credential(Some("Bearer abc"), Some("xyz")), Some("abc"));
        assert_eq!(credential(Some("Basic abc"), None), None);
        assert_eq!(credential(Some("Basic abc"), Some("xyz")), Some("xyz"));
        assert_eq!(credential(Some("Bearer "), None), None);
        assert_eq!(credential(None, Some("  ")), None);
        assert_eq!(credential(None, None), None);
    }
}
