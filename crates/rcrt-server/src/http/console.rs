//! The web console: its static assets at `/ui`, its sessions, and the cookie and CSRF rules
//! for the API calls it makes.
//!
//! The console is a static page and one script, embedded in the binary: no data is in any
//! HTML the server sends, the script fetches everything from the same JSON API as any client,
//! so every screen goes through the same authorization as the API.
//!
//! Signing in exchanges a credential (a service token or a JWT) for a session: a service token
//! minted with exactly the credential's authority ([`rcrt_core::tokens::CONSOLE_SESSION_NAME`]),
//! held only in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` behind TLS). The credential
//! itself is never stored by the browser. A request authenticated by the cookie that changes
//! anything must also carry `X-CSRF-Token`, a value bound to the session that only a page of
//! the console's own origin can read ([`rcrt_crypto::ServiceToken::csrf_binding`]). Signing out
//! revokes the session's token.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use cookie::{Cookie, SameSite};
use rcrt_core::RequestContext;
use rcrt_crypto::ServiceToken;
use rcrt_types::{Principal, TokenId};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;

use super::guard::RequestId;
use super::routes::{json_body, AppResult};
use super::{ApiError, AppState};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "rcrt_console";
/// The header that carries a session's anti-CSRF value.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// The policy of every console response: scripts, styles and images from this origin only, no
/// inline script or style, requests to this origin only, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// What the router needs to know about the console.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleOptions {
    /// Served at all (`CONSOLE`).
    pub enabled: bool,
    /// How long a session lasts (`CONSOLE_SESSION_TTL`).
    pub session_ttl: Duration,
    /// The listener speaks TLS: the cookie is `Secure`.
    pub tls: bool,
    /// The server's `AUTH_MODE` as shown to the console (`token`, `jwt`, `jwt,token`,
    /// `disabled`).
    pub auth_label: &'static str,
}

/// A request authenticated by a console session cookie: the session's token id, when it ends
/// and its anti-CSRF value, for `/ui/session`.
#[derive(Clone)]
pub struct ConsoleSession {
    /// The session token's id (revoked on sign-out).
    pub id: TokenId,
    /// When the session ends.
    pub expires_at: Option<time::OffsetDateTime>,
    /// The value the console must send in `X-CSRF-Token`.
    pub csrf: String,
}

/// The CSRF value is bound to the session's secret: never in a log line.
impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .field("csrf", &"<redacted>")
            .finish()
    }
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    bytes: include_bytes!("../../console/index.html"),
};

/// Every file under `/ui/`.
const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../console/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../console/favicon.svg"),
    },
];

/// The console's routes (`/ui`, its files and `/ui/session`), with its security headers on
/// every answer. Reading and ending a session need a signed-in caller.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let signed_in = Router::new()
        .route("/ui/session", get(session).delete(sign_out))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::routes::authenticate,
        ));
    let mut router = Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/session", axum::routing::post(sign_in))
        .route("/ui/{asset}", get(asset))
        .merge(signed_in);
    let headers = [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        // Any answer here may hold what a reveal put on screen, or a session's CSRF value.
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
    ];
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    router
}

async fn index() -> Response {
    serve(&INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a),
        None => ApiError::no_route().into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.bytes,
    )
        .into_response()
}

/// The session as the console sees it.
#[derive(Serialize)]
struct SessionView {
    /// The server's `AUTH_MODE`.
    auth: &'static str,
    /// The session's token id, as `GET /auth/tokens` lists it (`null` without authentication).
    session_id: Option<String>,
    /// Send back in `X-CSRF-Token` on every request that changes something (empty without
    /// authentication).
    csrf_token: String,
    principal: PrincipalView,
    /// When the session ends (`null` without authentication).
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<time::OffsetDateTime>,
    /// The caller holds `rcrt.operator` (KEK status and re-wrap).
    operator: bool,
}

#[derive(Serialize)]
struct PrincipalView {
    user_id: String,
    tenant: String,
    roles: Vec<&'static str>,
    workspaces: Vec<String>,
}

