use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rcrt_core::{CreateSecret, RequestContext};
use rcrt_store::SecretMeta;
use rcrt_types::{Principal, Scope, ScopeType, SecretId, SecretName};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use super::error::ErrorBody;
use super::guard::RequestId;
use super::openapi::{RewrapStateName, ScopeTypeName};
use super::{ApiError, AppState};

pub(crate) type AppResult<T> = Result<T, ApiError>;

/// The alternative credential header (the original RCRT's API keys).
const X_API_KEY: &str = "x-api-key";

/// The authenticated caller and the request id, as the core wants them.
pub(crate) struct Caller(pub(crate) RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Set by `authenticate`, which guards every route that uses this extractor.
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        // Ours, set by `guard::request_ids` on every request; never the caller's.
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(|| "-".to_owned(), |r| r.0.to_string());
        Ok(Caller(RequestContext {
            principal,
            request_id,
        }))
    }
}

/// Middleware: authenticates the caller or answers 401 before any handler runs.
pub(crate) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let presented = crate::auth::credential(header(AUTHORIZATION.as_str()), header(X_API_KEY));
    // A console session cookie counts only when no credential header is sent and there is
    // authentication to do.
    let cookie = (presented.is_none() && state.console.enabled && !state.auth.is_disabled())
        .then(|| super::console::session_cookie_token(headers))
        .flatten();
    let outcome = match cookie {
        Some(token) => super::console::authenticate_cookie(&state, req.method(), headers, &token)
            .await
            .map(|(principal, session)| (principal, Some(session))),
        None => state
            .auth
            .authenticate(&state.service, presented)
            .await
            .map(|principal| (principal, None))
            .map_err(not_authenticated),
    };
    match outcome {
        Ok((principal, session)) => {
            crate::access_log::record_principal(
                req.extensions(),
                &principal.user_id,
                principal.tenant.as_str(),
            );
            req.extensions_mut().insert(principal);
            if let Some(session) = session {
                req.extensions_mut().insert(session);
            }
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The answer to a credential that was not accepted: 503 when the token store could not be
/// asked, else one 401 whatever the reason (which goes to the log only).
pub(crate) fn not_authenticated(e: crate::auth::AuthError) -> ApiError {
    match e {
        crate::auth::AuthError::Unavailable => ApiError::from(rcrt_core::CoreError::Unavailable(
            rcrt_store::StoreError::Unavailable("token lookup".into()),
        )),
        e => {
            tracing::info!(reason = %e, "request not authenticated");
            ApiError::unauthorized()
        }
    }
}

/// Parses a JSON body: content type checked (415), size already limited (413), shape checked (400).
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<T> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else if super::guard::is_body_timeout(&rejection) {
            ApiError::request_timeout()
        } else {
            ApiError::invalid("request body could not be read")
        }
    })?;
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json")
                || (v.starts_with("application/") && v.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    // Every body is an object (or, for a decrypt, null): serde would also fill a struct from
    // an array (`[null, null]`), which the documented schema does not allow.
    if body.trim_ascii_start().starts_with(b"[") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e.path(), e.inner()))?;
    // Trailing characters after the document.
    de.end().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body is not valid JSON",
        )
    })?;
    Ok(value)
}

/// Fields that carry secret values: `value` (secrets, vault keys) and `secrets` (a new vault's
/// values).
const SECRET_FIELDS: [&str; 2] = ["value", "secrets"];

