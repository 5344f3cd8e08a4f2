//! Daily use against a real server with real child processes: `rcrt run`, `rcrt secrets get
//! --output`, `rcrt completions`, the dotenv round trip of `rcrt vault get --format env` into
//! `rcrt vault create` (and into a real `bash`), and empty values refused unless asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

mod common;
use common::{new_kek, rcrt_cmd, run_with_stdin, runtime, server_config, show, text, write_file};

/// A server in token mode with a bootstrap admin token; the token and the server.
struct Env {
    dir: TempDir,
    srv: ServerProcess,
    token: String,
}

impl Env {
    fn start() -> Self {
        let out = rcrt_cmd().args(["token", "generate"]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let token = text(&out.stdout).trim().to_owned();
        let dir = TempDir::new();
        let admin = dir.path().join("admin.token");
        write_file(&admin, &format!("{token}\n"), 0o600);
        let kek = new_kek();
        let srv = ServerProcess::start(&server_config(
            dir.path(),
            &[
                ("LOCAL_KEK_BASE64", &kek.text),
                ("AUTH_MODE", "token"),
                ("BOOTSTRAP_ADMIN_TOKEN_FILE", admin.to_str().unwrap()),
            ],
        ));
        Self { dir, srv, token }
    }

    /// `rcrt ARGS` with the server's URL and the admin token in RCRT_TOKEN.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = rcrt_cmd();
        cmd.args(args)
            .env("RCRT_URL", self.srv.base_url())
            .env("RCRT_TOKEN", &self.token);
        cmd
    }

    fn rcrt(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(&mut self.cmd(args), stdin)
    }

    /// `rcrt vault get VAULT --reason "round trip" --format FORMAT`, which must succeed.
    fn vault_get(&self, vault: &str, format: &str) -> String {
        self.ok(
            &[
                "vault",
                "get",
                vault,
                "--reason",
                "round trip",
                "--format",
                format,
            ],
            "",
        )
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.rcrt(args, stdin);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        text(&out.stdout)
    }

    /// A vault made through the API (values the CLI's own input could not express, like
    /// an empty one, need `allow_empty`).
    fn vault(&self, name: &str, secrets: &BTreeMap<&str, String>) {
        let rt = runtime();
        let (status, body) = rt.block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("{}/secrets/vaults", self.srv.base_url()))
                .bearer_auth(&self.token)
                .json(&json!({"workspace": "w1", "name": name, "secrets": secrets,
                              "allow_empty": true}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        });
        assert_eq!(status, 201, "{body}");
    }

    /// A global secret made with `rcrt secrets create`; its id.
    fn secret(&self, name: &str, value: &str) -> String {
        let created: Value = serde_json::from_str(&self.ok(
            &["secrets", "create", name, "--allow-empty"],
            &format!("{value}\n"),
        ))
        .unwrap();
        created["id"].as_str().unwrap().to_owned()
    }

    /// Audit rows written with `reason`: (action, outcome) each.
    fn audit(&self, reason: &str) -> Vec<(String, String)> {
        let rt = runtime();
        let db = self.dir.path().join("rcrt.db");
        let store = rt.block_on(rcrt_store::open(db.to_str().unwrap())).unwrap();
        rt.block_on(store.list_audit(None, 10_000))
            .unwrap()
            .into_iter()
            .filter(|r| r.reason.as_deref() == Some(reason))
            .map(|r| (r.action, r.outcome))
            .collect()
    }
}

/// Values a shell, dotenv or an environment could get wrong.
fn hostile(dir: &Path) -> BTreeMap<&'static str, String> {
    let d = dir.display();
    [
        ("SUBST", format!("$(touch {d}/pwned-subst)")),
        ("BACKTICK", format!("`touch {d}/pwned-backtick`")),
        ("QUOTES", "it's \"quoted\" '' \\' end'".to_owned()),
        ("BACKSLASH_END", "ends with a backslash \\".to_owned()),
        ("NEWLINES", format!("line1\ntouch {d}/pwned-newline\n\n")),
        ("CRLF", "a\r\nb\r".to_owned()),
        ("VARS", "$HOME ${HOME} $0 \\$x \\\\ \\n".to_owned()),
        ("COMMENT", "1 # not a comment".to_owned()),
        ("EMPTY", String::new()),
        ("SPACES", "  lead and trail  ".to_owned()),
        ("GLOB", "* ? [a-z] ~ # ! =".to_owned()),
        (
            "UNICODE",
            "p\u{e4}ssw\u{f6}rd \u{2603} \u{2028} \u{feff}".to_owned(),
        ),
    ]
    .into_iter()
    .collect()
}

