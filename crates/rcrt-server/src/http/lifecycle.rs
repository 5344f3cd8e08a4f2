//! The lifecycle routes (versions, rollback, destroy, restore, metadata) and the request pieces
//! they share with the secret routes: `Idempotency-Key`, times, windows and label filters.
//! The rules are in `rcrt_core::lifecycle`; `docs/lifecycle.md` is the user's view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use rcrt_core::lifecycle::{AttributesPatch, IdempotencyKey, Idempotent};
use rcrt_store::SecretAttributes;
use serde::{Deserialize, Deserializer, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::routes::{
    json_body, parse_if_match, path_param, resolve_if_match, rfc3339, secret_id, with_etag,
    AppResult, Caller, SecretView,
};
use super::{ApiError, AppState};

/// The OpenAPI schema of a label set (the rules of `rcrt_core::lifecycle::check_label`).
pub(crate) struct Labels;

impl utoipa::PartialSchema for Labels {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        let key = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .pattern(Some("^[a-z0-9][a-z0-9._/-]{0,62}$"))
            .build();
        let value = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .max_length(Some(256))
            .pattern(Some("^[^\\u0000-\\u001f\\u007f-\\u009f,]*$"));
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "Key → value labels: at most 64; keys 1-63 of a-z 0-9 . _ - / starting with a letter or digit; values at most 256 characters without control characters or ','.",
            ))
            .property_names(Some(key))
            .additional_properties(Some(value))
            .max_properties(Some(64))
            .into()
    }
}

impl utoipa::ToSchema for Labels {}

/// A JSON number with no fraction as an integer (`82` or `82.0`, as JSON Schema's `integer`
/// allows); `None` for a fraction or what an `i64` does not hold.
fn whole(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // ±2^63 is exact in f64; inside it a whole f64 converts without loss.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && f > -LIMIT && f < LIMIT).then(|| {
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        i
    })
}

fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    whole(&n).ok_or_else(|| serde::de::Error::custom("expected a whole number"))
}

/// A whole number or null.
pub(crate) fn optional_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| whole(&n).ok_or_else(|| serde::de::Error::custom("expected a whole number")))
        .transpose()
}

/// A present field that is a whole number or null (see [`present`]).
fn present_whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    optional_whole(d).map(Some)
}

/// A version cap as the core takes it (1 to 100 is checked there).
pub(crate) fn cap(n: Option<i64>) -> AppResult<Option<u32>> {
    n.map(|n| {
        u32::try_from(n).map_err(|_| ApiError::invalid("max_versions must be between 1 and 100"))
    })
    .transpose()
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";

/// The `Idempotency-Key` header (documented once, used by every idempotent write).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documents the header for the OpenAPI document; handlers read HeaderMap.
pub(crate) struct IdempotencyHeader {
    /// A retry with the same key (same principal, same request) gets the first answer back,
    /// with `Idempotent-Replayed: true`, instead of a second write. 1 to 255 printable ASCII
    /// characters; kept for `IDEMPOTENCY_TTL` (24 h).
    #[param(rename = "Idempotency-Key", pattern = "^[\\x20-\\x7e]{1,255}$")]
    idempotency_key: Option<String>,
}

/// The request's idempotency key, bound to the non-secret parts of what it asks (`parts` is
/// called only when the request carries a key, so requests without one pay nothing).
pub(crate) fn idempotency(
    headers: &HeaderMap,
    parts: impl FnOnce() -> Vec<Vec<u8>>,
) -> AppResult<Option<Idempotent>> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key must be printable ASCII"))?;
    let key = IdempotencyKey::parse(key)?;
    let parts = parts();
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(Some(Idempotent::new(key, &parts)))
}

/// Marks a replayed answer.
pub(crate) fn replayed(mut resp: Response, replayed: bool) -> Response {
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

/// Attributes as fingerprint bytes (serde_json of a BTreeMap-backed struct is deterministic).
pub(crate) fn attrs_fingerprint(attrs: &SecretAttributes) -> Vec<u8> {
    serde_json::to_vec(attrs).unwrap_or_default()
}

/// An optional RFC 3339 time field.
pub(crate) fn parse_time(field: &str, value: Option<&str>) -> AppResult<Option<OffsetDateTime>> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map(|t| t.to_offset(time::UtcOffset::UTC))
                .map_err(|_| ApiError::invalid(format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

/// A duration such as `7d`, `12h`, `30m` or `0`.
pub(crate) fn parse_window(field: &str, value: &str) -> AppResult<Duration> {
    let value = value.trim();
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|_| {
        ApiError::invalid(format!("{field} must be a duration such as 7d, 12h or 30m"))
    })
}

/// `key=value[,key=value...]` into pairs (checked in the core).
pub(crate) fn parse_labels(value: Option<&str>) -> AppResult<Vec<(String, String)>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| ApiError::invalid("label must be key=value[,key=value...]"))
        })
        .collect()
}