/// The 400 for a body that did not deserialize. serde's message names the field and quotes
/// what it found when the type is wrong (``invalid type: integer `987654321` ``): for the
/// fields that carry secret values that detail is dropped, so a value sent with the wrong type
/// never comes back in an error (which clients log). Other fields keep serde's message.
fn json_error(path: &serde_path_to_error::Path, e: &serde_json::Error) -> ApiError {
    use serde_path_to_error::Segment;
    let what = if e.is_syntax() || e.is_eof() || e.is_io() {
        "request body is not valid JSON".to_owned()
    } else {
        match path.iter().next() {
            Some(Segment::Map { key }) if key == "value" => "`value` must be a string".to_owned(),
            Some(Segment::Map { key }) if SECRET_FIELDS.contains(&key.as_str()) => {
                format!("`{key}` must be an object whose values are strings")
            }
            None => format!("request body has the wrong shape: {e}"),
            Some(_) => format!("request body has the wrong shape: `{path}`: {e}"),
        }
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", what)
}

/// A path parameter; one that does not extract is a 400.
pub(crate) fn path_param<T>(p: Result<Path<T>, PathRejection>) -> AppResult<T> {
    p.map(|Path(v)| v)
        .map_err(|_| ApiError::invalid("invalid path"))
}

pub(crate) fn secret_id(path: Result<Path<String>, PathRejection>) -> AppResult<SecretId> {
    let raw = path_param(path)?;
    raw.parse::<SecretId>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", e.to_string()))
}

/// Metadata as the API shows it (never the value).
#[derive(Serialize, ToSchema)]
#[schema(as = Secret)]
pub(crate) struct SecretView {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    #[schema(value_type = ScopeTypeName)]
    scope_type: ScopeType,
    /// The workspace or agent id; null for a global secret.
    scope_id: Option<String>,
    /// The current version (also the `ETag`).
    #[schema(minimum = 1)]
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Free text for people (empty when unset).
    description: String,
    /// Key → value labels.
    labels: std::collections::BTreeMap<String, String>,
    /// When decrypts start answering 410 `expired`; null: never.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Versions kept (older ones destroyed as new ones arrive); null: the deployment default.
    #[schema(minimum = 1, maximum = 100)]
    max_versions: Option<u32>,
    /// Set on a soft-deleted secret: when it was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    deleted_at: Option<String>,
    /// Set on a soft-deleted secret: when the purge job shreds it (restorable until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    purge_at: Option<String>,
}

/// An instant as the API writes it (RFC 3339, UTC).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl From<&SecretMeta> for SecretView {
    fn from(m: &SecretMeta) -> Self {
        Self {
            id: m.id.to_string(),
            name: m.name.to_string(),
            scope_type: m.scope.scope_type(),
            scope_id: m.scope.scope_id().map(str::to_owned),
            version: m.version,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            description: m.attrs.description.clone(),
            labels: m.attrs.labels.clone(),
            expires_at: m.attrs.expires_at.map(rfc3339),
            max_versions: m.attrs.max_versions,
            deleted_at: m.deleted.map(|d| rfc3339(d.deleted_at)),
            purge_at: m.deleted.map(|d| rfc3339(d.purge_at)),
        }
    }
}

/// A response carrying plaintext must not be cached anywhere on its way.
pub(crate) fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn with_etag(status: StatusCode, meta: &SecretMeta) -> Response {
    let mut resp = (status, Json(SecretView::from(meta))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.version)) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// `GET /ready`'s answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    status: &'static str,
    /// The current KEK's id (a public fingerprint, never key material).
    kek_id: String,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    responses((status = 200, description = "The process runs.", body = Health))
)]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers, the current KEK's provider can be used and every KEK id the
/// store uses is held.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve.", body = Ready),
        (status = 503, description = "`store_unavailable`, or `kek_unavailable` naming the KEK provider or the KEK ids not held.", body = ErrorBody),
    )
)]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> AppResult<Json<Ready>> {
    state.service.ready().await?;
    // The current KEK's (and the recovery KEK's) provider must answer (its circuit closed), or
    // every write and decrypt answers 503 kek_unavailable until it does. The provider's own
    // error (account ids, addresses) went to the log when the circuit opened; this answer is
    // unauthenticated and says only which provider.
    let health = state.service.keys().health();
    if !health.available {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "kek_unavailable",
            format!(
                "not ready: the KEK provider {} cannot be used; writes and decrypts answer 503 kek_unavailable until it recovers (probed in the background; the server log says why)",
                health.provider
            ),
        ));
    }
    // Every KEK id the store uses must be held, or decrypts of those versions answer 503 (a
    // store re-wrapped to another KEK underneath a running server): from the census cached
    // for the metrics, so /ready stays cheap.
    state
        .rewrap
        .check_keks_cached(super::metrics::CENSUS_MAX_AGE)
        .await?;
    Ok(Json(Ready {
        status: "ready",
        kek_id: state.service.keys().current_kek_id().as_str().to_owned(),
    }))
}

