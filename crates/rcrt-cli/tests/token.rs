//! `rcrt token ...` against a real server in token mode, with a bootstrap admin token from
//! `rcrt token generate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Output;

use rcrt_crypto::ServiceToken;
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::Value;

mod common;
use common::{new_kek, rcrt_cmd, run_with_stdin, server_config, show, text, write_file};

/// The real `rcrt` against `url` with `stdin`; a token only if `env` or `args` give one.
fn rcrt(url: &str, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    run_with_stdin(
        rcrt_cmd()
            .args(args)
            .env("RCRT_URL", url)
            .envs(env.iter().copied()),
        stdin,
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", show(out));
    text(&out.stdout)
}

/// A refusal: exit 1, nothing on stdout, `what` in the message.
fn refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    assert!(out.stdout.is_empty(), "{}", show(out));
    assert!(
        text(&out.stderr).contains(what),
        "want {what}: {}",
        show(out)
    );
}

/// `rcrt token generate`: exactly one well-formed token and a newline on stdout, nothing else.
fn generate() -> String {
    let out = rcrt_cmd().args(["token", "generate"]).output().unwrap();
    let stdout = ok(&out);
    assert!(out.stderr.is_empty(), "{}", show(&out));
    let token = stdout.strip_suffix('\n').expect("ends with a newline");
    assert!(!token.contains(char::is_whitespace), "{}", show(&out));
    ServiceToken::parse(token).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    token.to_owned()
}

