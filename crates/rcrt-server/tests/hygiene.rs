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

use common::gen_kek;

use std::path::Path;
use std::time::Duration;

use common::{server_config, Backend};
use rcrt_crypto::ServiceToken;
use rcrt_testkit::{ServerProcess, TempDir, TempPgDb};
use serde_json::{json, Value};

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

// ---------------------------------------------------------------------------------------------
// Key hygiene of the process
// ---------------------------------------------------------------------------------------------

/// `/proc/<pid>/<file>`.
fn proc_file(pid: u32, file: &str) -> std::path::PathBuf {
    Path::new("/proc").join(pid.to_string()).join(file)
}

/// A server run by hand (to see its pid and, when this test runs as root, to run it as the
/// unprivileged `nobody`, whose /proc files then show whether it is dumpable); killed on drop.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_running_server_keeps_its_keks_to_itself() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;

    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (current, old) = (gen_kek(), gen_kek());
    let port = rcrt_testkit::free_port();
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rcrt-server"));
    cmd.env_clear()
        .env("LOCAL_KEK_BASE64", &current)
        .env("LOCAL_KEK_BASE64_OLD", &old)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("RCRT_MARKER", "still-here")
        // The store URL may carry a database password: it leaves the environment too.
        .env("DB_URL", dir.path().join("hygiene-marker.db"))
        // KEK provider credentials leave it too (read even with the local KEK).
        .env("VAULT_TOKEN", "hygiene-vault-token")
        .env("AWS_SECRET_ACCESS_KEY", "hygiene-aws-secret")
        .env("AWS_SESSION_TOKEN", "hygiene-aws-session")
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "hygiene-aws-container")
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if root {
        cmd.uid(65534).gid(65534);
    }
    let server = Spawned(cmd.spawn().unwrap());
    let pid = server.0.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rcrt_testkit::http_get_status(port, "/ready") != Some(200) {
        assert!(std::time::Instant::now() < deadline, "server never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // No core dumps.
    let limits = std::fs::read_to_string(proc_file(pid, "limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );

    let environ = std::fs::read(proc_file(pid, "environ"));
    if root {
        // Not dumpable: the kernel hands its /proc files to root, not to the process's user.
        let status = std::fs::read_to_string(proc_file(pid, "status")).unwrap();
        assert!(
            status.lines().any(|l| l.starts_with("Uid:\t65534")),
            "{status}"
        );
        assert_eq!(
            std::fs::metadata(proc_file(pid, "environ")).unwrap().uid(),
            0
        );
        assert_eq!(std::fs::metadata(proc_file(pid, "mem")).unwrap().uid(), 0);
        // Root reads the environment: the KEK variables are gone, the rest is there.
        let environ = String::from_utf8_lossy(&environ.unwrap()).into_owned();
        assert!(environ.contains("RCRT_MARKER=still-here"), "{environ:?}");
        assert!(!environ.contains("LOCAL_KEK_BASE64"), "{environ:?}");
        assert!(!environ.contains("hygiene-marker"), "{environ:?}");
        for var in [
            "VAULT_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        ] {
            assert!(!environ.contains(var), "{var} left: {environ:?}");
        }
        assert!(!environ.contains("hygiene-vault"), "{environ:?}");
        assert!(!environ.contains("hygiene-aws"), "{environ:?}");
        for kek in [&current, &old] {
            assert!(!environ.contains(kek.as_str()));
        }
    } else {
        // Not dumpable: another process of the same user cannot read the environment at all.
        assert_eq!(
            environ.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
    }
}

/// The guide's published example KEK is refused at start (exit 1) with a message that names
/// the problem, never the key; as an old KEK (to move a store off it) it is accepted.
#[test]
fn the_guides_example_kek_is_refused() {
    const EXAMPLE: &str = "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=";
    let dir = TempDir::new();
    let (status, output) =
        ServerProcess::run_to_exit(&server_config(None, &dir, &[("LOCAL_KEK_BASE64", EXAMPLE)]));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(
            "the KEK in LOCAL_KEK_BASE64 is the production guide's published example KEK"
        ),
        "{output}"
    );
    assert!(output.contains("openssl rand -base64 32"), "{output}");
    assert!(!output.contains(&EXAMPLE[..40]), "{output}");
    // From .env, the same.
    std::fs::write(
        dir.path().join(".env"),
        format!("LOCAL_KEK_BASE64=\"{EXAMPLE}\"\n"),
    )
    .unwrap();
    let (status, output) = ServerProcess::run_to_exit(&server_config(None, &dir, &[]));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("published example KEK"), "{output}");
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    // As an old KEK beside a real one, the server starts.
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", kek.as_str()),
            ("LOCAL_KEK_BASE64_OLD", EXAMPLE),
        ],
    ));
    assert!(!server.output().contains(&EXAMPLE[..40]));
}