/// `DELETE /secrets/{id}`'s query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteParams {
    /// Keep the secret restorable this long (`7d`; `0`: shred at once; at most `90d`). Without
    /// it, the deployment's `DELETE_RECOVERY_WINDOW` (default `0`).
    #[param(
        pattern = "^(0|([1-9]|[1-8][0-9]|90)d|([1-9][0-9]{0,2}|1[0-9]{3}|20[0-9]{2}|21[0-5][0-9]|2160)h|[1-9][0-9]{0,4}m|[1-9][0-9]{0,5}s)$"
    )]
    pub(crate) recovery_window: Option<String>,
}

/// A soft delete's answer.
#[derive(Serialize, ToSchema)]
#[schema(as = SoftDeletedSecret)]
pub(crate) struct SoftDeletedView {
    #[schema(format = Uuid)]
    pub(crate) id: String,
    #[schema(format = DateTime)]
    pub(crate) deleted_at: String,
    /// Restorable until then; shredded by the purge job after.
    #[schema(format = DateTime)]
    pub(crate) purge_at: String,
}

/// One version's record (never its value).
#[derive(Serialize, ToSchema)]
#[schema(as = SecretVersion)]
pub(crate) struct VersionView {
    #[schema(minimum = 1)]
    version: i64,
    #[schema(format = DateTime)]
    created_at: String,
    /// The principal that wrote it (empty for versions written before this was recorded).
    created_by: String,
    /// `current`, `kept` or `destroyed`.
    #[schema(pattern = "^(current|kept|destroyed)$")]
    state: &'static str,
    #[schema(format = DateTime)]
    destroyed_at: Option<String>,
}

/// A page of versions, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = SecretVersionPage)]
pub(crate) struct VersionsView {
    versions: Vec<VersionView>,
    /// Pass as `cursor` for the next (older) page; null on the last.
    next_cursor: Option<String>,
}

/// `GET /secrets/{id}/versions`' query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct VersionsParams {
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A secret's versions, newest first (metadata only).
#[utoipa::path(
    get,
    path = "/secrets/{id}/versions",
    operation_id = "listSecretVersions",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "The secret's id."), VersionsParams),
    responses(
        (status = 200, description = "A page of versions.", body = VersionsView),
        (status = 400, description = "`invalid_id` or `invalid_request`.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see.", body = ErrorBody),
    )
)]
pub(crate) async fn versions(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<VersionsParams>, QueryRejection>,
) -> AppResult<Json<VersionsView>> {
    let id = secret_id(path)?;
    let Query(p) = params.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let page = state
        .service
        .versions(&ctx, id, p.limit, p.cursor.as_deref())
        .await?;
    Ok(Json(VersionsView {
        versions: page
            .items
            .into_iter()
            .map(|v| VersionView {
                version: v.version,
                created_at: rfc3339(v.created_at),
                created_by: v.created_by,
                state: v.state.as_str(),
                destroyed_at: v.destroyed_at.map(rfc3339),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A rollback's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RollbackSecret)]
pub(crate) struct RollbackBody {
    /// The version whose value becomes the new current version.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 1)]
    version: i64,
}

/// Writes a new version holding an earlier version's value, sealed again under a fresh DEK.
#[utoipa::path(
    post,
    path = "/secrets/{id}/rollback",
    operation_id = "rollbackSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The secret's id."),
        ("If-Match" = Option<String>, Header, pattern = r#"^([ \t]*\*[ \t]*|[ \t,]*((W/)?"[!#-~]*"([ \t]*,[ \t,]*(W/)?"[!#-~]*")*[ \t,]*)?)$"#, description = "`*` or the strong tag of the version to replace (`\"3\"`): 412 when it is not current."),
        IdempotencyHeader,
    ),
    request_body = RollbackBody,
    responses(
        (status = 200, description = "The new version's metadata.", body = SecretView,
            headers(("ETag" = String, description = "The new version, quoted."))),
        (status = 400, description = "`invalid_id`, `invalid_json` or `invalid_request`.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see (`not_found`) or version (`version_not_found`).", body = ErrorBody),
        (status = 410, description = "`version_destroyed`.", body = ErrorBody),
        (status = 412, description = "`version_mismatch`.", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `kek_unavailable`.", body = ErrorBody),
    )
)]
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let cond = parse_if_match(&headers)?;
    let body: RollbackBody = json_body(&headers, body)?;
    if body.version < 1 {
        return Err(ApiError::invalid("version must be at least 1"));
    }
    let (expected, why) = resolve_if_match(&state, &ctx, id, cond).await?;
    let idem = idempotency(&headers, || {
        vec![
            b"rollback".to_vec(),
            id.to_string().into_bytes(),
            body.version.to_string().into_bytes(),
            expected
                .map(|v| v.to_string())
                .unwrap_or_default()
                .into_bytes(),
        ]
    })?;
    let written = state
        .service
        .rollback(&ctx, id, body.version, expected, idem)
        .await
        .map_err(|e| super::routes::mismatch_error(e, why))?;
    Ok(replayed(
        with_etag(StatusCode::OK, &written.value),
        written.replayed,
    ))
}

/// Destroys one version: its wrapped DEK and sealed value are deleted.
#[utoipa::path(
    post,
    path = "/secrets/{id}/versions/{version}/destroy",
    operation_id = "destroySecretVersion",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("id" = String, Path, format = Uuid, description = "The secret's id."),
        ("version" = i64, Path, minimum = 1, description = "The version to destroy."),
    ),
    responses(
        (status = 204, description = "Destroyed (also when it already was)."),
        (status = 400, description = "`invalid_id` or `invalid_request`.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see, or version.", body = ErrorBody),
        (status = 409, description = "`current_version`: write or roll back first.", body = ErrorBody),
    )
)]
pub(crate) async fn destroy_version(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> AppResult<StatusCode> {
    let (id, version) = path_param(path)?;
    let id = secret_id(Ok(Path(id)))?;
    let version: i64 = version
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::invalid("version must be a whole number from 1"))?;
    state.service.destroy_version(&ctx, id, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a soft-deleted secret back within its recovery window.
#[utoipa::path(
    post,
    path = "/secrets/{id}/restore",
    operation_id = "restoreSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "The secret's id.")),
    responses(
        (status = 200, description = "Restored: its metadata.", body = SecretView),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 404, description = "No soft-deleted secret with this id the caller may see, or its window ended.", body = ErrorBody),
    )
)]
pub(crate) async fn restore(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    path: Result<Path<String>, PathRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let meta = state.service.restore(&ctx, id).await?;
    Ok(with_etag(StatusCode::OK, &meta))
}