/// The id the server gives a token: its 32-hex public half, as a hyphenated UUID.
fn token_id(token: &str) -> String {
    uuid::Uuid::parse_str(&token[5..37]).unwrap().to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn token_commands_against_a_token_server() {
    let admin = generate();
    assert_ne!(admin, generate(), "two runs give two tokens");

    let dir = TempDir::new();
    let admin_file = dir.path().join("admin.token");
    write_file(&admin_file, &format!("{admin}\n"), 0o600);
    let kek = new_kek();
    let srv = ServerProcess::start(&server_config(
        dir.path(),
        &[
            ("LOCAL_KEK_BASE64", &kek.text),
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", path(&admin_file)),
        ],
    ));
    let url = srv.base_url();
    let as_file = ["--token-file", path(&admin_file)];
    let as_env = [("RCRT_TOKEN", admin.as_str())];
    // Outputs that must not contain any token (all but generate's and create's stdout).
    let mut quiet: Vec<Output> = Vec::new();

    refused(&rcrt(&url, &["token", "list"], "", &[]), "unauthorized");

    let secret_id = |ws: &str, value: &str| -> String {
        let args = [
            &["secrets", "create", "API_KEY", "--scope-type", "workspace"][..],
            &["--scope-id", ws],
            &as_file,
        ]
        .concat();
        let meta: Value = serde_json::from_str(&ok(&rcrt(&url, &args, value, &[]))).unwrap();
        meta["id"].as_str().unwrap().to_owned()
    };
    let in_w1 = secret_id("w1", "value-in-w1\n");
    let in_w2 = secret_id("w2", "value-in-w2\n");

    // The admin token from --token-file mints a read+decrypt token for w1: the token alone on
    // stdout, the summary on stderr.
    let args = [
        &[
            "token",
            "create",
            "reader",
            "--role",
            "secrets.read,secrets.decrypt",
        ][..],
        &["--workspace", "w1", "--ttl", "1h"],
        &as_file,
    ]
    .concat();
    let out = rcrt(&url, &args, "", &[]);
    let stdout = ok(&out);
    let reader = stdout.strip_suffix('\n').unwrap().to_owned();
    ServiceToken::parse(&reader).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    let reader_id = token_id(&reader);
    let summary = text(&out.stderr);
    assert!(
        summary.contains(&format!("created token {reader_id}")) && summary.contains("expires 2"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(!summary.contains(&reader), "{summary}");

    // The admin token from RCRT_TOKEN mints a token that may mint (repeated --role, seconds).
    let out = rcrt(
        &url,
        &[
            "token",
            "create",
            "minter",
            "--role",
            "secrets.read",
            "--role",
            "tokens.create",
            "--workspace",
            "w1",
            "--ttl",
            "3600",
            "--format",
            "json",
        ],
        "",
        &as_env,
    );
    let minted: Value = serde_json::from_str(&ok(&out)).unwrap();
    let minter = minted["token"].as_str().unwrap().to_owned();
    ServiceToken::parse(&minter).unwrap();
    assert_eq!(minted["id"], token_id(&minter));
    let mut roles: Vec<&str> = minted["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["secrets.read", "tokens.create"], "{minted}");
    assert_eq!(minted["workspaces"], serde_json::json!(["w1"]));
    assert_eq!(minted["status"], "active");
    quiet.push(Output {
        stdout: Vec::new(),
        ..out
    });

    // The new token works with the other commands, within w1 only.
    let reader_env = [("RCRT_TOKEN", reader.as_str())];
    let get_w1 = ["secrets", "get", &in_w1, "--reason", "token test"];
    let out = rcrt(&url, &get_w1, "", &reader_env);
    assert_eq!(ok(&out), "value-in-w1\n");
    quiet.push(out);
    let out = rcrt(
        &url,
        &["secrets", "get", &in_w2, "--reason", "token test"],
        "",
        &reader_env,
    );
    refused(&out, "not_found");
    quiet.push(out);

    // No escalation: the reader may not mint at all; the minter not beyond its own roles; the
    // minter may mint within them.
    let out = rcrt(
        &url,
        &["token", "create", "w", "--role", "secrets.write"],
        "",
        &reader_env,
    );
    refused(&out, "forbidden");
    quiet.push(out);
    let minter_env = [("RCRT_TOKEN", minter.as_str())];
    let out = rcrt(
        &url,
        &[
            "token",
            "create",
            "w",
            "--role",
            "secrets.read,secrets.write",
        ],
        "",
        &minter_env,
    );
    refused(&out, "forbidden");
    assert!(text(&out.stderr).contains("subset"), "{}", show(&out));
    quiet.push(out);
    let out = rcrt(
        &url,
        &[
            "token",
            "create",
            "narrow",
            "--role",
            "secrets.read",
            "--workspace",
            "w1",
            // The default (30 days) would outlive the minter's one hour.
            "--ttl",
            "10m",
        ],
        "",
        &minter_env,
    );
    let narrow = ok(&out).trim_end().to_owned();
    ServiceToken::parse(&narrow).unwrap();
    quiet.push(Output {
        stdout: Vec::new(),
        ..out
    });

    // Listing shows metadata, never a token.
    let out = rcrt(&url, &[&["token", "list"][..], &as_file].concat(), "", &[]);
    let table = ok(&out);
    assert!(table.starts_with("ID "), "{table}");
    for needle in [reader_id.as_str(), "reader", "minter", "narrow", "active"] {
        assert!(table.contains(needle), "want {needle}:\n{table}");
    }
    quiet.push(out);
    let list_json = |quiet: &mut Vec<Output>| -> Vec<Value> {
        let out = rcrt(&url, &["token", "list", "--format", "json"], "", &as_env);
        let items: Value = serde_json::from_str(&ok(&out)).unwrap();
        quiet.push(out);
        items.as_array().unwrap().clone()
    };
    let items = list_json(&mut quiet);
    let reader_row = items
        .iter()
        .find(|t| t["id"] == reader_id.as_str())
        .unwrap_or_else(|| panic!("reader not listed: {items:?}"));
    assert_eq!(reader_row["name"], "reader");
    assert_eq!(reader_row["status"], "active");
    assert_eq!(reader_row["workspaces"], serde_json::json!(["w1"]));
    assert!(items.iter().all(|t| t.get("token").is_none()), "{items:?}");

    // Revoking stops the token at once.
    let out = rcrt(
        &url,
        &[&["token", "revoke", &reader_id][..], &as_file].concat(),
        "",
        &[],
    );
    ok(&out);
    assert!(text(&out.stderr).contains(&format!("revoked token {reader_id}")));
    quiet.push(out);
    let out = rcrt(&url, &get_w1, "", &reader_env);
    refused(&out, "unauthorized");
    quiet.push(out);
    let items = list_json(&mut quiet);
    let reader_row = items
        .iter()
        .find(|t| t["id"] == reader_id.as_str())
        .unwrap();
    assert_eq!(reader_row["status"], "revoked", "{items:?}");
    let out = rcrt(
        &url,
        &["token", "revoke", &uuid::Uuid::new_v4().to_string()],
        "",
        &as_env,
    );
    refused(&out, "not_found");
    quiet.push(out);

    let tokens = [&admin, &reader, &minter, &narrow];
    for out in &quiet {
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        for t in tokens {
            assert!(
                !all.contains(t.as_str()),
                "a token was printed:\n{}",
                show(out)
            );
        }
    }
    let log = srv.output();
    for t in tokens {
        assert!(!log.contains(t.as_str()), "the server logged a token");
    }
}