fn session_view(
    opts: &ConsoleOptions,
    principal: &Principal,
    session_id: Option<TokenId>,
    csrf_token: String,
    expires_at: Option<time::OffsetDateTime>,
) -> SessionView {
    SessionView {
        auth: opts.auth_label,
        session_id: session_id.map(|id| id.to_string()),
        csrf_token,
        principal: PrincipalView {
            user_id: principal.user_id.clone(),
            tenant: principal.tenant.as_str().to_owned(),
            roles: rcrt_core::tokens::role_names(principal.roles),
            workspaces: principal.workspaces.clone(),
        },
        expires_at,
        operator: rcrt_core::authz::is_operator(principal),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    /// A service token or a JWT (wiped once the request is answered).
    credential: zeroize::Zeroizing<String>,
}

/// `POST /ui/session`: a credential in, a session cookie out. Without authentication there is
/// nothing to exchange: the answer describes the anonymous caller and sets no cookie.
async fn sign_in(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let req: SignIn = json_body(&headers, body)?;
    let opts = state.console;
    let (mut principal, ends) = match state
        .auth
        .authenticate_for_session(&state.service, req.credential.trim())
        .await
    {
        Ok(found) => found,
        Err(e) => return Err(super::routes::not_authenticated(e)),
    };
    if state.auth.is_disabled() {
        return Ok(
            Json(session_view(&opts, &principal, None, String::new(), None)).into_response(),
        );
    }
    // The session ends with the credential (a JWT's `exp` included).
    principal.expires_at = ends;
    let ctx = RequestContext {
        principal,
        request_id: request_id.0.to_string(),
    };
    // Opened with a service token: revoking that token ends the session.
    let parent = ServiceToken::parse(req.credential.trim())
        .ok()
        .map(|t| TokenId::from(t.id()));
    let minted = state
        .service
        .open_console_session(&ctx, opts.session_ttl, parent)
        .await?;
    let token = ServiceToken::parse(&minted.token)
        .map_err(|_| ApiError::from(rcrt_core::CoreError::Internal("minted token".into())))?;
    let max_age = minted.record.expires_at.map_or(Duration::ZERO, |e| {
        Duration::try_from(e - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
    });
    let cookie = session_cookie(&opts, &headers, minted.token.as_str(), max_age);
    let view = session_view(
        &opts,
        &ctx.principal,
        Some(minted.record.id),
        token.csrf_binding(),
        minted.record.expires_at,
    );
    let mut resp = (StatusCode::CREATED, Json(view)).into_response();
    resp.headers_mut().insert(SET_COOKIE, cookie);
    Ok(resp)
}

/// `GET /ui/session`: the signed-in caller, and the session's CSRF value again (after a page
/// reload the script has lost it). Only a cookie session, or a server without authentication.
async fn session(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    session: Option<Extension<ConsoleSession>>,
) -> AppResult<Json<SessionView>> {
    let opts = state.console;
    if state.auth.is_disabled() {
        return Ok(Json(session_view(
            &opts,
            &principal,
            None,
            String::new(),
            None,
        )));
    }
    let Some(Extension(session)) = session else {
        return Err(ApiError::unauthorized());
    };
    Ok(Json(session_view(
        &opts,
        &principal,
        Some(session.id),
        session.csrf,
        session.expires_at,
    )))
}

/// `DELETE /ui/session`: revokes the session's token (audited as `token_revoke`) and clears
/// the cookie.
async fn sign_out(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(request_id): Extension<RequestId>,
    session: Option<Extension<ConsoleSession>>,
    headers: HeaderMap,
) -> AppResult<Response> {
    if state.auth.is_disabled() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let Some(Extension(session)) = session else {
        return Err(ApiError::unauthorized());
    };
    let ctx = RequestContext {
        principal,
        request_id: request_id.0.to_string(),
    };
    state.service.revoke_token(&ctx, session.id).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        SET_COOKIE,
        session_cookie(&state.console, &headers, "", Duration::ZERO),
    );
    Ok(resp)
}

/// The `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, the whole origin (the console calls
/// the API's paths), `Secure` when the listener speaks TLS or a proxy in front says the request
/// came over https.
fn session_cookie(
    opts: &ConsoleOptions,
    headers: &HeaderMap,
    value: &str,
    max_age: Duration,
) -> HeaderValue {
    let behind_tls_proxy = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let cookie = Cookie::build((COOKIE_NAME, value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(opts.tls || behind_tls_proxy)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .build();
    // A token is hex and `_`: always a valid header value.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The session token in the request's `rcrt_console` cookie, if there is exactly one that
/// parses as a token.
pub fn session_cookie_token(headers: &HeaderMap) -> Option<ServiceToken> {
    let mut found = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == COOKIE_NAME);
    let first = found.next()?;
    // Two cookies of that name (one planted for a parent path or domain): trust neither.
    if found.next().is_some() {
        return None;
    }
    ServiceToken::parse(first.value()).ok()
}

/// Authenticates a request by its console session cookie. A request that may change anything
/// (any method but GET, HEAD and OPTIONS) must carry the session's `X-CSRF-Token`: 403 without
/// it, after the session itself was checked (401 first).
pub async fn authenticate_cookie(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    token: &ServiceToken,
) -> Result<(Principal, ConsoleSession), ApiError> {
    let session = state
        .service
        .authenticate_console_session(token)
        .await
        .map_err(|e| match e {
            rcrt_core::tokens::TokenAuthError::Unavailable(e) => {
                ApiError::from(rcrt_core::CoreError::Unavailable(e))
            }
            other => {
                tracing::info!(reason = %other, "console session refused");
                ApiError::unauthorized()
            }
        })?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !token.csrf_matches(presented) {
            tracing::info!("console request refused: missing or wrong X-CSRF-Token");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "a request made with the console's session cookie must carry its X-CSRF-Token",
            ));
        }
    }
    Ok((
        session.principal,
        ConsoleSession {
            id: session.id,
            expires_at: session.expires_at,
            csrf: token.csrf_binding(),
        },
    ))
}
