//! The secret lifecycle through a real `rcrt-server` (docs/lifecycle.md), on SQLite and on
//! PostgreSQL:
//!
//! 1. versions: list, decrypt one (audited with its number), roll back (a new version, sealed
//!    again), destroy one (410 after), the version cap destroying the oldest;
//! 2. a rollback racing an update, both with `If-Match` on the same version: one wins, the
//!    other is a 412, and no version is lost or doubled;
//! 3. soft delete with a recovery window: hidden, listed with `deleted=true`, the name kept,
//!    restored; a short window purged by the purge job (a `purge` row), restore then 404;
//! 4. metadata: create with it, PATCH it, filter by label, prefix and expiry; an expired secret
//!    answers 410 `expired` (audited) and `rcrt_secrets_expiring` counts it;
//! 5. idempotent writes: a retried create, update and vault write get the first answer, across
//!    a server restart; a key reused for another request is a 422.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::{gen_kek, server_config, Backend};
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use reqwest::Method;
use serde_json::{json, Value};

struct Resp {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Resp {
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        &self.body
    }

    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
    }

    fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some()
    }
}

struct Env {
    server: ServerProcess,
    cfg: rcrt_testkit::ServerConfig,
    _pg: Option<TempPgDb>,
    _dir: TempDir,
    base: String,
}

