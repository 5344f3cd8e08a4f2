//! A small client for the RCRT Secrets HTTP API.
//!
//! What it does: one method per endpoint the CLI needs, typed errors carrying the server's error
//! code and status. What it does not do: retries, caching, or logging (values never reach a log).

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
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
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

    /// `POST /secrets`.
    pub async fn create_secret(
        &self,
        name: &str,
        scope_type: &str,
        scope_id: Option<&str>,
        value: &str,
    ) -> Result<SecretMeta, ClientError> {
        // The request body holds the value; reqwest owns it from here (no zeroizing possible).
        Self::json(self.request(reqwest::Method::POST, "/secrets").json(
            &json!({"name": name, "value": value, "scope_type": scope_type, "scope_id": scope_id}),
        ))
        .await
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

    /// `PUT /secrets/{id}`, optionally only if `if_match` is still the current version.
    pub async fn update_secret(
        &self,
        id: &str,
        value: &str,
        if_match: Option<i64>,
    ) -> Result<SecretMeta, ClientError> {
        let mut req = self
            .request(reqwest::Method::PUT, &format!("/secrets/{id}"))
            .json(&json!({ "value": value }));
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

    /// `POST /secrets/vaults`.
    pub async fn create_vault(
        &self,
        workspace: &str,
        name: &str,
        secrets: &BTreeMap<String, Zeroizing<String>>,
    ) -> Result<Vault, ClientError> {
        let plain: BTreeMap<&str, &str> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Self::json(
            self.request(reqwest::Method::POST, "/secrets/vaults")
                .json(&json!({"workspace": workspace, "name": name, "secrets": plain})),
        )
        .await
    }

    /// `GET /secrets/vault/{idOrName}`: every value, audited with `reason`.
    pub async fn vault_values(
        &self,
        id_or_name: &str,
        reason: &str,
        workspace: Option<&str>,
    ) -> Result<BTreeMap<String, Zeroizing<String>>, ClientError> {
        let mut req = self
            .request(
                reqwest::Method::GET,
                &format!("/secrets/vault/{id_or_name}"),
            )
            .header("x-access-reason", reason);
        if let Some(w) = workspace {
            req = req.query(&[("workspace", w)]);
        }
        Self::json(req).await
    }
}
