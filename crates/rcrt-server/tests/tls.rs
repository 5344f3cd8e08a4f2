//! TLS on the listener against a real `rcrt-server` process, with certificates made by `rcgen`:
//!
//! 1. A client trusting the test CA gets `/health` and creates and decrypts a secret over
//!    https; plain HTTP to the port gets no answer; TLS 1.2 works and TLS 1.1 is refused
//!    (`openssl s_client`); ALPN `h2` alone is refused; `rcrt-server healthcheck` passes over
//!    https; a handshake that stalls loses its connection after `HTTP_HEADER_TIMEOUT`; the
//!    key file's PEM is nowhere in the log, and a key readable by others is warned about.
//! 2. Reload: a new pair from another CA is served after SIGHUP, and after a change of the
//!    files alone; a broken key, or a key of another certificate, keeps the previous
//!    certificate serving and logs an error.
//! 3. Only one of `TLS_CERT_FILE` / `TLS_KEY_FILE`: exit 2 naming both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[allow(dead_code)]
mod common;

use common::gen_kek;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server_config;
use rcrt_testkit::{ServerConfig, ServerProcess, TempDir};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_rcrt-server");

/// One CA and a `localhost` / `127.0.0.1` certificate it signed.
struct Pki {
    ca_pem: String,
    /// Leaf then CA.
    chain_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("test CA {}", uuid::Uuid::new_v4()),
        );
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
        Self {
            ca_pem: ca.pem(),
            chain_pem: leaf.pem() + &ca.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The base64 lines of the key (what must never reach a log).
    fn key_body(&self) -> Vec<&str> {
        self.key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect()
    }

    /// Writes the pair over `files` (key first, mode 0600): a rotation as a tool would do it.
    fn install(&self, files: &Files) {
        write_private(&files.key, &self.key_pem);
        std::fs::write(&files.cert, &self.chain_pem).unwrap();
    }
}

fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn in_dir(dir: &TempDir) -> Self {
        Self {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        }
    }
}

fn tls_config(dir: &TempDir, files: &Files, extra: &[(&str, &str)]) -> ServerConfig {
    let kek = gen_kek();
    let cert = files.cert.to_string_lossy().into_owned();
    let key = files.key.to_string_lossy().into_owned();
    let mut env = vec![
        ("LOCAL_KEK_BASE64", kek.as_str()),
        ("TLS_CERT_FILE", cert.as_str()),
        ("TLS_KEY_FILE", key.as_str()),
    ];
    env.extend_from_slice(extra);
    server_config(None, dir, &env)
}

/// A client that trusts only `ca_pem` (no system roots) and opens a fresh connection.
fn client(ca_pem: &str) -> reqwest::Client {
    client_builder(ca_pem).build().unwrap()
}

fn client_builder(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
}

/// Whether a client trusting `ca_pem` gets 200 from `/health` (i.e. the server presents a
/// certificate of that CA).
async fn served_by(ca_pem: &str, port: u16) -> bool {
    match client(ca_pem)
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
    {
        Ok(r) => r.status() == 200,
        Err(_) => false,
    }
}

/// Waits up to 3 s for `done` (a look at the server's log), failing with the log.
async fn wait_until(server: &ServerProcess, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `within` for the server to present a certificate of `ca_pem`.
async fn wait_served_by(ca_pem: &str, port: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if served_by(ca_pem, port).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the new certificate is not served after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sighup(server: &ServerProcess) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGHUP).unwrap();
}

