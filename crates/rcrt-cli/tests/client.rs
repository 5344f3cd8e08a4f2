//! `rcrt secrets ...` and `rcrt vault ...` against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Output;

use base64::Engine;
use rcrt_testkit::{ServerProcess, TempDir};

mod common;
use common::{rcrt_cmd, run_with_stdin, server_config};

fn kek() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn server(dir: &TempDir, extra: &[(&str, &str)]) -> ServerProcess {
    let kek = kek();
    let mut env = vec![("LOCAL_KEK_BASE64", kek.as_str())];
    env.extend_from_slice(extra);
    ServerProcess::start(&server_config(dir.path(), &env))
}

/// The real `rcrt` against the server at `url`, without a token unless `env` gives one.
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
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn secrets_commands_round_trip() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let url = srv.base_url();
    let created: serde_json::Value = serde_json::from_str(&ok(&rcrt(
        &url,
        &[
            "secrets",
            "create",
            "API_KEY",
            "--scope-type",
            "workspace",
            "--scope-id",
            "w1",
        ],
        "s3cr3t-value\n",
        &[],
    )))
    .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["version"], 1);
    assert!(!created.to_string().contains("s3cr3t-value"));

    let got = ok(&rcrt(
        &url,
        &["secrets", "get", &id, "--reason", "cli test"],
        "",
        &[],
    ));
    assert_eq!(
        got, "s3cr3t-value\n",
        "one trailing newline of stdin is dropped"
    );

    let listed: serde_json::Value = serde_json::from_str(&ok(&rcrt(
        &url,
        &[
            "secrets",
            "list",
            "--scope-type",
            "workspace",
            "--scope-id",
            "w1",
        ],
        "",
        &[],
    )))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let file = dir.path().join("v2");
    std::fs::write(&file, "second").unwrap();
    ok(&rcrt(
        &url,
        &[
            "secrets",
            "update",
            &id,
            "--if-match",
            "1",
            "--value-file",
            file.to_str().unwrap(),
        ],
        "",
        &[],
    ));
    let stale = rcrt(
        &url,
        &["secrets", "update", &id, "--if-match", "1"],
        "third",
        &[],
    );
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("version_mismatch"));
    assert_eq!(
        ok(&rcrt(
            &url,
            &["secrets", "get", &id, "--reason", "r"],
            "",
            &[]
        )),
        "second\n"
    );

    let unconfirmed = rcrt(&url, &["secrets", "delete", &id], "", &[]);
    assert_eq!(
        unconfirmed.status.code(),
        Some(1),
        "no --yes without a terminal"
    );
    ok(&rcrt(&url, &["secrets", "delete", &id, "--yes"], "", &[]));
    let gone = rcrt(&url, &["secrets", "get", &id, "--reason", "r"], "", &[]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not_found"));
    assert!(!srv.output().contains("s3cr3t-value"));
}

#[test]
fn vault_commands_and_tokens() {
    let dir = TempDir::new();
    let secret_file = dir.path().join("hs256");
    std::fs::write(&secret_file, "0123456789abcdef0123456789abcdef-test-only").unwrap();
    let srv = server(
        &dir,
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_ISSUER", "https://idp.test"),
            ("JWT_AUDIENCE", "rcrt"),
            ("JWT_HS256_SECRET_FILE", secret_file.to_str().unwrap()),
        ],
    );
    let url = srv.base_url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "sub": "ops-1", "owner_id": "acme", "iss": "https://idp.test", "aud": "rcrt",
            "exp": now + 600, "roles": ["secrets.read", "secrets.decrypt", "secrets.write"],
            "workspaces": ["payments"],
        }),
        &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef-test-only"),
    )
    .unwrap();
    let auth = [("RCRT_TOKEN", token.as_str())];

    let no_token = rcrt(
        &url,
        &["vault", "create", "app", "--workspace", "payments"],
        "A=1",
        &[],
    );
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("unauthorized"));

    let vault: serde_json::Value = serde_json::from_str(&ok(&rcrt(
        &url,
        &["vault", "create", "app", "--workspace", "payments"],
        "# comment\nAPI_KEY=secret-value\nDB_URL=\"postgres://u@h/db\"\n",
        &auth,
    )))
    .unwrap();
    assert_eq!(vault["keys"], serde_json::json!(["API_KEY", "DB_URL"]));
    let env_out = ok(&rcrt(
        &url,
        &["vault", "get", "app", "--reason", "deploy"],
        "",
        &auth,
    ));
    assert_eq!(
        env_out,
        "API_KEY='secret-value'\nDB_URL='postgres://u@h/db'\n"
    );
    let json_out: serde_json::Value = serde_json::from_str(&ok(&rcrt(
        &url,
        &[
            "vault",
            "get",
            vault["id"].as_str().unwrap(),
            "--reason",
            "deploy",
            "--format",
            "json",
        ],
        "",
        &auth,
    )))
    .unwrap();
    assert_eq!(json_out["API_KEY"], "secret-value");
    // A workspace the principal does not belong to: refused.
    let outside = rcrt(
        &url,
        &["vault", "create", "x", "--workspace", "hr"],
        "A=1",
        &auth,
    );
    assert!(String::from_utf8_lossy(&outside.stderr).contains("forbidden"));
}

