//! Test peer: `moto_server` (PyPI `moto[server]`), a local stand-in for AWS KMS.
//!
//! [`MotoServer::start`] runs `moto_server -H 127.0.0.1 -p <free port>` (the binary from
//! `RCRT_TEST_MOTO_SERVER`, else `PATH`), waits until it answers, and creates one symmetric
//! KMS key. moto keeps keys in memory only: stopping the process loses them for good, which is
//! what the "KMS key lost" drill wants ([`MotoServer::kill`]); an outage that comes back is
//! simulated with SIGSTOP/SIGCONT instead ([`MotoServer::pause`], [`MotoServer::resume`]).
//!
//! The set-up calls (`CreateKey`, `DisableKey`) go over a plain socket with an `Authorization`
//! header that names the region but carries no real signature: moto does not check signatures,
//! and this keeps the testkit free of AWS dependencies. The provider under test signs its own
//! requests with SigV4.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{free_port, TempDir};

/// The region keys are created in (moto keeps one set of keys per region).
pub const REGION: &str = "us-east-1";
/// The access key id the tests use (moto accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
/// The secret access key the tests use (moto accepts any).
pub const SECRET_ACCESS_KEY: &str = "testing";

/// A running `moto_server` with one KMS key; stopped on drop.
pub struct MotoServer {
    child: Child,
    port: u16,
    key_id: String,
    key_arn: String,
    paused: AtomicBool,
    dir: TempDir,
}

/// The `moto_server` program: `RCRT_TEST_MOTO_SERVER`, else `moto_server` on `PATH`.
fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RCRT_TEST_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "moto_server is not installed: `pip install 'moto[server]'` (or set \
             RCRT_TEST_MOTO_SERVER to its path); the aws-kms tests need it"
        )
    })
}

impl MotoServer {
    /// Starts moto on a free loopback port and creates a key. Panics (fails the test) naming
    /// what to install if `moto_server` is missing, or with moto's output if it does not start.
    pub fn start() -> Self {
        let bin = moto_binary();
        let dir = TempDir::new();
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): `pip install 'moto[server]'`, or set \
                     RCRT_TEST_MOTO_SERVER",
                    bin.display()
                )
            });
        let mut moto = Self {
            child,
            port,
            key_id: String::new(),
            key_arn: String::new(),
            paused: AtomicBool::new(false),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited with {status}:\n{}", moto.output());
            }
            if crate::http_get_status(port, "/moto-api/").is_some() {
                break;
            }
            if Instant::now() > deadline {
                panic!("moto_server did not answer within 30 s:\n{}", moto.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (id, arn) = moto.create_key();
        moto.key_id = id;
        moto.key_arn = arn;
        moto
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The key made at start: its key id (a UUID).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key made at start: its ARN.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// What a server (or the CLI) needs in its environment to use this moto: endpoint, region
    /// and the test's access keys. (Add `KEK_PROVIDER=aws-kms` and the key yourself.)
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Creates another `SYMMETRIC_DEFAULT` / `ENCRYPT_DECRYPT` key: (key id, ARN).
    pub fn create_key(&self) -> (String, String) {
        let (status, body) = self.kms(
            "CreateKey",
            &serde_json::json!({
                "Description": "rcrt test KEK",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "KeyUsage": "ENCRYPT_DECRYPT",
            }),
        );
        assert_eq!(status, 200, "moto CreateKey: {body}");
        let meta = &body["KeyMetadata"];
        (
            meta["KeyId"].as_str().expect("KeyId").to_owned(),
            meta["Arn"].as_str().expect("Arn").to_owned(),
        )
    }

    /// Creates a key of another kind (e.g. `RSA_2048` for `ENCRYPT_DECRYPT`): its ARN.
    pub fn create_key_with(&self, key_spec: &str, key_usage: &str) -> String {
        let (status, body) = self.kms(
            "CreateKey",
            &serde_json::json!({ "KeySpec": key_spec, "KeyUsage": key_usage }),
        );
        assert_eq!(status, 200, "moto CreateKey {key_spec}: {body}");
        body["KeyMetadata"]["Arn"].as_str().expect("Arn").to_owned()
    }

    /// Disables a key (moto still encrypts and decrypts with it, but `DescribeKey` shows it).
    pub fn disable_key(&self, key_id: &str) {
        let (status, body) = self.kms("DisableKey", &serde_json::json!({ "KeyId": key_id }));
        assert_eq!(status, 200, "moto DisableKey: {body}");
    }

    /// Points `alias/<name>` at a key.
    pub fn create_alias(&self, name: &str, key_id: &str) {
        let (status, body) = self.kms(
            "CreateAlias",
            &serde_json::json!({ "AliasName": format!("alias/{name}"), "TargetKeyId": key_id }),
        );
        assert_eq!(status, 200, "moto CreateAlias: {body}");
    }

    /// Repoints the existing `alias/<name>` at another key.
    pub fn update_alias(&self, name: &str, key_id: &str) {
        let (status, body) = self.kms(
            "UpdateAlias",
            &serde_json::json!({ "AliasName": format!("alias/{name}"), "TargetKeyId": key_id }),
        );
        assert_eq!(status, 200, "moto UpdateAlias: {body}");
    }

    /// One KMS JSON call to moto: (HTTP status, parsed body or `null`).
    pub fn kms(&self, operation: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let body = body.to_string();
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.{operation}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/{REGION}/kms/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            port = self.port,
            len = body.len(),
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read moto's answer");
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("moto answered no HTTP status: {text}"));
        let payload = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let chunked = text
            .split_once("\r\n\r\n")
            .map(|(h, _)| {
                h.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
            })
            .unwrap_or(false);
        let payload = if chunked {
            dechunk(payload)
        } else {
            payload.to_owned()
        };
        (
            status,
            serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Stops the process (SIGSTOP): connections are accepted by the kernel but never answered,
    /// like a KMS that hangs. Keys survive ([`MotoServer::resume`]).
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
        self.paused.store(true, Ordering::SeqCst);
        super::wait_stopped(self.child.id());
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Kills moto for good: every key it held is lost.
    pub fn kill(&mut self) {
        if self.paused.swap(false, Ordering::SeqCst) {
            signal(self.child.id(), "CONT");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything moto printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `SIG<name>` to our own child `pid` with `kill(1)` (no libc dependency here).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Joins an HTTP/1.1 chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}
