//! The one mapping from errors to HTTP status and JSON body: `{"error":{"code","message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rcrt_core::CoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A 400 with code `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// Any status and stable code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: no valid credentials. Says nothing about why (the log does).
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 404 for a route that does not exist.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    }

    /// 408: the body did not arrive within `HTTP_BODY_TIMEOUT`.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            CoreError::Invalid(_) => (S::BAD_REQUEST, "invalid_request"),
            CoreError::ReasonRequired | CoreError::VaultReasonRequired => {
                (S::BAD_REQUEST, "reason_required")
            }
            CoreError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            CoreError::NotFound
            | CoreError::VaultNotFound
            | CoreError::VaultKeyNotFound
            | CoreError::TokenNotFound => (S::NOT_FOUND, "not_found"),
            CoreError::NameTaken | CoreError::VaultNameTaken => (S::CONFLICT, "name_taken"),
            CoreError::AmbiguousVault => (S::CONFLICT, "ambiguous_vault"),
            CoreError::VersionMismatch { .. } => (S::PRECONDITION_FAILED, "version_mismatch"),
            CoreError::EmptyValue { .. } => (S::BAD_REQUEST, "empty_value"),
            CoreError::VersionNotFound => (S::NOT_FOUND, "version_not_found"),
            CoreError::VersionDestroyed => (S::GONE, "version_destroyed"),
            CoreError::CurrentVersion => (S::CONFLICT, "current_version"),
            CoreError::Expired => (S::GONE, "expired"),
            CoreError::IdempotencyKeyReused => (S::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            CoreError::ValueTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "value_too_large"),
            CoreError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "store_unavailable"),
            CoreError::DecryptFailed => (S::INTERNAL_SERVER_ERROR, "decrypt_failed"),
            CoreError::KekUnavailable { .. }
            | CoreError::KekProviderUnavailable { .. }
            | CoreError::KeksUnavailable(_) => (S::SERVICE_UNAVAILABLE, "kek_unavailable"),
            CoreError::UnknownKeks(_) | CoreError::Internal(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal")
            }
            _ => (S::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = if status.is_server_error() {
            // The detail goes to the log (with the request id from the trace span), not the client.
            // Escaped: a store error may quote what a request carried.
            tracing::error!(error = %e.to_string().escape_debug(), "request failed");
            match status {
                // KEK ids are public fingerprints, and naming the missing one is what lets an
                // operator fix it.
                _ if code == "kek_unavailable" => e.to_string(),
                S::SERVICE_UNAVAILABLE => "the secret store is unavailable; retry later".to_owned(),
                _ if code == "decrypt_failed" => "the secret could not be decrypted".to_owned(),
                _ => "internal error".to_owned(),
            }
        } else {
            e.to_string()
        };
        Self {
            status,
            code,
            message,
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a human-readable message.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: clients branch on it.
    #[schema(value_type = ErrorCode)]
    pub code: &'static str,
    /// For people; its wording may change. Never carries a secret value, key or token.
    pub message: String,
}

/// Every `code` an error answer may carry (the README's error table).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the codes for the OpenAPI document; the codes are `&'static str`.
pub enum ErrorCode {
    /// 400: a parameter or field is not acceptable.
    InvalidRequest,
    /// 400: the body is not JSON or not of the expected shape.
    InvalidJson,
    /// 400: a path id is not a UUID.
    InvalidId,
    /// 400: a decrypt without a reason.
    ReasonRequired,
    /// 400: an empty value without `allow_empty`.
    EmptyValue,
    /// 401: no valid credential.
    Unauthorized,
    /// 403: the caller lacks the role or the scope.
    Forbidden,
    /// 404: no such secret, vault, key, token or endpoint.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 409: the name is taken in that scope.
    NameTaken,
    /// 409: a vault name used in several workspaces, without `?workspace=`.
    AmbiguousVault,
    /// 404: the secret never had the version asked for.
    VersionNotFound,
    /// 409: the current version cannot be destroyed.
    CurrentVersion,
    /// 410: the version asked for was destroyed.
    VersionDestroyed,
    /// 410: the secret's `expires_at` has passed.
    Expired,
    /// 412: `If-Match` names no current version.
    VersionMismatch,
    /// 413: the value is over `MAX_VALUE_BYTES`.
    ValueTooLarge,
    /// 413: the body is over the body limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: an `Idempotency-Key` used before with a different request.
    IdempotencyKeyReused,
    /// 421: authentication is disabled and the `Host` is not allowed.
    HostNotAllowed,
    /// 500: a stored value failed to authenticate.
    DecryptFailed,
    /// 500: an unexpected failure (the log has the detail).
    Internal,
    /// 503: the store cannot be reached.
    StoreUnavailable,
    /// 503: a KEK or its provider cannot be used.
    KekUnavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                },
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
