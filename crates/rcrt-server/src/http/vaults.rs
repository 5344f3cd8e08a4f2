//! Vault routes: thin wrappers over `rcrt_core::vaults`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rcrt_core::vaults::VaultView;
use rcrt_store::VaultRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use super::error::ErrorBody;
use super::routes::{
    access_reason, json_body, no_store, path_param as path, rfc3339, AppResult, Caller,
};
use super::{ApiError, AppState};

/// A vault's metadata: its keys, never their values.
#[derive(Serialize, ToSchema)]
#[schema(as = Vault)]
pub(crate) struct VaultJson {
    #[schema(format = Uuid)]
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

/// A new vault and its first keys.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateVault)]
pub(crate) struct CreateVaultBody {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    workspace: String,
    /// 1 to 64 letters, digits, `_`, `-` or `.` (not dots alone).
    #[schema(pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// `KEY: value` pairs (values are UTF-8 text).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    secrets: BTreeMap<String, Zeroizing<String>>,
    /// Stores empty values (one flag for every key of the body; refused otherwise).
    #[serde(default)]
    allow_empty: bool,
}

/// The workspace a vault named by name lives in.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WorkspaceParam {
    /// The vault's workspace (needed when the path names the vault by name).
    #[param(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    workspace: Option<String>,
}

/// A vault key's new value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VaultKeyValue)]
pub(crate) struct KeyValueBody {
    #[schema(value_type = String)]
    value: Zeroizing<String>,
    /// Stores an empty `value` (refused otherwise).
    #[serde(default)]
    allow_empty: bool,
}

fn workspace(q: Result<Query<WorkspaceParam>, QueryRejection>) -> AppResult<Option<String>> {
    q.map(|Query(p)| p.workspace)
        .map_err(|e| ApiError::invalid(format!("invalid query: {e}")))
}

/// `GET /secrets/vaults`' query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only vaults in this workspace.
    #[param(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    workspace: Option<String>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A vault in a listing: its metadata, without its keys (`GET /secrets/vaults/{vault}` has
