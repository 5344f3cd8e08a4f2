//! The access log: one line per request, target [`ACCESS_TARGET`] (with `LOG_FORMAT=json`,
//! one JSON object per line from `tracing-subscriber`'s JSON formatter).
//!
//! An access line names the request (id, method, route template, status, latency) and, once the
//! authentication middleware has filled the request's [`AccessSlot`], who made it (principal and
//! tenant). It never holds the raw path or query (a path may carry secret or vault names),
//! headers, bodies, values, keys or tokens.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::Response;

use crate::http::guard::RequestId;

/// The `tracing` target of access lines (filter it with `RUST_LOG`, e.g. `info,rcrt::access=off`).
pub const ACCESS_TARGET: &str = "rcrt::access";

/// The route of a request that matched none (a 404 or 405 from the fallback).
const UNMATCHED: &str = "unmatched";

/// Who made a request, once authenticated: shared between the access middleware (which logs it
/// after the response) and the authentication middleware (which fills it in).
#[derive(Clone, Debug, Default)]
pub struct AccessSlot(Arc<OnceLock<Caller>>);

/// An authenticated caller as the access log names it.
#[derive(Debug)]
struct Caller {
    user_id: String,
    tenant: String,
}

/// Records the authenticated caller of the request whose extensions these are, for its access
/// line. Without the access middleware (no slot) it does nothing; a second call is ignored.
pub fn record_principal(ext: &Extensions, user_id: &str, tenant: &str) {
    if let Some(slot) = ext.get::<AccessSlot>() {
        // A second caller for the same request cannot happen; the first one is kept if it does.
        let _ = slot.0.set(Caller {
            user_id: user_id.to_owned(),
            tenant: tenant.to_owned(),
        });
    }
}

/// Middleware: one `info` line on [`ACCESS_TARGET`] per request, after its response. Must run
/// inside the router (for the route template) and outside the authentication middleware (for the
/// caller).
pub async fn access_log(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let slot = AccessSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let response = next.run(req).await;
    // Until the response head: a streamed body's transfer is not counted.
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let request_id = request_id.as_deref().unwrap_or("-");
    let status = response.status().as_u16();
    match slot.0.get() {
        Some(caller) => tracing::info!(
            target: ACCESS_TARGET,
            request_id,
            method = %method,
            route,
            status,
            latency_ms,
            principal = caller.user_id.as_str(),
            tenant = caller.tenant.as_str(),
            "access"
        ),
        None => tracing::info!(
            target: ACCESS_TARGET,
            request_id,
            method = %method,
            route,
            status,
            latency_ms,
            "access"
        ),
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn record_principal_fills_the_slot_once_and_needs_one() {
        let mut ext = Extensions::new();
        record_principal(&ext, "nobody", "t0"); // no slot: nothing to do, no panic
        let slot = AccessSlot::default();
        ext.insert(slot.clone());
        record_principal(&ext, "alice", "acme");
        record_principal(&ext, "mallory", "evil");
        let caller = slot.0.get().unwrap();
        assert_eq!(
            (caller.user_id.as_str(), caller.tenant.as_str()),
            ("alice", "acme")
        );
    }
}
