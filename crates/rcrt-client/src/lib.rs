//! A small client for the RCRT Secrets HTTP API.
//!
//! What it does: one method per endpoint the CLI needs, typed errors carrying the server's error
//! code and status. What it does not do: retries, caching, or logging (values never reach a log).
//!
//! The credential (a JWT or an `rcrt_...` service token) is opaque here: it is sent as
//! `Authorization: Bearer <credential>` whatever its shape, and the server tells them apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

/// A failed call: the server's error (status and code) or a transport failure (no status).
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}{})", status.map(|s| format!(", HTTP {s}")).unwrap_or_default())]
pub struct ClientError {
    /// The HTTP status, if the server answered.
    pub status: Option<u16>,
    /// The server's error code (`not_found`, `unauthorized`, ...), or `transport`.
    pub code: String,
    /// A human-readable message.
    pub message: String,
}

impl ClientError {
    fn transport(e: reqwest::Error) -> Self {
        Self {
            status: None,
            code: "transport".into(),
            message: e.to_string(),
        }
    }

    /// An argument refused before anything is sent (code `invalid_argument`).
    fn invalid_argument(message: String) -> Self {
        Self {
            status: None,
            code: "invalid_argument".into(),
            message,
        }
    }
}

/// A secret's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretMeta {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// `global`, `workspace` or `agent`.
    pub scope_type: String,
    /// The workspace or agent id.
    pub scope_id: Option<String>,
    /// The current version.
    pub version: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Free text for people (empty when unset).
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    /// Key → value labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339; when decrypts start answering 410 `expired`. `None`: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// How many versions it keeps; `None`: the deployment's default.
    #[serde(default)]
    pub max_versions: Option<u32>,
    /// RFC 3339; set only for a soft-deleted secret (`list --deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// RFC 3339; when a soft-deleted secret is purged (restorable until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<String>,
}

/// `null` (or a missing field, with `#[serde(default)]`) as the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The metadata a new secret can carry ([`CreateOptions::metadata`]); every field is optional
/// and left out of the request when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewMetadata {
    /// Free text, at most 1024 characters, no control characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// At most 64 labels (see `docs/lifecycle.md` for the key and value rules).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// 1 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u32>,
}

/// A `PATCH /secrets/{id}`: only the fields that are `Some` are sent. For `expires_at` and
/// `max_versions`, `Some(None)` sends `null` (no expiry; the deployment's default). `labels`
/// replaces the whole set (`Some(empty)` clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetadataPatch {
    /// The new description (`Some("")` clears it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The new label set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// The new expiry (RFC 3339), or `Some(None)` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
    /// The new cap, or `Some(None)` for the deployment's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<Option<u32>>,
}

impl MetadataPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Options of [`Client::create_secret_with`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Store an empty value (refused by the server otherwise).
    pub allow_empty: bool,
    /// Description, labels, expiry, version cap.
    pub metadata: NewMetadata,
    /// Sent as `Idempotency-Key`: a retry with the same key gets the first answer.
    pub idempotency_key: Option<String>,
}

/// Options of [`Client::update_secret_with`].
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    /// Only if this is still the current version (`If-Match`).
    pub if_match: Option<i64>,
    /// Store an empty value (refused by the server otherwise).
    pub allow_empty: bool,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// Filters of [`Client::list_secrets_filtered`]; the default lists every live secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFilter {
    /// Only this scope type.
    pub scope_type: Option<String>,
    /// Only this scope id.
    pub scope_id: Option<String>,
    /// Only secrets carrying every one of these labels.
    pub labels: Vec<(String, String)>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Only secrets expiring within this duration (`30d`; already expired included).
    pub expiring_within: Option<String>,
    /// Soft-deleted secrets (in their recovery window) instead of live ones.
    pub deleted: bool,
}