/// Runs `openssl s_client` against the port with `args`; returns (success, output).
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut child = rcrt_testkit::spawn_with_stdin(
        Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(format!("127.0.0.1:{port}"))
            .args(args),
        "",
    )
    .unwrap_or_else(|e| panic!("openssl is needed (apt-get install openssl): {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "openssl s_client hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_tls12_and_13_only() {
    let dir = TempDir::new();
    let files = Files::in_dir(&dir);
    let pki = Pki::new();
    pki.install(&files);
    let cfg = tls_config(&dir, &files, &[("HTTP_HEADER_TIMEOUT", "1s")]);
    let server = ServerProcess::start_until_listening(&cfg);
    let port = server.port();
    let base = format!("https://localhost:{port}");

    // /health, and a secret created and decrypted over https.
    let c = client(&pki.ca_pem);
    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let r = c
        .post(format!("{base}/secrets"))
        .json(&json!({"name": "over-tls", "value": "s3cret-over-tls", "scope_type": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .post(format!("{base}/secrets/{id}/decrypt"))
        .json(&json!({"reason": "tls test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["value"], "s3cret-over-tls");

    // A client that does not trust the CA is refused (the server does present this chain).
    assert!(!served_by(&Pki::new().ca_pem, port).await);

    // Plain HTTP to the TLS port gets no HTTP answer.
    assert_eq!(rcrt_testkit::http_get_status(port, "/health"), None);
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(plain
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_err());

    // TLS 1.2 only, with rustls and with openssl; 1.3 is what a modern client gets.
    let tls12 = client_builder(&pki.ca_pem)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(
        tls12
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (ok, out) = s_client(port, &["-tls1_2"]);
    assert!(ok && out.contains("Protocol  : TLSv1.2"), "{out}");
    let (ok, out) = s_client(port, &["-tls1_3"]);
    assert!(ok && out.contains("TLSv1.3"), "{out}");
    // TLS 1.1 and 1.0, with the client's own floor lowered so it really offers them (its
    // session shows the version it tried): the server ends the handshake with an alert.
    for (flag, version) in [("-tls1_1", "TLSv1.1"), ("-tls1", "TLSv1\n")] {
        let (ok, out) = s_client(port, &[flag, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok, "{flag} was accepted: {out}");
        assert!(
            out.contains(&format!("Protocol  : {version}")) && out.contains("SSL alert number"),
            "{flag}: {out}"
        );
        assert!(!out.contains("BEGIN CERTIFICATE"), "{flag}: {out}");
    }
    // ALPN: http/1.1 is agreed; h2 alone is refused rather than misread.
    let (ok, out) = s_client(port, &["-alpn", "h2,http/1.1"]);
    assert!(ok && out.contains("ALPN protocol: http/1.1"), "{out}");
    let (ok, out) = s_client(port, &["-alpn", "h2"]);
    assert!(!ok && out.contains("no application protocol"), "{out}");

    // The container health check, over https.
    let hc = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("TLS_CERT_FILE", &files.cert)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        hc.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );
    // Without TLS_CERT_FILE it would speak plain HTTP to a TLS port: unhealthy.
    let hc = Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(hc.status.code(), Some(1));

    // A handshake begun and never finished (a TLS record header, then silence), and a
    // connection that sends nothing: both closed after HTTP_HEADER_TIMEOUT (1 s).
    for opening in [&[0x16u8, 0x03, 0x01, 0x02, 0x00][..], &[][..]] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(opening).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled handshake kept its connection");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }
    // And the server still serves.
    assert!(served_by(&pki.ca_pem, port).await);

    let log = server.output();
    assert!(
        log.contains("tls=\"on\"") || log.contains("tls=on"),
        "{log}"
    );
    assert!(log.contains("TLS certificate loaded"), "{log}");
    assert!(!log.contains("readable by other users"), "{log}");
    for line in pki.key_body() {
        assert!(!log.contains(line), "key material in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reloads_on_sighup_and_on_change_and_survives_bad_files() {
    let dir = TempDir::new();
    let files = Files::in_dir(&dir);
    let first = Pki::new();
    first.install(&files);
    // Readable by others: warned about at start (and still served).
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = tls_config(&dir, &files, &[]);
    let server = ServerProcess::start_until_listening(&cfg);
    let port = server.port();
    assert!(served_by(&first.ca_pem, port).await);
    assert!(server.output().contains("readable by other users"));

    // 1. SIGHUP: a pair from another CA is served at once.
    let second = Pki::new();
    second.install(&files);
    sighup(&server);
    wait_served_by(&second.ca_pem, port, Duration::from_secs(3)).await;
    assert!(!served_by(&first.ca_pem, port).await);
    let reloads = |by: &str| {
        server
            .output()
            .lines()
            .filter(|l| l.contains("TLS certificate reloaded") && l.contains(by))
            .count()
    };
    assert!(reloads("SIGHUP") >= 1, "{}", server.output());
    // The process survived the signal (it would have died of SIGHUP without the handler).
    assert!(served_by(&second.ca_pem, port).await);

    // 2. A broken key file, then a key that belongs to another certificate: the previous
    //    certificate keeps serving, and the error is logged without key material.
    let failures = || {
        server
            .output()
            .matches("TLS certificate reload failed")
            .count()
    };
    let base = failures();
    write_private(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n",
    );
    sighup(&server);
    wait_until(&server, || failures() > base).await;
    assert!(served_by(&second.ca_pem, port).await);
    let third = Pki::new();
    std::fs::write(&files.cert, &third.chain_pem).unwrap();
    write_private(&files.key, &second.key_pem);
    let base = failures();
    sighup(&server);
    wait_until(&server, || {
        server.output().contains("does not fit") && failures() > base
    })
    .await;
    assert!(served_by(&second.ca_pem, port).await);
    assert!(!served_by(&third.ca_pem, port).await);
    assert!(
        server.output().contains("does not fit"),
        "{}",
        server.output()
    );

    // 3. No signal: a change of the files alone is picked up by the poll (every 5 s).
    let before = reloads("file change");
    let fourth = Pki::new();
    fourth.install(&files);
    let took = wait_served_by(&fourth.ca_pem, port, Duration::from_secs(12)).await;
    assert!(reloads("file change") > before, "{}", server.output());
    eprintln!("file change served after {took:?}");

    let log = server.output();
    for pki in [&first, &second, &third, &fourth] {
        for line in pki.key_body() {
            assert!(!log.contains(line), "key material in the log:\n{log}");
        }
    }
}

#[test]
fn tls_needs_both_files() {
    let dir = TempDir::new();
    let kek = gen_kek();
    for var in ["TLS_CERT_FILE", "TLS_KEY_FILE"] {
        let cfg = server_config(None, &dir, &[("LOCAL_KEK_BASE64", &kek), (var, "/x.pem")]);
        let (status, out) = ServerProcess::run_to_exit(&cfg);
        assert_eq!(status.code(), Some(2), "{var}: {out}");
        assert!(
            out.contains("TLS_CERT_FILE") && out.contains("TLS_KEY_FILE"),
            "{var}: {out}"
        );
    }
    // Both set but unusable: the server does not start (exit 1), naming the file.
    let files = Files::in_dir(&dir);
    std::fs::write(&files.cert, "junk").unwrap();
    write_private(&files.key, "junk");
    let (status, out) = ServerProcess::run_to_exit(&tls_config(&dir, &files, &[]));
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("tls.crt"), "{out}");
}

/// Over TLS the console's session cookie is `Secure` (a browser never sends it over plain http).
#[tokio::test]
async fn the_console_cookie_is_secure_over_tls() {
    let dir = TempDir::new();
    let files = Files::in_dir(&dir);
    let pki = Pki::new();
    pki.install(&files);
    let admin = rcrt_crypto::ServiceToken::generate()
        .unwrap()
        .expose_secret()
        .to_string();
    let token_file = dir.path().join("admin.token");
    write_private(&token_file, &format!("{admin}\n"));
    let cfg = tls_config(
        &dir,
        &files,
        &[
            ("AUTH_MODE", "token"),
            ("BOOTSTRAP_ADMIN_TOKEN_FILE", token_file.to_str().unwrap()),
        ],
    );
    let server = ServerProcess::start_until_listening(&cfg);
    let r = client(&pki.ca_pem)
        .post(format!("https://localhost:{}/ui/session", server.port()))
        .json(&json!({ "credential": admin }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{cookie}");
    }
}
