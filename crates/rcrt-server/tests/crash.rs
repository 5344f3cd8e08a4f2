//! Fault injection: `kill -9` of a real `rcrt-server` under create/update/delete load, on SQLite
//! and PostgreSQL. After a restart on the same store, every acknowledged write is there (with its
//! audit row), every acknowledged delete stays deleted, every decrypt that returned a value has
//! its audit row (decrypt rows are group-committed: a value leaves only after its batch commits),
//! and no secret holds a value nobody sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{server_config, Backend};
use rcrt_testkit::{ServerProcess, TempDir};
use serde_json::{json, Value};

const WORKERS: usize = 8;

/// What the clients know about one secret.
#[derive(Debug, Default, Clone)]
struct Known {
    /// The last acknowledged (version, value).
    acked: Option<(i64, String)>,
    /// Every value ever sent for it (acknowledged or not).
    sent: BTreeSet<String>,
    /// A delete was acknowledged.
    deleted: bool,
    /// A delete was sent (acknowledged or not).
    delete_sent: bool,
}

type Ledger = Arc<Mutex<BTreeMap<String, Known>>>;
/// The reasons of the decrypts that returned a value (each reason names one request).
type Revealed = Arc<Mutex<BTreeSet<String>>>;

async fn worker(base: String, w: usize, stop: Arc<AtomicBool>, ledger: Ledger, revealed: Revealed) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut mine: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match n % 8 {
            // Decrypt (3 in 8) of its newest secret, with a reason naming the request.
            5..=7 => {
                let Some(id) = mine.last().cloned() else {
                    continue;
                };
                let reason = format!("crash-check-w{w}-{n}");
                let r = http
                    .post(format!("{base}/secrets/{id}/decrypt"))
                    .json(&json!({"reason": reason}))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                if r.status().as_u16() != 200 {
                    continue;
                }
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                if v["value"].is_string() {
                    revealed.lock().unwrap().insert(reason);
                }
            }
            // Create (2 in 8).
            0 | 1 => {
                let value = format!("w{w}-create-{n}");
                let r = http
                    .post(format!("{base}/secrets"))
                    .json(&json!({"name": format!("crash-w{w}-{n}"), "value": value, "scope_type": "global"}))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                if r.status().as_u16() != 201 {
                    continue;
                }
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                let id = v["id"].as_str().unwrap().to_owned();
                let mut l = ledger.lock().unwrap();
                let k = l.entry(id.clone()).or_default();
                k.sent.insert(value.clone());
                k.acked = Some((1, value));
                mine.push(id);
            }
            // Update (2 in 8).
            2 | 3 => {
                let Some(id) = mine.last().cloned() else {
                    continue;
                };
                let value = format!("w{w}-update-{n}");
                ledger
                    .lock()
                    .unwrap()
                    .entry(id.clone())
                    .or_default()
                    .sent
                    .insert(value.clone());
                let r = http
                    .put(format!("{base}/secrets/{id}"))
                    .json(&json!({"value": value}))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                if r.status().as_u16() != 200 {
                    continue;
                }
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                let version = v["version"].as_i64().unwrap();
                ledger.lock().unwrap().get_mut(&id).unwrap().acked = Some((version, value));
            }
            // Delete (1 in 8), of the oldest of its secrets.
            _ => {
                if mine.len() < 3 {
                    continue;
                }
                let id = mine.remove(0);
                ledger.lock().unwrap().get_mut(&id).unwrap().delete_sent = true;
                let r = http.delete(format!("{base}/secrets/{id}")).send().await;
                if matches!(r, Ok(r) if r.status().as_u16() == 204) {
                    ledger.lock().unwrap().get_mut(&id).unwrap().deleted = true;
                }
            }
        }
    }
}

/// The reasons of the successful decrypt rows.
fn audited_decrypt_reasons(
    backend: Backend,
    dir: &TempDir,
    pg_url: Option<&str>,
) -> BTreeSet<String> {
    let sql = "SELECT reason FROM secret_access_log \
               WHERE action = 'decrypt' AND outcome = 'success' AND reason IS NOT NULL";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
            let mut st = conn.prepare(sql).unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        Backend::Postgres => {
            let url = pg_url.unwrap().to_owned();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    c.query(sql, &[])
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.get(0))
                        .collect()
                })
            })
            .join()
            .unwrap()
        }
    }
}

