//! API rules of a real `rcrt-server` (SQLite, auth disabled) that a new user meets first:
//!
//! 1. An empty value is refused (400 `empty_value`, saying how to allow it) unless the body has
//!    `"allow_empty": true`: on `POST /secrets`, `PUT /secrets/{id}`, `POST /secrets/vaults` (one
//!    flag for the whole body) and `PUT /secrets/vaults/{v}/keys/{KEY}`.
//! 2. Vault errors speak of vaults: `vault not found`, a taken vault name, and a vault read
//!    without a reason names the header and query parameter a GET can carry.
//! 3. `If-Match` per RFC 9110: `*` matches any current version; a weak tag never matches (412);
//!    strong tags compare byte for byte, several header lines form one list, empty list elements
//!    are ignored, and only a malformed field is a 400.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::time::Duration;

use common::server_config;
use rcrt_testkit::{ServerProcess, TempDir};
use reqwest::Method;
use serde_json::{json, Value};

fn uniq() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A server on a fresh SQLite store with auth disabled (the caller is an admin).
fn start(dir: &TempDir) -> ServerProcess {
    let kek = gen_kek();
    ServerProcess::start(&server_config(
        None,
        dir,
        &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "disabled")],
    ))
}

/// A response: status, JSON body (Null if none) and headers.
struct Resp {
    status: u16,
    body: Value,
    etag: Option<String>,
}

impl Resp {
    /// Asserts a JSON error with `status` and `code`; returns its message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        self.body["error"]["message"].as_str().unwrap().to_owned()
    }

    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        &self.body
    }
}

async fn send(
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        req = req.json(&body);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Resp {
        status,
        body: r.json().await.unwrap_or(Value::Null),
        etag,
    }
}

