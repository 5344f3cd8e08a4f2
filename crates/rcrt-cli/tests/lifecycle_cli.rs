//! The secret lifecycle commands (docs/lifecycle.md) against a real server: `secrets versions`,
//! `decrypt --version`, `rollback`, `destroy-version`, `delete --recovery-window`, `restore`,
//! `list` filters, `update-meta`, metadata flags on `create`, and `--idempotency-key`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Output;

use base64::Engine;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::Value;

mod common;
use common::{rcrt_cmd, run_with_stdin, server_config, show, text};

fn kek() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A server on the SQLite store in `dir` (so a second one with the same KEK sees the same data).
fn server_with(dir: &TempDir, kek: &str) -> ServerProcess {
    ServerProcess::start(&server_config(dir.path(), &[("LOCAL_KEK_BASE64", kek)]))
}

fn server(dir: &TempDir) -> ServerProcess {
    server_with(dir, &kek())
}

/// The real `rcrt` against the server at `url`, with `stdin`.
fn rcrt(url: &str, args: &[&str], stdin: &str) -> Output {
    run_with_stdin(rcrt_cmd().args(args).env("RCRT_URL", url), stdin)
}

/// Stdout of a run that must succeed.
fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", show(out));
    text(&out.stdout)
}

/// Stdout of a run that must succeed, as JSON.
fn ok_json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap_or_else(|e| panic!("{e}\n{}", show(out)))
}

/// A run that must fail with exit 1 and `code` (and `status`, if given) on stderr.
fn fails(out: &Output, code: &str, status: Option<u16>) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    let err = text(&out.stderr);
    assert!(err.contains(code), "expected {code}: {}", show(out));
    if let Some(s) = status {
        assert!(
            err.contains(&format!("HTTP {s}")),
            "expected HTTP {s}: {}",
            show(out)
        );
    }
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", show(out));
}