/// `rcrt vault get --format env` output sourced by `sh`: hostile values come back byte for byte
/// and nothing in them runs; a key that is not a shell name is refused.
#[test]
fn vault_env_output_is_shell_safe() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let url = srv.base_url();
    let d = dir.path().display().to_string();
    let hostile: Vec<(&str, String)> = vec![
        ("SUBST", format!("$(touch {d}/pwned-subst)")),
        ("BACKTICK", format!("`touch {d}/pwned-backtick`")),
        ("SEMI", format!("x; touch {d}/pwned-semi")),
        ("QUOTES", "it's \"quoted\" '' \\' end'".to_owned()),
        ("NEWLINES", format!("line1\ntouch {d}/pwned-newline\n\n")),
        ("VARS", "$HOME ${HOME} $0 \\$x \\\\ \\n".to_owned()),
        ("EMPTY", String::new()),
        ("SPACES", "  lead and trail  ".to_owned()),
        ("GLOB", "* ? [a-z] ~ # !".to_owned()),
        ("UNICODE", "p\u{e4}ssw\u{f6}rd \u{2603}".to_owned()),
    ];
    let secrets: serde_json::Map<String, serde_json::Value> = hostile
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.as_str())))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let create = |name: &str, secrets: serde_json::Value| {
        let status = rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(format!("{url}/secrets/vaults"))
                .json(
                    &serde_json::json!({"workspace": "w", "name": name, "secrets": secrets,
                                          "allow_empty": true}),
                )
                .send()
                .await
                .unwrap()
                .status()
        });
        assert_eq!(status, 201);
    };
    create("hostile", serde_json::Value::Object(secrets));

    let out = ok(&rcrt(
        &url,
        &["vault", "get", "hostile", "--reason", "shell test"],
        "",
        &[],
    ));
    let env_file = dir.path().join("vault.env");
    std::fs::write(&env_file, &out).unwrap();
    // Source it, then print every variable NUL-terminated.
    let names: Vec<&str> = hostile.iter().map(|(k, _)| *k).collect();
    let printf_args: String = names.iter().map(|k| format!(" \"${k}\"")).collect();
    let script = format!(". '{}' && printf '%s\\0'{printf_args}", env_file.display());
    let sourced = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        sourced.status.success(),
        "{}",
        String::from_utf8_lossy(&sourced.stderr)
    );
    let got: Vec<String> = String::from_utf8(sourced.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = hostile.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(got, want, "values must round-trip through sh\n{out}");
    let pwned: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "sourcing ran a command: {pwned:?}\n{out}");

    // Keys that are not shell names cannot be printed as env lines (JSON still works).
    create("dashed", serde_json::json!({"MY-KEY": "v", "OK": "w"}));
    let refused = rcrt(
        &url,
        &["vault", "get", "dashed", "--reason", "shell test"],
        "",
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty(), "nothing printed");
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("\"MY-KEY\" is not a shell variable name"));
    let json = ok(&rcrt(
        &url,
        &[
            "vault",
            "get",
            "dashed",
            "--reason",
            "shell test",
            "--format",
            "json",
        ],
        "",
        &[],
    ));
    assert!(json.contains("\"MY-KEY\": \"v\""), "{json}");
}