/// A new secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateSecret)]
pub(crate) struct CreateBody {
    /// Letters, digits, `-`, `_`, `.`, `/`; 1 to 128 characters.
    #[schema(pattern = "^[A-Za-z0-9._/-]{1,128}$")]
    name: String,
    /// The value (UTF-8 text); never returned except by a decrypt.
    #[schema(value_type = String)]
    value: Zeroizing<String>,
    #[schema(value_type = ScopeTypeName)]
    scope_type: String,
    /// Required for `workspace` and `agent`, refused for `global`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    scope_id: Option<String>,
    /// Stores an empty `value` (refused otherwise: see `rcrt_core::check_not_empty`).
    #[serde(default)]
    allow_empty: bool,
    /// At most 1024 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    description: String,
    /// At most 64; keys `^[a-z0-9][a-z0-9._/-]{0,62}$`, values at most 256 characters without
    /// control characters or `,`.
    #[serde(default)]
    #[schema(value_type = super::lifecycle::Labels)]
    labels: std::collections::BTreeMap<String, String>,
    /// RFC 3339; decrypts answer 410 `expired` from then on.
    #[serde(default)]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Versions to keep, 1 to 100 (default: the deployment's `MAX_VERSIONS`).
    #[serde(default, deserialize_with = "super::lifecycle::optional_whole")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    max_versions: Option<i64>,
}

/// Creates a secret (version 1 under a fresh DEK).
#[utoipa::path(
    post,
    path = "/secrets",
    operation_id = "createSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(super::lifecycle::IdempotencyHeader),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created: its metadata (never the value).", body = SecretView,
            headers(("ETag" = String, description = "The version, quoted: `\"1\"`.")),
            links(
                ("GetSecret" = (operation_id = "getSecret", parameters(("id" = "$response.body#/id")))),
                ("DecryptSecret" = (operation_id = "decryptSecret", parameters(("id" = "$response.body#/id")))),
                ("UpdateSecret" = (operation_id = "updateSecret", parameters(("id" = "$response.body#/id")))),
                ("DeleteSecret" = (operation_id = "deleteSecret", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "`invalid_request`, `invalid_json` or `empty_value`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that scope.", body = ErrorBody),
        (status = 409, description = "`name_taken`: the name exists in that scope (a soft-deleted secret in its recovery window keeps its name).", body = ErrorBody),
        (status = 413, description = "`value_too_large` or `payload_too_large`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key came with another request.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let body: CreateBody = json_body(&headers, body)?;
    rcrt_core::check_not_empty(&body.value, body.allow_empty)?;
    let name: SecretName = body
        .name
        .parse()
        .map_err(|e: rcrt_types::ParseError| ApiError::invalid(e.to_string()))?;
    let scope_type: ScopeType = body
        .scope_type
        .parse()
        .map_err(|e: rcrt_types::ParseError| ApiError::invalid(e.to_string()))?;
    let scope = Scope::new(scope_type, body.scope_id.as_deref())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let attrs = rcrt_store::SecretAttributes {
        description: body.description,
        labels: body.labels,
        expires_at: super::lifecycle::parse_time("expires_at", body.expires_at.as_deref())?,
        max_versions: super::lifecycle::cap(body.max_versions)?,
    };
    let idem = super::lifecycle::idempotency(&headers, || {
        vec![
            b"create".to_vec(),
            name.as_str().as_bytes().to_vec(),
            scope.scope_type().as_str().as_bytes().to_vec(),
            scope.storage_id().as_bytes().to_vec(),
            super::lifecycle::attrs_fingerprint(&attrs),
        ]
    })?;
    let written = state
        .service
        .create_idempotent(
            &ctx,
            CreateSecret {
                name,
                scope,
                value: body.value,
                attrs,
            },
            idem,
        )
        .await?;
    Ok(super::lifecycle::replayed(
        with_etag(StatusCode::CREATED, &written.value),
        written.replayed,
    ))
}

/// `GET /secrets`' query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only this scope type.
    #[param(value_type = Option<ScopeTypeName>)]
    scope_type: Option<String>,
    /// Only this workspace or agent id; without `scope_type`, workspace and agent scopes of
    /// that id. No control characters (400).
    #[param(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    scope_id: Option<String>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Only secrets with these labels: `key=value`, several separated by `,` (all must match).
    #[param(
        pattern = "^[a-z0-9][a-z0-9._/-]{0,62}=[^,\\u0000-\\u001f\\u007f-\\u009f]{0,256}(,[a-z0-9][a-z0-9._/-]{0,62}=[^,\\u0000-\\u001f\\u007f-\\u009f]{0,256})*$"
    )]
    label: Option<String>,
    /// Only names starting with this. No control characters (400).
    #[param(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    name_prefix: Option<String>,
    /// Only secrets expiring within this long from now, already expired included (`30d`).
    #[param(pattern = "^(0|[1-9][0-9]{0,4}[smhd])$")]
    expiring_within: Option<String>,
    /// List soft-deleted secrets (in their recovery window) instead of live ones.
    deleted: Option<bool>,
}