impl SecretFilter {
    /// The query parameters (without `limit` and `cursor`). Labels travel as one
    /// `label=k=v,k2=v2` parameter, so a key holding `=` or `,` or a value holding `,` cannot
    /// be expressed (the server refuses such labels anyway): refused here.
    fn query(&self) -> Result<Vec<(&'static str, String)>, ClientError> {
        let mut q = Vec::new();
        if let Some(v) = &self.scope_type {
            q.push(("scope_type", v.clone()));
        }
        if let Some(v) = &self.scope_id {
            q.push(("scope_id", v.clone()));
        }
        if !self.labels.is_empty() {
            let mut parts = Vec::with_capacity(self.labels.len());
            for (k, v) in &self.labels {
                if k.is_empty() || k.contains(['=', ',']) || v.contains(',') {
                    return Err(ClientError::invalid_argument(format!(
                        "label filter {k:?}={v:?}: a key must be non-empty without `=` or `,`, \
                         a value without `,`"
                    )));
                }
                parts.push(format!("{k}={v}"));
            }
            q.push(("label", parts.join(",")));
        }
        if let Some(v) = &self.name_prefix {
            q.push(("name_prefix", v.clone()));
        }
        if let Some(v) = &self.expiring_within {
            q.push(("expiring_within", v.clone()));
        }
        if self.deleted {
            q.push(("deleted", "true".into()));
        }
        Ok(q)
    }
}

/// One version in a secret's history (never a value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version number.
    pub version: i64,
    /// RFC 3339.
    pub created_at: String,
    /// Who wrote it (empty for versions written before this was recorded).
    #[serde(default, deserialize_with = "null_as_default")]
    pub created_by: String,
    /// `current`, `kept` or `destroyed`.
    pub state: String,
    /// RFC 3339, for a destroyed version.
    #[serde(default)]
    pub destroyed_at: Option<String>,
}

/// One page of [`Client::list_versions`], newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionPage {
    /// The versions.
    pub versions: Vec<VersionInfo>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// The answer of a delete with a recovery window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SoftDeleted {
    /// The secret's id.
    pub id: String,
    /// RFC 3339.
    pub deleted_at: String,
    /// RFC 3339; restorable until then.
    pub purge_at: String,
}

/// One page of [`Client::list_secrets`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretPage {
    /// The secrets.
    pub items: Vec<SecretMeta>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// One vault in a listing: its metadata, without its keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultSummary {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// Its workspace.
    pub workspace: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A page of [`Client::list_vaults`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultPage {
    /// The vaults, in id order.
    pub items: Vec<VaultSummary>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// A vault's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Vault {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The workspace.
    pub workspace: String,
    /// Its keys.
    pub keys: Vec<String>,
}

/// A token's lifetime, as `POST /auth/tokens` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Ttl {
    /// A number of seconds.
    Seconds(u64),
    /// A duration such as `30d`, `12h` or `1h 30m`, parsed by the server.
    Text(String),
}

impl From<&str> for Ttl {
    /// Digits only: seconds; anything else: text for the server to parse.
    fn from(text: &str) -> Self {
        let text = text.trim();
        match text.parse::<u64>() {
            Ok(secs) if text.bytes().all(|b| b.is_ascii_digit()) => Self::Seconds(secs),
            _ => Self::Text(text.to_owned()),
        }
    }
}

/// What to mint with [`Client::create_token`]. Roles and workspaces must be within the caller's
/// own (the server refuses an escalation with 403 `forbidden`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NewToken {
    /// A label for people (`ci-deploy`); not unique.
    pub name: String,
    /// The principal the token acts as; the caller when `None` (another needs `secrets.admin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Role names (`secrets.read`, `secrets.decrypt`, ...); at least one.
    pub roles: Vec<String>,
    /// The workspaces it may reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<String>,
    /// Its lifetime; the server's default (30 days) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
}

