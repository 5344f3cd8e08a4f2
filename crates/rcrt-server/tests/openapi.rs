//! The OpenAPI document: generated from the code, checked in at `docs/openapi.json`, served at
//! `/openapi.json` by a real server, with a docs page at `/docs` whose assets come from the
//! binary; and every route the router serves is in it (and nothing else).
//!
//! Regenerate the checked-in copy: `UPDATE_OPENAPI=1 cargo test -p rcrt-server --test openapi`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{gen_kek, server_config};
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::Value;

/// Every route the router serves, as (method, path template). Checked both ways: against the
/// document here, and against the running server below (each answers, none with `no_route`,
/// and every other method on these paths is a 405).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("post", "/secrets"),
    ("get", "/secrets"),
    ("get", "/secrets/{id}"),
    ("put", "/secrets/{id}"),
    ("delete", "/secrets/{id}"),
    ("patch", "/secrets/{id}"),
    ("post", "/secrets/{id}/decrypt"),
    ("get", "/secrets/{id}/versions"),
    ("post", "/secrets/{id}/versions/{version}/destroy"),
    ("post", "/secrets/{id}/rollback"),
    ("post", "/secrets/{id}/restore"),
    ("post", "/secrets/vaults"),
    ("get", "/secrets/vaults"),
    ("get", "/secrets/vaults/{vault}"),
    ("delete", "/secrets/vaults/{vault}"),
    ("put", "/secrets/vaults/{vault}/keys/{key}"),
    ("delete", "/secrets/vaults/{vault}/keys/{key}"),
    ("get", "/secrets/vault/{vault}"),
    ("post", "/auth/tokens"),
    ("get", "/auth/tokens"),
    ("delete", "/auth/tokens/{id}"),
    ("get", "/admin/kek/status"),
    ("post", "/admin/kek/rewrap"),
    ("get", "/audit"),
];

/// Routes that answer without a credential.
const PUBLIC: &[&str] = &["/health", "/ready", "/metrics"];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn checked_in_document_is_the_generated_one() {
    let generated = rcrt_server::http::openapi::document_json();
    let path = checked_in_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p rcrt-server --test openapi` and review the diff"
    );
}

/// The (method, path) pairs of the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.clone(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn document_lists_every_route_and_only_those() {
    let doc: Value = serde_json::from_str(&rcrt_server::http::openapi::document_json()).unwrap();
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations(&doc), listed);
    assert_eq!(doc["openapi"], "3.1.0");
    // Security: every route but the public ones needs the bearer token or X-API-Key.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    for (method, path) in ROUTES {
        let op = &doc["paths"][*path][*method];
        let security = op["security"].as_array().map(Vec::len).unwrap_or(0);
        if PUBLIC.contains(path) {
            assert_eq!(security, 0, "{method} {path} should be public");
        } else {
            assert_eq!(security, 2, "{method} {path}: bearer or api_key");
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} lacks 401"
            );
        }
        assert!(op["operationId"].is_string(), "{method} {path}");
    }
    // The stateful links a contract test follows: create -> get/decrypt/update/delete.
    let links = &doc["paths"]["/secrets"]["post"]["responses"]["201"]["links"];
    for (name, op) in [
        ("GetSecret", "getSecret"),
        ("DecryptSecret", "decryptSecret"),
        ("UpdateSecret", "updateSecret"),
        ("DeleteSecret", "deleteSecret"),
    ] {
        assert_eq!(links[name]["operationId"], op, "{links}");
        assert_eq!(links[name]["parameters"]["id"], "$response.body#/id");
    }
}

/// The path with every `{param}` filled with a value that parses (a UUID for ids).
fn concrete(path: &str) -> String {
    path.replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{vault}", "some-vault")
        .replace("{key}", "SOME_KEY")
        .replace("{version}", "2")
}

#[tokio::test(flavor = "multi_thread")]
async fn served_document_docs_page_and_routes() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let cfg = server_config(
        None,
        &dir,
        &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "token")],
    );
    let server = tokio::task::block_in_place(|| ServerProcess::start(&cfg));
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // The served document is the generated one, byte for byte, without a credential.
    let r = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served = r.text().await.unwrap();
    assert!(
        served == rcrt_server::http::openapi::document_json(),
        "served /openapi.json differs from the generated document"
    );
    if std::env::var_os("UPDATE_OPENAPI").is_none() {
        assert!(
            served == std::fs::read_to_string(checked_in_path()).unwrap(),
            "served /openapi.json differs from docs/openapi.json"
        );
    }

    // The docs page: /docs leads to the page, whose assets come from this server only.
    let r = http.get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.url());
    let page = r.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    for needle in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!page.contains(needle), "the page loads {needle}...: {page}");
    }
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-initializer.js",
    ] {
        assert!(page.contains(asset), "page does not load {asset}");
        let r = http
            .get(format!("{base}/docs/{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let body = r.text().await.unwrap();
        assert!(body.len() > 100, "{asset}: {body}");
        if asset == "swagger-initializer.js" {
            // Points at our document, with the online validator off.
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            assert!(compact.contains("\"url\":\"/openapi.json\""), "{body}");
            assert!(compact.contains("\"validatorUrl\":\"none\""), "{body}");
        }
    }

    // Every listed route is served: the public ones answer 200 (or /ready's 503), the others
    // 401 without a credential (authentication runs only on a matched route; an unknown path
    // is a 404 `no_route`). Every other method on the same path is a 405.
    for (method, path) in ROUTES {
        let url = format!("{base}{}", concrete(path));
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = http.request(m, &url).send().await.unwrap();
        let status = r.status().as_u16();
        if PUBLIC.contains(path) {
            assert!(matches!(status, 200 | 503), "{method} {path}: {status}");
        } else {
            assert_eq!(status, 401, "{method} {path}");
        }
    }
    let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    for path in paths {
        for method in METHODS {
            if ROUTES.contains(&(method, path)) {
                continue;
            }
            let url = format!("{base}{}", concrete(path));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = http.request(m, &url).send().await.unwrap();
            assert_eq!(
                r.status(),
                405,
                "{method} {path} is served but not documented"
            );
        }
    }
}