/// A page of secrets' metadata.
#[derive(Serialize, ToSchema)]
#[schema(as = SecretPage)]
pub(crate) struct ListView {
    items: Vec<SecretView>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// Lists the secrets the caller may see (metadata only).
#[utoipa::path(
    get,
    path = "/secrets",
    operation_id = "listSecrets",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of metadata.", body = ListView),
        (status = 400, description = "`invalid_request`: a bad parameter, limit or cursor.", body = ErrorBody),
        (status = 403, description = "The caller lacks `secrets.read` or that scope.", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> AppResult<Json<ListView>> {
    let Query(p) = params.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let scope_type = p
        .scope_type
        .as_deref()
        .map(str::parse::<ScopeType>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let filter = rcrt_store::ListFilter {
        labels: super::lifecycle::parse_labels(p.label.as_deref())?,
        name_prefix: p.name_prefix.filter(|p| !p.is_empty()),
        expires_before: match p.expiring_within.as_deref() {
            None => None,
            Some(w) => {
                let within = super::lifecycle::parse_window("expiring_within", w)?;
                let within = time::Duration::try_from(within).unwrap_or(time::Duration::MAX);
                Some(
                    state
                        .service
                        .now()
                        .checked_add(within)
                        .ok_or_else(|| ApiError::invalid("expiring_within is too long"))?,
                )
            }
        },
        deleted: p.deleted.unwrap_or(false),
    };
    let page = state
        .service
        .list_filtered(
            &ctx,
            (scope_type, p.scope_id),
            filter,
            p.limit,
            p.cursor.as_deref(),
        )
        .await?;
    Ok(Json(ListView {
        items: page.items.iter().map(SecretView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A secret's metadata.
#[utoipa::path(
    get,
    path = "/secrets/{id}",
    operation_id = "getSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "The secret's id.")),
    responses(
        (status = 200, description = "Its metadata.", body = SecretView,
            headers(("ETag" = String, description = "The current version, quoted."))),
        (status = 400, description = "`invalid_id`: not a UUID.", body = ErrorBody),
        (status = 403, description = "The caller lacks `secrets.read`.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see.", body = ErrorBody),
    )
)]
pub(crate) async fn get_meta(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let meta = state.service.get(&ctx, id).await?;
    Ok(with_etag(StatusCode::OK, &meta))
}

/// A decrypt's optional body.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DecryptRequest)]
pub(crate) struct DecryptBody {
    /// Why the value is read (audited); required unless `X-Access-Reason` is sent. Trimmed;
    /// at most 1024 characters, no control characters.
    #[serde(default)]
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        max_length = 1024
    )]
    reason: Option<String>,
    /// A version to read instead of the current one.
    #[serde(default, deserialize_with = "super::lifecycle::optional_whole")]
    #[schema(minimum = 1)]
    version: Option<i64>,
}

/// The `X-Access-Reason` header, if any.
pub(crate) fn access_reason(headers: &HeaderMap) -> AppResult<Option<String>> {
    headers
        .get("x-access-reason")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("X-Access-Reason must be visible ASCII"))
        })
        .transpose()
}

/// A decrypted value.
#[derive(Serialize, ToSchema)]
#[schema(as = DecryptedSecret)]
pub(crate) struct DecryptView<'a> {
    value: &'a str,
    /// The version read (the current one unless the request named one).
    #[schema(minimum = 1)]
    version: i64,
}

