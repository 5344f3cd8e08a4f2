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
}

/// One page of [`Client::list_secrets`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretPage {
    /// The secrets.
    pub items: Vec<SecretMeta>,
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
        let mut body =
            json!({"name": name, "value": value, "scope_type": scope_type, "scope_id": scope_id});
        with_allow_empty(&mut body, allow_empty);
        // The request body holds the value; reqwest owns it from here (no zeroizing possible).
        Self::json(self.request(reqwest::Method::POST, "/secrets").json(&body)).await
    }

    /// `GET /secrets`, one page.
    pub async fn list_secrets(
        &self,
        scope_type: Option<&str>,
        scope_id: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<SecretPage, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(v) = scope_type {
            q.push(("scope_type", v.to_owned()));
        }
        if let Some(v) = scope_id {
            q.push(("scope_id", v.to_owned()));
        }
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
        let body: DecryptBody = Self::json(
            self.request(reqwest::Method::POST, &format!("/secrets/{id}/decrypt"))
                .json(&json!({ "reason": reason })),
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
        let mut body = json!({ "value": value });
        with_allow_empty(&mut body, allow_empty);
        let mut req = self
            .request(reqwest::Method::PUT, &format!("/secrets/{id}"))
            .json(&body);
        if let Some(v) = if_match {
            req = req.header("if-match", format!("\"{v}\""));
        }
        Self::json(req).await
    }

    /// `DELETE /secrets/{id}`.
    pub async fn delete_secret(&self, id: &str) -> Result<(), ClientError> {
        Self::send(self.request(reqwest::Method::DELETE, &format!("/secrets/{id}")))
            .await
            .map(|_| ())
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

    #[tokio::test]
    async fn a_vault_name_cannot_leave_its_path_segment() {
        let c = Client::new("http://127.0.0.1:1/", None).unwrap();
        let err = c.vault_values("..", "r", None).await.err().unwrap();
        assert!(err.to_string().contains("path segment"), "{err}");
    }
}
