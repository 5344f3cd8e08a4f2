//! Logs for machines: the access log (one line per request, target [`ACCESS_TARGET`]) and the
//! `LOG_FORMAT=json` line format ([`JsonLines`], [`JsonFields`]).
//!
//! An access line names the request (id, method, route template, status, latency) and, once the
//! authentication middleware has filled the request's [`AccessSlot`], who made it (principal and
//! tenant). It never holds the raw path or query (a path may carry secret or vault names),
//! headers, bodies, values, keys or tokens.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

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

/// Collects `tracing` fields into a JSON object: numbers and booleans as such, everything else
/// as a string.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().to_owned(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// Stores a span's fields as a JSON object (the text [`JsonLines`] reads back).
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut JsonVisitor(&mut map));
        write!(writer, "{}", Value::Object(map))
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Fields recorded after the span's creation: merged into its object, not appended.
        let mut map: Map<String, Value> = serde_json::from_str(&current.fields).unwrap_or_default();
        fields.record(&mut JsonVisitor(&mut map));
        current.fields = Value::Object(map).to_string();
        Ok(())
    }
}

/// `LOG_FORMAT=json`: one JSON object per line with `timestamp` (RFC 3339, UTC), `level`,
/// `target`, the fields of the event's spans (outermost first, so `request_id` of the request's
/// span is on every line logged while serving it) and the event's own fields (`message`, ...),
/// all at the top level.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut map = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str(&fields.fields) {
                    map.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut map));
        let meta = event.metadata();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| fmt::Error)?;
        map.insert("timestamp".into(), now.into());
        map.insert("level".into(), meta.level().as_str().into());
        map.insert("target".into(), meta.target().into());
        writeln!(writer, "{}", Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn json_lines(f: impl FnOnce()) -> Vec<Value> {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields)
                .event_format(JsonLines)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn json_lines_flatten_event_and_span_fields() {
        let lines = json_lines(|| {
            let outer = tracing::info_span!("request", request_id = "r-1", route = "/x/{id}");
            let _o = outer.enter();
            let inner = tracing::info_span!("decrypt", n = tracing::field::Empty);
            inner.record("n", 3);
            let _i = inner.enter();
            tracing::warn!(
                status = 200u16,
                ok = true,
                ms = 1.5,
                "quote \" and\nnewline"
            );
        });
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["request_id"], "r-1");
        assert_eq!(l["route"], "/x/{id}");
        assert_eq!(l["n"], 3);
        assert_eq!(l["status"], 200);
        assert_eq!(l["ok"], true);
        assert_eq!(l["ms"], 1.5);
        assert_eq!(l["message"], "quote \" and\nnewline");
        assert_eq!(l["level"], "WARN");
        assert!(l["target"].as_str().unwrap().starts_with("rcrt_server"));
        let ts = l["timestamp"].as_str().unwrap();
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
    }

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
