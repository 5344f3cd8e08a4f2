//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! bodies' `ToSchema` derives (so it follows the code), served at `/openapi.json`, with a
//! Swagger UI page at `/docs` whose assets are embedded in the binary (nothing fetched at build
//! or run time). `docs/openapi.json` is a checked-in copy; `tests/openapi.rs` fails when they
//! differ (`UPDATE_OPENAPI=1 cargo test -p rcrt-server --test openapi` rewrites it).

use std::sync::{Arc, OnceLock};

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{audit, error, lifecycle, metrics, routes, tokens, vaults, AppState};

/// The path the document is served at.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// The path of the docs page.
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RCRT Secrets",
        description = "Secrets stored under envelope encryption (a DEK per version, wrapped by a KEK), \
            scoped per tenant, workspace and agent, every access audited. Errors are \
            `{\"error\": {\"code\", \"message\"}}` with a stable `code`.",
    ),
    paths(
        routes::health,
        routes::ready,
        metrics::scrape,
        routes::create,
        routes::list,
        routes::get_meta,
        routes::update,
        routes::delete,
        routes::decrypt,
        lifecycle::patch,
        lifecycle::versions,
        lifecycle::rollback,
        lifecycle::destroy_version,
        lifecycle::restore,
        vaults::create,
        vaults::list,
        vaults::get_meta,
        vaults::delete,
        vaults::put_key,
        vaults::delete_key,
        vaults::values,
        tokens::create,
        tokens::list,
        tokens::revoke,
        routes::kek_status,
        routes::kek_rewrap,
        audit::query,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&SecuritySchemes, &CommonResponses),
    tags(
        (name = "secrets", description = "Secrets: metadata, values (decrypt), versions."),
        (name = "vaults", description = "Vaults: named sets of keys in a workspace."),
        (name = "tokens", description = "Service tokens."),
        (name = "audit", description = "The audit log (`audit.read`)."),
        (name = "admin", description = "Deployment-wide KEK administration (`rcrt.operator`)."),
        (name = "health", description = "Liveness, readiness and metrics (no credential)."),
    )
)]
struct ApiDoc;

