//! `aws-kms` credentials from the chain's web identity and container links, without static
//! keys.
//!
//! Web identity runs against a real `moto_server` (PyPI `moto[server]`; the test fails naming
//! it when it is missing), which implements STS `AssumeRoleWithWebIdentity` and KMS. Container
//! credentials run against a small HTTP listener in this file standing in for the ECS agent /
//! EKS Pod Identity agent (no agent runs here), with moto as KMS (moto accepts any
//! credentials, so what is checked is that the listener is asked, with the right
//! `Authorization`, when it should be).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{call, ctx, fresh_dek, is_decrypt_failure};
use rcrt_keys::aws_kms::AwsKmsKek;
use rcrt_keys::{KekBackend, KeyError, ProviderSettings};
use rcrt_testkit::peers::moto::{self, MotoServer};
use rcrt_testkit::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// Provider settings as the server reads them from these variables (and nothing else).
fn settings_from(vars: &[(&str, String)]) -> ProviderSettings {
    ProviderSettings::from_lookup(&|k: &str| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| Zeroizing::new(v.clone()))
    })
    .unwrap()
}

/// Wraps and unwraps one DEK.
async fn round_trip(kek: &AwsKmsKek) {
    let secret = [5u8; 16];
    let dek = fresh_dek();
    let wrapped = kek.wrap(&dek, &ctx(kek.id(), &secret, 1)).await.unwrap();
    let back = kek
        .unwrap(&wrapped, &ctx(kek.id(), &secret, 1))
        .await
        .unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    // Still bound to its row.
    assert!(is_decrypt_failure(
        &kek.unwrap(&wrapped, &ctx(kek.id(), &secret, 2)).await
    ));
}

#[tokio::test]
async fn web_identity_alone_connects_to_kms() {
    let moto = MotoServer::start();
    let dir = TempDir::new();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyY3J0In0.c2ln\n",
    )
    .unwrap();
    let settings = settings_from(&[
        ("AWS_REGION", moto::REGION.to_owned()),
        // KMS and STS both at moto, through the one variable.
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/rcrt-server".to_owned(),
        ),
        // No ~/.aws/credentials of the machine's may win.
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("absent").display().to_string(),
        ),
    ]);
    assert!(settings.aws.access_key_id.is_none());
    let kek = AwsKmsKek::connect(moto.key_arn(), &settings.aws, &call(Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("connect with web identity: {e}"));
    assert_eq!(kek.credential_source(), "web-identity");
    round_trip(&kek).await;

    // Without the role, a clear start-up error naming what is missing.
    let no_role = settings_from(&[
        ("AWS_REGION", moto::REGION.to_owned()),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("absent").display().to_string(),
        ),
    ]);
    match AwsKmsKek::connect(moto.key_arn(), &no_role.aws, &call(Duration::from_secs(5))).await {
        Err(KeyError::Config(m)) => assert!(m.contains("AWS_ROLE_ARN"), "{m}"),
        other => panic!("expected Config, got {:?}", other.map(|_| "a KEK")),
    }
}

/// What the container credentials stand-in saw and how it answers.
#[derive(Default)]
struct Agent {
    /// The `Authorization` header of each request (`None`: absent).
    seen: Vec<Option<String>>,
    /// The `Authorization` value it accepts (401 otherwise).
    expect: String,
    /// Expiry (seconds from now) of the credentials it hands out, per answer, the last one
    /// repeated.
    lifetimes: Vec<u64>,
}

