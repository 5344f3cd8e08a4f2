//! `docs/operations.md` is executable: every ```bash block runs here, in a sandbox prepared as
//! the `<!-- doc-test: ... -->` comment before it says, with the real `rcrt`, `rcrt-server` and
//! `deploy/scripts/kek-rotation.sh` on PATH; each must exit 0, print no key, and have the effect
//! its `check=` names. This file also runs `kek-rotation.sh` end to end against a real server.
//!
//! Annotation: `<!-- doc-test: setup=FIXTURE [runs=server] [check=CHECK] [requires=gpg,ssss] -->`
//! on the line before the block (blank lines allowed). Fixtures (the block runs in `work/`):
//!
//! | fixture | state |
//! |---|---|
//! | `kek` | `old-kek.txt` (0600) and `LOCAL_KEK_BASE64` = that KEK (the service's variable) |
//! | `kek-gpg` | `kek`, plus a throwaway `GNUPGHOME` holding a key for security@company.com |
//! | `store` | a SQLite store (`DB_URL`) seeded by a real server under `old-kek.txt`; `new-kek.txt` |
//! | `store-rotated` | `store`, re-wrapped under `new-kek.txt` with `rcrt kek rewrap` |
//! | `server` | `store` without `new-kek.txt`, served by `rcrt-server` on the old KEK (`RCRT_URL`) |
//! | `server-rotating` | `store`, served with the new KEK current and the old one (`REWRAP_AUTO=false`) |
//! | `systemd` | `server`, but run by a stand-in for systemd (`systemctl start/restart rcrt-secrets`, `RCRT_ENV_FILE` = its EnvironmentFile) |
//! | `backups` | `store` without any key file: `share-1.txt`..`share-5.txt` (`rcrt kek split`), and with `requires=gpg` `kek-backup.gpg` and its `GNUPGHOME` |
//! | `lost-kek` | `store` without key files; `LOCAL_KEK_BASE64_FILE` = a wrong KEK; `kek-candidates/` with the right one among wrong ones |
//!
//! `runs=server`: the block starts `rcrt-server` in the foreground (`BIND_ADDR` comes from the
//! fixture); the harness waits for it, runs the check against it, then stops it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcrt_testkit::{free_port, http_get_status, ServerConfig, ServerProcess, TempDir};
use serde_json::json;

mod common;
use common::{
    assert_prints_no_kek, create_secrets, kek_id, kek_usage, new_kek, rcrt_cmd, run_with_stdin,
    runtime, server_config, show, snapshot, text, total_versions, write_file, Api, Expected, Kek,
    Snapshot, RCRT,
};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

// ---------------------------------------------------------------------------------------------
// Binaries, processes and files
// ---------------------------------------------------------------------------------------------

fn rotation_script() -> PathBuf {
    Path::new(ROOT)
        .join("deploy/scripts/kek-rotation.sh")
        .canonicalize()
        .expect("deploy/scripts/kek-rotation.sh exists")
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits for `child` up to `limit`; on timeout kills its process group (it was started as the
/// leader of one) and panics.
fn wait_limited(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            kill_group(child.id(), "KILL");
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not finish in {limit:?}:\n{}", show(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signals the process group led by `pid` (a process this test started with `process_group(0)`).
fn kill_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .status();
}

/// Direct children of `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// KEKs and the store
// ---------------------------------------------------------------------------------------------

fn kek_in_file(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The store at `db_url`, opened afresh for each look (the blocks change it in between).
async fn open_store(db_url: &str) -> std::sync::Arc<dyn rcrt_store::Store> {
    rcrt_store::open(db_url).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// A stand-in for systemd
// ---------------------------------------------------------------------------------------------

/// Runs rcrt-server as its own child (so every server is reaped), with a clean environment plus
/// `unit.env` (the unit's `Environment=`) and `$SVC_ENV_FILE` (its `EnvironmentFile=`).
const SUPERVISOR: &str = r#"#!/usr/bin/env bash
# The tests' stand-in for a service manager: starts, restarts and stops rcrt-server on requests
# read from the FIFO $SVC_DIR/ctl, and reaps every server it started.
set -uo pipefail
pid=
stop() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
    rm -f "$SVC_DIR/server.pid"
  fi
}
start() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  env -i PATH="$PATH" bash -c 'set -a; . "$1"; . "$2"; set +a; exec rcrt-server' rcrt-secrets \
    "$SVC_DIR/unit.env" "$SVC_ENV_FILE" >>"$SVC_DIR/server.log" 2>&1 &
  pid=$!
  echo "$pid" >"$SVC_DIR/server.pid"
}
while :; do
  read -r cmd reply <"$SVC_DIR/ctl" || continue
  case $cmd in
    start | restart) stop; start; echo "$cmd" >>"$SVC_DIR/journal" ;;
    stop) stop; echo stop >>"$SVC_DIR/journal" ;;
    exit) stop; echo ok >"$reply"; exit 0 ;;
  esac
  echo ok >"$reply"
done
"#;

/// `systemctl start|restart|stop rcrt-secrets` for the stand-in.
const SYSTEMCTL: &str = r#"#!/usr/bin/env bash
# The tests' stand-in for `systemctl start|restart|stop rcrt-secrets` (see the supervisor).
set -euo pipefail
case "${1:-}" in start | restart | stop | exit) ;; *) echo "systemctl (test double): unsupported: $*" >&2; exit 1 ;; esac
[ "${2:-rcrt-secrets}" = rcrt-secrets ] || { echo "systemctl (test double): unknown unit $2" >&2; exit 5; }
reply=$(mktemp -u "$SVC_DIR/reply.XXXXXX")
mkfifo -m 600 "$reply"
trap 'rm -f "$reply"' EXIT
# shellcheck disable=SC2016 # expanded by the inner bash
timeout 60 bash -c 'echo "$1 $2" >"$3/ctl" && read -r _ <"$2"' systemctl "$1" "$reply" "$SVC_DIR"
"#;

