//! `rcrt audit verify | query | export`, run as the real binary against real stores (SQLite
//! file and PostgreSQL), the audit table tampered with directly as its owner.
//!
//! Each kind of tampering — a changed field, a deleted row, an inserted row, reordered rows, a
//! truncated tail, and a chain recomputed after a change — makes `rcrt audit verify` exit 1 and
//! name the row and the kind; an untouched store verifies (exit 0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use base64::Engine;
use rcrt_core::audit::checkpoint::{ensure_signing_key, CheckpointJob, CheckpointSettings};
use rcrt_core::{CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_keys::{parse_kek, LocalKeyring};
use rcrt_store::chain::{content_hash, link_hash, GENESIS};
use rcrt_store::{AuditRecord, Store};
use rcrt_testkit::{TempDir, TempPgDb};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, Principal, Scope, SecretId, TenantId};
use serde_json::Value;
use zeroize::Zeroizing;

mod common;
use common::{new_kek, rcrt_cmd, run_with_stdin, runtime, show, text, Kek};

/// A store to tamper with: SQLite file or PostgreSQL database (owner connection).
enum Db {
    /// The directory is kept until the test ends.
    Sqlite {
        _dir: TempDir,
        path: PathBuf,
    },
    Pg(TempPgDb),
}

impl Db {
    fn sqlite() -> Self {
        let dir = TempDir::new();
        let path = dir.path().join("s.db");
        Self::Sqlite { _dir: dir, path }
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite { path: p, .. } => format!("sqlite:{}", p.display()),
            Self::Pg(db) => db.url().to_owned(),
        }
    }

    /// Runs `sql` (several statements) as the owner.
    fn exec(&self, rt: &tokio::runtime::Runtime, sql: &str) {
        match self {
            Self::Sqlite { path: p, .. } => rusqlite::Connection::open(p)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Self::Pg(db) => rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(conn);
                client.batch_execute(sql).await.unwrap();
                drop(client);
                let _ = task.await;
            }),
        }
    }

    /// A byte string literal in this database's SQL.
    fn bytes(&self, b: &[u8]) -> String {
        match self {
            Self::Sqlite { .. } => format!("X'{}'", hex::encode(b)),
            Self::Pg(_) => format!("decode('{}', 'hex')", hex::encode(b)),
        }
    }
}

/// A store with audit rows, a signing key and a checkpoint over all of them.
struct Fixture {
    rt: tokio::runtime::Runtime,
    db: Db,
    store: Arc<dyn Store>,
    kek: Kek,
    svc: Service,
    ids: Vec<SecretId>,
}

fn ctx() -> RequestContext {
    RequestContext {
        principal: Principal::anonymous(),
        request_id: "seed".into(),
    }
}

impl Fixture {
    fn new(db: Db) -> Self {
        let rt = runtime();
        let store = rt.block_on(rcrt_store::open(&db.url())).unwrap();
        let kek = new_kek();
        let keys = Arc::new(LocalKeyring::new(
            parse_kek(&kek.text, "test").unwrap(),
            vec![],
        ));
        let svc = Service::new(
            store.clone(),
            keys,
            Arc::new(SystemClock),
            Limits::default(),
        );
        let mut f = Self {
            rt,
            db,
            store,
            kek,
            svc,
            ids: Vec::new(),
        };
        f.rows(8);
        f.checkpoint();
        f
    }