/// Decrypts the current version (audited, with the reason).
#[utoipa::path(
    post,
    path = "/secrets/{id}/decrypt",
    operation_id = "decryptSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The secret's id."),
        ("X-Access-Reason" = Option<String>, Header, pattern = "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$", description = "The reason, for a caller that sends no body (visible ASCII)."),
    ),
    request_body(content = Option<DecryptBody>, description = "The reason (or an empty body and `X-Access-Reason`)."),
    responses(
        (status = 200, description = "The value (`Cache-Control: no-store`).", body = DecryptView,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "`reason_required`, `invalid_id`, `invalid_json` or `invalid_request`.", body = ErrorBody),
        (status = 403, description = "The caller lacks `secrets.decrypt` or that scope.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see (`not_found`), or no such version (`version_not_found`).", body = ErrorBody),
        (status = 410, description = "`expired`: the secret's `expires_at` has passed; `version_destroyed`: the version asked for was destroyed.", body = ErrorBody),
        (status = 500, description = "`decrypt_failed`: the stored value failed to authenticate.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
    )
)]
pub(crate) async fn decrypt(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    // The reason may come in the body or, for callers without a body, in X-Access-Reason.
    let empty_body = matches!(&body, Ok(b) if b.is_empty());
    let from_body = if empty_body {
        DecryptBody::default()
    } else {
        // `null` is the document's "no body" too.
        json_body::<Option<DecryptBody>>(&headers, body)?.unwrap_or_default()
    };
    let from_header = access_reason(&headers)?;
    let reason = from_body.reason.or(from_header);
    let (plaintext, version) = state
        .service
        .decrypt_version(&ctx, id, reason.as_deref(), from_body.version)
        .await?;
    let value = std::str::from_utf8(plaintext.expose_secret())
        .map_err(|_| ApiError::from(rcrt_core::CoreError::DecryptFailed))?;
    Ok(no_store(super::secret_body::json(&DecryptView {
        value,
        version,
    })?))
}

/// A new version's value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateSecret)]
pub(crate) struct UpdateBody {
    #[schema(value_type = String)]
    value: Zeroizing<String>,
    /// Stores an empty `value` (refused otherwise).
    #[serde(default)]
    allow_empty: bool,
}

/// What an `If-Match` header asks of an update (RFC 9110 section 13.1.1).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// No header, or `*`: any current version will do (the secret must exist, as for every
    /// update).
    Any,
    /// One of these versions must be current: those named by a strong tag whose opaque text is
    /// exactly our ETag's (`"5"`, not `"05"`). Empty when no tag can match (a tag not ours, or
    /// a list of nothing): the update then fails its precondition (412).
    Versions(Vec<i64>),
    /// Only weak tags: If-Match compares strongly, so a weak tag matches no version and the
    /// update fails its precondition (412), with a message saying why.
    OnlyWeak,
}

/// One entity tag of an `If-Match` list (RFC 9110 section 8.8.3).
struct EntityTag<'a> {
    weak: bool,
    /// The bytes between the quotes.
    opaque: &'a [u8],
}

/// `etagc`: visible ASCII but `"`, or obs-text.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// `s` without its leading optional whitespace (spaces and tabs).
fn skip_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    s.get(n..).unwrap_or_default()
}