fn no_pwned(dir: &Path) {
    let pwned: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "a value ran as a command: {pwned:?}");
}

/// `printf '%s\0' "$K1" "$K2" ...` for `keys`, to read variables back byte for byte.
fn printf_all(keys: &[&str]) -> String {
    let args: String = keys.iter().map(|k| format!(" \"${k}\"")).collect();
    format!("printf '%s\\0'{args}")
}

fn split_nul(out: &[u8]) -> Vec<String> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect()
}

#[test]
fn vault_env_output_round_trips_through_vault_create_and_bash() {
    let env = Env::start();
    let dir = env.dir.path();
    let values = hostile(dir);
    env.vault("hostile", &values);

    let dotenv = env.vault_get("hostile", "env");
    // Into `rcrt vault create` (dotenvy) and back out as JSON: the same bytes.
    env.ok(
        &[
            "vault",
            "create",
            "copy",
            "--workspace",
            "w1",
            "--allow-empty",
        ],
        &dotenv,
    );
    let copy: BTreeMap<String, String> =
        serde_json::from_str(&env.vault_get("copy", "json")).unwrap();
    let want: BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    assert_eq!(copy, want, "export -> import changed a value\n{dotenv}");

    // Sourced by a real bash: the same bytes, and nothing ran.
    let file = dir.join("vault.env");
    std::fs::write(&file, &dotenv).unwrap();
    let keys: Vec<&str> = values.keys().copied().collect();
    let script = format!(". '{}' && {}", file.display(), printf_all(&keys));
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let want: Vec<String> = values.values().cloned().collect();
    assert_eq!(split_nul(&out.stdout), want, "bash read\n{dotenv}");
    no_pwned(dir);

    // Hand-written dotenv as dotenv readers take it.
    env.ok(
        &["vault", "create", "handmade", "--workspace", "w1"],
        "# a comment\nSINGLE='single'\nA=1 # comment\nexport KEY=v\nDOUBLE=\"two\\nlines\"\n",
    );
    let handmade: Value = serde_json::from_str(&env.vault_get("handmade", "json")).unwrap();
    assert_eq!(
        handmade,
        json!({"SINGLE": "single", "A": "1", "KEY": "v", "DOUBLE": "two\nlines"})
    );
    // Listed, in creation order (ids are time-ordered), metadata only; another workspace: none.
    let listed: Vec<Value> = serde_json::from_str(&env.ok(&["vault", "list"], "")).unwrap();
    let names: Vec<&str> = listed.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["hostile", "copy", "handmade"]);
    assert!(listed
        .iter()
        .all(|v| v["workspace"] == "w1" && v.get("keys").is_none()));
    let other: Vec<Value> =
        serde_json::from_str(&env.ok(&["vault", "list", "--workspace", "w2"], "")).unwrap();
    assert!(other.is_empty(), "{other:?}");
    // A broken line is named by line and key; its value is not printed.
    let bad = env.rcrt(
        &["vault", "create", "bad", "--workspace", "w1"],
        "A=1\nB=two words hunter2\n",
    );
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    assert!(
        text(&bad.stderr).contains("line 2 (key B)"),
        "{}",
        show(&bad)
    );
    assert!(!text(&bad.stderr).contains("hunter2"), "{}", show(&bad));
}