/// `Some(v)` for a field that is present, so `Option<Option<T>>` tells absent (`None`) from
/// `null` (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A metadata change: only the fields given change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PatchSecret)]
pub(crate) struct PatchBody {
    /// At most 1024 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    description: Option<String>,
    /// Replaces the whole label set.
    #[serde(default)]
    #[schema(value_type = Option<Labels>)]
    labels: Option<BTreeMap<String, String>>,
    /// RFC 3339, or null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Option<String>>,
    /// 1 to 100, or null for the deployment default.
    #[serde(default, deserialize_with = "present_whole")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    max_versions: Option<Option<i64>>,
}

/// Changes a secret's description, labels, expiry or version cap (no new version).
#[utoipa::path(
    patch,
    path = "/secrets/{id}",
    operation_id = "patchSecret",
    tag = "secrets",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, format = Uuid, description = "The secret's id.")),
    request_body = PatchBody,
    responses(
        (status = 200, description = "Its metadata.", body = SecretView),
        (status = 400, description = "`invalid_id`, `invalid_json` or `invalid_request`.", body = ErrorBody),
        (status = 404, description = "No such secret the caller may see.", body = ErrorBody),
    )
)]
pub(crate) async fn patch(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let id = secret_id(path)?;
    let body: PatchBody = json_body(&headers, body)?;
    let expires_at = match body.expires_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(t)) => Some(parse_time("expires_at", Some(&t))?),
    };
    let meta = state
        .service
        .patch(
            &ctx,
            id,
            AttributesPatch {
                description: body.description,
                labels: body.labels,
                expires_at,
                max_versions: body.max_versions.map(cap).transpose()?,
            },
        )
        .await?;
    Ok(with_etag(StatusCode::OK, &meta))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn windows_labels_and_times() {
        assert_eq!(parse_window("w", "0").unwrap(), Duration::ZERO);
        assert!(parse_window("w", "").is_err());
        assert_eq!(
            parse_window("w", "7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        // The largest values the documented patterns allow are accepted.
        assert_eq!(
            parse_window("w", "2160h").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert!(parse_window("w", "99999d").is_ok());
        assert!(parse_window("w", "soon").is_err());
        assert_eq!(
            parse_labels(Some("env=prod,team=a=b")).unwrap(),
            vec![
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a=b".to_owned())
            ]
        );
        assert!(parse_labels(Some("novalue")).is_err());
        assert!(parse_labels(None).unwrap().is_empty());
        assert!(parse_labels(Some("")).is_err());
        assert!(parse_time("t", Some("2026-12-01T00:00:00Z"))
            .unwrap()
            .is_some());
        assert!(parse_time("t", Some("tomorrow")).is_err());
    }
}
