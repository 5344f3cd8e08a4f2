//! A recovery KEK through the real server (SQLite; the store and core rules run on both stores
//! in `rcrt-core/tests/recovery.rs`):
//!
//! * `RECOVERY_KEK_BASE64_FILE` makes every new DEK recoverable, and the background re-wrap adds
//!   recovery wraps to the rows written before it was configured;
//! * `/admin/kek/status` counts a KEK's versions across rows with and without a recovery wrap;
//! * the current KEK lost: a server given a new KEK and the recovery KEK as an old one starts,
//!   decrypts every secret through its recovery wrap and re-wraps the store to the new KEK, after
//!   which the new KEK alone reads everything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::http::{client, create_ok, kek_status, send, verify_all};
use common::{gen_kek, server_config};
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::json;

async fn rewrap_until_done(http: &reqwest::Client, base: &str) {
    let (code, body) = send(http.post(format!("{base}/admin/kek/rewrap"))).await;
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = kek_status(http, base).await;
        if s["rewrap"]["remaining"] == 0 && s["rewrap"]["state"] != "running" {
            assert_eq!(s["rewrap"]["failed"], 0, "{s}");
            return;
        }
        assert!(Instant::now() < deadline, "re-wrap did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kek_id(kek_b64: &str) -> String {
    use base64::Engine;
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(kek_b64)
        .unwrap()
        .try_into()
        .unwrap();
    rcrt_crypto::Kek::from_bytes(zeroize::Zeroizing::new(bytes))
        .id()
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn recovery_kek_backfills_counts_and_survives_a_lost_kek() {
    let dir = TempDir::new();
    let (k1, k2, r) = (gen_kek(), gen_kek(), gen_kek());
    let recovery_file = dir.path().join("recovery.kek");
    std::fs::write(&recovery_file, format!("{r}\n")).unwrap();
    let recovery_path = recovery_file.to_str().unwrap().to_owned();
    let mut values = BTreeMap::new();
    let http = client("recovery test");

    // Two secrets before any recovery KEK.
    {
        let server = ServerProcess::start(&server_config(
            None,
            &dir,
            &[("LOCAL_KEK_BASE64", &k1), ("REWRAP_AUTO", "false")],
        ));
        let base = server.base_url();
        for i in 0..2 {
            let v = format!("before-{i}-{}", uuid::Uuid::new_v4());
            values.insert(create_ok(&http, &base, &format!("before-{i}"), &v).await, v);
        }
    }

    // With the recovery KEK: a third secret gets a recovery wrap at once; the first two lack
    // one until the re-wrap runs.
    {
        let server = ServerProcess::start(&server_config(
            None,
            &dir,
            &[
                ("LOCAL_KEK_BASE64", &k1),
                ("RECOVERY_KEK_BASE64_FILE", &recovery_path),
                ("REWRAP_AUTO", "false"),
            ],
        ));
        let base = server.base_url();
        let v = format!("after-{}", uuid::Uuid::new_v4());
        values.insert(create_ok(&http, &base, "after", &v).await, v);
        let s = kek_status(&http, &base).await;
        // Rows of one KEK with and without a recovery wrap are one count.
        assert_eq!(s["versions_per_kek"][kek_id(&k1)], 3, "{s}");
        assert_eq!(s["rewrap"]["remaining"], 2, "{s}");
        assert!(
            !s["configured_kek_ids"]
                .as_array()
                .unwrap()
                .contains(&json!(kek_id(&r))),
            "the recovery KEK wraps only: {s}"
        );
        rewrap_until_done(&http, &base).await;
        verify_all(&http, &base, &values, "after the re-wrap").await;
    }

    // K1 is lost. K2 alone cannot start: K1's id is named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rcrt-server"))
        .env_clear()
        .env("LOCAL_KEK_BASE64", &k2)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&kek_id(&k1))
            || String::from_utf8_lossy(&out.stdout).contains(&kek_id(&k1)),
        "{out:?}"
    );

    // K2 with the recovered KEK as an old one: everything reads through its recovery wrap, and
    // the re-wrap moves every row to K2.
    {
        let server = ServerProcess::start(&server_config(
            None,
            &dir,
            &[
                ("LOCAL_KEK_BASE64", &k2),
                ("LOCAL_KEK_BASE64_OLD", &r),
                ("RECOVERY_KEK_BASE64_FILE", &recovery_path),
                ("REWRAP_AUTO", "false"),
            ],
        ));
        let base = server.base_url();
        verify_all(&http, &base, &values, "K2 with the recovered KEK as old").await;
        rewrap_until_done(&http, &base).await;
        let s = kek_status(&http, &base).await;
        assert_eq!(s["versions_per_kek"], json!({kek_id(&k2): 3}), "{s}");
    }

    // K2 alone now reads everything.
    let server = ServerProcess::start(&server_config(None, &dir, &[("LOCAL_KEK_BASE64", &k2)]));
    let base = server.base_url();
    verify_all(&http, &base, &values, "K2 alone").await;
}