#[test]
fn empty_values_need_allow_empty() {
    // Refused before any request: the URL points nowhere, so a request would fail differently.
    for args in [
        &["secrets", "create", "EMPTY"][..],
        &["secrets", "update", "00000000-0000-0000-0000-000000000000"][..],
    ] {
        let out = run_with_stdin(
            rcrt_cmd().args(args).env("RCRT_URL", "http://127.0.0.1:1"),
            "",
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert_eq!(
            text(&out.stderr),
            "rcrt: the value read from stdin is empty; refused so that an unset variable is not \
             stored by mistake (pass --allow-empty to store an empty value)\n",
            "{}",
            show(&out)
        );
    }
    let out = run_with_stdin(
        rcrt_cmd()
            .args(["vault", "create", "v", "--workspace", "w1"])
            .env("RCRT_URL", "http://127.0.0.1:1"),
        "A=1\nUNSET=\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(
        text(&out.stderr),
        "rcrt: the value of UNSET is empty; refused so that an unset variable is not stored by \
         mistake (pass --allow-empty to store empty values)\n",
        "{}",
        show(&out)
    );

    // With --allow-empty the server is asked to store it (`"allow_empty": true`) and does.
    let env = Env::start();
    let id = env.secret("EMPTY", "");
    assert_eq!(
        env.ok(&["secrets", "get", &id, "--reason", "empty"], ""),
        "\n"
    );
    env.ok(&["secrets", "update", &id, "--allow-empty"], "");
    let refused = env.rcrt(&["secrets", "update", &id], "\n");
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    env.ok(
        &[
            "vault",
            "create",
            "blank",
            "--workspace",
            "w1",
            "--allow-empty",
        ],
        "A=1\nUNSET=\n",
    );
    let blank: Value = serde_json::from_str(&env.ok(
        &[
            "vault", "get", "blank", "--reason", "empty", "--format", "json",
        ],
        "",
    ))
    .unwrap();
    assert_eq!(blank, json!({"A": "1", "UNSET": ""}));
}

/// A running `rcrt run` whose command printed `ready`.
fn start_ready(cmd: &mut Command) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "the command did not start");
    (child, stdout)
}