/// A stand-in for the ECS / EKS Pod Identity credentials endpoint on 127.0.0.1: GET
/// `/v1/credentials` answers the JSON the agents send.
async fn container_agent(agent: Arc<Mutex<Agent>>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let auth = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("authorization")
                    .then(|| value.trim().to_owned())
            });
            let answer = {
                let mut a = agent.lock().unwrap();
                a.seen.push(auth.clone());
                if !head.starts_with("GET /v1/credentials ") {
                    http("404 Not Found", "{}")
                } else if auth.as_deref() != Some(a.expect.as_str()) {
                    http(
                        "401 Unauthorized",
                        r#"{"code":"AccessDeniedException","message":"bad token"}"#,
                    )
                } else {
                    let left = a
                        .lifetimes
                        .get(n - 1)
                        .or(a.lifetimes.last())
                        .copied()
                        .unwrap_or(3600);
                    let expires = (time::OffsetDateTime::now_utc() + Duration::from_secs(left))
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap();
                    http(
                        "200 OK",
                        &format!(
                            r#"{{"AccessKeyId":"ASIACONTAINER{n}","SecretAccessKey":"secret{n}","Token":"session{n}","Expiration":"{expires}","RoleArn":"arn:aws:iam::123456789012:role/r"}}"#
                        ),
                    )
                }
            };
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (port, count)
}

fn http(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn container_credentials_with_authorization_and_refresh() {
    let moto = MotoServer::start();
    let dir = TempDir::new();
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-token-1\n").unwrap();
    let agent = Arc::new(Mutex::new(Agent {
        expect: "pod-token-1".into(),
        // The first two answers expire within the 5-minute margin, later ones in an hour.
        lifetimes: vec![120, 120, 3600],
        ..Default::default()
    }));
    let (port, asked) = container_agent(agent.clone()).await;
    let base = |extra: (&str, String)| {
        settings_from(&[
            ("AWS_REGION", moto::REGION.to_owned()),
            ("AWS_ENDPOINT_URL_KMS", moto.endpoint()),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://127.0.0.1:{port}/v1/credentials"),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("absent").display().to_string(),
            ),
            extra,
        ])
    };
    let settings = base((
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        token_file.display().to_string(),
    ));
    let kek = AwsKmsKek::connect(moto.key_arn(), &settings.aws, &call(Duration::from_secs(5)))
        .await
        .unwrap_or_else(|e| panic!("connect with container credentials: {e}"));
    assert_eq!(kek.credential_source(), "container");
    // Fetched at start, and again before DescribeKey (2 minutes left).
    assert_eq!(asked.load(Ordering::SeqCst), 2);

    // The agent rotates the token file; the next fetch (2 minutes left again) reads it.
    std::fs::write(&token_file, "pod-token-2\n").unwrap();
    agent.lock().unwrap().expect = "pod-token-2".into();
    round_trip(&kek).await;
    // One more fetch (now an hour left), none for the unwrap.
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    round_trip(&kek).await;
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(
        agent.lock().unwrap().seen,
        [
            Some("pod-token-1".to_owned()),
            Some("pod-token-1".to_owned()),
            Some("pod-token-2".to_owned())
        ]
    );

    // A wrong token (from AWS_CONTAINER_AUTHORIZATION_TOKEN): refused at start, the message
    // naming the endpoint's answer and never the token.
    let wrong = base((
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "not-the-pod-token".to_owned(),
    ));
    match AwsKmsKek::connect(moto.key_arn(), &wrong.aws, &call(Duration::from_secs(5))).await {
        Err(KeyError::Config(m)) => {
            assert!(m.contains("HTTP 401") && m.contains("container"), "{m}");
            assert!(!m.contains("not-the-pod-token"), "{m}");
        }
        other => panic!("expected Config, got {:?}", other.map(|_| "a KEK")),
    }
    assert_eq!(
        agent.lock().unwrap().seen.last().unwrap().as_deref(),
        Some("not-the-pod-token")
    );

    // A full URI off the allowed hosts is refused before any request.
    let before = asked.load(Ordering::SeqCst);
    let off_host = settings_from(&[
        ("AWS_REGION", moto::REGION.to_owned()),
        ("AWS_ENDPOINT_URL_KMS", moto.endpoint()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.1.2.3/v1/credentials".to_owned(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("absent").display().to_string(),
        ),
    ]);
    match AwsKmsKek::connect(moto.key_arn(), &off_host.aws, &call(Duration::from_secs(5))).await {
        Err(KeyError::Config(m)) => {
            assert!(m.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{m}")
        }
        other => panic!("expected Config, got {:?}", other.map(|_| "a KEK")),
    }
    assert_eq!(asked.load(Ordering::SeqCst), before);
}