/// Splits `#entity-tag` into its tags, skipping empty elements (RFC 9110 section 5.6.1.2);
/// `None` if malformed. Quotes are tracked, since an opaque tag may hold a comma.
fn entity_tags(field: &[u8]) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = skip_ows(field);
    while let Some((&first, after)) = rest.split_first() {
        if first == b',' {
            rest = skip_ows(after);
            continue;
        }
        let (weak, quoted) = match rest.strip_prefix(b"W/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let inner = quoted.strip_prefix(b"\"")?;
        let close = inner.iter().position(|&b| b == b'"')?;
        let (opaque, tail) = inner.split_at(close);
        if !opaque.iter().copied().all(is_etagc) {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        // After a tag: the end, or a comma.
        rest = skip_ows(tail.get(1..).unwrap_or_default());
        if !rest.is_empty() && !rest.starts_with(b",") {
            return None;
        }
    }
    Some(tags)
}

/// The version whose ETag (`"<version>"`) has exactly this opaque text: decimal, no sign and no
/// leading zero, so `"05"` and `"+5"` name no version.
fn version_of(opaque: &[u8]) -> Option<i64> {
    match opaque.first() {
        Some(b'1'..=b'9') if opaque.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(opaque).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// Parses `If-Match`: `*`, or a list of entity tags (`"3"`, `W/"3"`, `"2", "3"`), all its lines
/// taken as one list (RFC 9110 section 5.3). Only a malformed field is a 400: a well-formed tag
/// that is not ours matches nothing (412).
fn if_match(headers: &HeaderMap) -> AppResult<IfMatch> {
    let mut lines = headers.get_all(IF_MATCH).iter().peekable();
    if lines.peek().is_none() {
        return Ok(IfMatch::Any);
    }
    let field = lines
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b","[..]);
    if skip_ows(&field).trim_ascii_end() == b"*" {
        return Ok(IfMatch::Any);
    }
    let tags = entity_tags(&field).ok_or_else(|| {
        ApiError::invalid("If-Match must be *, or entity tags such as \"3\" or W/\"3\"")
    })?;
    if !tags.is_empty() && tags.iter().all(|t| t.weak) {
        return Ok(IfMatch::OnlyWeak);
    }
    Ok(IfMatch::Versions(
        tags.iter()
            .filter(|t| !t.weak)
            .filter_map(|t| version_of(t.opaque))
            .collect(),
    ))
}

/// The version the core's compare-and-swap must find current, for an update with `cond`.
async fn expected_version(
    state: &AppState,
    ctx: &RequestContext,
    id: SecretId,
    cond: IfMatch,
) -> AppResult<Option<i64>> {
    Ok(match cond {
        IfMatch::Any => None,
        // Versions start at 1, so 0 is never current: the core answers 412 after its usual
        // checks (a missing secret stays 404, a refused one is audited as before).
        IfMatch::Versions(tags) if tags.is_empty() => Some(0),
        IfMatch::Versions(tags) if tags.len() == 1 => tags.first().copied(),
        // Several tags: the current one if listed (the core still checks it atomically), else
        // any of them, which then fails as stale. A secret the caller cannot see answers 404
        // from the update itself, audited there.
        IfMatch::Versions(tags) => {
            let current = state.service.get(ctx, id).await.ok().map(|m| m.version);
            tags.iter()
                .copied()
                .find(|n| Some(*n) == current)
                .or(tags.first().copied())
        }
        IfMatch::OnlyWeak => Some(0),
    })
}

/// Writes a new version under a fresh DEK.
#[utoipa::path(
    put,
    path = "/secrets/{id}",
    operation_id = "updateSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The secret's id."),
        ("If-Match" = Option<String>, Header, pattern = r#"^([ \t]*\*[ \t]*|[ \t,]*((W/)?"[!#-~]*"([ \t]*,[ \t,]*(W/)?"[!#-~]*")*[ \t,]*)?)$"#, description = "`*` or the strong tag of the version to replace (`\"3\"`): 412 when it is not current."),
        super::lifecycle::IdempotencyHeader,
    ),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The new version's metadata.", body = SecretView,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "`invalid_id`, `invalid_json`, `invalid_request` (a malformed `If-Match`) or `empty_value`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that scope.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see.", body = ErrorBody),
        (status = 412, description = "`version_mismatch`: `If-Match` names no current version.", body = ErrorBody),
        (status = 413, description = "`value_too_large` or `payload_too_large`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key came with another request.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let cond = if_match(&headers)?;
    let body: UpdateBody = json_body(&headers, body)?;
    rcrt_core::check_not_empty(&body.value, body.allow_empty)?;
    let (expected, why) = resolve_if_match(&state, &ctx, id, cond).await?;
    let idem = super::lifecycle::idempotency(&headers, || {
        vec![
            b"update".to_vec(),
            id.to_string().into_bytes(),
            expected
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into_bytes(),
        ]
    })?;
    let written = state
        .service
        .update_idempotent(&ctx, id, body.value, expected, idem)
        .await
        .map_err(|e| mismatch_error(e, why))?;
    Ok(super::lifecycle::replayed(
        with_etag(StatusCode::OK, &written.value),
        written.replayed,
    ))
}