impl Env {
    async fn start(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let pg = backend.database().await;
        let kek = gen_kek();
        let mut env = vec![
            ("LOCAL_KEK_BASE64", kek.as_str()),
            ("AUTH_MODE", "disabled"),
        ];
        env.extend_from_slice(extra);
        let cfg = server_config(pg.as_ref(), &dir, &env);
        let server = ServerProcess::start(&cfg);
        let base = server.base_url();
        Self {
            server,
            cfg,
            _pg: pg,
            _dir: dir,
            base,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Resp {
            status,
            body: r.json().await.unwrap_or(Value::Null),
            headers,
        }
    }

    async fn create(&self, body: Value) -> String {
        let r = self.send(Method::POST, "/secrets", Some(body), &[]).await;
        r.ok(201)["id"].as_str().unwrap().to_owned()
    }

    async fn put(&self, id: &str, value: &str) -> Resp {
        self.send(
            Method::PUT,
            &format!("/secrets/{id}"),
            Some(json!({"value": value})),
            &[],
        )
        .await
    }

    async fn decrypt(&self, id: &str, version: Option<i64>) -> Resp {
        let mut body = json!({"reason": "lifecycle test"});
        if let Some(v) = version {
            body["version"] = json!(v);
        }
        self.send(
            Method::POST,
            &format!("/secrets/{id}/decrypt"),
            Some(body),
            &[],
        )
        .await
    }

    async fn versions(&self, id: &str) -> Vec<(i64, String)> {
        let r = self
            .send(Method::GET, &format!("/secrets/{id}/versions"), None, &[])
            .await;
        r.ok(200)["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap(),
                    v["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn audit(&self, id: &str) -> Vec<Value> {
        let r = self
            .send(
                Method::GET,
                &format!("/audit?secret_id={id}&limit=1000"),
                None,
                &[],
            )
            .await;
        r.ok(200)["items"].as_array().unwrap().clone()
    }
}

fn global(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value, "scope_type": "global"})
}

fn uniq() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

async fn versions_rollback_destroy_and_cap(backend: Backend) {
    let env = Env::start(backend, &[("MAX_VERSIONS", "3")]).await;
    let id = env.create(global(&format!("v-{}", uniq()), "one")).await;
    env.put(&id, "two").await.ok(200);
    assert_eq!(
        env.versions(&id).await,
        vec![(2, "current".into()), (1, "kept".into())]
    );
    // Decrypt a given version: its value, its number, an audit row naming it.
    let r = env.decrypt(&id, Some(1)).await;
    assert_eq!(r.ok(200)["value"], "one");
    assert_eq!(r.body["version"], 1);
    env.decrypt(&id, Some(9))
        .await
        .error(404, "version_not_found");
    let rows = env.audit(&id).await;
    assert!(
        rows.iter()
            .any(|r| r["action"] == "decrypt" && r["outcome"] == "success" && r["version"] == 1),
        "{rows:#?}"
    );
    assert!(rows
        .iter()
        .any(|r| r["action"] == "decrypt" && r["outcome"] == "failure" && r["version"] == 9));

    // Roll back to 1: version 3 holds "one".
    let r = env
        .send(
            Method::POST,
            &format!("/secrets/{id}/rollback"),
            Some(json!({"version": 1})),
            &[],
        )
        .await;
    assert_eq!(r.ok(200)["version"], 3);
    let now = env.decrypt(&id, None).await;
    assert_eq!(now.ok(200)["value"], "one");
    assert_eq!(now.body["version"], 3);
    assert!(env
        .audit(&id)
        .await
        .iter()
        .any(|r| r["action"] == "rollback" && r["version"] == 1));

    // Destroy version 2; the current one is refused.
    let destroy = |n: i64| {
        let env = &env;
        let id = id.clone();
        async move {
            env.send(
                Method::POST,
                &format!("/secrets/{id}/versions/{n}/destroy"),
                None,
                &[],
            )
            .await
        }
    };
    assert_eq!(destroy(2).await.status, 204);
    assert_eq!(destroy(2).await.status, 204, "destroying again is a no-op");
    destroy(3).await.error(409, "current_version");
    destroy(7).await.error(404, "version_not_found");
    env.decrypt(&id, Some(2))
        .await
        .error(410, "version_destroyed");
    assert_eq!(
        env.versions(&id).await,
        vec![
            (3, "current".into()),
            (2, "destroyed".into()),
            (1, "kept".into())
        ]
    );

    // The cap (MAX_VERSIONS=3 live versions): two more writes destroy version 1, then 3.
    env.put(&id, "four").await.ok(200);
    env.put(&id, "five").await.ok(200);
    let states = env.versions(&id).await;
    assert_eq!(
        states,
        vec![
            (5, "current".into()),
            (4, "kept".into()),
            (3, "kept".into()),
            (2, "destroyed".into()),
            (1, "destroyed".into())
        ]
    );
    env.put(&id, "six").await.ok(200);
    assert_eq!(env.versions(&id).await[3], (3, "destroyed".into()));
    // A per-secret cap overrides the deployment's.
    let r = env
        .send(
            Method::PATCH,
            &format!("/secrets/{id}"),
            Some(json!({"max_versions": 1})),
            &[],
        )
        .await;
    assert_eq!(r.ok(200)["max_versions"], 1);
    env.put(&id, "seven").await.ok(200);
    let live: Vec<i64> = env
        .versions(&id)
        .await
        .into_iter()
        .filter(|(_, s)| s != "destroyed")
        .map(|(v, _)| v)
        .collect();
    assert_eq!(live, vec![7]);
    assert!(env
        .audit(&id)
        .await
        .iter()
        .any(|r| r["action"] == "destroy_version" && r["version"] == 6));
}

async fn rollback_races_update_with_if_match(backend: Backend) {
    let env = Env::start(backend, &[]).await;
    for round in 0..6 {
        let id = env
            .create(global(&format!("race-{round}-{}", uniq()), "v1"))
            .await;
        env.put(&id, "v2").await.ok(200);
        let (rollback_path, put_path) =
            (format!("/secrets/{id}/rollback"), format!("/secrets/{id}"));
        let rollback = env.send(
            Method::POST,
            &rollback_path,
            Some(json!({"version": 1})),
            &[("if-match", "\"2\"")],
        );
        let update = env.send(
            Method::PUT,
            &put_path,
            Some(json!({"value": "v3-update"})),
            &[("if-match", "\"2\"")],
        );
        let (a, b) = tokio::join!(rollback, update);
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "{} / {}", a.body, b.body);
        let now = env.decrypt(&id, None).await;
        assert_eq!(now.ok(200)["version"], 3, "exactly one new version");
        let expected = if a.status == 200 { "v1" } else { "v3-update" };
        assert_eq!(now.body["value"], expected);
    }
}