/// The security schemes: a bearer token (a service token `rcrt_...` or a JWT) in
/// `Authorization`, or the same credential in `X-API-Key`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A service token (from `POST /auth/tokens`) or a JWT from the identity \
                         provider, as `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same credential in `X-API-Key` (the original RCRT's API keys).",
            ))),
        );
    }
}

/// The answers that every operation of a kind can give, added once here instead of on each
/// handler: 401 and 503 (the token lookup) for authenticated routes; 400, 408, 413 and 415 for
/// routes with a JSON body; 421 for all (a server without authentication serves only its
/// allowed `Host` names).
struct CommonResponses;

/// A shared response component answering with the error body.
fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let shared = [
            (
                "Unauthorized",
                ResponseBuilder::from(error_response(
                    "`unauthorized`: no valid credential (missing, unknown, wrong, expired or \
                     revoked: all alike).",
                ))
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new().description(Some("`Bearer`")).build(),
                )
                .build(),
            ),
            (
                "Unavailable",
                error_response(
                    "`store_unavailable` (also when a token could not be looked up) or \
                     `kek_unavailable`.",
                ),
            ),
            (
                "BadBody",
                error_response(
                    "`invalid_json`, `invalid_request` or another 400 code: the body or a \
                     parameter is not acceptable.",
                ),
            ),
            (
                "BodyTimeout",
                error_response("`request_timeout`: the body did not arrive in time."),
            ),
            (
                "TooLarge",
                error_response("`payload_too_large` or `value_too_large`."),
            ),
            (
                "UnsupportedMediaType",
                error_response("`unsupported_media_type`: send `Content-Type: application/json`."),
            ),
            (
                "HostNotAllowed",
                error_response(
                    "`host_not_allowed`: authentication is disabled and the `Host` is not \
                     `localhost`, a loopback address or in `ALLOWED_HOSTS`.",
                ),
            ),
        ];
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, response) in shared {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(response));
        }
        let reference = |name: &str| RefOr::Ref(Ref::new(format!("#/components/responses/{name}")));
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut add = |status: &str, name: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| reference(name));
                };
                if authenticated {
                    add("401", "Unauthorized");
                    add("503", "Unavailable");
                }
                add("421", "HostNotAllowed");
                if op.request_body.is_some() {
                    add("400", "BadBody");
                    add("408", "BodyTimeout");
                    add("413", "TooLarge");
                    add("415", "UnsupportedMediaType");
                }
            }
        }
    }
}

/// The OpenAPI document of this server's API, as JSON.
pub fn document() -> serde_json::Value {
    // Serializing the document's maps and strings cannot fail.
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_link_keys(&mut doc);
    add_cross_field_rules(&mut doc);
    doc
}

/// A token ttl as text that the server takes: one unit, `d` up to 366, `h` up to 8784 (both
/// `rcrt_core::tokens::MAX_TOKEN_TTL`), `m` up to 99999, `s` up to 9999999; no leading zero.
/// Without it a generated string such as `""` is schema-valid yet refused.
const TTL_TEXT_PATTERN: &str = concat!(
    "^(",
    "(36[0-6]|3[0-5][0-9]|[12][0-9]{2}|[1-9][0-9]?)d",
    "|([1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])h",
    "|[1-9][0-9]{0,4}m",
    "|[1-9][0-9]{0,6}s",
    ")$"
);

/// The body rules that tie two fields together, which utoipa's attributes cannot say: an
/// empty value only with `"allow_empty": true` (`rcrt_core::check_not_empty`), and a
/// `scope_id` for `workspace` and `agent` but none for `global` (`rcrt_types::Scope::new`);
/// vault keys' spelling (`rcrt_core::vaults`).
fn add_cross_field_rules(doc: &mut serde_json::Value) {
    use serde_json::json;
    let empty_allowed = |field: serde_json::Value| {
        json!({"anyOf": [
            {"properties": field},
            {"properties": {"allow_empty": {"const": true}}, "required": ["allow_empty"]},
        ]})
    };
    let non_empty = json!({"value": {"type": "string", "minLength": 1}});
    let non_empty_values = json!({"secrets": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}});
    let scope = json!({"oneOf": [
        {"properties": {"scope_type": {"const": "global"}, "scope_id": {"type": "null"}}},
        {
            "properties": {"scope_type": {"enum": ["workspace", "agent"]}, "scope_id": {"type": "string"}},
            "required": ["scope_id"],
        },
    ]});
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    else {
        return;
    };
    let mut all_of = |name: &str, rules: Vec<serde_json::Value>| {
        if let Some(schema) = schemas.get_mut(name).and_then(|s| s.as_object_mut()) {
            schema.insert("allOf".to_owned(), serde_json::Value::Array(rules));
        }
    };
    all_of(
        "CreateSecret",
        vec![empty_allowed(non_empty.clone()), scope],
    );
    all_of("UpdateSecret", vec![empty_allowed(non_empty.clone())]);
    all_of("VaultKeyValue", vec![empty_allowed(non_empty)]);
    all_of("CreateVault", vec![empty_allowed(non_empty_values)]);
    // A ttl in seconds: an integer (JSON Schema counts `60.0` as one, and so does the server)
    // from 1 to `rcrt_core::tokens::MAX_TOKEN_TTL`; utoipa takes no bounds on an enum
    // variant's field, and renders the variant's `serde_json::Number` as a nested one-of.
    if let Some(seconds) = schemas
        .get_mut("Ttl")
        .and_then(|s| s.pointer_mut("/oneOf/0"))
    {
        *seconds = json!({
            "description": format!(
                "Seconds: a whole number, at most {} days.",
                rcrt_core::tokens::MAX_TOKEN_TTL.as_secs() / 86_400
            ),
            "type": "integer",
            "minimum": 1,
            "maximum": rcrt_core::tokens::MAX_TOKEN_TTL.as_secs(),
        });
    }
    // The text form: the one-unit durations the server takes within that bound (it also takes
    // combinations such as `1h 30m`, which a pattern cannot bound).
    if let Some(text) = schemas
        .get_mut("Ttl")
        .and_then(|s| s.pointer_mut("/oneOf/1"))
        .and_then(|s| s.as_object_mut())
    {
        text.insert("pattern".to_owned(), json!(TTL_TEXT_PATTERN));
    }
    // A token's workspaces are scope ids (`rcrt_types::Scope`'s spelling).
    if let Some(items) = schemas
        .get_mut("CreateToken")
        .and_then(|s| s.pointer_mut("/properties/workspaces/items"))
        .and_then(|s| s.as_object_mut())
    {
        items.insert("pattern".to_owned(), json!("^[A-Za-z0-9._:@-]{1,128}$"));
    }
    if let Some(secrets) = schemas
        .get_mut("CreateVault")
        .and_then(|s| s.pointer_mut("/properties/secrets"))
        .and_then(|s| s.as_object_mut())
    {
        secrets.insert(
            "propertyNames".to_owned(),
            json!({"pattern": "^(?!\\.+$)[A-Za-z0-9._-]{1,63}$"}),
        );
    }
}

/// utoipa 5 writes a Link object's fields in snake case (`operation_id`); OpenAPI spells them
/// `operationId`, `operationRef`, `requestBody`, and tools ignore the others.
fn fix_link_keys(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for op in operations {
        let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
            continue;
        };
        let links = responses
            .values_mut()
            .filter_map(|r| r.get_mut("links"))
            .filter_map(|l| l.as_object_mut())
            .flat_map(|l| l.values_mut())
            .filter_map(|link| link.as_object_mut());
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_owned(), v);
                }
            }
        }
    }
}

/// The document as served and checked in: pretty-printed JSON with a final newline.
pub fn document_json() -> String {
    let mut json = serde_json::to_string_pretty(&document()).unwrap_or_else(|_| "{}".to_owned());
    json.push('\n');
    json
}

/// The rendered document, made once.
fn rendered() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(document_json)
}

async fn serve_document() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        rendered(),
    )
        .into_response()
}

/// `GET /openapi.json` and the docs page under `/docs` (no credential: the document is public,
/// and the page calls the API with whatever token the reader gives it).
pub(crate) fn router() -> Router<Arc<AppState>> {
    let config = utoipa_swagger_ui::Config::new([DOCUMENT_PATH])
        // Swagger UI otherwise sends the document to an online validator.
        .validator_url("none")
        .try_it_out_enabled(false);
    let docs = utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH).config(config);
    Router::new()
        .route(DOCUMENT_PATH, axum::routing::get(serve_document))
        .merge(docs)
}

// The value sets of fields that the code keeps as strings, for the document; each one's test
// below checks it against the code's own list.

/// A secret's scope.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ScopeType)]
#[allow(dead_code)]
pub(crate) enum ScopeTypeName {
    /// Tenant-wide.
    Global,
    /// One workspace (`scope_id`).
    Workspace,
    /// One agent (`scope_id`).
    Agent,
}

/// A role a token or JWT may carry.
#[derive(Serialize, ToSchema)]
#[schema(as = Role)]
#[allow(dead_code)]
pub(crate) enum RoleName {
    /// List and read metadata.
    #[serde(rename = "secrets.read")]
    Read,
    /// Read values.
    #[serde(rename = "secrets.decrypt")]
    Decrypt,
    /// Create, update, delete.
    #[serde(rename = "secrets.write")]
    Write,
    /// The tenant's administrator.
    #[serde(rename = "secrets.admin")]
    Admin,
    /// Mint service tokens.
    #[serde(rename = "tokens.create")]
    TokensCreate,
    /// KEK administration.
    #[serde(rename = "rcrt.operator")]
    Operator,
    /// Read the audit log.
    #[serde(rename = "audit.read")]
    AuditRead,
}

/// A token's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TokenStatus)]
#[allow(dead_code)]
pub(crate) enum TokenStatusName {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// The background re-wrap's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = RewrapState)]
#[allow(dead_code)]
pub(crate) enum RewrapStateName {
    /// Nothing to do.
    Idle,
    /// A pass is running.
    Running,
    /// Waiting to retry.
    Waiting,
    /// The last pass finished.
    Completed,
    /// The last pass failed.
    Failed,
}

/// What an audit row records.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AuditAction)]
#[allow(dead_code)]
pub(crate) enum AuditActionName {
    /// A secret was created.
    Create,
    /// A new version was written.
    Update,
    /// A secret was deleted.
    Delete,
    /// A value was decrypted.
    Decrypt,
    /// A service token was minted.
    TokenCreate,
    /// A service token was revoked.
    TokenRevoke,
    /// An offline `rcrt kek verify`.
    KekVerify,
    /// An offline `rcrt kek rewrap`.
    KekRewrap,
    /// An offline `rcrt secrets reencrypt`.
    Reencrypt,
    /// `GET /admin/kek/status`.
    KekStatus,
    /// `POST /admin/kek/rewrap`.
    KekRewrapTrigger,
    /// A background re-wrap pass started.
    RewrapStart,
    /// A background re-wrap pass's progress.
    RewrapProgress,
    /// A background re-wrap pass ended.
    RewrapEnd,
    /// The audit log was read.
    AuditRead,
    /// A new audit checkpoint signing key was made.
    AuditKeyCreate,
    /// A new version holding an earlier version's value (`version` names the source).
    Rollback,
    /// A secret was deleted with a recovery window.
    SoftDelete,
    /// A soft-deleted secret was restored.
    Restore,
    /// A soft-deleted secret's window ended and it was shredded.
    Purge,
    /// A version was destroyed (`version` names it).
    DestroyVersion,
    /// A secret's metadata changed.
    UpdateMetadata,
}

/// How an audited action ended.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = AuditOutcome)]
#[allow(dead_code)]
pub(crate) enum AuditOutcomeName {
    /// It happened.
    Success,
    /// It failed.
    Failure,
    /// It was refused.
    Denied,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The enum's values in the document.
    fn values<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn value_sets_match_the_code() {
        use rcrt_types::{AuditAction, AuditOutcome, Role, ScopeType};
        assert_eq!(
            values::<AuditActionName>(),
            AuditAction::ALL.map(|a| a.as_str().to_owned())
        );
        assert_eq!(
            values::<AuditOutcomeName>(),
            [
                AuditOutcome::Success,
                AuditOutcome::Failure,
                AuditOutcome::Denied
            ]
            .map(|o| o.as_str().to_owned())
        );
        assert_eq!(
            values::<RoleName>(),
            Role::ALL.map(|r| r.as_str().to_owned())
        );
        assert_eq!(
            values::<ScopeTypeName>(),
            [ScopeType::Global, ScopeType::Workspace, ScopeType::Agent].map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        );
        use rcrt_core::rewrap_job::RewrapState;
        assert_eq!(
            values::<RewrapStateName>(),
            [
                RewrapState::Idle,
                RewrapState::Running,
                RewrapState::Waiting,
                RewrapState::Completed,
                RewrapState::Failed
            ]
            .map(|s| s.as_str().to_owned())
        );
    }

    #[test]
    fn the_ttl_pattern_stays_within_the_token_limit() {
        // TTL_TEXT_PATTERN's largest value per unit: each parses and is within the limit.
        let max = rcrt_core::tokens::MAX_TOKEN_TTL;
        assert_eq!(max.as_secs(), 366 * 86_400);
        for (text, secs) in [
            ("366d", 366 * 86_400),
            ("8784h", 8784 * 3600),
            ("99999m", 99_999 * 60),
            ("9999999s", 9_999_999),
        ] {
            let d = humantime::parse_duration(text).unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
            assert!(d <= max, "{text}");
        }
    }

    #[test]
    fn every_operation_has_an_id_and_an_error_schema() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{id} twice");
                for (status, resp) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let text = resp.to_string();
                        assert!(
                            text.contains("#/components/schemas/Error")
                                || text.contains("#/components/responses/"),
                            "{method} {path} {status} has no error body"
                        );
                    }
                }
            }
        }
    }
}
