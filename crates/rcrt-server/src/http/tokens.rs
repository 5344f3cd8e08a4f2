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

use super::routes::{json_body, no_store, path_param, AppResult, Caller};
use super::{ApiError, AppState};

/// A token's lifetime: seconds, or text such as `30d`, `12h`, `90m`, `1h 30m`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

impl Ttl {
    fn duration(&self) -> AppResult<Duration> {
        match self {
            Self::Seconds(s) => Ok(Duration::from_secs(*s)),
            Self::Text(t) => humantime::parse_duration(t.trim()).map_err(|_| {
                ApiError::invalid(
                    "ttl must be seconds or a duration such as \"30d\", \"12h\", \"90m\"",
                )
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    name: String,
    #[serde(default)]
    principal: Option<String>,
    roles: Vec<String>,
    #[serde(default)]
    workspaces: Vec<String>,
    #[serde(default)]
    ttl: Option<Ttl>,
}

/// A token's metadata as the API shows it.
#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    tenant: String,
    principal: String,
    roles: Vec<&'static str>,
    workspaces: Vec<String>,
    created_by: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
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

#[derive(Serialize)]
struct MintedView<'a> {
    token: &'a str,
    #[serde(flatten)]
    meta: TokenView,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct ListView {
    items: Vec<TokenView>,
    next_cursor: Option<String>,
}

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
