//! `rcrt-server healthcheck` against a real server process: exit 0 when `/health` answers,
//! 1 with one line on stderr when nothing listens; it needs no KEK and takes `BIND_ADDR` from
//! `.env` as the server does. (Over TLS: `tests/tls.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server_config;
use rcrt_testkit::{free_port, ServerProcess, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_rcrt-server");

/// Runs `rcrt-server healthcheck` in `dir` with only `env` (no KEK, no database).
fn healthcheck(dir: &TempDir, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("healthcheck")
        .env_clear()
        .current_dir(dir.path())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rcrt-server healthcheck")
}

#[test]
fn healthcheck_exit_codes() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let cfg = server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek)]);
    // 0.0.0.0: the check goes to 127.0.0.1 on the same port.
    let server = ServerProcess::start_on(&cfg, "0.0.0.0");
    let port = server
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();

    for bind in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        let out = healthcheck(&dir, &[("BIND_ADDR", &bind)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{bind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }

    // BIND_ADDR from .env, as the server reads it; the KEK beside it is not needed (nor used).
    let envdir = TempDir::new();
    std::fs::write(
        envdir.path().join(".env"),
        format!("LOCAL_KEK_BASE64={kek}\nBIND_ADDR=0.0.0.0:{port}\n"),
    )
    .unwrap();
    assert_eq!(healthcheck(&envdir, &[]).status.code(), Some(0));

    // Nothing listens: 1, one line naming the URL, quickly.
    let closed = free_port();
    let started = Instant::now();
    let out = healthcheck(&dir, &[("BIND_ADDR", &format!("127.0.0.1:{closed}"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("http://127.0.0.1:{closed}/health")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A server that accepts but never answers: 1 within the 3 s bound (plus start-up slack).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let out = healthcheck(&dir, &[("BIND_ADDR", &format!("127.0.0.1:{silent_port}"))]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(silent);

    // A configuration error is 1 too (Docker reserves 2), named on stderr.
    let out = healthcheck(&dir, &[("BIND_ADDR", "localhost:1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BIND_ADDR"));

    // Once the server is gone the check says so.
    drop(server);
    let out = healthcheck(&dir, &[("BIND_ADDR", &format!("127.0.0.1:{port}"))]);
    assert_eq!(out.status.code(), Some(1));
}
