//! Vault routes: thin wrappers over `rcrt_core::vaults`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use rcrt_core::vaults::VaultView;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::routes::{access_reason, json_body, no_store, path_param as path, AppResult, Caller};
use super::{ApiError, AppState};

#[derive(Serialize)]
pub(crate) struct VaultJson {
    id: String,
    name: String,
    workspace: String,
    keys: Vec<String>,
}

impl From<VaultView> for VaultJson {
    fn from(v: VaultView) -> Self {
        Self {
            id: v.id.to_string(),
            name: v.name,
            workspace: v.workspace,
            keys: v.keys,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVaultBody {
    workspace: String,
    name: String,
    #[serde(default)]
    secrets: BTreeMap<String, Zeroizing<String>>,
    /// Stores empty values (one flag for every key of the body; refused otherwise).
    #[serde(default)]
    allow_empty: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspaceParam {
    workspace: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyValueBody {
    value: Zeroizing<String>,
    /// Stores an empty `value` (refused otherwise).
    #[serde(default)]
    allow_empty: bool,
}

fn workspace(q: Result<Query<WorkspaceParam>, QueryRejection>) -> AppResult<Option<String>> {
    q.map(|Query(p)| p.workspace)
        .map_err(|e| ApiError::invalid(format!("invalid query: {e}")))
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<(StatusCode, Json<VaultJson>)> {
    let body: CreateVaultBody = json_body(&headers, body)?;
    rcrt_core::vaults::check_values_not_empty(
        body.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body.allow_empty,
    )?;
    let view = state
        .service
        .create_vault(&ctx, &body.workspace, &body.name, body.secrets)
        .await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

pub(crate) async fn get_meta(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<WorkspaceParam>, QueryRejection>,
) -> AppResult<Json<VaultJson>> {
    let id = path(id)?;
    let ws = workspace(q)?;
    Ok(Json(
        state.service.vault(&ctx, &id, ws.as_deref()).await?.into(),
    ))
}

pub(crate) async fn values(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<WorkspaceParam>, QueryRejection>,
) -> AppResult<Response> {
    let id = path(id)?;
    let ws = workspace(q)?;
    let reason = access_reason(&headers)?;
    let (_, values) = state
        .service
        .vault_values(&ctx, &id, ws.as_deref(), reason.as_deref())
        .await?;
    let mut out = BTreeMap::new();
    for (key, plain) in &values {
        let text = std::str::from_utf8(plain.expose_secret())
            .map_err(|_| ApiError::from(rcrt_core::CoreError::DecryptFailed))?;
        out.insert(key.as_str(), text);
    }
    Ok(no_store(super::secret_body::json(&out)?))
}

pub(crate) async fn put_key(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<WorkspaceParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<VaultJson>> {
    let (id, key) = path(p)?;
    let ws = workspace(q)?;
    let body: KeyValueBody = json_body(&headers, body)?;
    rcrt_core::vaults::check_values_not_empty(
        [(key.as_str(), body.value.as_str())],
        body.allow_empty,
    )?;
    Ok(Json(
        state
            .service
            .put_vault_key(&ctx, &id, ws.as_deref(), &key, body.value)
            .await?
            .into(),
    ))
}

pub(crate) async fn delete_key(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<WorkspaceParam>, QueryRejection>,
) -> AppResult<StatusCode> {
    let (id, key) = path(p)?;
    let ws = workspace(q)?;
    state
        .service
        .delete_vault_key(&ctx, &id, ws.as_deref(), &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<WorkspaceParam>, QueryRejection>,
) -> AppResult<StatusCode> {
    let id = path(id)?;
    let ws = workspace(q)?;
    state.service.delete_vault(&ctx, &id, ws.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
