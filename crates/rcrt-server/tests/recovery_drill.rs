//! The "KMS key lost" drill, end to end, with the real binaries and a real `moto_server` (PyPI
//! `moto[server]`; the test fails naming it when it is missing):
//!
//! 1. a recovery KEK is generated and split into Shamir shares with `rcrt kek split`;
//! 2. the server runs with `KEK_PROVIDER=aws-kms` and `RECOVERY_KEK_BASE64_FILE`, and secrets
//!    are written (every DEK wrapped by KMS and by the recovery KEK);
//! 3. moto is killed: the KMS key is gone for good (moto keeps keys in memory only), and the
//!    recovery KEK file is deleted too;
//! 4. two of the three shares are combined with `rcrt kek combine`;
//! 5. `rcrt kek rewrap` runs offline with a new KEK as current and the recovered KEK as old;
//! 6. the server starts on the new local KEK alone and every secret decrypts to its value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::gen_kek;
use common::http::{client, create_ok, decrypt, kek_status, kill, ready_kek_id, send, start};
use rcrt_testkit::peers::moto::MotoServer;
use rcrt_testkit::TempDir;
use serde_json::{json, Value};

/// The `rcrt` CLI binary: beside this crate's server binary in the target directory, built
/// first (cargo makes that a no-op when it is up to date).
fn rcrt_binary() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_rcrt-server"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "rcrt-cli", "--bin", "rcrt"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "`{cargo} build -p rcrt-cli` failed ({status:?}); the drill needs the rcrt CLI"
    );
    server
        .parent()
        .unwrap()
        .join(format!("rcrt{}", std::env::consts::EXE_SUFFIX))
}

/// Runs `rcrt <args>` with only `PATH` in its environment and `stdin` as its input.
fn rcrt(bin: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rcrt {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_secret_file(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_key_lost_drill() {
    let bin = tokio::task::block_in_place(rcrt_binary);
    let mut moto = tokio::task::block_in_place(MotoServer::start);
    let dir = TempDir::new();
    let keys = TempDir::new();
    let http = client("recovery drill");

    // 1. The recovery KEK, split 2-of-3.
    let recovery = gen_kek();
    let recovery_file = keys.path().join("recovery.b64");
    write_secret_file(&recovery_file, &recovery);
    let split = rcrt(
        &bin,
        &["kek", "split", "-t", "2", "-n", "3"],
        &format!("{recovery}\n"),
    );
    let shares: Vec<String> = String::from_utf8(split.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(shares.len(), 3, "{shares:?}");
    assert!(shares.iter().all(|s| !s.contains(&recovery)));

    // 2. The server on KMS, with the recovery KEK; secrets, some with two versions.
    let mut env: Vec<(String, String)> = moto.env();
    env.extend(
        [
            ("KEK_PROVIDER", "aws-kms".to_owned()),
            ("AWS_KMS_KEY_ID", moto.key_arn().to_owned()),
            (
                "RECOVERY_KEK_BASE64_FILE",
                recovery_file.to_str().unwrap().to_owned(),
            ),
            ("AUTH_MODE", "disabled".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut server = start(&dir, &env);
    let base = server.base_url();
    let kms_kek_id = ready_kek_id(&http, &base).await;
    assert!(kms_kek_id.starts_with("aws-kms:"), "{kms_kek_id}");

    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..12 {
        let value = format!("drill-{i}-{}", uuid::Uuid::new_v4().simple());
        let id = create_ok(&http, &base, &format!("drill-{i}"), &value).await;
        let value = if i % 3 == 0 {
            let second = format!("drill-{i}-v2-{}", uuid::Uuid::new_v4().simple());
            let (status, body) = send(
                http.put(format!("{base}/secrets/{id}"))
                    .json(&json!({ "value": second })),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            second
        } else {
            value
        };
        secrets.insert(id, value);
    }
    let server_log = server.output();
    kill(&mut server);
    assert!(
        !server_log.contains(&recovery),
        "the recovery KEK reached the log"
    );

    // 3. The KMS key is lost for good, and the recovery KEK file with it.
    tokio::task::block_in_place(|| moto.kill());
    std::fs::remove_file(&recovery_file).unwrap();

    // 4. Two custodians combine their shares.
    let combined = rcrt(
        &bin,
        &["kek", "combine", "-t", "2"],
        &format!("{}\n{}\n", shares[0], shares[2]),
    );
    let recovered = String::from_utf8(combined.stdout)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        recovered, recovery,
        "the shares did not give back the recovery KEK"
    );

    // 5. Offline re-wrap: a new local KEK current, the recovered KEK old.
    let new_kek = gen_kek();
    let new_file = keys.path().join("new.b64");
    let old_file = keys.path().join("recovered.b64");
    write_secret_file(&new_file, &new_kek);
    write_secret_file(&old_file, &recovered);
    let db = dir.path().join("rcrt.db");
    let rewrap = rcrt(
        &bin,
        &[
            "kek",
            "rewrap",
            "--new-kek-file",
            new_file.to_str().unwrap(),
            "--old-kek-file",
            old_file.to_str().unwrap(),
            "--db-url",
            db.to_str().unwrap(),
        ],
        "",
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&rewrap.stdout),
        String::from_utf8_lossy(&rewrap.stderr)
    );
    assert!(
        !report.contains(&recovered) && !report.contains(&new_kek),
        "{report}"
    );

    // 6. The server on the new KEK alone: every secret decrypts to its value.
    let server = start(
        &dir,
        &[
            ("LOCAL_KEK_BASE64", new_kek.as_str()),
            ("AUTH_MODE", "disabled"),
        ],
    );
    let base = server.base_url();
    for (id, value) in &secrets {
        let (status, body) = decrypt(&http, &base, id).await;
        assert_eq!(
            status,
            200,
            "decrypt {id} after the drill: {body}\n{}",
            server.output()
        );
        assert_eq!(body["value"].as_str(), Some(value.as_str()), "{id}: {body}");
    }
    let st = kek_status(&http, &base).await;
    let per_kek = st["versions_per_kek"].as_object().unwrap();
    assert_eq!(
        per_kek
            .get(&kms_kek_id)
            .and_then(Value::as_u64)
            .unwrap_or(0),
        0,
        "versions left under the lost KMS key: {st}"
    );
    assert_eq!(
        per_kek.values().filter_map(Value::as_u64).sum::<u64>(),
        16,
        "{st}"
    );
}