/// The core's error, with a stale `If-Match`'s message replaced by `why` when the version the
/// core was given is a stand-in (see `update`).
pub(crate) fn mismatch_error(e: rcrt_core::CoreError, why: Option<&str>) -> ApiError {
    match (e, why) {
        (rcrt_core::CoreError::VersionMismatch { current, .. }, Some(why)) => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            format!("{why}; send the strong tag \"{current}\""),
        ),
        (other, _) => ApiError::from(other),
    }
}

/// Parses `If-Match` (a malformed field is a 400).
pub(crate) fn parse_if_match(headers: &HeaderMap) -> AppResult<IfMatch> {
    if_match(headers)
}

/// The version a write with this `If-Match` must find current (see `expected_version`), and
/// the message to give when no tag could match: the core's mismatch message names the version
/// it was given, which for those is a stand-in (0).
pub(crate) async fn resolve_if_match(
    state: &AppState,
    ctx: &RequestContext,
    id: SecretId,
    cond: IfMatch,
) -> AppResult<(Option<i64>, Option<&'static str>)> {
    let why = match &cond {
        IfMatch::OnlyWeak => {
            Some("If-Match compares strongly (RFC 9110), so a weak tag W/\"...\" never matches")
        }
        IfMatch::Versions(v) if v.is_empty() => {
            Some("no entity tag in If-Match is one of this secret's (\"<version>\")")
        }
        _ => None,
    };
    Ok((expected_version(state, ctx, id, cond).await?, why))
}