    /// `n` more audited operations (secret creations).
    fn rows(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.ids.len();
            let meta = self
                .rt
                .block_on(self.svc.create(
                    &ctx(),
                    CreateSecret {
                        name: format!("S{i}").parse().unwrap(),
                        scope: Scope::global(),
                        value: Zeroizing::new(format!("v{i}")),
                        attrs: Default::default(),
                    },
                ))
                .unwrap();
            self.ids.push(meta.id);
        }
    }

    /// One signed checkpoint over the current heads (as the server's job writes it).
    fn checkpoint(&self) {
        self.rt.block_on(async {
            let signer = ensure_signing_key(&*self.store, self.svc.keys(), &SystemClock)
                .await
                .unwrap();
            let job = CheckpointJob::new(
                self.store.clone(),
                Arc::new(SystemClock),
                signer,
                CheckpointSettings::every(std::time::Duration::from_secs(30)),
            );
            assert!(job.tick().await.unwrap().is_some());
        });
    }

    /// The chained rows of the lane with the most rows, in seq order.
    fn lane(&self) -> Vec<AuditRecord> {
        let rows = self
            .rt
            .block_on(self.store.audit_chain_page(None, 100_000))
            .unwrap();
        let mut lanes: std::collections::BTreeMap<i32, Vec<AuditRecord>> = Default::default();
        for r in rows {
            lanes
                .entry(r.chain.as_ref().unwrap().lane)
                .or_default()
                .push(r);
        }
        let lane = lanes.into_values().max_by_key(Vec::len).unwrap();
        assert!(lane.len() >= 5, "{lane:#?}");
        lane
    }

    /// `rcrt audit verify` with the KEK in the environment (plus `args`).
    fn verify(&self, args: &[&str]) -> Output {
        let mut cmd = rcrt_cmd();
        cmd.args(["audit", "verify", "--db-url", &self.db.url()])
            .args(args)
            .env("LOCAL_KEK_BASE64", &self.kek.text);
        let out = run_with_stdin(&mut cmd, "");
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains(&self.kek.text), "{}", show(&out));
        out
    }

    /// Verify fails, naming `row` first with `kind`; returns everything it printed.
    fn broken(&self, row: i64, kind: &str) -> String {
        let out = self.verify(&[]);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = text(&out.stderr);
        let first = err
            .split("first broken: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no first broken row named:\n{}", show(&out)));
        assert!(
            first.starts_with(&format!("row {row} (lane "))
                || first.contains(&format!("row {row}")),
            "expected row {row} first:\n{}",
            show(&out)
        );
        assert!(
            first.contains(&format!(": {kind}")),
            "expected {kind}:\n{}",
            show(&out)
        );
        assert!(text(&out.stdout).contains("FAILED"), "{}", show(&out));
        format!("{}{}", text(&out.stdout), err)
    }

    fn id_of(r: &AuditRecord) -> i64 {
        r.id
    }
}

fn pg() -> Db {
    let rt = runtime();
    Db::Pg(rt.block_on(TempPgDb::create()))
}

// --- an untouched store -----------------------------------------------------------------------

fn intact(db: Db) {
    let mut f = Fixture::new(db);
    f.rows(2); // after the checkpoint: protected by the chain only
    let out = f.verify(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("OK: the audit chain and every checkpoint verify"),
        "{stdout}"
    );
    assert!(stdout.contains("checkpoints: 1 (newest: "), "{stdout}");
    assert!(
        stdout.contains("2 rows after it are protected by the chain only"),
        "{stdout}"
    );

    // The public key instead of the KEK.
    let keys = f.rt.block_on(f.store.audit_signing_keys()).unwrap();
    assert_eq!(keys.len(), 1);
    let public = base64::engine::general_purpose::STANDARD.encode(&keys[0].public_key);
    let mut cmd = rcrt_cmd();
    cmd.args([
        "audit",
        "verify",
        "--db-url",
        &f.db.url(),
        "--public-key",
        &public,
    ]);
    let out = run_with_stdin(&mut cmd, "");
    assert!(out.status.success(), "{}", show(&out));

    // Neither: refused with a clear message.
    let mut cmd = rcrt_cmd();
    cmd.args(["audit", "verify", "--db-url", &f.db.url()]);
    let out = run_with_stdin(&mut cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("--public-key"), "{}", show(&out));

    // Another KEK cannot authenticate the signing key.
    let other = new_kek();
    let mut cmd = rcrt_cmd();
    cmd.args(["audit", "verify", "--db-url", &f.db.url()])
        .env("LOCAL_KEK_BASE64", &other.text);
    let out = run_with_stdin(&mut cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("untrusted key"),
        "{}",
        show(&out)
    );
}

#[test]
fn an_untouched_store_verifies_sqlite() {
    intact(Db::sqlite());
}

#[test]
fn an_untouched_store_verifies_postgres() {
    intact(pg());
}

// --- a changed field --------------------------------------------------------------------------

fn changed_field(db: Db) {
    let f = Fixture::new(db);
    let lane = f.lane();
    let victim = Fixture::id_of(&lane[2]);
    f.db.exec(
        &f.rt,
        &format!("UPDATE secret_access_log SET user_id = 'mallory' WHERE id = {victim}"),
    );
    f.broken(victim, "changed");
}

#[test]
fn a_changed_field_is_named_sqlite() {
    changed_field(Db::sqlite());
}

#[test]
fn a_changed_field_is_named_postgres() {
    changed_field(pg());
}

// --- a deleted row ----------------------------------------------------------------------------

fn deleted_row(db: Db) {
    let f = Fixture::new(db);
    let lane = f.lane();
    let (before, victim, after) = (lane[1].id, lane[2].id, lane[3].id);
    f.db.exec(
        &f.rt,
        &format!("DELETE FROM secret_access_log WHERE id = {victim}"),
    );
    let all = f.broken(after, "missing");
    assert!(
        all.contains(&format!("between row {before} and row {after}")),
        "{all}"
    );
}

