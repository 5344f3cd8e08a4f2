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
use zeroize::Zeroizing;

use super::guard::RequestId;
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
    let outcome = state.auth.authenticate(&state.service, presented).await;
    match outcome {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(crate::auth::AuthError::Unavailable) => {
            ApiError::from(rcrt_core::CoreError::Unavailable(
                rcrt_store::StoreError::Unavailable("token lookup".into()),
            ))
            .into_response()
        }
        Err(e) => {
            tracing::info!(reason = %e, "request not authenticated");
            ApiError::unauthorized().into_response()
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

fn secret_id(path: Result<Path<String>, PathRejection>) -> AppResult<SecretId> {
    let raw = path_param(path)?;
    raw.parse::<SecretId>()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", e.to_string()))
}

/// Metadata as the API shows it (never the value).
#[derive(Serialize)]
pub(crate) struct SecretView {
    id: String,
    name: String,
    scope_type: ScopeType,
    scope_id: Option<String>,
    version: i64,
    created_at: String,
    updated_at: String,
}

impl From<&SecretMeta> for SecretView {
    fn from(m: &SecretMeta) -> Self {
        let fmt = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        Self {
            id: m.id.to_string(),
            name: m.name.to_string(),
            scope_type: m.scope.scope_type(),
            scope_id: m.scope.scope_id().map(str::to_owned),
            version: m.version,
            created_at: fmt(m.created_at),
            updated_at: fmt(m.updated_at),
        }
    }
}

/// A response carrying plaintext must not be cached anywhere on its way.
pub(crate) fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn with_etag(status: StatusCode, meta: &SecretMeta) -> Response {
    let mut resp = (status, Json(SecretView::from(meta))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.version)) {
        resp.headers_mut().insert(ETAG, v);
    }
    resp
}

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub(crate) async fn ready(
    State(state): State<Arc<AppState>>,
) -> AppResult<Json<serde_json::Value>> {
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
    Ok(Json(serde_json::json!({
        "status": "ready",
        "kek_id": state.service.keys().current_kek_id().as_str(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    value: Zeroizing<String>,
    scope_type: String,
    #[serde(default)]
    scope_id: Option<String>,
    /// Stores an empty `value` (refused otherwise: see `rcrt_core::check_not_empty`).
    #[serde(default)]
    allow_empty: bool,
}

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
    let meta = state
        .service
        .create(
            &ctx,
            CreateSecret {
                name,
                scope,
                value: body.value,
            },
        )
        .await?;
    Ok(with_etag(StatusCode::CREATED, &meta))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    scope_type: Option<String>,
    scope_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct ListView {
    items: Vec<SecretView>,
    next_cursor: Option<String>,
}

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
    let page = state
        .service
        .list(&ctx, scope_type, p.scope_id, p.limit, p.cursor.as_deref())
        .await?;
    Ok(Json(ListView {
        items: page.items.iter().map(SecretView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub(crate) async fn get_meta(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let meta = state.service.get(&ctx, id).await?;
    Ok(with_etag(StatusCode::OK, &meta))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecryptBody {
    #[serde(default)]
    reason: Option<String>,
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

#[derive(Serialize)]
struct DecryptView<'a> {
    value: &'a str,
    version: i64,
}

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
        json_body::<DecryptBody>(&headers, body)?
    };
    let from_header = access_reason(&headers)?;
    let reason = from_body.reason.or(from_header);
    let (plaintext, version) = state.service.decrypt(&ctx, id, reason.as_deref()).await?;
    let value = std::str::from_utf8(plaintext.expose_secret())
        .map_err(|_| ApiError::from(rcrt_core::CoreError::DecryptFailed))?;
    Ok(no_store(super::secret_body::json(&DecryptView {
        value,
        version,
    })?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    value: Zeroizing<String>,
    /// Stores an empty `value` (refused otherwise).
    #[serde(default)]
    allow_empty: bool,
}

/// What an `If-Match` header asks of an update (RFC 9110 section 13.1.1).
#[derive(Debug, PartialEq, Eq)]
enum IfMatch {
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
    // The core's mismatch message names the version we passed it, which for these two is a
    // stand-in (0): say instead why nothing matched.
    let why = match &cond {
        IfMatch::OnlyWeak => {
            Some("If-Match compares strongly (RFC 9110), so a weak tag W/\"...\" never matches")
        }
        IfMatch::Versions(v) if v.is_empty() => {
            Some("no entity tag in If-Match is one of this secret's (\"<version>\")")
        }
        _ => None,
    };
    let expected = expected_version(&state, &ctx, id, cond).await?;
    let meta = state
        .service
        .update(&ctx, id, body.value, expected)
        .await
        .map_err(|e| match (e, why) {
            (rcrt_core::CoreError::VersionMismatch { current, .. }, Some(why)) => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                format!("{why}; send the strong tag \"{current}\""),
            ),
            (other, _) => ApiError::from(other),
        })?;
    Ok(with_etag(StatusCode::OK, &meta))
}

pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<StatusCode> {
    let id = secret_id(path)?;
    state.service.delete(&ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
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

#[derive(Serialize)]
pub(crate) struct RewrapView {
    state: &'static str,
    remaining: u64,
    rewrapped_total: u64,
    failed: u64,
}

#[derive(Serialize)]
pub(crate) struct KekStatusView {
    current_kek_id: String,
    configured_kek_ids: Vec<String>,
    versions_per_kek: std::collections::BTreeMap<String, i64>,
    rewrap: RewrapView,
}

async fn kek_status_view(state: &AppState) -> AppResult<KekStatusView> {
    let keys = state.service.keys();
    let status = state.rewrap.status().await?;
    Ok(KekStatusView {
        current_kek_id: keys.current_kek_id().to_string(),
        configured_kek_ids: keys.kek_ids().iter().map(ToString::to_string).collect(),
        // One census row per (KEK, recovery KEK): summed per KEK.
        versions_per_kek: rcrt_store::KekUsage::versions_per_kek(&state.service.kek_usage().await?),
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

pub(crate) async fn kek_status(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
) -> AppResult<Json<KekStatusView>> {
    require_operator(&ctx)?;
    Ok(Json(kek_status_view(&state).await?))
}

pub(crate) async fn kek_rewrap(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
) -> AppResult<(StatusCode, Json<KekStatusView>)> {
    require_operator(&ctx)?;
    state.rewrap.trigger();
    Ok((StatusCode::ACCEPTED, Json(kek_status_view(&state).await?)))
}
