//! What a real `rcrt-server` logs around its life: a warning at start when the same KEK is
//! given as current and as old, and on SIGTERM a line for the signal and `rcrt-server stopped`
//! with how long draining took.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::time::{Duration, Instant};

use common::server_config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rcrt_testkit::{ServerProcess, TempDir};

const SAME_KEK: &str = "the same KEK is given as current (LOCAL_KEK_BASE64) and as old";

#[tokio::test]
async fn warns_when_the_current_kek_is_also_given_as_old() {
    let dir = TempDir::new();
    let (k1, k2) = (gen_kek(), gen_kek());
    let both = format!("{k2},{k1}");
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &k1),
            ("LOCAL_KEK_BASE64_OLD", &both),
            ("AUTH_MODE", "disabled"),
        ],
    ));
    // The warning comes before the server listens, so it is in the log by now.
    let log = server.output();
    let line = log
        .lines()
        .find(|l| l.contains(SAME_KEK))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    let kek_id = reqwest::get(format!("{}/ready", server.base_url()))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["kek_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(line.contains(&kek_id), "names the KEK id: {line}");
    assert!(!log.contains(&k1) && !log.contains(&k2), "a KEK in the log");
    drop(server);

    // Another old KEK alone: no warning.
    let dir = TempDir::new();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[
            ("LOCAL_KEK_BASE64", &k1),
            ("LOCAL_KEK_BASE64_OLD", &k2),
            ("AUTH_MODE", "disabled"),
        ],
    ));
    assert!(!server.output().contains(SAME_KEK), "{}", server.output());
}

#[test]
fn logs_the_stop_after_sigterm_with_the_drain_time() {
    let dir = TempDir::new();
    let kek = gen_kek();
    let server = ServerProcess::start(&server_config(
        None,
        &dir,
        &[("LOCAL_KEK_BASE64", &kek), ("AUTH_MODE", "disabled")],
    ));
    assert!(!server.output().contains("rcrt-server stopped"));
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = server.output();
        if log.contains("rcrt-server stopped") {
            break log;
        }
        assert!(Instant::now() < deadline, "no stop line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let signal = log
        .lines()
        .find(|l| l.contains("shutting down"))
        .unwrap_or_else(|| panic!("no shutdown line:\n{log}"));
    assert!(signal.contains("SIGTERM"), "{signal}");
    let stopped = log
        .lines()
        .find(|l| l.contains("rcrt-server stopped"))
        .unwrap();
    let drain_ms: u64 = stopped
        .split("drain_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drain_ms: {stopped}"));
    // Nothing was in flight: draining is quick (the grace period is 10 s).
    assert!(drain_ms < 5000, "{stopped}");
    // The stop line is the last thing the server says.
    assert!(
        log.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("rcrt-server stopped"),
        "{log}"
    );
}
