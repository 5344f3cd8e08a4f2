//! The "provider paused mid-traffic" check shared by the KEK provider tests: a writer and a
//! reader keep the server busy while the test pauses the provider's peer (SIGSTOP) and resumes
//! it (SIGCONT), and every answer is recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcrt_testkit::ServerProcess;
use serde_json::json;

use super::http::{create, decrypt, metric, metrics, seed, send, verify_all};

/// Provider settings that make an outage show (and end) within a few seconds.
pub const FAST_PROVIDER: [(&str, &str); 5] = [
    ("KEK_PROVIDER_TIMEOUT", "500ms"),
    ("KEK_PROVIDER_RETRIES", "1"),
    ("KEK_PROVIDER_CIRCUIT_FAILURES", "3"),
    ("KEK_PROVIDER_CIRCUIT_COOLDOWN", "1s"),
    ("KEK_PROVIDER_PROBE_INTERVAL", "1s"),
];

/// The peer a server's KEK provider calls, as the outage check drives and names it.
pub struct Peer<'a> {
    /// Its name in failure messages ("KMS", "OpenBao").
    pub name: &'a str,
    /// Stops it (SIGSTOP).
    pub pause: &'a dyn Fn(),
    /// Lets it run again (SIGCONT).
    pub resume: &'a dyn Fn(),
    /// A credential the server holds for it, never to be seen in an answer or the output.
    pub credential: &'a str,
    /// What the credential is, for messages ("the Vault token").
    pub credential_name: &'a str,
}

/// On `server` (started with [`FAST_PROVIDER`]): 10 secrets, then a writer and a reader under
/// way while `peer` is paused. While it is down: decrypts and writes answer 503
/// `kek_unavailable` (the credential in no answer), `/ready` 503, `rcrt_kek_configured` 0; the
/// writer and the reader both see the outage. Once it is resumed the same server recovers by
/// itself (`/ready` 200, `rcrt_kek_configured` 1, decrypts work); no answer other than
/// 200/201 or 503 `kek_unavailable` was seen; nothing refused was written (every refused name
/// is free again); every secret decrypts to its value; the credential is not in the output.
pub async fn paused_mid_traffic(server: &ServerProcess, http: &reqwest::Client, peer: Peer<'_>) {
    let base = server.base_url();
    let secrets = Arc::new(Mutex::new(seed(http, &base, "pre", 10).await));

    // Traffic: a writer and a reader, recording every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let refused_names = Arc::new(Mutex::new(Vec::<String>::new()));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (http, base, stop, secrets, refused, bad) = (
            http.clone(),
            base.clone(),
            stop.clone(),
            secrets.clone(),
            refused_names.clone(),
            bad.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("during-{i}");
                let value = format!("v-{i}-{}", uuid::Uuid::new_v4().simple());
                let (status, body) = create(&http, &base, &name, &value).await;
                match status {
                    201 => {
                        secrets
                            .lock()
                            .unwrap()
                            .insert(body["id"].as_str().unwrap().to_owned(), value);
                    }
                    503 if body["error"]["code"] == "kek_unavailable" => {
                        refused.lock().unwrap().push(name)
                    }
                    _ => bad
                        .lock()
                        .unwrap()
                        .push(format!("create {name}: {status} {body}")),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let reader = {
        let (http, base, stop, secrets, bad) = (
            http.clone(),
            base.clone(),
            stop.clone(),
            secrets.clone(),
            bad.clone(),
        );
        tokio::spawn(async move {
            let mut unavailable = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let snapshot: Vec<(String, String)> = secrets
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (id, value) in snapshot {
                    let (status, body) = decrypt(&http, &base, &id).await;
                    match status {
                        200 if body["value"].as_str() == Some(value.as_str()) => {}
                        503 if body["error"]["code"] == "kek_unavailable" => unavailable += 1,
                        _ => bad
                            .lock()
                            .unwrap()
                            .push(format!("decrypt {id}: {status} {body}")),
                    }
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            unavailable
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    (peer.pause)();
    let paused_at = Instant::now();

    // While down: decrypts and writes 503 kek_unavailable, /ready 503, rcrt_kek_configured 0.
    let id = secrets.lock().unwrap().keys().next().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = decrypt(http, &base, &id).await;
        if status == 503 {
            assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
            let text = serde_json::to_string(&body).unwrap();
            assert!(!text.contains(peer.credential), "{text}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "decrypts kept answering 200 with {} paused",
            peer.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = create(http, &base, "while-down", "never stored").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("kek_unavailable")),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = send(http.get(format!("{base}/ready"))).await;
        let configured = metric(&metrics(http, &base).await, "rcrt_kek_configured");
        if status == 503 && configured == 0.0 {
            // Unauthenticated: it names the provider, never the provider's own error (account
            // ids, addresses, timeouts), which goes to the log.
            assert_eq!(body["error"]["code"], "kek_unavailable", "{body}");
            let text = body.to_string();
            for internal in ["no answer within", "connection", "127.0.0.1", "HTTP 5"] {
                assert!(
                    !text.contains(internal),
                    "/ready shows {internal:?}: {text}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready {status} {body}, rcrt_kek_configured {configured} with {} paused",
            peer.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep it down a little longer, under traffic (the circuit is open by now).
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(paused_at.elapsed())).await;

    (peer.resume)();
    let resumed_at = Instant::now();

    // Back without a restart: /ready 200, rcrt_kek_configured 1, decrypts and writes work.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = send(http.get(format!("{base}/ready"))).await;
        let (dstatus, _) = decrypt(http, &base, &id).await;
        let configured = metric(&metrics(http, &base).await, "rcrt_kek_configured");
        if status == 200 && dstatus == 200 && configured == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered {:?} after SIGCONT: /ready {status}, decrypt {dstatus}, configured {configured}\n{}",
            resumed_at.elapsed(),
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let unavailable_reads = reader.await.unwrap();
    assert!(unavailable_reads > 0, "the reader never saw the outage");

    let bad = bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "answers other than 200/201 or 503 kek_unavailable:\n{}",
        bad.join("\n")
    );

    // Nothing written while down: every refused name (and "while-down") is free again.
    let mut refused = refused_names.lock().unwrap().clone();
    refused.push("while-down".into());
    assert!(refused.len() > 1, "the writer never saw the outage");
    for name in &refused {
        let (status, body) = create(http, &base, name, "after recovery").await;
        assert_eq!(
            status, 201,
            "{name} was refused with 503 but exists: {body}"
        );
    }

    // Not one secret lost or corrupted.
    let secrets = secrets.lock().unwrap().clone();
    verify_all(http, &base, &secrets, "after recovery").await;
    let out = server.output();
    assert!(
        !out.contains(peer.credential),
        "{} reached the server's output",
        peer.credential_name
    );
}