/// A service token's metadata (never the token or its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenMeta {
    /// The id (a UUID; the public half of the token).
    pub id: String,
    /// The label given at creation.
    pub name: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The principal it acts as.
    pub principal: String,
    /// Its role names.
    pub roles: Vec<String>,
    /// The workspaces it may reach.
    pub workspaces: Vec<String>,
    /// The principal that minted it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `None` if it never expires.
    pub expires_at: Option<String>,
    /// RFC 3339; `None` unless revoked.
    pub revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

/// One page of [`Client::list_tokens`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenPage {
    /// The tokens' metadata.
    pub items: Vec<TokenMeta>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// A token just minted by [`Client::create_token`]: the token text (shown this once, zeroized on
/// drop, kept out of `Debug`) and its metadata. Deliberately not `Serialize`.
pub struct MintedToken {
    token: Zeroizing<String>,
    /// The new token's metadata.
    pub meta: TokenMeta,
}

impl MintedToken {
    /// The token text (`rcrt_...`), to hand to its holder.
    pub fn expose_secret(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"[REDACTED]")
            .field("meta", &self.meta)
            .finish()
    }
}

/// The answer of `POST /auth/tokens`, field by field: `#[serde(flatten)]` would buffer the
/// token in serde's private, unzeroized content tree.
#[derive(Deserialize)]
struct MintedBody {
    token: Zeroizing<String>,
    id: String,
    name: String,
    tenant: String,
    principal: String,
    roles: Vec<String>,
    workspaces: Vec<String>,
    created_by: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    status: String,
}

