//! `/auth/tokens`: mint (the token shown once), list (never the secret or its hash), revoke.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rcrt_core::tokens::{role_names, token_status, MintToken};
use rcrt_store::TokenRecord;
use rcrt_types::{Role, Roles, TokenId};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::openapi::{RoleName, TokenStatusName};
use super::routes::{json_body, no_store, path_param, AppResult, Caller};
use super::{ApiError, AppState};

/// A token's lifetime: seconds, or text such as `30d`, `12h`, `90m`, `1h 30m`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Ttl {
    /// Seconds.
    Seconds(#[schema(inline)] Seconds),
    /// A duration such as `30d`, `12h`, `90m`, `1h 30m`.
    Text(String),
}

/// A ttl in seconds as any JSON number: JSON Schema's `integer` includes `229434.0`, so a whole
/// number written as a float is accepted; `Ttl::duration` refuses a fraction or a negative
/// with a 400. (The document's schema for it is written in `openapi::add_cross_field_rules`.)
#[derive(Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = u64)]
pub(crate) struct Seconds(serde_json::Number);

impl Ttl {
    fn duration(&self) -> AppResult<Duration> {
        match self {
            Self::Seconds(Seconds(n)) => {
                whole_seconds(n).map(Duration::from_secs).ok_or_else(|| {
                    ApiError::invalid("ttl in seconds must be a whole number of seconds, 1 or more")
                })
            }
            Self::Text(t) => humantime::parse_duration(t.trim()).map_err(|_| {
                ApiError::invalid(
                    "ttl must be seconds or a duration such as \"30d\", \"12h\", \"90m\"",
                )
            }),
        }
    }
}

/// A JSON number as whole seconds: an unsigned integer, or a float with no fraction
/// (`229434.0`, `1e3`); `None` for a fraction, a negative or what no `u64` holds.
fn whole_seconds(n: &serde_json::Number) -> Option<u64> {
    if let Some(s) = n.as_u64() {
        return Some(s);
    }
    let f = n.as_f64()?;
    // 2^64 is exact in f64; below it a whole, non-negative f64 converts without loss.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < LIMIT).then(|| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let s = f as u64;
        s
    })
}

/// A service token to mint: no broader than the caller.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateToken)]
pub(crate) struct MintBody {
    /// 1 to 128 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    /// The principal the token acts as (default: the caller); 1 to 256 characters, no control
    /// characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    principal: Option<String>,
    #[schema(value_type = Vec<RoleName>, min_items = 1)]
    roles: Vec<String>,
    #[serde(default)]
    workspaces: Vec<String>,
    /// Lifetime; none: the token does not expire.
    #[serde(default)]
    ttl: Option<Ttl>,
}

/// A token's metadata as the API shows it (never the token or its hash).
#[derive(Serialize, ToSchema)]
#[schema(as = Token)]
pub(crate) struct TokenView {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    tenant: String,
    principal: String,
    #[schema(value_type = Vec<RoleName>)]
    roles: Vec<&'static str>,
    workspaces: Vec<String>,
    created_by: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    #[schema(value_type = TokenStatusName)]
    status: &'static str,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl TokenView {
    fn of(t: &TokenRecord, now: OffsetDateTime) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            tenant: t.tenant.as_str().to_owned(),
            principal: t.principal.clone(),
            roles: role_names(t.roles),
            workspaces: t.workspaces.clone(),
            created_by: t.created_by.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            status: token_status(t, now),
        }
    }
}

/// A minted token: the token itself is shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = MintedToken)]
pub(crate) struct MintedView<'a> {
    /// The bearer token (shown once).
    token: &'a str,
    #[serde(flatten)]
    meta: TokenView,
}

/// Mints a service token for the caller (no broader than it).
#[utoipa::path(
    post,
    path = "/auth/tokens",
    operation_id = "createToken",
    tag = "tokens",
    security(("bearer" = []), ("api_key" = [])),
    request_body = MintBody,
    responses(
        (status = 201, description = "Minted (`Cache-Control: no-store`); the token is shown this once.", body = MintedView,
            headers(("Cache-Control" = String, description = "`no-store`.")),
            links(
                ("RevokeToken" = (operation_id = "revokeToken", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "`invalid_request` (an unknown role, a bad ttl) or `invalid_json`.", body = ErrorBody),
        (status = 403, description = "The caller lacks `tokens.create`, or the token would be broader than it.", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let body: MintBody = json_body(&headers, body)?;
    let roles = body
        .roles
        .iter()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                ApiError::invalid(format!(
                    "unknown role {r:?}; roles are {}",
                    Role::ALL.map(|r| r.as_str()).join(", ")
                ))
            })
        })
        .collect::<AppResult<Roles>>()?;
    let ttl = body.ttl.as_ref().map(Ttl::duration).transpose()?;
    let minted = state
        .service
        .mint_token(
            &ctx,
            MintToken {
                name: body.name,
                principal: body.principal,
                roles,
                workspaces: body.workspaces,
                ttl,
            },
        )
        .await?;
    let view = MintedView {
        token: &minted.token,
        meta: TokenView::of(&minted.record, state.service.now()),
    };
    // The token is a secret: its response buffer is wiped like a decrypt's.
    let mut resp = super::secret_body::json(&view)?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(no_store(resp))
}

/// `GET /auth/tokens`' query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A page of tokens' metadata.
#[derive(Serialize, ToSchema)]
#[schema(as = TokenPage)]
pub(crate) struct ListView {
    items: Vec<TokenView>,
    next_cursor: Option<String>,
}

/// Lists the tenant's tokens the caller may see (never a token or its hash).
#[utoipa::path(
    get,
    path = "/auth/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    security(("bearer" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of metadata (`Cache-Control: no-store`).", body = ListView),
        (status = 400, description = "`invalid_request`: a bad limit or cursor.", body = ErrorBody),
        (status = 403, description = "The caller may not list tokens.", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> AppResult<Response> {
    let Query(p) = params.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let page = state
        .service
        .list_tokens(&ctx, p.limit, p.cursor.as_deref())
        .await?;
    let now = state.service.now();
    Ok(no_store(
        Json(ListView {
            items: page.items.iter().map(|t| TokenView::of(t, now)).collect(),
            next_cursor: page.next_cursor,
        })
        .into_response(),
    ))
}

/// Revokes a token (204 also when already revoked).
#[utoipa::path(
    delete,
    path = "/auth/tokens/{id}",
    operation_id = "revokeToken",
    tag = "tokens",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "The token's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, description = "`invalid_id`: not a UUID.", body = ErrorBody),
        (status = 403, description = "The caller may not revoke that token.", body = ErrorBody),
        (status = 404, description = "No such token the caller may see.", body = ErrorBody),
    )
)]
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<StatusCode> {
    let id: TokenId = path_param(path)?
        .parse()
        .map_err(|e: rcrt_types::ParseError| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", e.to_string())
        })?;
    state.service.revoke_token(&ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
