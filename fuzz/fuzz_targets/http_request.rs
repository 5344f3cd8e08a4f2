//! Whole requests through the real router (`rcrt_server::http::app` over an embedded SQLite
//! store, `AUTH_MODE=jwt,token`): request bodies of every endpoint, query strings, path
//! segments, and `Authorization` headers (JWT headers and claims, service tokens). Oracle: no
//! 5xx, no panic, and every error answer is JSON with `error.code`.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    admin: String,
    secret_id: String,
    _dir: std::path::PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // tmpfs if there is one: SQLite's durable commits are the slow part of each run.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("rcrt-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let admin = format!("rcrt_{}_{}", "1".repeat(32), "2".repeat(64));
        let token_file = dir.join("admin-token");
        let secret_file = dir.join("hs256");
        std::fs::write(&token_file, format!("{admin}\n")).unwrap();
        std::fs::write(&secret_file, "fuzz-hs256-secret-of-at-least-32-bytes!!").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&token_file, private).unwrap();
        }
        let db = format!("sqlite:{}", dir.join("fuzz.db").display());
        let lookup = rcrt_server::config::Lookup::from_pairs(&[
            ("LOCAL_KEK_BASE64", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="),
            ("DB_URL", &db),
            ("AUTH_MODE", "jwt,token"),
            ("JWT_ISSUER", "https://idp.example"),
            ("JWT_AUDIENCE", "rcrt"),
            ("JWT_HS256_SECRET_FILE", secret_file.to_str().unwrap()),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", token_file.to_str().unwrap()),
        ]);
        let config = rcrt_server::config::Config::from_lookup(&lookup).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(rt.block_on(rcrt_server::build(&config)).unwrap());
        let app = rcrt_server::http::app(
            state,
            rcrt_server::http::AppOptions {
                max_value_bytes: config.max_value_bytes,
                body_timeout: std::time::Duration::from_secs(5),
                host_policy: None,
            },
        );
        // One secret the fuzzer can address by id.
        let req = Request::post("/secrets")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {admin}"))
            .body(Body::from(
                r#"{"name":"fuzz-target","value":"v","scope_type":"global"}"#,
            ))
            .unwrap();
        let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
        let body = rt
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let secret_id = v["id"].as_str().unwrap().to_owned();
        World {
            rt,
            app,
            admin,
            secret_id,
            _dir: dir,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Auth {
    Admin,
    None,
    Raw(String),
    ApiKey(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    route: u8,
    auth: Auth,
    tail: String,
    json: bool,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let w = world();
    let id = &w.secret_id;
    let t = &input.tail;
    let (method, path) = match input.route % 14 {
        0 => ("POST", "/secrets".to_owned()),
        1 => ("GET", format!("/secrets?{t}")),
        2 => ("GET", format!("/secrets/{t}")),
        3 => ("PUT", format!("/secrets/{id}")),
        4 => ("POST", format!("/secrets/{id}/decrypt")),
        5 => ("DELETE", format!("/secrets/{t}")),
        6 => ("POST", "/secrets/vaults".to_owned()),
        7 => ("PUT", format!("/secrets/vaults/{t}/keys/K")),
        8 => ("GET", format!("/secrets/vault/{t}")),
        9 => ("POST", "/auth/tokens".to_owned()),
        10 => ("GET", format!("/auth/tokens?{t}")),
        11 => ("DELETE", format!("/auth/tokens/{t}")),
        12 => ("POST", format!("/secrets/{id}/decrypt?{t}")),
        _ => ("GET", "/admin/kek/status".to_owned()),
    };
    let mut req = Request::builder().method(method).uri(path);
    if input.json {
        req = req.header("content-type", "application/json");
    }
    req = match &input.auth {
        Auth::Admin => req.header("authorization", format!("Bearer {}", w.admin)),
        Auth::None => req,
        Auth::Raw(h) => req.header("authorization", h.as_str()),
        Auth::ApiKey(h) => req.header("x-api-key", h.as_str()),
    };
    // A URI or header the HTTP layer would not have parsed never reaches the router.
    let Ok(req) = req.body(Body::from(input.body)) else {
        return;
    };
    let resp = w.rt.block_on(w.app.clone().oneshot(req)).unwrap();
    let status = resp.status();
    let body = w
        .rt
        .block_on(axum::body::to_bytes(resp.into_body(), 4 << 20))
        .unwrap();
    assert!(!status.is_server_error(), "{status}: {}", String::from_utf8_lossy(&body));
    if status.is_client_error() {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{status} without a JSON body"));
        assert!(v["error"]["code"].is_string(), "{status}: {v}");
    }
});