#[test]
fn a_deleted_row_is_named_sqlite() {
    deleted_row(Db::sqlite());
}

#[test]
fn a_deleted_row_is_named_postgres() {
    deleted_row(pg());
}

// --- an inserted row --------------------------------------------------------------------------

fn inserted_row(db: Db) {
    let f = Fixture::new(db);
    let lane = f.lane();
    let model = lane[1].id;
    f.db.exec(
        &f.rt,
        &format!(
            "INSERT INTO secret_access_log
               (timestamp, action, secret_id, token_id, tenant, user_id, reason, outcome, request_id)
             SELECT timestamp, 'decrypt', secret_id, token_id, tenant, 'mallory', 'alibi', outcome, request_id
             FROM secret_access_log WHERE id = {model}"
        ),
    );
    let forged =
        f.rt.block_on(f.store.list_audit(None, 1))
            .unwrap()
            .remove(0);
    assert_eq!(forged.user_id, "mallory");
    f.broken(forged.id, "inserted");
}

#[test]
fn an_inserted_row_is_named_sqlite() {
    inserted_row(Db::sqlite());
}

#[test]
fn an_inserted_row_is_named_postgres() {
    inserted_row(pg());
}

// --- reordered rows ---------------------------------------------------------------------------

fn reordered_rows(db: Db) {
    let f = Fixture::new(db);
    let lane = f.lane();
    let (a, b) = (lane[2].id, lane[3].id);
    f.db.exec(
        &f.rt,
        &format!(
            "UPDATE secret_access_log SET id = -1 WHERE id = {a};
             UPDATE secret_access_log SET id = {a} WHERE id = {b};
             UPDATE secret_access_log SET id = {b} WHERE id = -1;"
        ),
    );
    f.broken(a, "reordered");
}

#[test]
fn reordered_rows_are_named_sqlite() {
    reordered_rows(Db::sqlite());
}

#[test]
fn reordered_rows_are_named_postgres() {
    reordered_rows(pg());
}

// --- a truncated tail -------------------------------------------------------------------------

fn truncated_tail(db: Db) {
    let f = Fixture::new(db);
    let lane = f.lane();
    let n = lane.len();
    let kept = &lane[n - 3];
    let gone: Vec<String> = lane[n - 2..].iter().map(|r| r.id.to_string()).collect();
    f.db.exec(
        &f.rt,
        &format!(
            "DELETE FROM secret_access_log WHERE id IN ({})",
            gone.join(",")
        ),
    );
    // The head table still names the last row.
    let all = f.broken(kept.id, "missing");
    assert!(
        all.contains(&format!("the tail after row {}", kept.id)),
        "{all}"
    );

    // Rewinding the head table too does not hide it: the signed checkpoint names the rows.
    let link = kept.chain.as_ref().unwrap();
    f.db.exec(
        &f.rt,
        &format!(
            "UPDATE audit_chain_heads SET seq = {}, hash = {} WHERE lane = {}",
            link.seq,
            f.db.bytes(&link.hash),
            link.lane
        ),
    );
    let all = f.broken(kept.id, "missing");
    assert!(
        all.contains(&format!("the tail after row {}", kept.id)),
        "{all}"
    );
}

#[test]
fn a_truncated_tail_is_named_sqlite() {
    truncated_tail(Db::sqlite());
}

#[test]
fn a_truncated_tail_is_named_postgres() {
    truncated_tail(pg());
}

// --- a chain recomputed after a change ------------------------------------------------------

fn recomputed_chain(db: Db) {
    let f = Fixture::new(db);
    let lane = f.lane();
    let victim = lane[2].id;
    // Change a row, then recompute every link after it and the head, as an attacker with
    // write access and the (public) chain format would: the chain alone is consistent again.
    let mut rows = lane.clone();
    rows[2].user_id = "mallory".into();
    let mut prev = GENESIS;
    let mut sql =
        format!("UPDATE secret_access_log SET user_id = 'mallory' WHERE id = {victim};\n");
    let (mut lane_no, mut seq) = (0, 0);
    for r in &rows {
        let link = r.chain.as_ref().unwrap();
        let hash = link_hash(&prev, &content_hash(&r.chain_fields()), link.lane, link.seq);
        sql.push_str(&format!(
            "UPDATE secret_access_log SET chain_hash = {} WHERE id = {};\n",
            f.db.bytes(&hash),
            r.id
        ));
        prev = hash;
        (lane_no, seq) = (link.lane, link.seq);
    }
    sql.push_str(&format!(
        "UPDATE audit_chain_heads SET seq = {seq}, hash = {} WHERE lane = {lane_no};",
        f.db.bytes(&prev)
    ));
    f.db.exec(&f.rt, &sql);
    let all = f.broken(lane.last().unwrap().id, "checkpoint mismatch");
    assert!(
        !all.contains(": changed:"),
        "the links are consistent: {all}"
    );
}