fn versions(url: &str, id: &str) -> Vec<(i64, String)> {
    let listed = ok_json(&rcrt(url, &["secrets", "versions", id], ""));
    listed
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

fn states(v: &[(i64, &str)]) -> Vec<(i64, String)> {
    v.iter().map(|(n, s)| (*n, (*s).to_owned())).collect()
}

/// Versions, decrypt of a version, rollback, destroy, and idempotent create/update/rollback.
#[test]
fn versions_rollback_destroy_and_idempotent_writes() {
    let dir = TempDir::new();
    let srv = server(&dir);
    let url = srv.base_url();

    // Create with an idempotency key; the retry (a lost answer) gets the same secret, not 409.
    let create = [
        "secrets",
        "create",
        "DB_PASSWORD",
        "--idempotency-key",
        "create-db-password-1",
    ];
    let first = ok_json(&rcrt(&url, &create, "value-one-4f1c\n"));
    let id = first["id"].as_str().unwrap().to_owned();
    let retry = ok_json(&rcrt(&url, &create, "value-one-4f1c\n"));
    assert_eq!(retry, first, "the retry returns the first answer");
    // Without the key the name is taken; with it and another name, the key is refused.
    fails(
        &rcrt(&url, &["secrets", "create", "DB_PASSWORD"], "x"),
        "name_taken",
        Some(409),
    );
    fails(
        &rcrt(
            &url,
            &[
                "secrets",
                "create",
                "OTHER",
                "--idempotency-key",
                "create-db-password-1",
            ],
            "x",
        ),
        "idempotency_key_reused",
        Some(422),
    );
    // A key that cannot be sent is refused before anything is sent.
    fails(
        &rcrt(
            &url,
            &["secrets", "create", "OTHER", "--idempotency-key", " lead"],
            "x",
        ),
        "invalid_argument",
        None,
    );

    // Update twice with one key: one new version.
    let update = ["secrets", "update", &id, "--idempotency-key", "rotate-2"];
    let v2 = ok_json(&rcrt(&url, &update, "value-two-8a2d"));
    assert_eq!(v2["version"], 2);
    assert_eq!(ok_json(&rcrt(&url, &update, "value-two-8a2d")), v2);
    assert_eq!(
        ok_json(&rcrt(&url, &["secrets", "update", &id], "value-three-c9e0"))["version"],
        3
    );

    let listed = ok(&rcrt(&url, &["secrets", "versions", &id], ""));
    assert!(!listed.contains("value-"), "never a value: {listed}");
    assert_eq!(
        versions(&url, &id),
        states(&[(3, "current"), (2, "kept"), (1, "kept")])
    );

    // `decrypt` is `get`; --version reads an older one.
    assert_eq!(
        ok(&rcrt(
            &url,
            &[
                "secrets",
                "decrypt",
                &id,
                "--reason",
                "cli",
                "--version",
                "1"
            ],
            ""
        )),
        "value-one-4f1c\n"
    );
    assert_eq!(
        ok(&rcrt(
            &url,
            &["secrets", "get", &id, "--reason", "cli", "--version", "2"],
            ""
        )),
        "value-two-8a2d\n"
    );
    fails(
        &rcrt(
            &url,
            &[
                "secrets",
                "decrypt",
                &id,
                "--reason",
                "cli",
                "--version",
                "9",
            ],
            "",
        ),
        "version_not_found",
        Some(404),
    );

    // Rollback, idempotent, with If-Match.
    let rollback = [
        "secrets",
        "rollback",
        &id,
        "--version",
        "1",
        "--if-match",
        "3",
        "--idempotency-key",
        "rollback-1",
    ];
    let rolled = ok_json(&rcrt(&url, &rollback, ""));
    assert_eq!(rolled["version"], 4);
    assert_eq!(ok_json(&rcrt(&url, &rollback, "")), rolled, "replayed");
    assert_eq!(
        ok(&rcrt(&url, &["secrets", "get", &id, "--reason", "r"], "")),
        "value-one-4f1c\n"
    );
    fails(
        &rcrt(
            &url,
            &[
                "secrets",
                "rollback",
                &id,
                "--version",
                "2",
                "--if-match",
                "3",
            ],
            "",
        ),
        "version_mismatch",
        Some(412),
    );

    // Destroy a version: confirmed, then shredded; the current one cannot be.
    fails(
        &rcrt(&url, &["secrets", "destroy-version", &id, "2"], ""),
        "--yes",
        None,
    );
    ok(&rcrt(
        &url,
        &["secrets", "destroy-version", &id, "2", "--yes"],
        "",
    ));
    assert_eq!(
        versions(&url, &id),
        states(&[(4, "current"), (3, "kept"), (2, "destroyed"), (1, "kept")])
    );
    fails(
        &rcrt(
            &url,
            &["secrets", "get", &id, "--reason", "r", "--version", "2"],
            "",
        ),
        "version_destroyed",
        Some(410),
    );
    ok(&rcrt(
        &url,
        &["secrets", "destroy-version", &id, "2", "--yes"],
        "",
    ));
    fails(
        &rcrt(&url, &["secrets", "destroy-version", &id, "4", "--yes"], ""),
        "current_version",
        Some(409),
    );

    let log = srv.output();
    for value in ["value-one-4f1c", "value-two-8a2d", "value-three-c9e0"] {
        assert!(!log.contains(value), "the server logged a value");
    }
}

/// Metadata on create, update-meta, list filters, expiry, soft delete and restore.
#[test]
fn metadata_filters_soft_delete_and_restore() {
    let dir = TempDir::new();
    let srv = server(&dir);
    let url = srv.base_url();
    let in_days = |d: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::days(d))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let soon = in_days(10);
    let later = in_days(60);

    let create = |name: &str, extra: &[&str]| -> Value {
        let mut args = vec![
            "secrets",
            "create",
            name,
            "--scope-type",
            "workspace",
            "--scope-id",
            "w1",
        ];
        args.extend_from_slice(extra);
        ok_json(&rcrt(&url, &args, "v"))
    };
    let main = create(
        "db/main",
        &[
            "--description",
            "the main database",
            "--label",
            "env=prod,team=core",
            "--max-versions",
            "5",
        ],
    );
    assert_eq!(main["description"], "the main database");
    assert_eq!(
        main["labels"],
        serde_json::json!({"env": "prod", "team": "core"})
    );
    assert_eq!(main["max_versions"], 5);
    assert_eq!(main["expires_at"], Value::Null);
    let edge = create(
        "db/edge",
        &[
            "--label",
            "env=prod",
            "--label",
            "team=edge",
            "--expires-at",
            &soon,
        ],
    );
    let api = create("api/key", &["--label", "env=dev", "--expires-at", &later]);
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let (main_id, edge_id, api_id) = (id(&main), id(&edge), id(&api));

    let list = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["secrets", "list", "--scope-type", "workspace"];
        args.extend_from_slice(extra);
        let mut ids: Vec<String> = ok_json(&rcrt(&url, &args, ""))
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list(&["--label", "env=prod"]),
        sorted(vec![main_id.clone(), edge_id.clone()])
    );
    assert_eq!(
        list(&["--label", "env=prod", "--label", "team=core"]),
        vec![main_id.clone()]
    );
    assert_eq!(
        list(&["--name-prefix", "db/"]),
        sorted(vec![main_id.clone(), edge_id.clone()])
    );
    assert_eq!(list(&["--expiring", "30d"]), vec![edge_id.clone()]);
    assert_eq!(
        list(&["--expiring", "90d"]),
        sorted(vec![edge_id.clone(), api_id.clone()])
    );
    fails(
        &rcrt(&url, &["secrets", "list", "--label", "novalue"], ""),
        "KEY=VALUE",
        None,
    );

    // update-meta changes only what is given and writes no version.
    let patched = ok_json(&rcrt(
        &url,
        &[
            "secrets",
            "update-meta",
            &edge_id,
            "--description",
            "edge replica",
            "--no-expiry",
            "--max-versions",
            "2",
        ],
        "",
    ));
    assert_eq!(patched["description"], "edge replica");
    assert_eq!(patched["expires_at"], Value::Null);
    assert_eq!(patched["max_versions"], 2);
    assert_eq!(
        patched["labels"],
        serde_json::json!({"env": "prod", "team": "edge"})
    );
    assert_eq!(patched["version"], 1);
    assert_eq!(list(&["--expiring", "30d"]), Vec::<String>::new());
    let relabelled = ok_json(&rcrt(
        &url,
        &[
            "secrets",
            "update-meta",
            &edge_id,
            "--label",
            "env=staging",
            "--default-max-versions",
        ],
        "",
    ));
    assert_eq!(relabelled["labels"], serde_json::json!({"env": "staging"}));
    assert_eq!(relabelled["max_versions"], Value::Null);
    let cleared = ok_json(&rcrt(
        &url,
        &["secrets", "update-meta", &edge_id, "--clear-labels"],
        "",
    ));
    assert_eq!(cleared["labels"], serde_json::json!({}));
    assert_eq!(cleared["description"], "edge replica");
    fails(
        &rcrt(&url, &["secrets", "update-meta", &edge_id], ""),
        "nothing to change",
        None,
    );
    // Conflicting flags are a usage error.
    let both = rcrt(
        &url,
        &[
            "secrets",
            "update-meta",
            &edge_id,
            "--expires-at",
            &soon,
            "--no-expiry",
        ],
        "",
    );
    assert_eq!(both.status.code(), Some(2), "{}", show(&both));

    // Soft delete with a recovery window, listed with --deleted, restored.
    fails(
        &rcrt(
            &url,
            &["secrets", "delete", &main_id, "--recovery-window", "7d"],
            "",
        ),
        "--yes",
        None,
    );
    let out = rcrt(
        &url,
        &[
            "secrets",
            "delete",
            &main_id,
            "--recovery-window",
            "7d",
            "--yes",
        ],
        "",
    );
    let soft = ok_json(&out);
    assert_eq!(soft["id"], main_id.as_str());
    assert!(soft["purge_at"].is_string(), "{soft}");
    assert!(
        text(&out.stderr).contains("rcrt secrets restore"),
        "{}",
        show(&out)
    );
    fails(
        &rcrt(&url, &["secrets", "get", &main_id, "--reason", "r"], ""),
        "not_found",
        Some(404),
    );
    assert!(!list(&[]).contains(&main_id));
    let deleted = ok_json(&rcrt(&url, &["secrets", "list", "--deleted"], ""));
    let deleted = deleted.as_array().unwrap();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["id"], main_id.as_str());
    assert_eq!(deleted[0]["purge_at"], soft["purge_at"]);
    // The name stays reserved while it can be restored.
    fails(
        &rcrt(
            &url,
            &[
                "secrets",
                "create",
                "db/main",
                "--scope-type",
                "workspace",
                "--scope-id",
                "w1",
            ],
            "again",
        ),
        "name_taken",
        Some(409),
    );
    let restored = ok_json(&rcrt(&url, &["secrets", "restore", &main_id], ""));
    assert_eq!(restored["id"], main_id.as_str());
    assert_eq!(restored["description"], "the main database");
    assert_eq!(
        ok(&rcrt(
            &url,
            &["secrets", "get", &main_id, "--reason", "r"],
            ""
        )),
        "v\n"
    );
    fails(
        &rcrt(&url, &["secrets", "restore", &main_id], ""),
        "not_found",
        Some(404),
    );

    // Without a window (the server's default is 0): shredded at once, nothing to restore.
    let out = rcrt(&url, &["secrets", "delete", &api_id, "--yes"], "");
    assert!(ok(&out).is_empty(), "{}", show(&out));
    fails(
        &rcrt(&url, &["secrets", "restore", &api_id], ""),
        "not_found",
        Some(404),
    );
}

/// A create whose answer was lost when the server died: the retry with the same key, on the
/// restarted server, gets the same secret (not a 409), and the value is the first one.
#[test]
fn an_idempotent_retry_after_a_restart_gets_the_first_answer() {
    let dir = TempDir::new();
    let kek = kek();
    let mut srv = server_with(&dir, &kek);
    let create = [
        "secrets",
        "create",
        "API_TOKEN",
        "--label",
        "env=prod",
        "--idempotency-key",
        "deploy-7f3a",
    ];
    let first = ok_json(&rcrt(&srv.base_url(), &create, "first-value"));
    srv.kill();

    let srv = server_with(&dir, &kek);
    let url = srv.base_url();
    let retry = ok_json(&rcrt(&url, &create, "first-value"));
    assert_eq!(retry, first);
    let id = first["id"].as_str().unwrap();
    assert_eq!(versions(&url, id), states(&[(1, "current")]));
    assert_eq!(
        ok(&rcrt(&url, &["secrets", "get", id, "--reason", "r"], "")),
        "first-value\n"
    );
    // The same key with other metadata is another request.
    let mut other = create;
    other[4] = "env=dev";
    fails(
        &rcrt(&url, &other, "first-value"),
        "idempotency_key_reused",
        Some(422),
    );
}