async fn soft_delete_restore_and_purge(backend: Backend) {
    let env = Env::start(backend, &[("PURGE_INTERVAL", "1s")]).await;
    let name = format!("soft-{}", uniq());
    let id = env.create(global(&name, "keep me")).await;
    let r = env
        .send(
            Method::DELETE,
            &format!("/secrets/{id}?recovery_window=7d"),
            None,
            &[],
        )
        .await;
    let body = r.ok(200);
    assert_eq!(body["id"], id.as_str());
    assert!(body["purge_at"].as_str().unwrap() > body["deleted_at"].as_str().unwrap());
    // Hidden from reads and lists, listed as deleted, the name still reserved.
    env.send(Method::GET, &format!("/secrets/{id}"), None, &[])
        .await
        .error(404, "not_found");
    env.decrypt(&id, None).await.error(404, "not_found");
    let live = env.send(Method::GET, "/secrets", None, &[]).await;
    assert!(!live.ok(200).to_string().contains(&id));
    let deleted = env
        .send(Method::GET, "/secrets?deleted=true", None, &[])
        .await;
    let items = deleted.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0]["purge_at"].is_string());
    env.send(Method::POST, "/secrets", Some(global(&name, "x")), &[])
        .await
        .error(409, "name_taken");
    // Restored: readable again.
    let r = env
        .send(Method::POST, &format!("/secrets/{id}/restore"), None, &[])
        .await;
    assert_eq!(r.ok(200)["id"], id.as_str());
    assert_eq!(env.decrypt(&id, None).await.ok(200)["value"], "keep me");
    env.send(Method::POST, &format!("/secrets/{id}/restore"), None, &[])
        .await
        .error(404, "not_found");

    // A one-second window: the purge job (every second here) shreds it, with a purge row.
    env.send(
        Method::DELETE,
        &format!("/secrets/{id}?recovery_window=1s"),
        None,
        &[],
    )
    .await
    .ok(200);
    let mut purged = false;
    for _ in 0..100 {
        let rows = env.audit(&id).await;
        if rows.iter().any(|r| r["action"] == "purge") {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(purged, "no purge row within 10 s");
    env.send(Method::POST, &format!("/secrets/{id}/restore"), None, &[])
        .await
        .error(404, "not_found");
    let deleted = env
        .send(Method::GET, "/secrets?deleted=true", None, &[])
        .await;
    assert!(deleted.ok(200)["items"].as_array().unwrap().is_empty());
    // The name is free again.
    env.create(global(&name, "new")).await;
    // The default stays an immediate shred (204), as the guide's scripts expect.
    let other = env.create(global(&format!("now-{}", uniq()), "x")).await;
    let r = env
        .send(Method::DELETE, &format!("/secrets/{other}"), None, &[])
        .await;
    assert_eq!(r.status, 204);
    env.send(
        Method::POST,
        &format!("/secrets/{other}/restore"),
        None,
        &[],
    )
    .await
    .error(404, "not_found");
}

async fn metadata_filters_and_expiry(backend: Backend) {
    let env = Env::start(backend, &[]).await;
    let p = uniq();
    let mut a = global(&format!("{p}/db/a"), "a");
    a["description"] = json!("the database password");
    a["labels"] = json!({"env": "prod", "team": "core"});
    let a = env.create(a).await;
    let mut b = global(&format!("{p}/db/b"), "b");
    b["labels"] = json!({"env": "dev"});
    b["expires_at"] = json!("2000-01-01T00:00:00Z");
    let b = env.create(b).await;
    let c = env.create(global(&format!("{p}/api/c"), "c")).await;
    let ids = |r: &Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |q: String| {
        let env = &env;
        async move {
            env.send(Method::GET, &format!("/secrets?{q}"), None, &[])
                .await
        }
    };
    let r = list("label=env=prod".into()).await;
    assert_eq!(ids(&r), vec![a.clone()], "{}", r.body);
    let r = list("label=env=prod,team=core".into()).await;
    assert_eq!(ids(&r), vec![a.clone()]);
    assert!(ids(&list("label=env=prod,team=other".into()).await).is_empty());
    let mut db = ids(&list(format!("name_prefix={p}/db/")).await);
    db.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(db, expected);
    assert_eq!(
        ids(&list("expiring_within=30d".into()).await),
        vec![b.clone()]
    );
    list("label=Bad Key=x".into())
        .await
        .error(400, "invalid_request");
    // A NUL or other control character in a text filter is a bad request on both stores (on
    // PostgreSQL it was a 503: the database refuses a NUL in a text parameter).
    for q in [
        "scope_id=%00",
        "scope_type=workspace&scope_id=a%00b",
        "name_prefix=%00",
        "name_prefix=db%0A",
    ] {
        list(q.into()).await.error(400, "invalid_request");
    }

    // PATCH: only what it names; null clears; no new version.
    let r = env
        .send(
            Method::PATCH,
            &format!("/secrets/{a}"),
            Some(json!({"labels": {"env": "staging"}, "expires_at": "2999-01-01T00:00:00Z"})),
            &[],
        )
        .await;
    let v = r.ok(200);
    assert_eq!(v["description"], "the database password");
    assert_eq!(v["labels"], json!({"env": "staging"}));
    assert_eq!(v["version"], 1);
    assert!(v["expires_at"].as_str().unwrap().starts_with("2999-01-01"));
    let r = env
        .send(
            Method::PATCH,
            &format!("/secrets/{a}"),
            Some(json!({"expires_at": null})),
            &[],
        )
        .await;
    assert!(r.ok(200)["expires_at"].is_null());
    env.send(
        Method::PATCH,
        &format!("/secrets/{c}"),
        Some(json!({"labels": {"k": "a,b"}})),
        &[],
    )
    .await
    .error(400, "invalid_request");
    assert!(env
        .audit(&a)
        .await
        .iter()
        .any(|r| r["action"] == "update_metadata"));

    // Expired: 410, audited; metadata still readable; the gauge counts it.
    env.decrypt(&b, None).await.error(410, "expired");
    assert!(env
        .audit(&b)
        .await
        .iter()
        .any(|r| r["action"] == "decrypt" && r["outcome"] == "failure"));
    env.send(Method::GET, &format!("/secrets/{b}"), None, &[])
        .await
        .ok(200);
    let metrics = reqwest::get(format!("{}/metrics", env.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rcrt_secrets_expiring{within=\"7d\"} 1"),
        "{metrics}"
    );
    // Renewing it: a new value, then a new expiry.
    env.put(&b, "b2").await.ok(200);
    env.send(
        Method::PATCH,
        &format!("/secrets/{b}"),
        Some(json!({"expires_at": "2999-01-01T00:00:00Z"})),
        &[],
    )
    .await
    .ok(200);
    assert_eq!(env.decrypt(&b, None).await.ok(200)["value"], "b2");
}

async fn idempotent_writes_survive_a_restart(backend: Backend) {
    let mut env = Env::start(backend, &[]).await;
    let name = format!("idem-{}", uniq());
    let key = [("idempotency-key", "create-1")];
    let first = env
        .send(Method::POST, "/secrets", Some(global(&name, "v")), &key)
        .await;
    let id = first.ok(201)["id"].as_str().unwrap().to_owned();
    assert!(!first.replayed());
    let again = env
        .send(Method::POST, "/secrets", Some(global(&name, "v")), &key)
        .await;
    assert_eq!(again.ok(201)["id"], id.as_str());
    assert!(again.replayed());
    // The same key for another request: 422; without a key the retry is a 409.
    env.send(
        Method::POST,
        "/secrets",
        Some(global(&format!("{name}-other"), "v")),
        &key,
    )
    .await
    .error(422, "idempotency_key_reused");
    env.send(Method::POST, "/secrets", Some(global(&name, "v")), &[])
        .await
        .error(409, "name_taken");
    // Updates: a retried PUT writes one version.
    let put_key = [("idempotency-key", "put-1")];
    for _ in 0..3 {
        let r = env
            .send(
                Method::PUT,
                &format!("/secrets/{id}"),
                Some(json!({"value": "v2"})),
                &put_key,
            )
            .await;
        assert_eq!(r.ok(200)["version"], 2);
    }
    // Vault writes.
    let ws = format!("ws-{}", uniq());
    let vault_key = [("idempotency-key", "vault-1")];
    let body = json!({"workspace": ws, "name": "app", "secrets": {"A": "1"}});
    let v1 = env
        .send(
            Method::POST,
            "/secrets/vaults",
            Some(body.clone()),
            &vault_key,
        )
        .await;
    let vault_id = v1.ok(201)["id"].as_str().unwrap().to_owned();
    let v2 = env
        .send(
            Method::POST,
            "/secrets/vaults",
            Some(body.clone()),
            &vault_key,
        )
        .await;
    assert_eq!(v2.ok(201)["id"], vault_id.as_str());
    assert!(v2.replayed());
    let key_put = [("idempotency-key", "vault-key-1")];
    for _ in 0..2 {
        let r = env
            .send(
                Method::PUT,
                &format!("/secrets/vaults/{vault_id}/keys/B"),
                Some(json!({"value": "2"})),
                &key_put,
            )
            .await;
        assert_eq!(r.ok(200)["keys"], json!(["A", "B"]));
    }

    // Across a restart: the answers are in the store.
    env.server.kill();
    env.server = ServerProcess::start(&env.cfg);
    env.base = env.server.base_url();
    let after = env
        .send(Method::POST, "/secrets", Some(global(&name, "v")), &key)
        .await;
    assert_eq!(after.ok(201)["id"], id.as_str());
    assert!(after.replayed());
    let r = env
        .send(
            Method::PUT,
            &format!("/secrets/{id}"),
            Some(json!({"value": "v2"})),
            &put_key,
        )
        .await;
    assert_eq!(r.ok(200)["version"], 2);
    assert_eq!(
        env.versions(&id).await.len(),
        2,
        "no version added by retries"
    );
    let v3 = env
        .send(Method::POST, "/secrets/vaults", Some(body), &vault_key)
        .await;
    assert_eq!(v3.ok(201)["id"], vault_id.as_str());
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

both!(
    versions_rollback_destroy_and_cap,
    rollback_races_update_with_if_match,
    soft_delete_restore_and_purge,
    metadata_filters_and_expiry,
    idempotent_writes_survive_a_restart,
);