#[test]
fn a_recomputed_chain_is_caught_by_the_checkpoint_sqlite() {
    recomputed_chain(Db::sqlite());
}

#[test]
fn a_recomputed_chain_is_caught_by_the_checkpoint_postgres() {
    recomputed_chain(pg());
}

// --- query and export -------------------------------------------------------------------------

fn rcrt_ok(args: &[&str]) -> String {
    let mut cmd = rcrt_cmd();
    cmd.args(args);
    let out = run_with_stdin(&mut cmd, "");
    assert!(out.status.success(), "{}", show(&out));
    text(&out.stdout)
}

fn query_and_export(db: Db) {
    let mut f = Fixture::new(db);
    let url = f.db.url();
    // A decrypt with a reason, and one row 40 days old (outside the guide's 30-day window).
    let secret = f.ids[3];
    f.rt.block_on(
        f.svc
            .decrypt(&ctx(), secret, Some("incident 7, with \"quotes\", commas")),
    )
    .unwrap();
    f.rt.block_on(f.store.append_audit(AuditEntry {
        timestamp: time::OffsetDateTime::now_utc() - time::Duration::days(40),
        action: AuditAction::Decrypt,
        secret_id: Some(secret),
        token_id: None,
        tenant: TenantId::new("acme"),
        user_id: "old-timer".into(),
        reason: Some("long ago".into()),
        outcome: AuditOutcome::Denied,
        request_id: "old".into(),
        version: None,
    }))
    .unwrap();
    f.rows(1);
    let all = f.rt.block_on(f.store.list_audit(None, 1000)).unwrap();
    let recent = all.iter().filter(|r| r.user_id != "old-timer").count();

    // JSON: newest first, every recent row, none older than 30 days.
    let json: Value = serde_json::from_str(&rcrt_ok(&[
        "audit", "query", "--since", "30d", "--format", "json", "--db-url", &url,
    ]))
    .unwrap();
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), recent, "{json:#}");
    let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(items.iter().all(|i| i["user_id"] != "old-timer"));
    let decrypt = items.iter().find(|i| i["action"] == "decrypt").unwrap();
    assert_eq!(decrypt["secret_id"], secret.to_string());
    assert_eq!(decrypt["reason"], "incident 7, with \"quotes\", commas");
    assert_eq!(decrypt["outcome"], "success");
    assert_eq!(decrypt["tenant"], "default");
    assert!(
        decrypt["chain_hash"].as_str().unwrap().len() == 64,
        "{decrypt:#}"
    );
    assert!(time::OffsetDateTime::parse(
        decrypt["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());

    // Filters: one secret; an action; a tenant (and no --since: the old row is found).
    let json: Value = serde_json::from_str(&rcrt_ok(&[
        "audit",
        "query",
        "--since",
        "30d",
        "--secret",
        &secret.to_string(),
        "--format",
        "json",
        "--db-url",
        &url,
    ]))
    .unwrap();
    let actions: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["decrypt", "create"], "{json:#}");
    let json: Value = serde_json::from_str(&rcrt_ok(&[
        "audit",
        "query",
        "--tenant",
        "acme",
        "--outcome",
        "denied",
        "--format",
        "json",
        "--db-url",
        &url,
    ]))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(json[0]["user_id"], "old-timer");

    // CSV: a header and one record per row; the reason quoted as RFC 4180 says.
    let csv = rcrt_ok(&[
        "audit", "query", "--since", "30d", "--format", "csv", "--db-url", &url,
    ]);
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "id,timestamp,action,outcome,tenant,user_id,secret_id,token_id,request_id,version,reason"
    );
    assert_eq!(lines.len(), recent + 1, "{csv}");
    assert!(
        csv.contains(",\"incident 7, with \"\"quotes\"\", commas\"\r\n"),
        "{csv}"
    );

    // Table: a header and a line per row.
    let table = rcrt_ok(&[
        "audit", "query", "--since", "30d", "--limit", "3", "--db-url", &url,
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("id ") && lines[0].contains("action"),
        "{table}"
    );
    assert!(lines[1].starts_with(&ids[0].to_string()), "{table}");

    // Bad input: exit 1, said plainly.
    let mut cmd = rcrt_cmd();
    cmd.args([
        "audit",
        "query",
        "--since",
        "last tuesday",
        "--db-url",
        &url,
    ]);
    let out = run_with_stdin(&mut cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("neither a duration"),
        "{}",
        show(&out)
    );

    // Export: JSON lines, oldest first, every row (the old one too), chain fields included.
    let dir = TempDir::new();
    let file = dir.path().join("audit.jsonl");
    let mut cmd = rcrt_cmd();
    cmd.args([
        "audit",
        "export",
        "--db-url",
        &url,
        "--out",
        file.to_str().unwrap(),
    ]);
    let out = run_with_stdin(&mut cmd, "");
    assert!(out.status.success(), "{}", show(&out));
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), all.len());
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(lines.iter().any(|l| l["user_id"] == "old-timer"));
    for l in &lines {
        assert!(l["chain_lane"].is_i64() && l["chain_seq"].is_i64(), "{l}");
        assert_eq!(l["chain_hash"].as_str().unwrap().len(), 64, "{l}");
    }
    // Resuming after an id, to stdout.
    let resumed = rcrt_ok(&[
        "audit",
        "export",
        "--db-url",
        &url,
        "--after-id",
        &ids[2].to_string(),
    ]);
    let resumed: Vec<i64> = resumed
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(resumed, ids[3..]);
}