fn audited_ids(
    backend: Backend,
    dir: &TempDir,
    pg_url: Option<&str>,
) -> BTreeSet<(String, String)> {
    let sql = "SELECT action, secret_id FROM secret_access_log WHERE outcome = 'success' AND secret_id IS NOT NULL";
    match backend {
        Backend::Sqlite => {
            let conn = rusqlite::Connection::open(dir.path().join("rcrt.db")).unwrap();
            let mut st = conn.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        Backend::Postgres => {
            let url = pg_url.unwrap().to_owned();
            let sql = sql.replace("secret_id FROM", "secret_id::text FROM");
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    c.query(&sql, &[])
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect()
                })
            })
            .join()
            .unwrap()
        }
    }
}

async fn kill_under_load(backend: Backend) {
    let dir = TempDir::new();
    let pg = backend.database().await;
    let kek = common::gen_kek();
    let cfg = server_config(pg.as_ref(), &dir, &[("LOCAL_KEK_BASE64", &kek)]);
    let mut server = ServerProcess::start(&cfg);
    let ledger: Ledger = Arc::default();
    let revealed: Revealed = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(worker(
                server.base_url(),
                w,
                stop.clone(),
                ledger.clone(),
                revealed.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill(); // SIGKILL, mid-load
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let ledger = ledger.lock().unwrap().clone();
    let acked_writes = ledger.values().filter(|k| k.acked.is_some()).count();
    assert!(
        acked_writes > 50,
        "too little load before the kill: {acked_writes}"
    );
    let revealed = revealed.lock().unwrap().clone();
    assert!(
        revealed.len() > 50,
        "too few decrypts before the kill: {}",
        revealed.len()
    );

    let server = ServerProcess::start(&cfg);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let audited = audited_ids(backend, &dir, pg.as_ref().map(|p| p.url()));
    let decrypts = audited_decrypt_reasons(backend, &dir, pg.as_ref().map(|p| p.url()));
    let mut problems: Vec<String> = revealed
        .difference(&decrypts)
        .map(|reason| format!("a value was returned for {reason:?} without its audit row"))
        .collect();
    for (id, k) in &ledger {
        let r = http
            .post(format!("{}/secrets/{id}/decrypt", server.base_url()))
            .json(&json!({"reason": "crash check"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if k.deleted {
            if status != 404 {
                problems.push(format!(
                    "{id}: acknowledged delete, but it answers {status}"
                ));
            }
            if !audited.contains(&("delete".into(), id.clone())) {
                problems.push(format!("{id}: acknowledged delete without its audit row"));
            }
            continue;
        }
        let Some((acked_version, acked_value)) = &k.acked else {
            continue;
        };
        if status == 404 && k.delete_sent {
            continue; // an unacknowledged delete that did commit
        }
        if status != 200 {
            problems.push(format!("{id}: acknowledged write, but it answers {status}"));
            continue;
        }
        let version = body["version"].as_i64().unwrap();
        let value = body["value"].as_str().unwrap().to_owned();
        if version < *acked_version {
            problems.push(format!(
                "{id}: version {version} < acknowledged {acked_version}"
            ));
        } else if version == *acked_version && &value != acked_value {
            problems.push(format!(
                "{id}: version {version} holds another value than acknowledged"
            ));
        }
        if !k.sent.contains(&value) {
            problems.push(format!("{id}: holds a value nobody sent"));
        }
        if !audited.contains(&("create".into(), id.clone())) {
            problems.push(format!("{id}: acknowledged create without its audit row"));
        }
    }
    eprintln!(
        "{backend:?}: {} secrets touched, {acked_writes} with acknowledged writes, {} decrypts \
         returned a value, {} deletes acknowledged",
        ledger.len(),
        revealed.len(),
        ledger.values().filter(|k| k.deleted).count()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_sqlite() {
    kill_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_postgres() {
    kill_under_load(Backend::Postgres).await;
}