/// them).
#[derive(Serialize, ToSchema)]
#[schema(as = VaultSummary)]
pub(crate) struct VaultSummaryJson {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    workspace: String,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&VaultRecord> for VaultSummaryJson {
    fn from(v: &VaultRecord) -> Self {
        Self {
            id: v.id.to_string(),
            name: v.name.clone(),
            workspace: v.workspace.clone(),
            created_at: rfc3339(v.created_at),
        }
    }
}

/// A page of vaults' metadata.
#[derive(Serialize, ToSchema)]
#[schema(as = VaultPage)]
pub(crate) struct ListView {
    items: Vec<VaultSummaryJson>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// Lists the vaults the caller may read (metadata only, in id order).
#[utoipa::path(
    get,
    path = "/secrets/vaults",
    operation_id = "listVaults",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of vaults: every vault of the tenant for `secrets.admin`, the caller's workspaces' otherwise.", body = ListView),
        (status = 400, description = "`invalid_request`: a bad parameter, limit or cursor.", body = ErrorBody),
        (status = 403, description = "The caller lacks `secrets.read`.", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> AppResult<Json<ListView>> {
    let Query(p) = params.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let page = state
        .service
        .list_vaults(&ctx, p.workspace.as_deref(), p.limit, p.cursor.as_deref())
        .await?;
    Ok(Json(ListView {
        items: page.items.iter().map(VaultSummaryJson::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Creates a vault in a workspace with its first keys.
#[utoipa::path(
    post,
    path = "/secrets/vaults",
    operation_id = "createVault",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(super::lifecycle::IdempotencyHeader),
    request_body = CreateVaultBody,
    responses(
        (status = 201, description = "Created.", body = VaultJson,
            links(
                ("GetVault" = (operation_id = "getVault", parameters(("vault" = "$response.body#/id")))),
                ("ReadVaultValues" = (operation_id = "readVaultValues", parameters(("vault" = "$response.body#/id")))),
                ("DeleteVault" = (operation_id = "deleteVault", parameters(("vault" = "$response.body#/id")))),
                ("PutVaultKey" = (operation_id = "putVaultKey", parameters(("vault" = "$response.body#/id")))),
                ("DeleteVaultKey" = (operation_id = "deleteVaultKey", parameters(("vault" = "$response.body#/id")))),
            )),
        (status = 400, description = "`invalid_request`, `invalid_json` or `empty_value`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that workspace.", body = ErrorBody),
        (status = 409, description = "`name_taken`: the vault exists in that workspace.", body = ErrorBody),
        (status = 413, description = "`value_too_large` or `payload_too_large`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let body: CreateVaultBody = json_body(&headers, body)?;
    rcrt_core::vaults::check_values_not_empty(
        body.secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body.allow_empty,
    )?;
    let idem = super::lifecycle::idempotency(&headers, || {
        let keys: Vec<&str> = body.secrets.keys().map(String::as_str).collect();
        vec![
            b"create_vault".to_vec(),
            body.workspace.as_bytes().to_vec(),
            body.name.as_bytes().to_vec(),
            keys.join("\n").into_bytes(),
        ]
    })?;
    let written = state
        .service
        .create_vault_idempotent(&ctx, &body.workspace, &body.name, body.secrets, idem)
        .await?;
    Ok(super::lifecycle::replayed(
        (StatusCode::CREATED, Json(VaultJson::from(written.value))).into_response(),
        written.replayed,
    ))
}

/// A vault's metadata (its keys, never values).
#[utoipa::path(
    get,
    path = "/secrets/vaults/{vault}",
    operation_id = "getVault",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(("vault" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,64}$", description = "The vault's id or name (with `workspace`)."), WorkspaceParam),
    responses(
        (status = 200, description = "The vault.", body = VaultJson),
        (status = 400, description = "`invalid_request`.", body = ErrorBody),
        (status = 403, description = "The caller lacks `secrets.read` or the workspace.", body = ErrorBody),
        (status = 404, description = "No such vault the caller may see.", body = ErrorBody),
        (status = 409, description = "`ambiguous_vault`: the name is used in several workspaces; give `?workspace=` or the vault id.", body = ErrorBody),
    )
)]
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

/// Every value of a vault (each read audited, with the reason).
#[utoipa::path(
    get,
    path = "/secrets/vault/{vault}",
    operation_id = "readVaultValues",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("vault" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,64}$", description = "The vault's id or name (with `workspace`)."),
        WorkspaceParam,
        ("X-Access-Reason" = Option<String>, Header, pattern = "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$", description = "Why the values are read (audited; visible ASCII); required."),
    ),
    responses(
        (status = 200, description = "`KEY: value` (`Cache-Control: no-store`).", body = BTreeMap<String, String>,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "`reason_required` or `invalid_request`.", body = ErrorBody),
        (status = 403, description = "The caller lacks `secrets.decrypt` or the workspace.", body = ErrorBody),
        (status = 404, description = "No such vault the caller may see.", body = ErrorBody),
        (status = 409, description = "`ambiguous_vault`: the name is used in several workspaces; give `?workspace=` or the vault id.", body = ErrorBody),
        (status = 500, description = "`decrypt_failed`: a stored value failed to authenticate.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
    )
)]
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

/// Adds or replaces one key of a vault (a new version).
#[utoipa::path(
    put,
    path = "/secrets/vaults/{vault}/keys/{key}",
    operation_id = "putVaultKey",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("vault" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,64}$", description = "The vault's id or name (with `workspace`)."),
        ("key" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,63}$", description = "The key."),
        WorkspaceParam,
        super::lifecycle::IdempotencyHeader,
    ),
    request_body = KeyValueBody,
    responses(
        (status = 200, description = "The vault after the write.", body = VaultJson),
        (status = 400, description = "`invalid_request`, `invalid_json` or `empty_value`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that workspace.", body = ErrorBody),
        (status = 404, description = "No such vault the caller may see.", body = ErrorBody),
        (status = 409, description = "`ambiguous_vault`: the name is used in several workspaces; give `?workspace=` or the vault id.", body = ErrorBody),
        (status = 413, description = "`value_too_large` or `payload_too_large`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`.", body = ErrorBody),
    )
)]
pub(crate) async fn put_key(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<WorkspaceParam>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let (id, key) = path(p)?;
    let ws = workspace(q)?;
    let body: KeyValueBody = json_body(&headers, body)?;
    rcrt_core::vaults::check_values_not_empty(
        [(key.as_str(), body.value.as_str())],
        body.allow_empty,
    )?;
    let idem = super::lifecycle::idempotency(&headers, || {
        vec![
            b"put_vault_key".to_vec(),
            id.as_bytes().to_vec(),
            ws.as_deref().unwrap_or_default().as_bytes().to_vec(),
            key.as_bytes().to_vec(),
        ]
    })?;
    let written = state
        .service
        .put_vault_key_idempotent(&ctx, &id, ws.as_deref(), &key, body.value, idem)
        .await?;
    Ok(super::lifecycle::replayed(
        Json(VaultJson::from(written.value)).into_response(),
        written.replayed,
    ))
}

/// Deletes one key of a vault (crypto-shredded).
#[utoipa::path(
    delete,
    path = "/secrets/vaults/{vault}/keys/{key}",
    operation_id = "deleteVaultKey",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("vault" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,64}$", description = "The vault's id or name (with `workspace`)."),
        ("key" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,63}$", description = "The key."),
        WorkspaceParam,
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`invalid_request`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that workspace.", body = ErrorBody),
        (status = 404, description = "No such vault or key the caller may see.", body = ErrorBody),
        (status = 409, description = "`ambiguous_vault`: the name is used in several workspaces; give `?workspace=` or the vault id.", body = ErrorBody),
    )
)]
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

/// Deletes a vault: every key crypto-shredded.
#[utoipa::path(
    delete,
    path = "/secrets/vaults/{vault}",
    operation_id = "deleteVault",
    tag = "vaults",
    security(("bearer" = []), ("api_key" = [])),
    params(("vault" = String, Path, pattern = "^(?!\\.+$)[A-Za-z0-9._-]{1,64}$", description = "The vault's id or name (with `workspace`)."), WorkspaceParam),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`invalid_request`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that workspace.", body = ErrorBody),
        (status = 404, description = "No such vault the caller may see.", body = ErrorBody),
        (status = 409, description = "`ambiguous_vault`: the name is used in several workspaces; give `?workspace=` or the vault id.", body = ErrorBody),
    )
)]
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