#[test]
fn query_and_export_sqlite() {
    query_and_export(Db::sqlite());
}

#[test]
fn query_and_export_postgres() {
    query_and_export(pg());
}

// --- a real server writes signed checkpoints ----------------------------------------------------

/// The server makes its signing key at start-up (logging its public key), writes signed
/// checkpoints every AUDIT_CHECKPOINT_INTERVAL (logging each with its heads digest), and keeps the
/// same key across restarts; `rcrt audit verify` then passes and prints the digest the log shows.
fn server_checkpoints(db: Db) {
    let rt = runtime();
    let kek = new_kek();
    let dir = TempDir::new();
    let url = db.url();
    let cfg = common::server_config(
        dir.path(),
        &[
            ("LOCAL_KEK_BASE64", &kek.text),
            ("DB_URL", &url),
            ("AUDIT_CHECKPOINT_INTERVAL", "1s"),
            ("RUST_LOG", "info"),
        ],
    );
    let store = rt.block_on(rcrt_store::open(&url)).unwrap();
    let mut logs = String::new();
    for round in 0..2 {
        let mut server = rcrt_testkit::ServerProcess::start(&cfg);
        let api = common::Api::new(server.base_url());
        rt.block_on(async {
            for i in 0..3 {
                let id = api.create(&format!("R{round}S{i}"), "v").await;
                api.decrypt(&id).await;
            }
        });
        // Wait for a checkpoint that covers every row written so far.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let heads = rt.block_on(store.audit_heads()).unwrap();
            let cps = rt.block_on(store.audit_checkpoints()).unwrap();
            if cps.last().is_some_and(|c| c.heads == heads) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint of the current heads:\n{}",
                server.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server.kill();
        logs.push_str(&server.output());
    }
    let keys = rt.block_on(store.audit_signing_keys()).unwrap();
    assert_eq!(keys.len(), 1, "one key, kept across the restart");
    let public = base64::engine::general_purpose::STANDARD.encode(&keys[0].public_key);
    assert!(logs.contains("audit checkpoint signing key"), "{logs}");
    assert!(logs.contains(&public), "the public key is logged: {logs}");
    let created = rt.block_on(store.list_audit(None, 1000)).unwrap();
    assert_eq!(
        created
            .iter()
            .filter(|r| r.action == "audit_key_create")
            .count(),
        1
    );

    let mut cmd = rcrt_cmd();
    cmd.args(["audit", "verify", "--db-url", &url])
        .env("LOCAL_KEK_BASE64", &kek.text);
    let out = run_with_stdin(&mut cmd, "");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    let digest = stdout
        .split("heads digest ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        logs.contains(&format!("heads_digest={digest}")) || logs.contains(digest),
        "the newest checkpoint's digest {digest} is in the server log:\n{logs}"
    );
    assert!(stdout.contains("0 rows after it"), "{stdout}");
    drop(db);
}

#[test]
fn a_server_writes_verifiable_checkpoints_sqlite() {
    server_checkpoints(Db::sqlite());
}

#[test]
fn a_server_writes_verifiable_checkpoints_postgres() {
    server_checkpoints(pg());
}
