//! HTTP: routes, request parsing and the error mapping. Handlers stay thin: parse, call
//! [`rcrt_core::Service`], map the result.

mod audit;
pub mod console;
mod error;
pub mod guard;
mod lifecycle;
mod metrics;
pub mod openapi;
mod routes;
mod secret_body;
mod tokens;
mod vaults;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use axum::Router;
use rcrt_core::rewrap_job::RewrapJob;
use rcrt_core::Service;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ErrorBody, ErrorDetail};
use guard::{BodyLimits, ClientRequestId, HostPolicy, RequestId};

/// The request id header: our id for the request on every response (a caller's own id comes
/// back as `X-Client-Request-Id`).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What handlers share.
pub struct AppState {
    /// The service.
    pub service: Service,
    /// The background re-wrap.
    pub rewrap: Arc<RewrapJob>,
    /// How callers are authenticated.
    pub auth: Authenticator,
    /// The web console.
    pub console: console::ConsoleOptions,
}

/// The body limit for a value limit: JSON may escape each byte to six (`\u0000`), plus room for
/// the other fields. Values over the value limit but under this get a 413 from the core check.
pub fn body_limit(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_mul(6).saturating_add(16 * 1024)
}

/// What the router takes from the configuration.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// Largest secret value in bytes (the body limit follows from it).
    pub max_value_bytes: usize,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
    /// `Some` when authentication is disabled: only these `Host` names are served.
    pub host_policy: Option<HostPolicy>,
}

/// The router with every layer, ready to serve.
pub fn app(state: Arc<AppState>, opts: AppOptions) -> Router {
    let exporter = metrics::Exporter::new();
    // Remote KEK calls (latency, errors, circuit, DEK cache) are recorded by the same exporter.
    state.service.keys().observe_with(exporter.clone());
    // Everything under /secrets, /auth, /admin and /audit needs an authenticated caller.
    let protected = Router::new()
        .route("/secrets", post(routes::create).get(routes::list))
        .route(
            "/secrets/{id}",
            get(routes::get_meta)
                .put(routes::update)
                .patch(lifecycle::patch)
                .delete(routes::delete),
        )
        .route("/secrets/{id}/decrypt", post(routes::decrypt))
        .route("/secrets/{id}/versions", get(lifecycle::versions))
        .route(
            "/secrets/{id}/versions/{version}/destroy",
            post(lifecycle::destroy_version),
        )
        .route("/secrets/{id}/rollback", post(lifecycle::rollback))
        .route("/secrets/{id}/restore", post(lifecycle::restore))
        .route("/secrets/vaults", post(vaults::create).get(vaults::list))
        .route(
            "/secrets/vaults/{vault}",
            get(vaults::get_meta).delete(vaults::delete),
        )
        .route(
            "/secrets/vaults/{vault}/keys/{key}",
            axum::routing::put(vaults::put_key).delete(vaults::delete_key),
        )
        .route("/secrets/vault/{vault}", get(vaults::values))
        .route("/auth/tokens", post(tokens::create).get(tokens::list))
        .route("/auth/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/admin/kek/status", get(routes::kek_status))
        .route("/admin/kek/rewrap", post(routes::kek_rewrap))
        .route("/audit", get(audit::query))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::authenticate,
        ));
    let console = state
        .console
        .enabled
        .then(|| console::router(state.clone()));
    let router = Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route(
            "/metrics",
            get(metrics::scrape).layer(axum::Extension(exporter.clone())),
        )
        // The OpenAPI document and the docs page: public, like the API's shape.
        .merge(openapi::router())
        .merge(protected)
        .merge(console.unwrap_or_default())
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit(opts.max_value_bytes)))
        .layer(CatchPanicLayer::custom(routes::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits {
                max_bytes: body_limit(opts.max_value_bytes),
                timeout: opts.body_timeout,
            },
            guard::body_limits,
        ));
    // Browsers say where a request comes from: one from another site that could change
    // anything is refused, whatever its credentials (CSRF, also without authentication).
    let router = router.layer(axum::middleware::from_fn(guard::cross_site_check));
    let router = match opts.host_policy {
        Some(policy) => router.layer(axum::middleware::from_fn_with_state(
            policy,
            guard::host_check,
        )),
        None => router,
    };
    router
        // Outside the other layers, so a 413, 421 or caught panic is counted too; inside the
        // router, so the matched route template is known.
        .layer(axum::middleware::from_fn_with_state(
            exporter,
            metrics::track,
        ))
        // Inside the request span (its fields are on the line) and the router (route template);
        // outside authentication, which names the caller through the request's AccessSlot.
        .layer(axum::middleware::from_fn(crate::access_log::access_log))
        // Spans carry method, route template and the request ids only: never the raw path,
        // other headers or bodies.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
                    let client_id = req
                        .extensions()
                        .get::<ClientRequestId>()
                        .and_then(|c| c.0.clone());
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        // The route template, never the raw path: it may carry names.
                        route = req
                            .extensions()
                            .get::<axum::extract::MatchedPath>()
                            .map_or("unmatched", |m| m.as_str()),
                        request_id = %id.as_deref().unwrap_or("-"),
                        client_request_id = %client_id.as_deref().unwrap_or("-"),
                    )
                })
                // The access log writes the one line per request.
                .on_response(()),
        )
        .layer(axum::middleware::from_fn(guard::request_ids))
}
