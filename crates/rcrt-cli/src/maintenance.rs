//! `rcrt kek rewrap | verify` and `rcrt secrets reencrypt`: offline jobs on a store.
//!
//! Each job that runs (a dry run does not) leaves one summary row in the store's audit log:
//! who ran it (the OS user and host), which KEK ids, how many versions, and the outcome.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rcrt_core::maintenance::{BatchHook, Census, Failure, Maintenance, Progress};
use rcrt_core::{CoreError, SystemClock};
use rcrt_crypto::KekId;
use rcrt_keys::KeyProvider;
use rcrt_types::AuditAction;

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
    let ring = keyring(keks).await?;
    let current = ring.current_kek_id().clone();
    let store = rcrt_store::open(&db_url(db)?)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        Maintenance::new(store, Arc::new(ring), Arc::new(SystemClock)),
        current,
    ))
}

/// Who runs this job, for its audit row: `user@host`, from the OS (the real uid's account name
/// and the host name), not from anything the environment could claim.
fn operator() -> String {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid-{uid}"), |u| u.name);
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{user}@{host}")
}

/// `id (n versions), ...` for the KEK ids of a store or a census.
fn kek_list<'a>(usage: impl Iterator<Item = (&'a str, u64)>) -> String {
    let list: Vec<String> = usage.map(|(id, n)| format!("{id} ({n})")).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// KEK ids and version counts of the store, except `except`.
async fn usage_text(job: &Maintenance, except: Option<&KekId>) -> Result<String, String> {
    let usage = job.store().kek_usage().await.map_err(|e| e.to_string())?;
    // One census row per (KEK, recovery KEK): summed per KEK.
    let per_kek = rcrt_store::KekUsage::versions_per_kek(&usage);
    Ok(kek_list(
        per_kek
            .iter()
            .filter(|(id, _)| except.is_none_or(|k| k.as_str() != id.as_str()))
            .map(|(id, n)| (id.as_str(), (*n).max(0) as u64)),
    ))
}

/// Writes the job's summary row after `outcome`; the job fails if the row cannot be written.
async fn audited(
    job: &Maintenance,
    action: AuditAction,
    outcome: Result<String, (String, String)>,
) -> Result<(), String> {
    let (summary, result) = match outcome {
        Ok(summary) => (summary, Ok(())),
        Err((summary, error)) => (summary, Err(error)),
    };
    if let Err(e) = job
        .record(action, &operator(), summary, result.is_ok())
        .await
    {
        let e = format!("could not write the job's audit row: {e}");
        return Err(match result {
            Ok(()) => e,
            Err(first) => format!("{first}; {e}"),
        });
    }
    result
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
        let from = usage_text(&job, Some(&current)).await?;
        let head = format!("rcrt kek rewrap to KEK {current} from {from}");
        let bar = bar(remaining, "re-wrapping", db);
        let outcome = match job.rewrap(db.batch_size, &bar).await {
            Err(e) => Err((format!("{head}: stopped early"), e.to_string())),
            Ok((progress, failures)) => {
                bar.pb.finish_and_clear();
                let left = job
                    .remaining()
                    .await
                    .map_or_else(|_| "unknown".to_owned(), |n| n.to_string());
                println!(
                    "re-wrapped {} versions; {} failed; {left} remain",
                    progress.changed, progress.failed,
                );
                report_failures(&failures);
                let summary = format!(
                    "{head}: {} re-wrapped, {} failed, {left} remain",
                    progress.changed, progress.failed
                );
                if failures.is_empty() {
                    Ok(summary)
                } else {
                    Err((
                        summary,
                        "some versions could not be unwrapped with the given KEKs".into(),
                    ))
                }
            }
        };
        bar.pb.finish_and_clear();
        audited(&job, AuditAction::KekRewrap, outcome).await
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
        let head = format!(
            "rcrt secrets reencrypt under fresh DEKs and KEK {current}, from {}",
            usage_text(&job, None).await?
        );
        let bar = bar(total, "re-encrypting", db);
        let outcome = match job.reencrypt(db.batch_size, &bar).await {
            Err(e) => Err((format!("{head}: stopped early"), e.to_string())),
            Ok((progress, failures)) => {
                bar.pb.finish_and_clear();
                println!(
                    "re-encrypted {} versions under fresh DEKs and KEK {}; {} failed",
                    progress.changed, current, progress.failed
                );
                report_failures(&failures);
                let summary = format!(
                    "{head}: {} re-encrypted, {} failed",
                    progress.changed, progress.failed
                );
                if failures.is_empty() {
                    Ok(summary)
                } else {
                    Err((
                        summary,
                        "some versions could not be re-encrypted; run again after fixing the KEKs"
                            .into(),
                    ))
                }
            }
        };
        bar.pb.finish_and_clear();
        audited(&job, AuditAction::Reencrypt, outcome).await
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
        let outcome = match job.verify(db.batch_size, &bar).await {
            Err(e) => Err(("rcrt kek verify: stopped early".to_owned(), e.to_string())),
            Ok(census) => {
                bar.pb.finish_and_clear();
                print_census(&census);
                report_failures(&census.examples);
                let failed: u64 = census.failures.values().sum();
                let summary = format!(
                    "rcrt kek verify: {} versions under {}; {failed} failed",
                    census.versions.values().sum::<u64>(),
                    kek_list(census.versions.iter().map(|(k, n)| (k.as_str(), *n))),
                );
                if census.is_clean() {
                    println!("OK: every version unwraps and decrypts with the given KEKs");
                    Ok(summary)
                } else {
                    Err((
                        summary,
                        "some versions do not decrypt with the given KEKs".into(),
                    ))
                }
            }
        };
        bar.pb.finish_and_clear();
        audited(&job, AuditAction::KekVerify, outcome).await
    })
}