/// Deletes a secret: every version crypto-shredded, audit rows kept.
#[utoipa::path(
    delete,
    path = "/secrets/{id}",
    operation_id = "deleteSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The secret's id."),
        super::lifecycle::DeleteParams,
    ),
    responses(
        (status = 200, description = "Soft-deleted: hidden, restorable until `purge_at`.", body = super::lifecycle::SoftDeletedView),
        (status = 204, description = "Deleted: every version crypto-shredded."),
        (status = 400, description = "`invalid_id`: not a UUID; `invalid_request`: a bad `recovery_window`.", body = ErrorBody),
        (status = 403, description = "The caller may not write to that scope.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see.", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<super::lifecycle::DeleteParams>, QueryRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let Query(p) = params.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let window = p
        .recovery_window
        .as_deref()
        .map(|w| super::lifecycle::parse_window("recovery_window", w))
        .transpose()?;
    Ok(
        match state.service.delete_with_window(&ctx, id, window).await? {
            rcrt_core::lifecycle::Deleted::Shredded => StatusCode::NO_CONTENT.into_response(),
            rcrt_core::lifecycle::Deleted::Soft(d) => (
                StatusCode::OK,
                Json(super::lifecycle::SoftDeletedView {
                    id: id.to_string(),
                    deleted_at: rfc3339(d.deleted_at),
                    purge_at: rfc3339(d.purge_at),
                }),
            )
                .into_response(),
        },
    )
}

pub(crate) async fn no_route() -> ApiError {
    ApiError::no_route()
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
    .into_response()
}

/// The background re-wrap's state.
#[derive(Serialize, ToSchema)]
#[schema(as = RewrapStatus)]
pub(crate) struct RewrapView {
    #[schema(value_type = RewrapStateName)]
    state: &'static str,
    /// Versions not yet under the current KEK (and recovery KEK).
    remaining: u64,
    /// Versions re-wrapped since the server started.
    rewrapped_total: u64,
    /// Versions that failed in the last pass.
    failed: u64,
}

/// The KEKs and the store's use of them (ids are public fingerprints, never key material).
#[derive(Serialize, ToSchema)]
#[schema(as = KekStatus)]
pub(crate) struct KekStatusView {
    current_kek_id: String,
    configured_kek_ids: Vec<String>,
    /// Secret versions per KEK id.
    versions_per_kek: std::collections::BTreeMap<String, i64>,
    rewrap: RewrapView,
}

async fn kek_status_view(state: &AppState) -> AppResult<KekStatusView> {
    let keys = state.service.keys();
    let status = state.rewrap.status().await?;
    Ok(KekStatusView {
        current_kek_id: keys.current_kek_id().to_string(),
        configured_kek_ids: keys.kek_ids().iter().map(ToString::to_string).collect(),
        // One census row per (KEK, recovery KEK): summed per KEK. A full scan, on the operator's
        // request only (the re-wrap job counts them and lets concurrent calls share one).
        versions_per_kek: rcrt_store::KekUsage::versions_per_kek(&state.rewrap.kek_usage().await?),
        rewrap: RewrapView {
            state: status.state.as_str(),
            remaining: status.remaining,
            rewrapped_total: status.rewrapped_total,
            failed: status.failed,
        },
    })
}

fn require_operator(ctx: &RequestContext) -> AppResult<()> {
    if rcrt_core::authz::is_operator(&ctx.principal) {
        Ok(())
    } else {
        Err(ApiError::from(rcrt_core::CoreError::Forbidden(
            "KEK administration needs rcrt.operator",
        )))
    }
}

/// The KEKs, the store's use of them and the background re-wrap (audited: `kek_status`).
#[utoipa::path(
    get,
    path = "/admin/kek/status",
    operation_id = "getKekStatus",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The status.", body = KekStatusView),
        (status = 403, description = "The caller lacks `rcrt.operator`.", body = ErrorBody),
    )
)]
pub(crate) async fn kek_status(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
) -> AppResult<Json<KekStatusView>> {
    require_operator(&ctx)?;
    // Audited before the answer (fail closed: no row, no answer).
    let current = state.service.keys().current_kek_id().to_string();
    state
        .service
        .audit_kek_admin(
            &ctx,
            rcrt_types::AuditAction::KekStatus,
            Some(format!("current KEK {current}")),
        )
        .await?;
    Ok(Json(kek_status_view(&state).await?))
}

/// Starts or resumes the background re-wrap onto the current KEK (audited:
/// `kek_rewrap_trigger`).
#[utoipa::path(
    post,
    path = "/admin/kek/rewrap",
    operation_id = "triggerKekRewrap",
    tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "A pass was requested; the status as it stands.", body = KekStatusView),
        (status = 403, description = "The caller lacks `rcrt.operator`.", body = ErrorBody),
    )
)]
pub(crate) async fn kek_rewrap(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
) -> AppResult<(StatusCode, Json<KekStatusView>)> {
    require_operator(&ctx)?;
    // Audited before the pass is asked for, so an unaudited trigger never happens.
    let current = state.service.keys().current_kek_id().to_string();
    state
        .service
        .audit_kek_admin(
            &ctx,
            rcrt_types::AuditAction::KekRewrapTrigger,
            Some(format!("re-wrap pass requested onto current KEK {current}")),
        )
        .await?;
    state.rewrap.trigger();
    Ok((StatusCode::ACCEPTED, Json(kek_status_view(&state).await?)))
}