struct Supervisor {
    child: Option<Child>,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Supervisor {
    /// Starts the supervisor and the service under it: the store `db_url`, `extra` in the
    /// unit's environment, and an EnvironmentFile (`dir/kek.env`) naming `kek_file`.
    /// `bin` holds `rcrt-server` and gets `systemctl`.
    fn new(dir: &Path, bin: &Path, db_url: &str, kek_file: &Path, extra: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let env_file = dir.join("kek.env");
        let port = free_port();
        let mut unit = format!("BIND_ADDR=127.0.0.1:{port}\nDB_URL={db_url}\nRUST_LOG=info\n");
        for (k, v) in extra {
            unit.push_str(&format!("{k}={v}\n"));
        }
        write_file(&dir.join("unit.env"), &unit, 0o600);
        write_file(&dir.join("supervisor.sh"), SUPERVISOR, 0o700);
        write_file(&bin.join("systemctl"), SYSTEMCTL, 0o755);
        let fifo = Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(dir.join("ctl"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let child = Command::new("bash")
            .arg(dir.join("supervisor.sh"))
            .env_clear()
            .env("PATH", sandbox_path(bin))
            .env("SVC_DIR", dir)
            .env("SVC_ENV_FILE", &env_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sup = Self {
            child: Some(child),
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            port,
        };
        write_file(
            &env_file,
            &format!("LOCAL_KEK_BASE64_FILE={}\n", kek_file.display()),
            0o600,
        );
        sup.start();
        sup
    }

    /// The service's EnvironmentFile.
    fn env_file(&self) -> PathBuf {
        self.dir.join("kek.env")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn try_ctl(&self, action: &str) -> std::io::Result<Output> {
        Command::new(self.bin.join("systemctl"))
            .args([action, "rcrt-secrets"])
            .env_clear()
            .env("PATH", sandbox_path(&self.bin))
            .env("SVC_DIR", &self.dir)
            .output()
    }

    fn ctl(&self, action: &str) -> Output {
        self.try_ctl(action).unwrap()
    }

    /// `systemctl start`, then waits for /health.
    fn start(&self) {
        let out = self.ctl("start");
        assert!(out.status.success(), "{}", show(&out));
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get_status(self.port, "/health") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the service did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("journal"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = self.try_ctl("exit");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait().ok().flatten().is_none() {
            // Last resort: the server it started (by pid), then the supervisor itself.
            if let Ok(pid) = std::fs::read_to_string(self.dir.join("server.pid")) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

fn sandbox_path(bin: &Path) -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display())
}

/// A `bin/` with `rcrt`, `rcrt-server` and `kek-rotation.sh`.
fn make_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(RCRT, bin.join("rcrt")).unwrap();
    std::os::unix::fs::symlink(rcrt_testkit::server_binary(), bin.join("rcrt-server")).unwrap();
    std::os::unix::fs::symlink(rotation_script(), bin.join("kek-rotation.sh")).unwrap();
    bin
}

// ---------------------------------------------------------------------------------------------
// GPG
// ---------------------------------------------------------------------------------------------

fn require(tool: &str, probe: &[&str], hint: &str) {
    match Command::new(tool).args(probe).output() {
        Ok(_) => {}
        Err(e) => panic!("`{tool}` is needed by docs/operations.md's examples ({e}): {hint}"),
    }
}

/// One throwaway GnuPG home per test process with a key for security@company.com (its agent is
/// stopped when the home is dropped).
struct GpgHome(TempDir);

impl GpgHome {
    fn new() -> Self {
        require("gpg", &["--version"], "install the Debian package gnupg");
        let dir = TempDir::new();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let out = Command::new("gpg")
            .env("GNUPGHOME", dir.path())
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "RCRT doc test <security@company.com>",
                "future-default",
                "default",
                "never",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg key generation: {}", show(&out));
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.0.path())
            .args(["--kill", "all"])
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Block {
    line: usize,
    code: String,
    setup: String,
    runs_server: bool,
    check: Option<String>,
    requires: Vec<String>,
}

const FIXTURES: &[&str] = &[
    "kek",
    "kek-gpg",
    "store",
    "store-rotated",
    "server",
    "server-rotating",
    "systemd",
    "backups",
    "lost-kek",
];
const CHECKS: &[&str] = &[
    "new-kek-file",
    "serves-new-and-old",
    "serves-new-only",
    "rewrapped",
    "reencrypted",
    "rotated-online",
    "gpg-backup",
    "shares",
    "ssss-shares",
    "recovered",
    "diagnosed",
    "found-kek",
];

fn parse_annotation(text: &str, line: usize) -> (String, bool, Option<String>, Vec<String>) {
    let body = text
        .trim()
        .strip_prefix("<!-- doc-test:")
        .and_then(|t| t.strip_suffix("-->"))
        .unwrap_or_else(|| panic!("operations.md:{line}: malformed doc-test comment"));
    let (mut setup, mut runs, mut check, mut requires) = (None, false, None, Vec::new());
    for kv in body.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .unwrap_or_else(|| panic!("operations.md:{line}: {kv:?} is not key=value"));
        // `v`, which must be one of `known` (the `what`s the harness has).
        let one_of = |known: &[&str], what: &str| {
            assert!(
                known.contains(&v),
                "operations.md:{line}: unknown {what} {v}"
            );
            Some(v.to_owned())
        };
        match k {
            "setup" => setup = one_of(FIXTURES, "fixture"),
            "runs" => {
                assert_eq!(v, "server", "operations.md:{line}: runs=server only");
                runs = true;
            }
            "check" => check = one_of(CHECKS, "check"),
            "requires" => {
                for r in v.split(',') {
                    assert!(
                        ["gpg", "ssss"].contains(&r),
                        "operations.md:{line}: unknown requirement {r}"
                    );
                    requires.push(r.to_owned());
                }
            }
            _ => panic!("operations.md:{line}: unknown doc-test key {k}"),
        }
    }
    let setup = setup.unwrap_or_else(|| panic!("operations.md:{line}: no setup="));
    (setup, runs, check, requires)
}

/// Every ```bash block with its annotation. Shell code in any other fence is an error.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut last_nonblank: Option<(usize, String)> = None;
    let mut lines = doc.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, line)) = lines.next() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            let lang = lang.trim();
            assert!(
                !["sh", "shell", "console", "zsh", "", "shell-session"].contains(&lang),
                "operations.md:{n}: fence ```{lang}: shell commands go in ```bash blocks (run by \
                 this test); other text needs a language such as text or ini"
            );
            let mut code = String::new();
            loop {
                let (_, l) = lines
                    .next()
                    .unwrap_or_else(|| panic!("operations.md:{n}: unclosed fence"));
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            if lang == "bash" {
                let (ln, ann) = last_nonblank.clone().unwrap_or_default();
                assert!(
                    ann.trim_start().starts_with("<!-- doc-test:"),
                    "operations.md:{n}: a ```bash block needs a <!-- doc-test: ... --> comment \
                     on the line before it"
                );
                let (setup, runs_server, check, requires) = parse_annotation(&ann, ln);
                out.push(Block {
                    line: n,
                    code,
                    setup,
                    runs_server,
                    check,
                    requires,
                });
            }
            last_nonblank = None;
            continue;
        }
        if !line.trim().is_empty() {
            last_nonblank = Some((n, line.to_owned()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sandboxes
// ---------------------------------------------------------------------------------------------

/// What a block runs in. Field order is drop order: servers stop before the directory goes.
struct Sandbox {
    server: Option<ServerProcess>,
    supervisor: Option<Supervisor>,
    root: TempDir,
    work: PathBuf,
    env: BTreeMap<String, String>,
    old: Kek,
    new: Kek,
    /// Every KEK the fixture made: none may appear in a block's output.
    keks: Vec<Kek>,
    db_url: String,
    port: u16,
    expected: Vec<Expected>,
    seeded: Snapshot,
}

fn key_file(path: &Path, kek: &Kek) {
    write_file(path, &format!("{}\n", kek.text), 0o600);
}

impl Sandbox {
    fn new(rt: &tokio::runtime::Runtime, block: &Block, gpg: &dyn Fn() -> PathBuf) -> Self {
        let root = TempDir::new();
        let work = root.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let home = root.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let bin = make_bin(root.path());
        let db_url = work.join("rcrt.db").display().to_string();
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), sandbox_path(&bin)),
            ("HOME".to_owned(), home.display().to_string()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ]);
        let old = new_kek();
        let new = new_kek();
        let mut sb = Self {
            server: None,
            supervisor: None,
            root,
            work: work.clone(),
            env: BTreeMap::new(),
            old: old.clone(),
            new: new.clone(),
            keks: vec![old.clone(), new.clone()],
            db_url: db_url.clone(),
            port: free_port(),
            expected: Vec::new(),
            seeded: Snapshot::new(),
        };
        if block.runs_server {
            env.insert("BIND_ADDR".into(), format!("127.0.0.1:{}", sb.port));
            env.insert("RUST_LOG".into(), "warn".into());
        }
        let seed = |sb: &mut Sandbox| {
            let server = ServerProcess::start(
                &sb.server_config(&[("LOCAL_KEK_BASE64", sb.old.text.as_str())]),
            );
            sb.expected = rt.block_on(create_secrets(&Api::new(server.base_url()), 0..20));
            drop(server);
            sb.seeded = rt.block_on(async { snapshot(&open_store(&sb.db_url).await).await });
        };
        match block.setup.as_str() {
            "kek" | "kek-gpg" => {
                key_file(&work.join("old-kek.txt"), &old);
                env.insert("LOCAL_KEK_BASE64".into(), old.text.clone());
                if block.setup == "kek-gpg" {
                    env.insert("GNUPGHOME".into(), gpg().display().to_string());
                }
            }
            "store" | "store-rotated" | "server" | "server-rotating" | "systemd" => {
                seed(&mut sb);
                key_file(&work.join("old-kek.txt"), &old);
                env.insert("DB_URL".into(), db_url.clone());
                if block.setup != "server" && block.setup != "systemd" {
                    key_file(&work.join("new-kek.txt"), &new);
                }
                match block.setup.as_str() {
                    "store-rotated" => {
                        let out = Command::new(RCRT)
                            .args(["kek", "rewrap", "--new-kek-file", "new-kek.txt"])
                            .args(["--old-kek-file", "old-kek.txt", "--db-url", &db_url])
                            .current_dir(&work)
                            .env_clear()
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "{}", show(&out));
                    }
                    "server" => {
                        let cfg = sb.server_config(&[("LOCAL_KEK_BASE64_FILE", "old-kek.txt")]);
                        let server = ServerProcess::start(&cfg);
                        env.insert("RCRT_URL".into(), server.base_url());
                        sb.server = Some(server);
                    }
                    "server-rotating" => {
                        let cfg = sb.server_config(&[
                            ("LOCAL_KEK_BASE64_FILE", "new-kek.txt"),
                            ("LOCAL_KEK_BASE64_OLD_FILE", "old-kek.txt"),
                            ("REWRAP_AUTO", "false"),
                        ]);
                        let server = ServerProcess::start(&cfg);
                        env.insert("RCRT_URL".into(), server.base_url());
                        sb.server = Some(server);
                    }
                    "systemd" => {
                        let sup = Supervisor::new(
                            &sb.root.path().join("svc"),
                            &bin,
                            &db_url,
                            &work.join("old-kek.txt"),
                            &[
                                ("REWRAP_BATCH_SIZE", "5"),
                                ("REWRAP_MAX_ROWS_PER_SEC", "20"),
                            ],
                        );
                        env.insert("RCRT_URL".into(), sup.url());
                        env.insert("RCRT_ENV_FILE".into(), sup.env_file().display().to_string());
                        env.insert("SVC_DIR".into(), sup.dir.display().to_string());
                        env.insert("POLL_INTERVAL".into(), "1".into());
                        sb.supervisor = Some(sup);
                    }
                    _ => {}
                }
            }
            "backups" => {
                seed(&mut sb);
                env.insert("DB_URL".into(), db_url.clone());
                let out = run_with_stdin(
                    rcrt_cmd().args(["kek", "split", "-t", "3", "-n", "5"]),
                    &format!("{}\n", old.text),
                );
                assert!(out.status.success(), "{}", show(&out));
                for (i, share) in text(&out.stdout).lines().enumerate() {
                    write_file(
                        &work.join(format!("share-{}.txt", i + 1)),
                        &format!("{share}\n"),
                        0o600,
                    );
                }
                if block.requires.iter().any(|r| r == "gpg") {
                    let home = gpg();
                    let backup = gpg_encrypt(&home, &old.text);
                    std::fs::write(work.join("kek-backup.gpg"), backup).unwrap();
                    env.insert("GNUPGHOME".into(), home.display().to_string());
                }
            }
            "lost-kek" => {
                seed(&mut sb);
                env.insert("DB_URL".into(), db_url.clone());
                let configured = new_kek();
                key_file(&work.join("service-kek.txt"), &configured);
                env.insert(
                    "LOCAL_KEK_BASE64_FILE".into(),
                    work.join("service-kek.txt").display().to_string(),
                );
                let candidates = work.join("kek-candidates");
                std::fs::create_dir_all(&candidates).unwrap();
                let (a, b) = (new_kek(), new_kek());
                key_file(&candidates.join("2023-kek.txt"), &a);
                key_file(&candidates.join("2024-kek.txt"), &old);
                key_file(&candidates.join("staging-kek.txt"), &b);
                sb.keks.extend([configured, a, b]);
            }
            other => panic!("unknown fixture {other}"),
        }
        sb.env = env;
        sb
    }

    fn server_config(&self, kek_env: &[(&str, &str)]) -> ServerConfig {
        let mut env = vec![("DB_URL", self.db_url.as_str()), ("RUST_LOG", "warn")];
        env.extend_from_slice(kek_env);
        server_config(&self.work, &env)
    }

    /// `bash -euo pipefail block.sh` in `work/`, in a process group of its own.
    fn command(&self, code: &str) -> Command {
        let script = self.root.path().join("block.sh");
        write_file(&script, code, 0o600);
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail"])
            .arg(&script)
            .current_dir(&self.work)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd
    }

    fn assert_no_key(&self, out: &Output, what: &str) {
        assert_prints_no_kek(out, &self.keks, what);
    }
}

fn gpg_encrypt(home: &Path, plaintext: &str) -> Vec<u8> {
    let out = run_with_stdin(
        Command::new("gpg").env("GNUPGHOME", home).args([
            "--batch",
            "--encrypt",
            "--recipient",
            "security@company.com",
        ]),
        &format!("{plaintext}\n"),
    );
    assert!(out.status.success(), "gpg --encrypt: {}", show(&out));
    out.stdout
}

fn gpg_decrypt(home: &Path, file: &Path) -> String {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--quiet", "--decrypt"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "gpg --decrypt: {}", show(&out));
    text(&out.stdout).trim().to_owned()
}

fn rcrt_combine(shares: &[String], extra: &[&str]) -> String {
    let input: String = shares.iter().map(|s| format!("{}\n", s.trim())).collect();
    let out = run_with_stdin(
        rcrt_cmd().args(["kek", "combine", "-t", "3"]).args(extra),
        &input,
    );
    assert!(out.status.success(), "{}", show(&out));
    text(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

async fn check_after(check: &str, sb: &Sandbox, out: &Output) {
    let work = &sb.work;
    let stdout = text(&out.stdout);
    let total = total_versions(&sb.expected);
    match check {
        "new-kek-file" => {
            let p = work.join("new-kek.txt");
            assert_eq!(mode_of(&p), 0o600);
            let id = kek_id(&kek_in_file(&p));
            assert!(stdout.contains(&format!("KEK OK: id {id}")), "{stdout}");
            assert!(
                stdout.contains(&format!("KEK OK: id {}", sb.old.id)),
                "{stdout}"
            );
            assert_ne!(id, sb.old.id);
        }
        "rewrapped" => {
            let store = open_store(&sb.db_url).await;
            assert_eq!(
                kek_usage(&store).await,
                BTreeMap::from([(sb.new.id.clone(), total)]),
                "not every version is under the new KEK"
            );
            let after = snapshot(&store).await;
            for (k, row) in &after {
                assert_eq!(row.sealed_value, sb.seeded[k].sealed_value, "{k:?}");
            }
        }
        "reencrypted" => {
            let store = open_store(&sb.db_url).await;
            assert_eq!(
                kek_usage(&store).await,
                BTreeMap::from([(sb.new.id.clone(), total)])
            );
            let after = snapshot(&store).await;
            assert_eq!(after.len(), sb.seeded.len());
            for (k, row) in &after {
                assert_ne!(row.sealed_value, sb.seeded[k].sealed_value, "{k:?}");
                assert_ne!(row.wrapped_dek, sb.seeded[k].wrapped_dek, "{k:?}");
            }
            let server = ServerProcess::start(
                &sb.server_config(&[("LOCAL_KEK_BASE64", sb.new.text.as_str())]),
            );
            Api::new(server.base_url())
                .assert_decrypts(&sb.expected)
                .await;
        }
        "rotated-online" => {
            let files: Vec<PathBuf> = std::fs::read_dir(work)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.starts_with("kek-") && name.ends_with(".txt")
                })
                .collect();
            assert_eq!(files.len(), 1, "{files:?}");
            assert_eq!(mode_of(&files[0]), 0o600);
            let new = kek_in_file(&files[0]);
            let new_id = kek_id(&new);
            assert_ne!(new_id, sb.old.id);
            let sup = sb.supervisor.as_ref().unwrap();
            assert_eq!(sup.journal(), ["start", "restart", "restart"]);
            let api = Api::new(sup.url());
            let status = api.kek_status().await;
            assert_eq!(status["current_kek_id"], new_id.as_str(), "{status}");
            assert_eq!(status["configured_kek_ids"], json!([new_id]), "{status}");
            assert_eq!(
                status["versions_per_kek"],
                json!({ new_id.as_str(): total })
            );
            api.assert_decrypts(&sb.expected).await;
            assert!(!format!("{}{}", stdout, text(&out.stderr)).contains(&new));
        }
        "gpg-backup" => {
            let home = PathBuf::from(&sb.env["GNUPGHOME"]);
            assert_eq!(
                gpg_decrypt(&home, &work.join("kek-backup.gpg")),
                sb.old.text
            );
            assert!(stdout.contains(&sb.old.id), "{stdout}");
        }
        "shares" => {
            assert!(!work.join("kek-shares.txt").exists());
            let shares: Vec<String> = (1..=5)
                .map(|i| {
                    let p = work.join(format!("share-{i}.txt"));
                    assert_eq!(mode_of(&p), 0o600);
                    std::fs::read_to_string(p).unwrap()
                })
                .collect();
            assert!(shares.iter().all(|s| s.lines().count() == 1));
            for idx in [[0, 1, 2], [2, 3, 4], [4, 0, 3]] {
                let picked: Vec<String> = idx.iter().map(|&i| shares[i].clone()).collect();
                assert_eq!(rcrt_combine(&picked, &[]), sb.old.text);
            }
        }
        "ssss-shares" => {
            let p = work.join("kek-shares.txt");
            assert_eq!(mode_of(&p), 0o600);
            let shares: Vec<String> = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            assert_eq!(shares.len(), 5);
            assert_eq!(rcrt_combine(&shares[1..4], &[]), sb.old.text);
        }
        "recovered" => {
            let p = work.join("recovered-kek.txt");
            assert_eq!(mode_of(&p), 0o600);
            assert_eq!(kek_in_file(&p), sb.old.text);
            assert!(
                stdout.contains(&format!("KEK OK: id {}", sb.old.id)),
                "{stdout}"
            );
        }
        "diagnosed" => {
            let configured = &sb.keks[2];
            assert!(stdout.contains(&format!("KEK OK: id {}", configured.id)));
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&sb.old.id))
                .unwrap_or_else(|| panic!("no census line for the store's KEK id: {stdout}"));
            assert_eq!(
                line.split_whitespace().skip(1).collect::<Vec<_>>(),
                [total.to_string(), total.to_string()]
            );
        }
        "found-kek" => {
            assert_eq!(stdout, "the store's KEK is kek-candidates/2024-kek.txt\n");
        }
        other => panic!("check {other} does not apply after a block"),
    }
}

/// Checks on a server a `runs=server` block started.
async fn check_server(check: &str, sb: &Sandbox) {
    let api = Api::new(format!("http://127.0.0.1:{}", sb.port));
    let status = api.kek_status().await;
    assert_eq!(status["current_kek_id"], sb.new.id.as_str(), "{status}");
    match check {
        "serves-new-and-old" => {
            assert_eq!(
                status["configured_kek_ids"],
                json!([sb.new.id, sb.old.id]),
                "{status}"
            );
        }
        "serves-new-only" => {
            assert_eq!(status["configured_kek_ids"], json!([sb.new.id]), "{status}");
            assert_eq!(status["rewrap"]["remaining"], 0);
        }
        other => panic!("check {other} does not apply to a server block"),
    }
    api.assert_decrypts(&sb.expected).await;
}

// ---------------------------------------------------------------------------------------------
// Running the document
// ---------------------------------------------------------------------------------------------

fn run_block(rt: &tokio::runtime::Runtime, block: &Block, gpg: &dyn Fn() -> PathBuf) {
    let what = format!("docs/operations.md:{} ({})", block.line, block.setup);
    for r in &block.requires {
        match r.as_str() {
            "gpg" => require("gpg", &["--version"], "install the Debian package gnupg"),
            "ssss" => require("ssss-split", &["-v"], "install the Debian package ssss"),
            _ => unreachable!(),
        }
    }
    let sb = Sandbox::new(rt, block, gpg);
    let mut child = sb.command(&block.code).spawn().unwrap();
    if block.runs_server {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get_status(sb.port, "/health") != Some(200) {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                panic!("{what}: the server exited:\n{}", show(&out));
            }
            assert!(Instant::now() < deadline, "{what}: no server after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(check) = &block.check {
            rt.block_on(check_server(check, &sb));
        }
        // Stop the server (the block's child) so bash reaps it and ends; if bash exec'd the
        // server, the child is the server itself.
        let mut pids = children_of(child.id());
        if pids.is_empty() {
            pids.push(child.id());
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let out = wait_limited(child, Duration::from_secs(30), &what);
        sb.assert_no_key(&out, &what);
    } else {
        child.stdin.take();
        let out = wait_limited(child, Duration::from_secs(120), &what);
        assert!(out.status.success(), "{what} failed:\n{}", show(&out));
        sb.assert_no_key(&out, &what);
        if let Some(check) = &block.check {
            rt.block_on(check_after(check, &sb, &out));
        }
    }
}

#[test]
fn every_bash_block_of_operations_md_runs() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md"))
        .expect("docs/operations.md exists");
    let blocks = blocks(&doc);
    // The sections the runbook must have.
    for heading in [
        "## Rotation",
        "### Online rotation",
        "### Offline rotation",
        "### The rotation script",
        "## Emergency re-encryption",
        "## Backup",
        "## Recovery",
        "### Cannot decrypt after restart",
    ] {
        assert!(
            doc.lines().any(|l| l.starts_with(heading)),
            "operations.md lacks {heading:?}"
        );
    }
    // Commands that need a tool must say so, so a missing tool fails loudly here.
    for b in &blocks {
        for (tool, req) in [("gpg ", "gpg"), ("ssss-", "ssss")] {
            if b.code.contains(tool) {
                assert!(
                    b.requires.iter().any(|r| r == req),
                    "operations.md:{}: uses {tool} without requires={req}",
                    b.line
                );
            }
        }
    }
    let used: BTreeSet<&str> = blocks.iter().map(|b| b.setup.as_str()).collect();
    assert_eq!(used.len(), FIXTURES.len(), "unused fixtures: {used:?}");
    assert!(blocks.len() >= 15, "only {} bash blocks", blocks.len());

    let rt = runtime();
    let gpg_home: OnceLock<GpgHome> = OnceLock::new();
    let gpg = || gpg_home.get_or_init(GpgHome::new).path().to_owned();
    for block in &blocks {
        let started = Instant::now();
        run_block(&rt, block, &gpg);
        eprintln!(
            "docs/operations.md:{} ({}) ok in {:?}",
            block.line,
            block.setup,
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// kek-rotation.sh end to end
// ---------------------------------------------------------------------------------------------

/// The hook this test gives the script: writes the KEK values the script exported into the
/// service's EnvironmentFile (printf is a builtin: no key on a command line), records the phase,
/// and restarts the service (the stand-in stops the old server and starts a new one).
const RESTART_CMD: &str = r#"umask 077
{
  printf 'LOCAL_KEK_BASE64=%s\n' "$LOCAL_KEK_BASE64"
  if [ -n "${LOCAL_KEK_BASE64_OLD:-}" ]; then
    printf 'LOCAL_KEK_BASE64_OLD=%s\n' "$LOCAL_KEK_BASE64_OLD"
  fi
} > "$SVC_DIR/kek.env"
echo "$RCRT_ROTATION_PHASE ${RCRT_KEK_OLD_FILE:+with-old-file}" >> "$SVC_DIR/phases"
if [ -n "${LOCAL_KEK_BASE64_FILE:-}${LOCAL_KEK_BASE64_OLD_FILE:-}" ]; then exit 9; fi
systemctl restart rcrt-secrets"#;

/// Field order is drop order: the service stops before its directory goes.
struct ScriptRun {
    supervisor: Supervisor,
    root: TempDir,
    bin: PathBuf,
    old_file: PathBuf,
    db_url: String,
}

impl ScriptRun {
    /// A fresh SQLite store served under the systemd stand-in with a new KEK from
    /// `old-kek.txt` (plus `unit` in the unit's environment); that KEK.
    fn start(root: TempDir, unit: &[(&str, &str)]) -> (Self, Kek) {
        let bin = make_bin(root.path());
        let db_url = root.path().join("rcrt.db").display().to_string();
        let old = new_kek();
        let old_file = root.path().join("old-kek.txt");
        key_file(&old_file, &old);
        let supervisor = Supervisor::new(&root.path().join("svc"), &bin, &db_url, &old_file, unit);
        let run = Self {
            supervisor,
            root,
            bin,
            old_file,
            db_url,
        };
        (run, old)
    }

    fn run(&self, new_file: &Path, extra: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.bin.join("kek-rotation.sh"));
        cmd.env_clear()
            .env("PATH", sandbox_path(&self.bin))
            .env("HOME", self.root.path())
            .env("SVC_DIR", &self.supervisor.dir)
            .env("RCRT_URL", self.supervisor.url())
            .env("OLD_KEK_FILE", &self.old_file)
            .env("NEW_KEK_FILE", new_file)
            .env("RESTART_CMD", RESTART_CMD)
            .env("DB_URL", &self.db_url)
            .env("POLL_INTERVAL", "0.3")
            .env("READY_TIMEOUT", "60")
            .env("REWRAP_TIMEOUT", "120")
            // The operator's own variables must not leak into the hook or the verify step.
            .env("LOCAL_KEK_BASE64_FILE", &self.old_file)
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        wait_limited(
            cmd.spawn().unwrap(),
            Duration::from_secs(240),
            "kek-rotation.sh",
        )
    }

    fn phases(&self) -> Vec<String> {
        std::fs::read_to_string(self.supervisor.dir.join("phases"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn rotation_script_rotates_a_live_server_end_to_end() {
    let rt = runtime();
    let (run, old) = ScriptRun::start(
        TempDir::new(),
        &[
            ("REWRAP_BATCH_SIZE", "10"),
            ("REWRAP_MAX_ROWS_PER_SEC", "100"),
        ],
    );
    let expected = rt.block_on(create_secrets(&Api::new(run.supervisor.url()), 0..120));
    let total = total_versions(&expected);
    let keys_dir = run.root.path().join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();

    // Refusals first: nothing is generated and the service is not restarted.
    let out = run.run(&keys_dir.join("unused.txt"), &[("RESTART_CMD", "")]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("RESTART_CMD is not set"));
    let wrong = new_kek();
    let wrong_file = run.root.path().join("wrong-kek.txt");
    key_file(&wrong_file, &wrong);
    let out = run.run(
        &keys_dir.join("unused.txt"),
        &[("OLD_KEK_FILE", wrong_file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("refusing to rotate"),
        "{}",
        show(&out)
    );
    assert!(!keys_dir.join("unused.txt").exists());
    assert!(run.phases().is_empty());
    assert_eq!(run.supervisor.journal(), ["start"]);

    // The rotation, with FINALIZE=1.
    let new_file = keys_dir.join("kek-new.txt");
    let out = run.run(&new_file, &[("FINALIZE", "1")]);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "{}\n--- server log\n{}",
        show(&out),
        run.supervisor.log()
    );
    assert_eq!(mode_of(&new_file), 0o600);
    let new = kek_in_file(&new_file);
    let new_id = kek_id(&new);
    assert_ne!(new_id, old.id);
    for k in [&old.text, &new, &wrong.text] {
        assert!(!stderr.contains(k.as_str()) && !text(&out.stdout).contains(k.as_str()));
        assert!(!run.supervisor.log().contains(k.as_str()));
    }
    assert_eq!(run.phases(), ["rotate with-old-file", "finalize "]);
    assert_eq!(run.supervisor.journal(), ["start", "restart", "restart"]);
    assert!(
        stderr.contains(&format!("generated a new KEK, id {new_id}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("re-wrap: state ") && stderr.contains(", 0 versions left under old KEKs"),
        "{stderr}"
    );
    // The verify step ran with the new KEK alone and printed its census.
    assert!(
        stderr.contains("OK: every version unwraps and decrypts"),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [new_id.as_str(), &total.to_string(), "0"]),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "done: the service runs with KEK id {new_id} alone"
        )),
        "{stderr}"
    );
    // The service now runs with the new KEK alone and every secret decrypts.
    let api = Api::new(run.supervisor.url());
    let status = rt.block_on(api.kek_status());
    assert_eq!(status["configured_kek_ids"], json!([new_id]), "{status}");
    assert_eq!(
        status["versions_per_kek"],
        json!({ new_id.as_str(): total }),
        "{status}"
    );
    rt.block_on(api.assert_decrypts(&expected));

    // Running it again resumes: no new key, no rotate-phase restart, still done.
    let again = run.run(&new_file, &[("FINALIZE", "1")]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(text(&again.stderr).contains("resuming the rotation"));
    assert_eq!(kek_in_file(&new_file), new);
    assert_eq!(
        run.phases(),
        ["rotate with-old-file", "finalize ", "finalize "]
    );

    // Finally a fresh server given the new KEK alone (nothing else) decrypts everything.
    let out = run.supervisor.ctl("stop");
    assert!(out.status.success(), "{}", show(&out));
    let server = ServerProcess::start(&server_config(
        run.root.path(),
        &[("LOCAL_KEK_BASE64", &new), ("DB_URL", &run.db_url)],
    ));
    rt.block_on(Api::new(server.base_url()).assert_decrypts(&expected));
    drop(server);
    // And a server given only the old KEK refuses the store, naming the new KEK's id.
    let (status, output) = ServerProcess::run_to_exit(&server_config(
        run.root.path(),
        &[("LOCAL_KEK_BASE64", &old.text), ("DB_URL", &run.db_url)],
    ));
    assert!(!status.success());
    assert!(output.contains(&new_id), "{output}");
}

/// The script is valid bash and uses strict mode.
#[test]
fn rotation_script_is_strict_bash() {
    let script = rotation_script();
    let body = std::fs::read_to_string(&script).unwrap();
    assert!(body.starts_with("#!/usr/bin/env bash\n"));
    assert!(body.contains("\nset -euo pipefail\n"));
    assert!(!body.contains("set -x"), "tracing would print keys");
    assert_ne!(mode_of(&script) & 0o111, 0, "the script is not executable");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

// ---------------------------------------------------------------------------------------------
// kek-rotation.sh against a service with JWT authentication
// ---------------------------------------------------------------------------------------------

/// An HS256 JWT signed with `secret` (HMAC by the openssl CLI: no JWT library needed here).
fn mint_jwt(secret: &str, roles: &[&str]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({
        "iss": "rcrt-doc-test", "aud": "rcrt", "exp": exp, "sub": "operator",
        "owner_id": "ops", "roles": roles,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let out = run_with_stdin(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt"])
            .arg(format!("key:{secret}")),
        &input,
    );
    assert!(out.status.success(), "{}", show(&out));
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(&out.stdout))
}

#[test]
fn rotation_script_sends_an_admin_token_with_jwt_auth() {
    let rt = runtime();
    let root = TempDir::new();
    let hs_secret = uuid::Uuid::new_v4().simple().to_string();
    let secret_file = root.path().join("jwt-secret");
    write_file(&secret_file, &hs_secret, 0o600);
    let secret_path = secret_file.display().to_string();
    let (run, old) = ScriptRun::start(
        root,
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_HS256_SECRET_FILE", &secret_path),
            ("JWT_ISSUER", "rcrt-doc-test"),
            ("JWT_AUDIENCE", "rcrt"),
        ],
    );
    let admin = mint_jwt(
        &hs_secret,
        &[
            "secrets.admin",
            "secrets.write",
            "secrets.read",
            "secrets.decrypt",
            "rcrt.operator",
        ],
    );
    let reader = mint_jwt(&hs_secret, &["secrets.read"]);
    // A tenant administrator is no operator: the KEK endpoints refuse it too.
    let tenant_admin = mint_jwt(&hs_secret, &["secrets.admin", "secrets.read"]);
    let expected = rt.block_on(create_secrets(
        &Api::with_token(run.supervisor.url(), &admin),
        0..30,
    ));
    let total = total_versions(&expected);
    let token_file = |name: &str, token: &str| {
        let p = run.root.path().join(name);
        write_file(&p, &format!("{token}\n"), 0o600);
        p.display().to_string()
    };
    let (admin_file, reader_file, tenant_admin_file) = (
        token_file("admin.jwt", &admin),
        token_file("reader.jwt", &reader),
        token_file("tenant-admin.jwt", &tenant_admin),
    );
    let new_file = run.root.path().join("kek-new.txt");

    // Without a token, and with one lacking rcrt.operator: refused before anything changes.
    for (extra, code) in [
        (vec![], "HTTP 401"),
        (vec![("RCRT_TOKEN_FILE", reader_file.as_str())], "HTTP 403"),
        (
            vec![("RCRT_TOKEN_FILE", tenant_admin_file.as_str())],
            "HTTP 403",
        ),
    ] {
        let out = run.run(&new_file, &extra);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(code) && stderr.contains("RCRT_TOKEN_FILE"),
            "{stderr}"
        );
        assert!(!new_file.exists());
    }
    assert_eq!(run.supervisor.journal(), ["start"]);

    // With the admin token.
    let out = run.run(
        &new_file,
        &[("RCRT_TOKEN_FILE", admin_file.as_str()), ("FINALIZE", "1")],
    );
    assert!(
        out.status.success(),
        "{}\n--- server log\n{}",
        show(&out),
        run.supervisor.log()
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains(&admin) && !all.contains(&old.text));
    let new = kek_in_file(&new_file);
    assert!(!all.contains(&new));
    let new_id = kek_id(&new);
    assert_eq!(run.supervisor.journal(), ["start", "restart", "restart"]);
    let api = Api::with_token(run.supervisor.url(), &admin);
    let status = rt.block_on(api.kek_status());
    assert_eq!(status["configured_kek_ids"], json!([new_id]), "{status}");
    assert_eq!(
        status["versions_per_kek"],
        json!({ new_id.as_str(): total })
    );
    rt.block_on(api.assert_decrypts(&expected));
}

/// The start-up refusal quoted under "Cannot decrypt after restart" is what the server prints.
#[test]
fn documented_startup_refusal_matches_the_server() {
    let rt = runtime();
    let dir = TempDir::new();
    let db_url = dir.path().join("rcrt.db").display().to_string();
    let (stored, configured) = (new_kek(), new_kek());
    let config = |kek: &Kek| {
        server_config(
            dir.path(),
            &[("LOCAL_KEK_BASE64", &kek.text), ("DB_URL", &db_url)],
        )
    };
    let server = ServerProcess::start(&config(&stored));
    let expected = rt.block_on(create_secrets(&Api::new(server.base_url()), 0..3));
    drop(server);
    let (status, output) = ServerProcess::run_to_exit(&config(&configured));
    assert!(!status.success(), "{output}");
    let total = total_versions(&expected);
    let actual = output
        .lines()
        .find(|l| l.contains("refusing to start"))
        .unwrap_or_else(|| panic!("no refusal in:\n{output}"))
        .replace(&stored.id, "<KEK id>")
        .replace(&format!("({total} versions)"), "(<n> versions)");
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/operations.md")).unwrap();
    let quoted = doc
        .lines()
        .find(|l| l.starts_with("rcrt-server: refusing to start"))
        .expect("operations.md quotes the refusal")
        .replace("3f6c0a1e9b27d485", "<KEK id>")
        .replace("(1200 versions)", "(<n> versions)");
    assert_eq!(quoted, actual);
    assert!(!output.contains(&configured.text) && !output.contains(&stored.text));
}
