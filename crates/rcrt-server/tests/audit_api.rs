//! `GET /audit` against a real server (JWT principals of two tenants), on SQLite and
//! PostgreSQL: `audit.read` needed (403 without, 401 without a credential), the caller's tenant
//! only, every filter, cursor pagination over several pages, 400 (never 500) for bad values,
//! and the rows `/admin/kek/*` write before answering.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]

mod auth_support;

use std::collections::BTreeSet;

use auth_support::{uniq, Backend, KeySource, Server, Signer, Who, ALL_ROLES};
use reqwest::Method;
use serde_json::{json, Value};

/// The fields of one audit item, exactly.
const ITEM_FIELDS: [&str; 10] = [
    "action",
    "id",
    "outcome",
    "reason",
    "request_id",
    "secret_id",
    "timestamp",
    "token_id",
    "user_id",
    "version",
];

struct Env {
    srv: Server,
    signer: Signer,
    _dir: rcrt_testkit::TempDir,
}

impl Env {
    async fn start(backend: Backend) -> Self {
        let dir = rcrt_testkit::TempDir::new();
        let secret = format!("{}{}{}", uniq(), uniq(), uniq());
        let path = dir.path().join("hs256.secret");
        std::fs::write(&path, &secret).unwrap();
        let srv = Server::start(backend, KeySource::Hs256SecretFile(path)).await;
        Self {
            srv,
            signer: Signer::hs256(secret.as_bytes()),
            _dir: dir,
        }
    }

    fn bearer(&self, who: &Who) -> String {
        format!("Bearer {}", self.signer.sign(&who.claims()))
    }

    async fn call(
        &self,
        who: &Who,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let r = self
            .srv
            .req(
                method,
                path,
                Some(&self.bearer(who)),
                body,
                &[("x-access-reason", "audit api test")],
            )
            .await;
        (r.status, r.json())
    }

