//! The offline jobs leave a summary row in the store's audit log, on SQLite and PostgreSQL:
//! `rcrt kek verify`, `rcrt kek rewrap` and `rcrt secrets reencrypt` each write one row naming
//! the OS user and host, the KEK ids, the number of versions and the outcome; a dry run writes
//! none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use rcrt_core::{CreateSecret, Limits, RequestContext, Service, SystemClock};
use rcrt_keys::{parse_kek, LocalKeyring};
use rcrt_store::{AuditRecord, Store};
use rcrt_testkit::{TempDir, TempPgDb};
use rcrt_types::{Principal, Scope};
use zeroize::Zeroizing;

mod common;
use common::{new_kek, rcrt_cmd, run_with_stdin, runtime, show, Kek};

async fn seed(store: Arc<dyn Store>, kek: &Kek, n: usize) {
    let svc = Service::new(
        store,
        Arc::new(LocalKeyring::new(
            parse_kek(&kek.text, "test").unwrap(),
            vec![],
        )),
        Arc::new(SystemClock),
        Limits::default(),
    );
    let ctx = RequestContext {
        principal: Principal::anonymous(),
        request_id: "seed".into(),
    };
    for i in 0..n {
        svc.create(
            &ctx,
            CreateSecret {
                name: format!("S{i}").parse().unwrap(),
                scope: Scope::global(),
                value: Zeroizing::new(format!("v{i}")),
                attrs: Default::default(),
            },
        )
        .await
        .unwrap();
    }
}

/// Runs `rcrt ARGS` with `new` (and `old`) in `LOCAL_KEK_BASE64*`; returns whether it succeeded.
fn job(db_url: &str, args: &[&str], new: &Kek, old: Option<&Kek>) -> bool {
    let mut cmd = rcrt_cmd();
    cmd.args(args)
        .env("LOCAL_KEK_BASE64", &new.text)
        .env("DB_URL", db_url);
    if let Some(old) = old {
        cmd.env("LOCAL_KEK_BASE64_OLD", &old.text);
    }
    let out = run_with_stdin(&mut cmd, "");
    let all = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert!(!all.contains(&new.text), "{}", show(&out));
    out.status.success()
}

/// The newest audit row (offline job rows have no secret id).
async fn newest(store: &Arc<dyn Store>) -> AuditRecord {
    store.list_audit(None, 1).await.unwrap().remove(0)
}

fn operator() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    format!("{user}@{host}")
}

fn offline_jobs_leave_summary_rows(db_url: &str) {
    let rt = runtime();
    let store = rt.block_on(rcrt_store::open(db_url)).unwrap();
    let (k1, k2, wrong) = (new_kek(), new_kek(), new_kek());
    rt.block_on(seed(store.clone(), &k1, 3));
    let count = || rt.block_on(store.list_audit(None, 1000)).unwrap().len();
    let seeded = count();

    // verify: every DEK unwrapped and every value opened.
    assert!(job(db_url, &["kek", "verify"], &k1, None));
    let row = rt.block_on(newest(&store));
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str(), row.secret_id),
        ("kek_verify", "success", None)
    );
    assert_eq!(row.user_id, operator());
    let reason = row.reason.unwrap();
    assert!(
        reason.contains(&format!("3 versions under {} (3)", k1.id)),
        "{reason}"
    );
    assert!(reason.contains("0 failed"), "{reason}");
    assert!(row.request_id.starts_with("offline-"), "{}", row.request_id);

    // A verify that fails is recorded as a failure.
    assert!(!job(db_url, &["kek", "verify"], &wrong, None));
    let row = rt.block_on(newest(&store));
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("kek_verify", "failure")
    );
    assert!(row.reason.unwrap().contains("3 failed"));

    // A dry run touches nothing and writes nothing.
    let before = count();
    assert!(job(db_url, &["kek", "rewrap", "--dry-run"], &k2, Some(&k1)));
    assert_eq!(count(), before);

    // rewrap to K2.
    assert!(job(db_url, &["kek", "rewrap"], &k2, Some(&k1)));
    let row = rt.block_on(newest(&store));
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("kek_rewrap", "success")
    );
    let reason = row.reason.unwrap();
    assert!(
        reason.contains(&format!("to KEK {} from {} (3)", k2.id, k1.id)),
        "{reason}"
    );
    assert!(
        reason.contains("3 re-wrapped, 0 failed, 0 remain"),
        "{reason}"
    );

    // reencrypt under K1 again.
    assert!(job(
        db_url,
        &["secrets", "reencrypt", "--yes"],
        &k1,
        Some(&k2)
    ));
    let row = rt.block_on(newest(&store));
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("reencrypt", "success")
    );
    let reason = row.reason.unwrap();
    assert!(
        reason.contains(&format!("KEK {}, from {} (3)", k1.id, k2.id)),
        "{reason}"
    );
    assert!(reason.contains("3 re-encrypted, 0 failed"), "{reason}");
    assert_eq!(count(), seeded + 4);
}

#[test]
fn offline_jobs_leave_summary_rows_sqlite() {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.path().join("s.db").display());
    offline_jobs_leave_summary_rows(&url);
}

#[test]
fn offline_jobs_leave_summary_rows_postgres() {
    let rt = runtime();
    let pg = rt.block_on(TempPgDb::create());
    offline_jobs_leave_summary_rows(pg.url());
    drop(pg);
}