async fn decrypt(base: &str, id: &str) -> (String, i64) {
    let r = send(
        base,
        Method::POST,
        &format!("/secrets/{id}/decrypt"),
        Some(json!({"reason": "api rules test"})),
        &[],
    )
    .await;
    let v = r.ok(200);
    (
        v["value"].as_str().unwrap().to_owned(),
        v["version"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn empty_values_need_allow_empty() {
    let dir = TempDir::new();
    let server = start(&dir);
    let base = server.base_url();
    let name = format!("empty-{}", uniq());

    // POST /secrets.
    let r = send(
        &base,
        Method::POST,
        "/secrets",
        Some(json!({"name": name, "value": "", "scope_type": "global"})),
        &[],
    )
    .await;
    let message = r.error(400, "empty_value");
    assert_eq!(
        message,
        "`value` is empty; to store an empty value on purpose, send \"allow_empty\": true in the request body"
    );
    // Nothing was stored: the name is still free.
    let r = send(
        &base,
        Method::POST,
        "/secrets",
        Some(json!({"name": name, "value": "", "scope_type": "global", "allow_empty": true})),
        &[],
    )
    .await;
    let id = r.ok(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(decrypt(&base, &id).await, (String::new(), 1));
    // `allow_empty` must be a boolean; `false` is the default.
    send(
        &base,
        Method::POST,
        "/secrets",
        Some(json!({"name": uniq(), "value": "", "scope_type": "global", "allow_empty": "yes"})),
        &[],
    )
    .await
    .error(400, "invalid_json");
    send(
        &base,
        Method::POST,
        "/secrets",
        Some(json!({"name": uniq(), "value": "", "scope_type": "global", "allow_empty": false})),
        &[],
    )
    .await
    .error(400, "empty_value");
    // A non-empty value needs no flag, and the flag does not change it.
    let r = send(
        &base,
        Method::POST,
        "/secrets",
        Some(json!({"name": uniq(), "value": "x", "scope_type": "global", "allow_empty": true})),
        &[],
    )
    .await;
    let other = r.ok(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(decrypt(&base, &other).await, ("x".to_owned(), 1));

    // PUT /secrets/{id}: refused, then allowed; the refusal wrote no version.
    let path = format!("/secrets/{other}");
    send(&base, Method::PUT, &path, Some(json!({"value": ""})), &[])
        .await
        .error(400, "empty_value");
    assert_eq!(decrypt(&base, &other).await, ("x".to_owned(), 1));
    let r = send(
        &base,
        Method::PUT,
        &path,
        Some(json!({"value": "", "allow_empty": true})),
        &[],
    )
    .await;
    assert_eq!(r.ok(200)["version"], 2);
    assert_eq!(decrypt(&base, &other).await, (String::new(), 2));

    // POST /secrets/vaults: the message names the key; one flag covers every key.
    let vault = format!("v-{}", uniq());
    let body = json!({"workspace": "w1", "name": vault, "secrets": {"A": "1", "EMPTY": ""}});
    let message = send(&base, Method::POST, "/secrets/vaults", Some(body), &[])
        .await
        .error(400, "empty_value");
    assert_eq!(
        message,
        "the value of vault key `EMPTY` is empty; to store an empty value on purpose, send \"allow_empty\": true in the request body"
    );
    // A malformed key is reported as such, not echoed in an empty-value message.
    let body = json!({"workspace": "w1", "name": vault, "secrets": {"BAD KEY\n": ""}});
    send(&base, Method::POST, "/secrets/vaults", Some(body), &[])
        .await
        .error(400, "invalid_request");
    let body = json!({"workspace": "w1", "name": vault, "secrets": {"A": "1", "EMPTY": ""},
        "allow_empty": true});
    let r = send(&base, Method::POST, "/secrets/vaults", Some(body), &[]).await;
    assert_eq!(r.ok(201)["keys"], json!(["A", "EMPTY"]));

    // PUT /secrets/vaults/{v}/keys/{KEY}.
    let key_path = format!("/secrets/vaults/{vault}/keys/B");
    let message = send(
        &base,
        Method::PUT,
        &key_path,
        Some(json!({"value": ""})),
        &[],
    )
    .await
    .error(400, "empty_value");
    assert!(message.contains("vault key `B`"), "{message}");
    send(
        &base,
        Method::PUT,
        &key_path,
        Some(json!({"value": "", "allow_empty": true})),
        &[],
    )
    .await
    .ok(200);
    let r = send(
        &base,
        Method::GET,
        &format!("/secrets/vault/{vault}"),
        None,
        &[("X-Access-Reason", "api rules test")],
    )
    .await;
    assert_eq!(r.ok(200), &json!({"A": "1", "B": "", "EMPTY": ""}));
}

#[tokio::test]
async fn vault_errors_speak_of_vaults() {
    let dir = TempDir::new();
    let server = start(&dir);
    let base = server.base_url();
    let vault = format!("v-{}", uniq());
    let missing = format!("nope-{}", uniq());
    let reason = [("X-Access-Reason", "api rules test")];

    for (method, path, body, headers) in [
        (
            Method::GET,
            format!("/secrets/vaults/{missing}"),
            None,
            &[][..],
        ),
        (
            Method::GET,
            format!("/secrets/vault/{missing}"),
            None,
            &reason[..],
        ),
        (
            Method::PUT,
            format!("/secrets/vaults/{missing}/keys/K"),
            Some(json!({"value": "v"})),
            &[][..],
        ),
        (
            Method::DELETE,
            format!("/secrets/vaults/{missing}/keys/K"),
            None,
            &[][..],
        ),
        (
            Method::DELETE,
            format!("/secrets/vaults/{missing}"),
            None,
            &[][..],
        ),
    ] {
        let r = send(&base, method.clone(), &path, body, headers).await;
        assert_eq!(
            r.error(404, "not_found"),
            "vault not found",
            "{method} {path}"
        );
    }

    let body = json!({"workspace": "w1", "name": vault, "secrets": {"A": "1"}});
    send(
        &base,
        Method::POST,
        "/secrets/vaults",
        Some(body.clone()),
        &[],
    )
    .await
    .ok(201);
    let message = send(&base, Method::POST, "/secrets/vaults", Some(body), &[])
        .await
        .error(409, "name_taken");
    assert!(
        message.starts_with("a vault with this name already exists in this workspace"),
        "{message}"
    );
    // The same name in another workspace is another vault.
    let body = json!({"workspace": "w2", "name": vault, "secrets": {"A": "1"}});
    send(&base, Method::POST, "/secrets/vaults", Some(body), &[])
        .await
        .ok(201);
    // By that name alone, each vault route is a 409 `ambiguous_vault` (the request is well
    // formed; the state makes it ambiguous), and nothing changed; with ?workspace= it works.
    let reason = [("X-Access-Reason", "api rules test")];
    for (method, path, body) in [
        (Method::GET, format!("/secrets/vaults/{vault}"), None),
        (Method::GET, format!("/secrets/vault/{vault}"), None),
        (
            Method::PUT,
            format!("/secrets/vaults/{vault}/keys/B"),
            Some(json!({"value": "2"})),
        ),
        (
            Method::DELETE,
            format!("/secrets/vaults/{vault}/keys/A"),
            None,
        ),
        (Method::DELETE, format!("/secrets/vaults/{vault}"), None),
    ] {
        let message = send(&base, method.clone(), &path, body, &reason)
            .await
            .error(409, "ambiguous_vault");
        assert!(
            message.contains("?workspace="),
            "{method} {path}: {message}"
        );
    }
    for ws in ["w1", "w2"] {
        let v = send(
            &base,
            Method::GET,
            &format!("/secrets/vaults/{vault}?workspace={ws}"),
            None,
            &[],
        )
        .await;
        assert_eq!(v.ok(200)["keys"], json!(["A"]), "{ws}");
    }

    // A missing key of an existing vault.
    let r = send(
        &base,
        Method::DELETE,
        &format!("/secrets/vaults/{vault}/keys/NOPE?workspace=w1"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.error(404, "not_found"), "vault key not found");

    // A vault read is a GET: the reason can only be the header, and the message says so.
    let message = send(
        &base,
        Method::GET,
        &format!("/secrets/vault/{vault}?workspace=w1"),
        None,
        &[],
    )
    .await
    .error(400, "reason_required");
    assert_eq!(
        message,
        "a non-empty access reason is required (header X-Access-Reason)"
    );
    // A secret's decrypt (a POST) still names both ways.
    let r = create_global(&base, "x").await;
    let id = r.ok(201)["id"].as_str().unwrap().to_owned();
    let message = send(
        &base,
        Method::POST,
        &format!("/secrets/{id}/decrypt"),
        None,
        &[],
    )
    .await
    .error(400, "reason_required");
    assert!(
        message.contains("body field \"reason\"") && message.contains("X-Access-Reason"),
        "{message}"
    );
    // A missing secret still says so.
    let r = send(
        &base,
        Method::PUT,
        &format!("/secrets/{}", uuid::Uuid::new_v4()),
        Some(json!({"value": "v"})),
        &[],
    )
    .await;
    assert_eq!(r.error(404, "not_found"), "secret not found");
}

#[tokio::test]
async fn if_match_star_and_weak_tags_per_rfc_9110() {
    let dir = TempDir::new();
    let server = start(&dir);
    let base = server.base_url();
    let r = create_global(&base, "v1").await;
    let id = r.ok(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    let path = format!("/secrets/{id}");
    let put = |value: &'static str, if_match: &'static str| {
        let base = base.clone();
        let path = path.clone();
        async move {
            send(
                &base,
                Method::PUT,
                &path,
                Some(json!({ "value": value })),
                &[("If-Match", if_match)],
            )
            .await
        }
    };

    // `*` matches whatever version is current.
    let r = put("v2", "*").await;
    assert_eq!(r.ok(200)["version"], 2);
    assert_eq!(r.etag.as_deref(), Some("\"2\""));
    // A weak tag never matches, not even the current version's: 412, nothing written.
    let message = put("lost", "W/\"2\"").await.error(412, "version_mismatch");
    assert!(
        message.contains("weak tag") && message.contains("\"2\""),
        "{message}"
    );
    assert_eq!(decrypt(&base, &id).await, ("v2".to_owned(), 2));
    // The strong tag does.
    assert_eq!(put("v3", "\"2\"").await.ok(200)["version"], 3);
    // A list matches when it names the current version strongly.
    assert_eq!(put("v4", "\"1\", \"3\"").await.ok(200)["version"], 4);
    assert_eq!(put("v5", "W/\"4\", \"4\"").await.ok(200)["version"], 5);
    put("lost", "\"1\", \"2\"")
        .await
        .error(412, "version_mismatch");
    put("lost", "W/\"5\", W/\"4\"")
        .await
        .error(412, "version_mismatch");
    assert_eq!(decrypt(&base, &id).await, ("v5".to_owned(), 5));
    // Malformed tags are a 400, in a list too.
    for bad in ["\"5\", x", "W/5", "**"] {
        let r = put("lost", bad).await;
        assert_eq!(r.status, 400, "If-Match {bad:?}: {}", r.body);
    }
    // A missing secret is 404 whatever the precondition.
    for cond in ["*", "W/\"1\"", "\"1\", \"2\""] {
        let r = send(
            &base,
            Method::PUT,
            &format!("/secrets/{}", uuid::Uuid::new_v4()),
            Some(json!({"value": "v"})),
            &[("If-Match", cond)],
        )
        .await;
        r.error(404, "not_found");
    }
}

/// Creates a global secret with a fresh name holding `value`.
async fn create_global(base: &str, value: &str) -> Resp {
    send(
        base,
        Method::POST,
        "/secrets",
        Some(json!({"name": uniq(), "value": value, "scope_type": "global"})),
        &[],
    )
    .await
}

/// A secret at version 5, for one If-Match case.
async fn secret_at_version_5(base: &str) -> String {
    let r = create_global(base, "v1").await;
    let id = r.ok(201)["id"].as_str().unwrap().to_owned();
    for n in 2..=5 {
        let r = send(
            base,
            Method::PUT,
            &format!("/secrets/{id}"),
            Some(json!({ "value": format!("v{n}") })),
            &[],
        )
        .await;
        assert_eq!(r.ok(200)["version"], n);
    }
    id
}

/// RFC 9110 section 13.1.1 and 8.8.3.2: a strong tag matches only if its opaque text is exactly
/// our ETag's (`"5"`, not `"05"`); a well-formed tag that matches nothing is a failed
/// precondition (412), not bad input; several `If-Match` lines form one list (section 5.3); empty
/// list elements are ignored (section 5.6.1.2); a quoted tag may contain a comma.
#[tokio::test]
async fn if_match_compares_entity_tags_byte_for_byte() {
    let dir = TempDir::new();
    let server = start(&dir);
    let base = server.base_url();
    // (If-Match lines, expected status, version current afterwards); each case on a fresh
    // secret at version 5.
    let cases: &[(&[&str], u16, i64)] = &[
        // Same number, other bytes: no match.
        (&["\"05\""], 412, 5),
        (&["\"+5\""], 412, 5),
        (&["\"5 \""], 400, 5),
        (&["\"05\", \"+5\", \"5.0\""], 412, 5),
        // Well-formed tags that are not ours: 412.
        (&["\"abc\""], 412, 5),
        (&["\"\""], 412, 5),
        (&["W/\"0\""], 412, 5),
        (&["\"99999999999999999999\""], 412, 5),
        (&["\"-5\""], 412, 5),
        (&["\"abc\", \"5\""], 200, 6),
        // Several lines are one list.
        (&["\"1\"", "\"5\""], 200, 6),
        (&["\"5\"", "\"1\""], 200, 6),
        (&["\"1\"", "\"2\""], 412, 5),
        (&["W/\"5\"", "\"5\""], 200, 6),
        // Empty list elements are ignored.
        (&["\"5\","], 200, 6),
        (&[", \"5\""], 200, 6),
        (&["\"1\",, ,\"5\" ,"], 200, 6),
        // A list of nothing names no current version.
        (&[", ,"], 412, 5),
        (&[""], 412, 5),
        // A comma inside a quoted tag does not split it.
        (&["\"a,b\", \"5\""], 200, 6),
        (&["\"a,5\""], 412, 5),
        (&["\"5,\""], 412, 5),
        // Still malformed: 400.
        (&["\"5\", x"], 400, 5),
        (&["W/5"], 400, 5),
        (&["w/\"5\""], 400, 5),
        (&["\"5\" \"5\""], 400, 5),
        (&["\"5"], 400, 5),
        (&["**"], 400, 5),
        (&["*, \"5\""], 400, 5),
        (&["*", "\"5\""], 400, 5),
    ];
    let mut wrong = Vec::new();
    for (lines, status, version) in cases {
        let id = secret_at_version_5(&base).await;
        let headers: Vec<(&str, &str)> = lines.iter().map(|l| ("If-Match", *l)).collect();
        let r = send(
            &base,
            Method::PUT,
            &format!("/secrets/{id}"),
            Some(json!({"value": "new"})),
            &headers,
        )
        .await;
        let expected_code = match status {
            412 => Some("version_mismatch"),
            400 => Some("invalid_request"),
            _ => None,
        };
        let now = decrypt(&base, &id).await.1;
        if r.status != *status
            || now != *version
            || expected_code.is_some_and(|c| r.body["error"]["code"] != c)
        {
            wrong.push(format!(
                "If-Match {lines:?}: got {} {} (version now {now}), want {status} (version {version})",
                r.status, r.body
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The 412 for a tag not ours names the tag to send, not the stand-in version 0.
    let id = secret_at_version_5(&base).await;
    let message = send(
        &base,
        Method::PUT,
        &format!("/secrets/{id}"),
        Some(json!({"value": "new"})),
        &[("If-Match", "\"abc\"")],
    )
    .await
    .error(412, "version_mismatch");
    assert!(
        message.contains("\"5\"") && !message.contains('0'),
        "{message}"
    );
}