    async fn create(&self, who: &Who, name: &str) -> String {
        let (status, body) = self
            .call(
                who,
                Method::POST,
                "/secrets",
                Some(&json!({"name": name, "value": "v", "scope_type": "global"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn decrypt(&self, who: &Who, id: &str) -> u16 {
        self.call(who, Method::POST, &format!("/secrets/{id}/decrypt"), None)
            .await
            .0
    }

    /// One page of `GET /audit?<query>`: status, body, and whether it was `no-store`.
    async fn audit(&self, who: &Who, query: &str) -> (u16, Value, bool) {
        let r = self
            .srv
            .req(
                Method::GET,
                &format!("/audit?{query}"),
                Some(&self.bearer(who)),
                None,
                &[],
            )
            .await;
        let no_store = r.header("cache-control").as_deref() == Some("no-store");
        (r.status, r.json(), no_store)
    }

    /// Every item of `GET /audit?<query>` (200 required), one page.
    async fn items(&self, who: &Who, query: &str) -> Vec<Value> {
        let (status, body, _) = self.audit(who, query).await;
        assert_eq!(status, 200, "GET /audit?{query}: {body}");
        body["items"].as_array().unwrap().clone()
    }
}

fn ids(items: &[Value]) -> Vec<i64> {
    items.iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

async fn audit_api(backend: Backend) {
    let env = Env::start(backend).await;
    let admin_a = Who::new("admin-a", "tenant-a", &ALL_ROLES, &[]);
    let reader_a = Who::new("reader-a", "tenant-a", &["secrets.read"], &[]);
    let auditor_a = Who::new("auditor-a", "tenant-a", &["audit.read"], &[]);
    let admin_b = Who::new("admin-b", "tenant-b", &ALL_ROLES, &[]);
    let auditor_b = Who::new("auditor-b", "tenant-b", &["audit.read"], &[]);

    // Tenant A's activity: two secrets, decrypts, an update, a delete, a refused decrypt, and
    // the KEK endpoints.
    let s1 = env.create(&admin_a, "audited-one").await;
    let s2 = env.create(&admin_a, "audited-two").await;
    const DECRYPTS: usize = 23;
    for _ in 0..DECRYPTS {
        assert_eq!(env.decrypt(&admin_a, &s1).await, 200);
    }
    assert_eq!(env.decrypt(&admin_a, &s2).await, 200);
    let (status, body) = env
        .call(
            &admin_a,
            Method::PUT,
            &format!("/secrets/{s1}"),
            Some(&json!({"value": "v2"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = env
        .call(&admin_a, Method::DELETE, &format!("/secrets/{s2}"), None)
        .await;
    assert_eq!(status, 204);
    // Refused: answered like a missing secret (404), audited as denied.
    assert_eq!(env.decrypt(&reader_a, &s1).await, 404);
    let (status, kek) = env
        .call(&admin_a, Method::GET, "/admin/kek/status", None)
        .await;
    assert_eq!(status, 200, "{kek}");
    let kek_id = kek["current_kek_id"].as_str().unwrap().to_owned();
    let (status, body) = env
        .call(&admin_a, Method::POST, "/admin/kek/rewrap", None)
        .await;
    assert_eq!(status, 202, "{body}");
    // Refused KEK calls answer 403 before anything is written.
    let (status, _) = env
        .call(&reader_a, Method::GET, "/admin/kek/status", None)
        .await;
    assert_eq!(status, 403);

    // Tenant B's.
    let b1 = env.create(&admin_b, "tenant-b-secret").await;
    assert_eq!(env.decrypt(&admin_b, &b1).await, 200);

    // No audit.read: 403 (the admin and the operator too); no credential: 401.
    for who in [&admin_a, &reader_a] {
        let (status, body, _) = env.audit(who, "").await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let r = env.srv.req(Method::GET, "/audit", None, None, &[]).await;
    assert_eq!(r.status, 401);

    // The whole of tenant A's log, newest first, in the documented shape.
    let (status, page, no_store) = env.audit(&auditor_a, "limit=1000").await;
    assert_eq!(status, 200, "{page}");
    assert!(no_store, "GET /audit must be Cache-Control: no-store");
    assert!(page["next_cursor"].is_null(), "{page}");
    let all = page["items"].as_array().unwrap().clone();
    for item in &all {
        let keys: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ITEM_FIELDS.into_iter().collect(), "{item}");
        time::OffsetDateTime::parse(
            item["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    }
    let all_ids = ids(&all);
    assert!(
        all_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {all_ids:?}"
    );
    // Tenant isolation: nothing of tenant B.
    for item in &all {
        assert_ne!(item["user_id"], "admin-b", "{item}");
        assert_ne!(item["secret_id"], json!(b1), "{item}");
    }
    // The read itself is audited (the newest row is this read).
    assert_eq!(all[0]["action"], "audit_read", "{}", all[0]);
    assert_eq!(all[0]["user_id"], "auditor-a");
    // The KEK endpoints' rows, by the operator, naming the current KEK id.
    let kek_rows = |action: &str| -> Vec<Value> {
        all.iter()
            .filter(|i| i["action"] == action)
            .cloned()
            .collect()
    };
    for action in ["kek_status", "kek_rewrap_trigger"] {
        let rows = kek_rows(action);
        assert_eq!(rows.len(), 1, "{action}: {rows:?}");
        assert_eq!(rows[0]["user_id"], "admin-a");
        assert_eq!(rows[0]["outcome"], "success");
        let reason = rows[0]["reason"].as_str().unwrap();
        assert!(reason.contains(&kek_id), "{action}: {reason}");
    }

    // Tenant B's auditor sees B's rows only.
    let b_items = env.items(&auditor_b, "limit=1000").await;
    assert!(b_items.iter().any(|i| i["secret_id"] == json!(b1)));
    for item in &b_items {
        assert!(
            ["admin-b", "auditor-b"].contains(&item["user_id"].as_str().unwrap()),
            "{item}"
        );
    }
    // And cannot reach A's rows by filtering on A's secret: only its own reads (which name
    // the secret it asked about) come back.
    let probe = env.items(&auditor_b, &format!("secret_id={s1}")).await;
    assert!(!probe.is_empty());
    for item in &probe {
        assert_eq!(item["action"], "audit_read", "{item}");
        assert_eq!(item["user_id"], "auditor-b", "{item}");
    }

    // Filters.
    let by_secret = env
        .items(&auditor_a, &format!("secret_id={s1}&limit=1000"))
        .await;
    assert!(by_secret.iter().all(|i| i["secret_id"] == json!(s1)));
    let actions: BTreeSet<&str> = by_secret
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    for a in ["create", "decrypt", "update"] {
        assert!(actions.contains(a), "{a} missing: {actions:?}");
    }
    let decrypts = env
        .items(
            &auditor_a,
            &format!("secret_id={s1}&action=decrypt&outcome=success&limit=1000"),
        )
        .await;
    assert_eq!(decrypts.len(), DECRYPTS);
    let denied = env.items(&auditor_a, "outcome=denied&limit=1000").await;
    assert!(!denied.is_empty(), "the refused decrypt is a denied row");
    assert!(denied.iter().all(|i| i["outcome"] == "denied"));
    assert!(denied.iter().any(|i| i["user_id"] == "reader-a"));
    let deletes = env.items(&auditor_a, "action=delete").await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["secret_id"], json!(s2));
    let by_user = env.items(&auditor_a, "user_id=reader-a&limit=1000").await;
    assert!(!by_user.is_empty());
    assert!(by_user.iter().all(|i| i["user_id"] == "reader-a"));
    assert!(env
        .items(&auditor_a, "user_id=nobody-at-all")
        .await
        .is_empty());
    // Time range: [since, until).
    let oldest = all.last().unwrap()["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    let since_oldest = env
        .items(
            &auditor_a,
            &format!("since={}&limit=1000", urlencode(&oldest)),
        )
        .await;
    assert!(since_oldest.len() >= all.len(), "since is inclusive");
    assert!(env
        .items(&auditor_a, &format!("until={}", urlencode(&oldest)))
        .await
        .is_empty());
    assert!(env
        .items(&auditor_a, "since=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    assert!(env
        .items(&auditor_a, "until=2000-01-01T00:00:00%2B02:00")
        .await
        .is_empty());

    // Cursor pagination over several pages: the same rows as one page, each once, in order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = "action=decrypt&limit=4".to_owned();
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, body, _) = env.audit(&auditor_a, &q).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 4);
        paged.extend(items.iter().cloned());
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        match body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(items.len(), 4, "a full page before another");
                cursor = Some(c.to_owned());
            }
            None => break,
        }
    }
    let one_page = env.items(&auditor_a, "action=decrypt&limit=1000").await;
    assert_eq!(ids(&paged), ids(&one_page));
    assert_eq!(
        one_page.len(),
        DECRYPTS + 1 + 1,
        "s1, s2 and the denied one"
    );
    assert!(pages >= 6, "{pages} pages");

    // Bad values: 400 with a JSON error, never 500.
    for (query, code) in [
        ("action=nope", "invalid_request"),
        ("outcome=maybe", "invalid_request"),
        ("since=yesterday", "invalid_request"),
        ("until=2026-13-01T00:00:00Z", "invalid_request"),
        ("cursor=garbage!", "invalid_request"),
        ("cursor=MA", "invalid_request"),
        ("cursor=", "invalid_request"),
        ("limit=0", "invalid_request"),
        ("limit=1001", "invalid_request"),
        ("limit=-1", "invalid_request"),
        ("limit=abc", "invalid_request"),
        ("secret_id=not-a-uuid", "invalid_id"),
        ("colour=blue", "invalid_request"),
        ("action=decrypt&action=create", "invalid_request"),
    ] {
        let (status, body, _) = env.audit(&auditor_a, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }

    // The KEK rows are in the table itself too, under the operator's tenant.
    let rows = env.srv.audit().await;
    for action in ["kek_status", "kek_rewrap_trigger"] {
        let row = rows
            .iter()
            .find(|r| r.action == action)
            .unwrap_or_else(|| panic!("no {action} row"));
        assert_eq!(row.tenant, "tenant-a");
        assert_eq!(row.outcome, "success");
    }
}

/// Percent-encodes the characters of an RFC 3339 time that a query would garble (`+`, `:`).
fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_api_sqlite() {
    audit_api(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_api_postgres() {
    audit_api(Backend::Postgres).await;
}
