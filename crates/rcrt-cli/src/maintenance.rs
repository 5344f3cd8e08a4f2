//! `rcrt kek rewrap | verify` and `rcrt secrets reencrypt`: offline jobs on a store.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rcrt_core::maintenance::{BatchHook, Census, Failure, Maintenance, Progress};
use rcrt_core::{CoreError, SystemClock};
use rcrt_crypto::KekId;
use rcrt_keys::KeyProvider;

use crate::input::{db_url, keyring};
use crate::{DbArgs, KekArgs};

/// Shows progress and keeps to `--max-rows-per-sec`.
struct Bar {
    pb: ProgressBar,
    started: Instant,
    max_rows_per_sec: u32,
}

#[async_trait::async_trait]
impl BatchHook for Bar {
    async fn after_batch(&self, total: Progress) -> Result<(), CoreError> {
        self.pb.set_position(total.scanned);
        if self.max_rows_per_sec > 0 {
            let due =
                Duration::from_secs_f64(total.scanned as f64 / f64::from(self.max_rows_per_sec));
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }
}

fn bar(total: u64, what: &str, db: &DbArgs) -> Bar {
    let pb = if std::io::stderr().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{pos}}/{{len}} versions ({{per_sec}}, eta {{eta}})"
    )) {
        pb.set_style(style);
    }
    Bar {
        pb,
        started: Instant::now(),
        max_rows_per_sec: db.max_rows_per_sec,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

async fn open(keks: &KekArgs, db: &DbArgs) -> Result<(Maintenance, KekId), String> {
    let ring = keyring(keks)?;
    let current = ring.current_kek_id().clone();
    let store = rcrt_store::open(&db_url(db)?)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        Maintenance::new(store, Arc::new(ring), Arc::new(SystemClock)),
        current,
    ))
}

fn report_failures(failures: &[Failure]) {
    for f in failures {
        eprintln!(
            "  failed: secret {} version {} (KEK id {})",
            f.secret_id, f.version, f.kek_id
        );
    }
}

pub(crate) fn rewrap(keks: &KekArgs, db: &DbArgs, dry_run: bool) -> Result<(), String> {
    runtime()?.block_on(async {
        let (job, current) = open(keks, db).await?;
        let remaining = job.remaining().await.map_err(|e| e.to_string())?;
        println!("{remaining} versions are not under the new KEK {}", current);
        if dry_run {
            println!("dry run: nothing written");
            return Ok(());
        }
        let bar = bar(remaining, "re-wrapping", db);
        let (progress, failures) = job
            .rewrap(db.batch_size, &bar)
            .await
            .map_err(|e| e.to_string())?;
        bar.pb.finish_and_clear();
        println!(
            "re-wrapped {} versions; {} failed; {} remain",
            progress.changed,
            progress.failed,
            job.remaining().await.map_err(|e| e.to_string())?
        );
        report_failures(&failures);
        if failures.is_empty() {
            Ok(())
        } else {
            Err("some versions could not be unwrapped with the given KEKs".into())
        }
    })
}

pub(crate) fn reencrypt(keks: &KekArgs, db: &DbArgs, yes: bool) -> Result<(), String> {
    crate::input::confirm(
        yes,
        "Re-encrypt every secret value under fresh DEKs and the new KEK?",
        "re-encryption rewrites every secret",
    )?;
    runtime()?.block_on(async {
        let (job, current) = open(keks, db).await?;
        let total = total_versions(&job).await?;
        let bar = bar(total, "re-encrypting", db);
        let (progress, failures) = job
            .reencrypt(db.batch_size, &bar)
            .await
            .map_err(|e| e.to_string())?;
        bar.pb.finish_and_clear();
        println!(
            "re-encrypted {} versions under fresh DEKs and KEK {}; {} failed",
            progress.changed, current, progress.failed
        );
        report_failures(&failures);
        if failures.is_empty() {
            Ok(())
        } else {
            Err("some versions could not be re-encrypted; run again after fixing the KEKs".into())
        }
    })
}

/// Every stored version, for a progress bar's length.
async fn total_versions(job: &Maintenance) -> Result<u64, String> {
    Ok(job
        .store()
        .kek_usage()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|u| u.versions.max(0) as u64)
        .sum())
}

fn print_census(census: &Census) {
    println!("{:<18} {:>10} {:>10}", "KEK id", "versions", "failures");
    for (kek, n) in &census.versions {
        let failed = census.failures.get(kek).copied().unwrap_or(0);
        println!("{kek:<18} {n:>10} {failed:>10}");
    }
}

pub(crate) fn verify(keks: &KekArgs, db: &DbArgs) -> Result<(), String> {
    runtime()?.block_on(async {
        let (job, _) = open(keks, db).await?;
        let total = total_versions(&job).await?;
        let bar = bar(total, "verifying", db);
        let census = job
            .verify(db.batch_size, &bar)
            .await
            .map_err(|e| e.to_string())?;
        bar.pb.finish_and_clear();
        print_census(&census);
        report_failures(&census.examples);
        if census.is_clean() {
            println!("OK: every version unwraps and decrypts with the given KEKs");
            Ok(())
        } else {
            Err("some versions do not decrypt with the given KEKs".into())
        }
    })
}
