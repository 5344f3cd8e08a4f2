//! `GET /audit`: one page of the caller's tenant's audit log (needs `audit.read`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcrt_core::audit::AuditFilter;
use rcrt_store::AuditRecord;
use rcrt_types::{AuditAction, AuditOutcome, SecretId};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::openapi::{AuditActionName, AuditOutcomeName};
use super::routes::{no_store, AppResult, Caller};
use super::{ApiError, AppState};

/// The page size when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

/// `GET /audit`'s query. Every value is parsed here, so a bad one is a 400 naming it.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only rows about this secret.
    #[param(format = Uuid)]
    secret_id: Option<String>,
    /// Only rows by this principal.
    user_id: Option<String>,
    /// Only this action.
    #[param(value_type = Option<AuditActionName>)]
    action: Option<String>,
    /// Only this outcome.
    #[param(value_type = Option<AuditOutcomeName>)]
    outcome: Option<String>,
    /// Only rows at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only rows before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// The previous page's `next_cursor` (opaque).
    cursor: Option<String>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One audit row as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub(crate) struct AuditItem {
    /// The row's id (increasing).
    id: i64,
    #[schema(format = DateTime)]
    timestamp: String,
    #[schema(value_type = AuditActionName)]
    action: String,
    #[schema(format = Uuid)]
    secret_id: Option<String>,
    #[schema(format = Uuid)]
    token_id: Option<String>,
    /// Who did it.
    user_id: String,
    /// The stated reason, or an operation's summary.
    reason: Option<String>,
    #[schema(value_type = AuditOutcomeName)]
    outcome: String,
    /// The request id (joins with the server logs).
    request_id: String,
    /// The secret version the row names (a decrypt of a given version, a rollback's source,
    /// a destroyed version); null otherwise.
    version: Option<i64>,
}

/// One page of audit rows, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub(crate) struct AuditPageView {
    items: Vec<AuditItem>,
    /// Pass as `cursor` for the next (older) page; null on the last.
    next_cursor: Option<String>,
}

impl From<&AuditRecord> for AuditItem {
    fn from(r: &AuditRecord) -> Self {
        Self {
            id: r.id,
            timestamp: r.timestamp.format(&Rfc3339).unwrap_or_default(),
            action: r.action.clone(),
            secret_id: r.secret_id.map(|s| s.to_string()),
            token_id: r.token_id.map(|t| t.to_string()),
            user_id: r.user_id.clone(),
            reason: r.reason.clone(),
            outcome: r.outcome.clone(),
            request_id: r.request_id.clone(),
            version: r.version,
        }
    }
}

/// The cursor a client sees: the last row's id, base64url, so clients treat it as opaque.
fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

/// The row id a cursor names; anything not made by [`encode_cursor`] is a 400.
fn decode_cursor(cursor: &str) -> AppResult<i64> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|id| *id > 0 && encode_cursor(*id) == cursor)
        .ok_or_else(|| ApiError::invalid("invalid cursor: pass a next_cursor from a previous page"))
}

fn time_param(name: &str, value: Option<&str>) -> AppResult<Option<OffsetDateTime>> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .ok()
                // In UTC it must still be a year the stores can hold (an offset can push
                // 9999-12-31 past it, and converting that would panic in the drivers).
                .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
                .filter(|t| (0..=9999).contains(&t.year()))
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z"
                    ))
                })
        })
        .transpose()
}

impl AuditParams {
    fn filter(self) -> AppResult<AuditFilter> {
        let secret_id = self
            .secret_id
            .as_deref()
            .map(str::parse::<SecretId>)
            .transpose()
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", e.to_string()))?;
        let action = self
            .action
            .as_deref()
            .map(|a| {
                AuditAction::parse(a).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "unknown action; actions are {}",
                        AuditAction::ALL.map(|a| a.as_str()).join(", ")
                    ))
                })
            })
            .transpose()?;
        let outcome = self
            .outcome
            .as_deref()
            .map(|o| {
                AuditOutcome::parse(o).ok_or_else(|| {
                    ApiError::invalid("unknown outcome; outcomes are success, failure, denied")
                })
            })
            .transpose()?;
        Ok(AuditFilter {
            secret_id,
            user_id: self.user_id,
            action,
            outcome,
            since: time_param("since", self.since.as_deref())?,
            until: time_param("until", self.until.as_deref())?,
            cursor: self.cursor.as_deref().map(decode_cursor).transpose()?,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// One page of the caller's tenant's audit log, newest first (the read is audited too).
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "queryAudit",
    tag = "audit",
    security(("bearer" = []), ("api_key" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of rows (`Cache-Control: no-store`).", body = AuditPageView,
            headers(("Cache-Control" = String, description = "`no-store`."))),
        (status = 400, description = "`invalid_request` (an unknown action or outcome, a bad time, cursor or limit) or `invalid_id`.", body = ErrorBody),
        (status = 403, description = "The caller lacks `audit.read`.", body = ErrorBody),
    )
)]
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    Caller(ctx): Caller,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> AppResult<Response> {
    let Query(p) = params.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let filter = p.filter()?;
    let page = state.service.query_audit(&ctx, filter).await?;
    Ok(no_store(
        Json(AuditPageView {
            items: page.records.iter().map(AuditItem::from).collect(),
            next_cursor: page.next_cursor.map(encode_cursor),
        })
        .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_others() {
        for id in [1, 42, i64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        }
        for bad in ["", "x", "MA", "LTE", "!!", "NDI=", " NDI", "MDQy"] {
            assert!(decode_cursor(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn times_out_of_range_in_utc_are_refused_not_passed_on() {
        // Both parse as RFC 3339, but in UTC they fall outside years 0..=9999: the stores'
        // conversions panicked on them (a 500) before.
        for bad in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59"] {
            assert!(time_param("since", Some(bad)).is_err(), "{bad} accepted");
        }
        let t = time_param("since", Some("2026-01-31T12:00:00+02:00"))
            .unwrap()
            .unwrap();
        assert_eq!(t.offset(), time::UtcOffset::UTC);
        assert_eq!(t.hour(), 10);
    }
}