#[test]
fn run_passes_values_only_through_the_environment() {
    let env = Env::start();
    let dir = env.dir.path();
    let values = hostile(dir);
    env.vault("payments", &values);
    env.vault("other", &[("SUBST", "x".to_owned())].into_iter().collect());
    env.vault(
        "dashed",
        &[("MY-KEY", "x".to_owned())].into_iter().collect(),
    );
    let extra = env.secret("db-password", "pa ss\nword'\"$x");

    // The command sees every value byte for byte, under --prefix, plus the named secret.
    let mut keys: Vec<String> = values.keys().map(|k| format!("APP_{k}")).collect();
    keys.push("DB_PASSWORD".into());
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let out = run_with_stdin(
        &mut env.cmd(&[
            "run",
            "--vault",
            "payments",
            "--workspace",
            "w1",
            "--prefix",
            "APP_",
            "--secret",
            &format!("DB_PASSWORD={extra}"),
            "--reason",
            "daily use: values",
            "--",
            "sh",
            "-c",
            &printf_all(&key_refs),
        ]),
        "",
    );
    assert!(out.status.success(), "{}", show(&out));
    let mut want: Vec<String> = values.values().cloned().collect();
    want.push("pa ss\nword'\"$x".into());
    assert_eq!(split_nul(&out.stdout), want);
    no_pwned(dir);

    // Each read audited with the reason: one row per vault key and one for the secret.
    let rows = env.audit("daily use: values");
    assert_eq!(rows.len(), values.len() + 1, "{rows:?}");
    assert!(
        rows.iter().all(|(a, o)| a == "decrypt" && o == "success"),
        "{rows:?}"
    );

    // While the command runs: its argv holds no value, its environment holds them, and not
    // RCRT_TOKEN. Same process id as rcrt (exec).
    let (mut child, _stdout) = start_ready(&mut env.cmd(&[
        "run",
        "--vault",
        "payments",
        "--workspace",
        "w1",
        "--reason",
        "daily use: proc",
        "--",
        "sh",
        "-c",
        "echo ready; read line",
    ]));
    let pid = child.id();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sh\0-c\0echo ready; read line\0");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    let unicode = format!("UNICODE={}", values["UNICODE"]);
    assert!(
        vars.contains(&unicode.as_bytes()),
        "value in the environment"
    );
    assert!(
        !vars.iter().any(|v| v.starts_with(b"RCRT_TOKEN=")),
        "RCRT_TOKEN passed on"
    );
    assert!(!environ
        .windows(env.token.len())
        .any(|w| w == env.token.as_bytes()));
    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(child.wait().unwrap().success());

    // Refusals, before the command starts: a name that is not an environment variable name,
    // a name given by two sources (both named).
    let marker = dir.join("started");
    let touch = format!("touch {}", marker.display());
    let refuse = |args: &[&str], want: &[&str]| {
        let mut all = vec!["run", "--workspace", "w1", "--reason", "daily use: refused"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "sh", "-c", &touch]);
        let out = env.rcrt(&all, "");
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        for w in want {
            assert!(text(&out.stderr).contains(w), "want {w}: {}", show(&out));
        }
        assert!(!marker.exists(), "the command ran");
    };
    refuse(
        &["--vault", "dashed"],
        &["\"MY-KEY\" (from vault dashed (key MY-KEY)) is not a valid environment variable name"],
    );
    refuse(
        &["--vault", "payments", "--vault", "other"],
        &["SUBST is given by both vault payments (key SUBST) and vault other (key SUBST)"],
    );
    refuse(
        &[
            "--vault",
            "payments",
            "--secret",
            &format!("QUOTES={extra}"),
        ],
        &["QUOTES is given by both vault payments (key QUOTES) and --secret QUOTES="],
    );
    refuse(
        &["--secret", "1BAD=x"],
        &["not a valid environment variable name"],
    );
    refuse(&["--secret", "_=x"], &["not '_' alone"]);
    // Names are checked before any value is read: no audited read so far.
    assert_eq!(
        env.audit("daily use: refused"),
        vec![],
        "refusals read values"
    );

    // PATH (and LD_*, BASH_ENV, ...) from a value needs --allow-env: the command is looked up
    // in the PATH it is given, so a vault could choose which program runs.
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    write_file(&bin.join("mycmd"), "#!/bin/sh\necho vault-path\n", 0o755);
    env.vault(
        "pathy",
        &[("PATH", bin.display().to_string())].into_iter().collect(),
    );
    refuse(
        &["--vault", "pathy"],
        &[
            "PATH (from vault pathy (key PATH)) would change which program runs",
            "--allow-env PATH",
        ],
    );
    assert_eq!(
        env.audit("daily use: refused"),
        vec![],
        "a refused PATH was read"
    );
    let allowed = env.ok(
        &[
            "run",
            "--vault",
            "pathy",
            "--workspace",
            "w1",
            "--reason",
            "r",
            "--allow-env",
            "PATH",
            "--",
            "mycmd",
        ],
        "",
    );
    assert_eq!(allowed, "vault-path\n");

    refuse(&["--vault", "missing"], &["not_found"]);
    // A reason is required (usage error).
    let out = env.rcrt(&["run", "--vault", "payments", "--", "true"], "");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // A command that does not exist: 127, as a shell says.
    let out = env.rcrt(
        &[
            "run",
            "--vault",
            "other",
            "--workspace",
            "w1",
            "--reason",
            "r",
            "--",
            "/nonexistent/command",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
}

#[test]
fn run_passes_exit_codes_and_signals_through() {
    let env = Env::start();
    env.vault("app", &[("KEY", "v".to_owned())].into_iter().collect());
    let run = |script: &str| {
        env.cmd(&[
            "run",
            "--vault",
            "app",
            "--workspace",
            "w1",
            "--reason",
            "daily use: signals",
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    let out = run_with_stdin(&mut run("exit 7"), "");
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));

    // The command traps the signal sent to rcrt's process id and exits with its own code.
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 42),
        (nix::sys::signal::Signal::SIGINT, 43),
        (nix::sys::signal::Signal::SIGHUP, 44),
    ] {
        let script = format!(
            "trap 'exit {code}' {}; echo ready; while :; do sleep 0.05; done",
            &signal.as_str()[3..]
        );
        let (mut child, _stdout) = start_ready(&mut run(&script));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{signal}: {status:?}");
    }
    // Not trapped: the command dies of the signal, which is what the caller sees (a shell
    // shows 143).
    let (mut child, _stdout) = start_ready(&mut run("echo ready; exec sleep 30"));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(15));
    let out = Command::new("bash")
        .arg("-c")
        .arg("\"$@\" & sleep 1; kill -TERM $!; wait $!; echo \"exit $?\"")
        .arg("bash")
        .arg(common::RCRT)
        .args([
            "run",
            "--vault",
            "app",
            "--workspace",
            "w1",
            "--reason",
            "r",
            "--",
            "sleep",
            "30",
        ])
        .env("RCRT_URL", env.srv.base_url())
        .env("RCRT_TOKEN", &env.token)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "exit 143\n", "{}", show(&out));
}