impl From<MintedBody> for MintedToken {
    fn from(b: MintedBody) -> Self {
        Self {
            token: b.token,
            meta: TokenMeta {
                id: b.id,
                name: b.name,
                tenant: b.tenant,
                principal: b.principal,
                roles: b.roles,
                workspaces: b.workspaces,
                created_by: b.created_by,
                created_at: b.created_at,
                expires_at: b.expires_at,
                revoked_at: b.revoked_at,
                status: b.status,
            },
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct DecryptBody {
    value: Zeroizing<String>,
    version: i64,
}

/// A connection to one server.
pub struct Client {
    base: String,
    token: Option<Zeroizing<String>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl Client {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8081`), with an optional bearer token.
    pub fn new(base_url: &str, token: Option<Zeroizing<String>>) -> Result<Self, ClientError> {
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .build()
                .map_err(ClientError::transport)?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorize(self.http.request(method, format!("{}{path}", self.base)))
    }

    /// A request to the base URL plus `segments`, each percent-encoded as one path segment (an
    /// id such as `../x` or `a/b` cannot reach another endpoint).
    fn request_segments(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let invalid = |message: String| ClientError {
            status: None,
            code: "invalid_url".into(),
            message,
        };
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| invalid(format!("invalid server URL {}: {e}", self.base)))?;
        if segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
        {
            return Err(invalid("empty, `.` or `..` path segment".into()));
        }
        url.path_segments_mut()
            .map_err(|()| invalid(format!("{} cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(self.authorize(self.http.request(method, url)))
    }

    /// Adds the credential, whatever its kind (JWT or service token), as `Bearer`.
    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            // bearer_auth marks the header sensitive (kept out of reqwest's Debug output).
            Some(t) => req.bearer_auth(t.as_str()),
            None => req,
        }
    }

    async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(ClientError::transport)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: Option<ErrorBody> = resp.json().await.ok();
        Err(match body {
            Some(b) => ClientError {
                status: Some(status),
                code: b.error.code,
                message: b.error.message,
            },
            None => ClientError {
                status: Some(status),
                code: "http".into(),
                message: format!("HTTP {status}"),
            },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        Self::send(req)
            .await?
            .json()
            .await
            .map_err(ClientError::transport)
    }

    /// `POST /secrets`. An empty `value` is stored only with `allow_empty` (the server answers
    /// 400 `empty_value` otherwise).
    pub async fn create_secret(
        &self,
        name: &str,
        scope_type: &str,
        scope_id: Option<&str>,
        value: &str,
        allow_empty: bool,
    ) -> Result<SecretMeta, ClientError> {
        let options = CreateOptions {
            allow_empty,
            ..CreateOptions::default()
        };
        self.create_secret_with(name, scope_type, scope_id, value, &options)
            .await
    }

    /// `POST /secrets` with metadata and an optional `Idempotency-Key`: a retry with the same
    /// key (after a lost answer) gets the first answer back, not a 409; the same key with
    /// another name, scope or metadata is a 422 `idempotency_key_reused`.
    pub async fn create_secret_with(
        &self,
        name: &str,
        scope_type: &str,
        scope_id: Option<&str>,
        value: &str,
        options: &CreateOptions,
    ) -> Result<SecretMeta, ClientError> {
        let mut body =
            json!({"name": name, "value": value, "scope_type": scope_type, "scope_id": scope_id});
        with_allow_empty(&mut body, options.allow_empty);
        if let (Ok(serde_json::Value::Object(meta)), Some(map)) = (
            serde_json::to_value(&options.metadata),
            body.as_object_mut(),
        ) {
            map.extend(meta);
        }
        let req = with_idempotency_key(
            self.request(reqwest::Method::POST, "/secrets"),
            options.idempotency_key.as_deref(),
        )?;
        // The request body holds the value; reqwest owns it from here (no zeroizing possible).
        Self::json(req.json(&body)).await
    }

    /// `GET /secrets`, one page.
    pub async fn list_secrets(
        &self,
        scope_type: Option<&str>,
        scope_id: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<SecretPage, ClientError> {
        let filter = SecretFilter {
            scope_type: scope_type.map(str::to_owned),
            scope_id: scope_id.map(str::to_owned),
            ..SecretFilter::default()
        };
        self.list_secrets_filtered(&filter, limit, cursor).await
    }

    /// `GET /secrets` with filters (labels, name prefix, expiry, soft-deleted), one page.
    pub async fn list_secrets_filtered(
        &self,
        filter: &SecretFilter,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<SecretPage, ClientError> {
        let mut q = filter.query()?;
        if let Some(v) = limit {
            q.push(("limit", v.to_string()));
        }
        if let Some(v) = cursor {
            q.push(("cursor", v.to_owned()));
        }
        Self::json(self.request(reqwest::Method::GET, "/secrets").query(&q)).await
    }

    /// `GET /secrets/{id}`.
    pub async fn secret_metadata(&self, id: &str) -> Result<SecretMeta, ClientError> {
        Self::json(self.request(reqwest::Method::GET, &format!("/secrets/{id}"))).await
    }

    /// `POST /secrets/{id}/decrypt`: the value and its version.
    pub async fn decrypt(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<(Zeroizing<String>, i64), ClientError> {
        self.decrypt_version(id, reason, None).await
    }

    /// `POST /secrets/{id}/decrypt` of `version` (the current one when `None`): the value and
    /// its version. 404 `version_not_found` for a version the secret never had, 410
    /// `version_destroyed` for a destroyed one, 410 `expired` past the secret's expiry.
    pub async fn decrypt_version(
        &self,
        id: &str,
        reason: &str,
        version: Option<i64>,
    ) -> Result<(Zeroizing<String>, i64), ClientError> {
        let mut body = json!({ "reason": reason });
        if let (Some(v), Some(map)) = (version, body.as_object_mut()) {
            map.insert("version".into(), v.into());
        }
        let body: DecryptBody = Self::json(
            self.request(reqwest::Method::POST, &format!("/secrets/{id}/decrypt"))
                .json(&body),
        )
        .await?;
        Ok((body.value, body.version))
    }

    /// `PUT /secrets/{id}`, optionally only if `if_match` is still the current version. An empty
    /// `value` is stored only with `allow_empty`.
    pub async fn update_secret(
        &self,
        id: &str,
        value: &str,
        if_match: Option<i64>,
        allow_empty: bool,
    ) -> Result<SecretMeta, ClientError> {
        let options = UpdateOptions {
            if_match,
            allow_empty,
            idempotency_key: None,
        };
        self.update_secret_with(id, value, &options).await
    }

    /// `PUT /secrets/{id}` with `If-Match` and `Idempotency-Key` when given.
    pub async fn update_secret_with(
        &self,
        id: &str,
        value: &str,
        options: &UpdateOptions,
    ) -> Result<SecretMeta, ClientError> {
        let mut body = json!({ "value": value });
        with_allow_empty(&mut body, options.allow_empty);
        let req = self.request(reqwest::Method::PUT, &format!("/secrets/{id}"));
        let req = with_idempotency_key(
            with_if_match(req, options.if_match),
            options.idempotency_key.as_deref(),
        )?;
        Self::json(req.json(&body)).await
    }

    /// `DELETE /secrets/{id}`.
    pub async fn delete_secret(&self, id: &str) -> Result<(), ClientError> {
        Self::send(self.request(reqwest::Method::DELETE, &format!("/secrets/{id}")))
            .await
            .map(|_| ())
    }

    /// `DELETE /secrets/{id}?recovery_window=...` (`7d`, `12h`; `0` for an immediate delete;
    /// the deployment's default when `None`). `Some` when the secret was soft-deleted (it can
    /// be restored until `purge_at`), `None` when it was shredded at once.
    pub async fn delete_secret_with(
        &self,
        id: &str,
        recovery_window: Option<&str>,
    ) -> Result<Option<SoftDeleted>, ClientError> {
        let mut req = self.request_segments(reqwest::Method::DELETE, &["secrets", id])?;
        if let Some(w) = recovery_window {
            req = req.query(&[("recovery_window", w)]);
        }
        let resp = Self::send(req).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        resp.json().await.map(Some).map_err(ClientError::transport)
    }

    /// `GET /secrets/{id}/versions`, one page, newest first (never a value).
    pub async fn list_versions(
        &self,
        id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<VersionPage, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(v) = limit {
            q.push(("limit", v.to_string()));
        }
        if let Some(v) = cursor {
            q.push(("cursor", v.to_owned()));
        }
        let req = self.request_segments(reqwest::Method::GET, &["secrets", id, "versions"])?;
        Self::json(req.query(&q)).await
    }

    /// `POST /secrets/{id}/rollback`: a new current version holding `version`'s value.
    pub async fn rollback(
        &self,
        id: &str,
        version: i64,
        if_match: Option<i64>,
        idempotency_key: Option<&str>,
    ) -> Result<SecretMeta, ClientError> {
        let req = self.request_segments(reqwest::Method::POST, &["secrets", id, "rollback"])?;
        let req = with_idempotency_key(with_if_match(req, if_match), idempotency_key)?;
        Self::json(req.json(&json!({ "version": version }))).await
    }

    /// `POST /secrets/{id}/versions/{n}/destroy`: crypto-shreds one version (not the current
    /// one: 409 `current_version`). Destroying a destroyed version again succeeds.
    pub async fn destroy_version(&self, id: &str, version: i64) -> Result<(), ClientError> {
        let n = version.to_string();
        let req = self.request_segments(
            reqwest::Method::POST,
            &["secrets", id, "versions", &n, "destroy"],
        )?;
        Self::send(req).await.map(|_| ())
    }

    /// `POST /secrets/{id}/restore`: brings back a soft-deleted secret until its `purge_at`.
    pub async fn restore_secret(&self, id: &str) -> Result<SecretMeta, ClientError> {
        let req = self.request_segments(reqwest::Method::POST, &["secrets", id, "restore"])?;
        Self::json(req).await
    }

    /// `PATCH /secrets/{id}`: changes metadata only (no new version).
    pub async fn update_metadata(
        &self,
        id: &str,
        patch: &MetadataPatch,
    ) -> Result<SecretMeta, ClientError> {
        let req = self.request_segments(reqwest::Method::PATCH, &["secrets", id])?;
        Self::json(req.json(patch)).await
    }

    /// `POST /secrets/vaults`. Empty values are stored only with `allow_empty`.
    pub async fn create_vault(
        &self,
        workspace: &str,
        name: &str,
        secrets: &BTreeMap<String, Zeroizing<String>>,
        allow_empty: bool,
    ) -> Result<Vault, ClientError> {
        let plain: BTreeMap<&str, &str> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut body = json!({"workspace": workspace, "name": name, "secrets": plain});
        with_allow_empty(&mut body, allow_empty);
        Self::json(
            self.request(reqwest::Method::POST, "/secrets/vaults")
                .json(&body),
        )
        .await
    }

    /// `GET /secrets/vaults`, one page: the vaults the caller may read (every vault of the
    /// tenant for an administrator, its workspaces' otherwise), optionally of one workspace.
    pub async fn list_vaults(
        &self,
        workspace: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<VaultPage, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(w) = workspace {
            q.push(("workspace", w.to_owned()));
        }
        if let Some(v) = limit {
            q.push(("limit", v.to_string()));
        }
        if let Some(v) = cursor {
            q.push(("cursor", v.to_owned()));
        }
        Self::json(
            self.request(reqwest::Method::GET, "/secrets/vaults")
                .query(&q),
        )
        .await
    }

    /// `GET /secrets/vaults/{idOrName}`: a vault's metadata and key names, no value (needs
    /// `secrets.read`; not an audited read).
    pub async fn vault(
        &self,
        id_or_name: &str,
        workspace: Option<&str>,
    ) -> Result<Vault, ClientError> {
        let mut req =
            self.request_segments(reqwest::Method::GET, &["secrets", "vaults", id_or_name])?;
        if let Some(w) = workspace {
            req = req.query(&[("workspace", w)]);
        }
        Self::json(req).await
    }

    /// `GET /secrets/vault/{idOrName}`: every value, audited with `reason`.
    pub async fn vault_values(
        &self,
        id_or_name: &str,
        reason: &str,
        workspace: Option<&str>,
    ) -> Result<BTreeMap<String, Zeroizing<String>>, ClientError> {
        // A vault name is the user's text: one percent-encoded segment, never `..` or `/`.
        let mut req = self
            .request_segments(reqwest::Method::GET, &["secrets", "vault", id_or_name])?
            .header("x-access-reason", reason);
        if let Some(w) = workspace {
            req = req.query(&[("workspace", w)]);
        }
        Self::json(req).await
    }

    /// `POST /auth/tokens`: mints a service token no broader than the caller.
    pub async fn create_token(&self, new: &NewToken) -> Result<MintedToken, ClientError> {
        let body: MintedBody = Self::json(
            self.request(reqwest::Method::POST, "/auth/tokens")
                .json(new),
        )
        .await?;
        Ok(body.into())
    }

    /// `GET /auth/tokens`, one page: every token of the tenant (an administrator), else those
    /// the caller minted or acts as. `limit` 1..1000 (server default 100).
    pub async fn list_tokens(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<TokenPage, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(v) = limit {
            q.push(("limit", v.to_string()));
        }
        if let Some(v) = cursor {
            q.push(("cursor", v.to_owned()));
        }
        Self::json(self.request(reqwest::Method::GET, "/auth/tokens").query(&q)).await
    }

    /// `DELETE /auth/tokens/{id}`: the token stops working at once. Revoking twice is fine; an
    /// unknown token, or one the caller may not revoke, is 404 `not_found`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let req = self.request_segments(reqwest::Method::DELETE, &["auth", "tokens", id])?;
        Self::send(req).await.map(|_| ())
    }
}

/// Adds `If-Match: "<version>"` when given.
fn with_if_match(req: reqwest::RequestBuilder, if_match: Option<i64>) -> reqwest::RequestBuilder {
    match if_match {
        Some(v) => req.header("if-match", format!("\"{v}\"")),
        None => req,
    }
}

/// Adds `Idempotency-Key` when given: 1 to 255 printable ASCII characters, not starting or
/// ending with a space (HTTP would drop it, and the retry would carry another key). Refused
/// here otherwise, before anything is sent.
fn with_idempotency_key(
    req: reqwest::RequestBuilder,
    key: Option<&str>,
) -> Result<reqwest::RequestBuilder, ClientError> {
    let Some(key) = key else { return Ok(req) };
    if key.is_empty()
        || key.len() > 255
        || key.starts_with(' ')
        || key.ends_with(' ')
        || !key.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return Err(ClientError::invalid_argument(
            "an idempotency key is 1 to 255 printable ASCII characters (no leading or \
             trailing space)"
                .into(),
        ));
    }
    Ok(req.header("idempotency-key", key))
}

/// Adds `"allow_empty": true` to a request body when asked. The field is left out otherwise, so
/// a request that stores a non-empty value is what servers before the field accepted.
fn with_allow_empty(body: &mut serde_json::Value, allow_empty: bool) {
    if let (true, Some(map)) = (allow_empty, body.as_object_mut()) {
        map.insert("allow_empty".into(), true.into());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TOKEN: &str = "rcrt_0123456789abcdef0123456789abcdef_\
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_token_debug_hides_the_token() {
        let body = json!({
            "token": TOKEN, "id": "01234567-89ab-cdef-0123-456789abcdef", "name": "ci",
            "tenant": "default", "principal": "ops", "roles": ["secrets.read"],
            "workspaces": ["w1"], "created_by": "ops", "created_at": "2025-01-01T00:00:00Z",
            "expires_at": "2025-01-31T00:00:00Z", "revoked_at": null, "status": "active",
        });
        let minted = MintedToken::from(serde_json::from_value::<MintedBody>(body).unwrap());
        assert_eq!(minted.expose_secret(), TOKEN);
        let debug = format!("{minted:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(
            debug.contains("01234567-89ab-cdef-0123-456789abcdef"),
            "{debug}"
        );
        let client = Client::new("http://x", Some(Zeroizing::new(TOKEN.to_owned()))).unwrap();
        assert!(!format!("{client:?}").contains(TOKEN));
    }

    #[test]
    fn allow_empty_only_when_asked() {
        let mut body = json!({"value": ""});
        with_allow_empty(&mut body, false);
        assert_eq!(body, json!({"value": ""}));
        with_allow_empty(&mut body, true);
        assert_eq!(body, json!({"value": "", "allow_empty": true}));
    }

    #[test]
    fn ttl_from_text() {
        assert_eq!(Ttl::from("3600"), Ttl::Seconds(3600));
        assert_eq!(Ttl::from(" 30d "), Ttl::Text("30d".into()));
        assert_eq!(Ttl::from("+5"), Ttl::Text("+5".into()));
        let new = NewToken {
            name: "ci".into(),
            roles: vec!["secrets.read".into()],
            ttl: Some(Ttl::Seconds(60)),
            ..NewToken::default()
        };
        assert_eq!(
            serde_json::to_value(&new).unwrap(),
            json!({"name": "ci", "roles": ["secrets.read"], "ttl": 60})
        );
    }

    #[test]
    fn ids_stay_one_path_segment() {
        let c = Client::new("http://127.0.0.1:1/prefix/", None).unwrap();
        let url = |id: &str| {
            c.request_segments(reqwest::Method::DELETE, &["auth", "tokens", id])
                .map(|r| r.build().unwrap().url().to_string())
        };
        assert_eq!(
            url("abc").unwrap(),
            "http://127.0.0.1:1/prefix/auth/tokens/abc"
        );
        assert_eq!(
            url("a/b?c#d").unwrap(),
            "http://127.0.0.1:1/prefix/auth/tokens/a%2Fb%3Fc%23d"
        );
        assert!(url("..").is_err());
        assert!(url("").is_err());
    }

    #[test]
    fn metadata_patch_sends_only_what_is_given() {
        let patch = MetadataPatch {
            expires_at: Some(None),
            max_versions: Some(Some(5)),
            ..MetadataPatch::default()
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!({"expires_at": null, "max_versions": 5})
        );
        assert!(MetadataPatch::default().is_empty());
        assert!(!patch.is_empty());
        let labels = MetadataPatch {
            labels: Some(BTreeMap::new()),
            ..MetadataPatch::default()
        };
        assert_eq!(
            serde_json::to_value(&labels).unwrap(),
            json!({"labels": {}})
        );
        assert_eq!(
            serde_json::to_value(NewMetadata::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn secret_meta_reads_old_and_new_servers() {
        let old = json!({"id": "i", "name": "n", "scope_type": "global", "scope_id": null,
            "version": 1, "created_at": "t", "updated_at": "t"});
        let meta: SecretMeta = serde_json::from_value(old).unwrap();
        assert_eq!(meta.description, "");
        assert!(meta.labels.is_empty());
        let new = json!({"id": "i", "name": "n", "scope_type": "global", "scope_id": null,
            "version": 1, "created_at": "t", "updated_at": "t", "description": null,
            "labels": {"env": "prod"}, "expires_at": "2030-01-01T00:00:00Z", "max_versions": 3,
            "deleted_at": "d", "purge_at": "p"});
        let meta: SecretMeta = serde_json::from_value(new).unwrap();
        assert_eq!(meta.labels["env"], "prod");
        assert_eq!(meta.max_versions, Some(3));
        assert_eq!(meta.purge_at.as_deref(), Some("p"));
    }

    #[test]
    fn filter_query() {
        let f = SecretFilter {
            labels: vec![
                ("env".into(), "prod".into()),
                ("team".into(), "core".into()),
            ],
            name_prefix: Some("db/".into()),
            expiring_within: Some("30d".into()),
            deleted: true,
            ..SecretFilter::default()
        };
        assert_eq!(
            f.query().unwrap(),
            vec![
                ("label", "env=prod,team=core".to_owned()),
                ("name_prefix", "db/".to_owned()),
                ("expiring_within", "30d".to_owned()),
                ("deleted", "true".to_owned()),
            ]
        );
        assert!(SecretFilter::default().query().unwrap().is_empty());
        for (k, v) in [("", "x"), ("a=b", "x"), ("a,b", "x"), ("a", "x,y")] {
            let f = SecretFilter {
                labels: vec![(k.into(), v.into())],
                ..SecretFilter::default()
            };
            assert_eq!(f.query().unwrap_err().code, "invalid_argument", "{k}={v}");
        }
    }

    #[test]
    fn idempotency_keys_are_checked_before_sending() {
        let c = Client::new("http://127.0.0.1:1/", None).unwrap();
        let req = || c.request(reqwest::Method::POST, "/secrets");
        let built = with_idempotency_key(req(), Some("retry-1 a"))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(built.headers()["idempotency-key"], "retry-1 a");
        let long = "k".repeat(256);
        for bad in [
            "",
            " lead",
            "trail ",
            "caf\u{e9}",
            "new\nline",
            long.as_str(),
        ] {
            let e = with_idempotency_key(req(), Some(bad)).err().unwrap();
            assert_eq!(e.code, "invalid_argument", "{bad:?}");
        }
        assert!(with_idempotency_key(req(), Some(&"k".repeat(255))).is_ok());
    }

    #[tokio::test]
    async fn a_vault_name_cannot_leave_its_path_segment() {
        let c = Client::new("http://127.0.0.1:1/", None).unwrap();
        let err = c.vault_values("..", "r", None).await.err().unwrap();
        assert!(err.to_string().contains("path segment"), "{err}");
    }
}