#[test]
fn secrets_get_output_writes_a_private_file() {
    let env = Env::start();
    let dir = env.dir.path();
    let value = "line1\nline2 'x' \u{2603}";
    let id = env.secret("file-secret", value);
    let path = dir.join("secret.txt");
    let p = path.to_str().unwrap();
    let reason = "daily use: output";

    // umask 000: the mode is 0600 whatever the umask.
    let get = |extra: &[&str]| {
        let mut args = vec![
            "secrets",
            "get",
            id.as_str(),
            "--reason",
            reason,
            "--output",
            p,
        ];
        args.extend_from_slice(extra);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("umask 000; exec \"$@\"")
            .arg("sh")
            .arg(common::RCRT)
            .args(&args)
            .env("RCRT_URL", env.srv.base_url())
            .env("RCRT_TOKEN", &env.token);
        cmd.output().unwrap()
    };
    let out = get(&[]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout.is_empty(),
        "the value is not printed: {}",
        show(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        value,
        "exact bytes"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(env.audit(reason).len(), 1);

    // An existing file is refused, before the value is read.
    std::fs::write(&path, "old").unwrap();
    let out = get(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("--force"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    assert_eq!(env.audit(reason).len(), 1, "no read for a refused output");

    // --force replaces a world-readable file by a 0600 one.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = get(&["--force"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), value);
    assert_eq!(mode(&path), 0o600);

    // A symlink planted at the path is not followed.
    let target = dir.join("target");
    std::fs::write(&target, "target").unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let out = get(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "target");
    // --force onto a directory: refused before the value is read.
    let reads = env.audit(reason).len();
    let sub = dir.join("subdir");
    std::fs::create_dir(&sub).unwrap();
    let out = Command::new(common::RCRT)
        .args([
            "secrets", "get", &id, "--reason", reason, "--force", "--output",
        ])
        .arg(&sub)
        .env("RCRT_URL", env.srv.base_url())
        .env("RCRT_TOKEN", &env.token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("is a directory"),
        "{}",
        show(&out)
    );
    assert_eq!(
        env.audit(reason).len(),
        reads,
        "no read for a refused output"
    );

    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn completions_for_bash_zsh_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = rcrt_cmd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let script = text(&out.stdout);
        for word in ["run", "completions", "vault", "allow-empty", "output"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        if shell == "bash" {
            let dir = TempDir::new();
            let file = dir.path().join("rcrt.bash");
            std::fs::write(&file, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            assert!(check.status.success(), "{}", show(&check));
            // Loaded into bash, it completes `rcrt ru` to `run`.
            let complete = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    ". '{}'; COMP_WORDS=(rcrt ru); COMP_CWORD=1; COMP_LINE='rcrt ru'; \
                     COMP_POINT=7; _rcrt rcrt ru rcrt; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    file.display()
                ))
                .output()
                .unwrap();
            assert_eq!(text(&complete.stdout), "run\n", "{}", show(&complete));
        }
    }
}

#[test]
fn completions_report_a_write_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = rcrt_cmd()
        .args(["completions", "bash"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).starts_with("rcrt: cannot write the completion script"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_non_ascii_reason_is_refused_before_any_vault_read() {
    // The URL points nowhere: a request would fail with a transport error instead.
    for args in [
        &[
            "run",
            "--vault",
            "v",
            "--reason",
            "d\u{e9}ploiement",
            "--",
            "true",
        ][..],
        &["vault", "get", "v", "--reason", "d\u{e9}ploiement"][..],
    ] {
        let out = run_with_stdin(
            rcrt_cmd().args(args).env("RCRT_URL", "http://127.0.0.1:1"),
            "",
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(
            text(&out.stderr).contains("--reason must be plain ASCII")
                && text(&out.stderr).contains("X-Access-Reason"),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn run_with_a_decrypt_only_token_checks_names_after_the_read() {
    // Without secrets.read the vault's key names are not visible (404 on the metadata): the
    // values are still read and passed, and the names still checked before the command starts.
    let env = Env::start();
    env.vault("app", &[("KEY", "v".to_owned())].into_iter().collect());
    env.vault(
        "pre",
        &[("LD_PRELOAD", "x".to_owned())].into_iter().collect(),
    );
    let token = env.ok(
        &[
            "token",
            "create",
            "ci",
            "--role",
            "secrets.decrypt",
            "--workspace",
            "w1",
        ],
        "",
    );
    let run = |vault: &str| {
        let mut cmd = env.cmd(&[
            "run",
            "--vault",
            vault,
            "--workspace",
            "w1",
            "--reason",
            "decrypt only",
            "--",
            "sh",
            "-c",
            "printf %s \"$KEY\"",
        ]);
        cmd.env("RCRT_TOKEN", token.trim());
        run_with_stdin(&mut cmd, "")
    };
    let out = run("app");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout), "v");
    let out = run("pre");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("--allow-env LD_PRELOAD"),
        "{}",
        show(&out)
    );
}
