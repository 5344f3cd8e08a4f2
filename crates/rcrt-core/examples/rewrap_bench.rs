//! KEK re-wrap benchmark: seeds N real secret versions under KEK K1 straight into the store's
//! tables (COPY on PostgreSQL, one transaction on SQLite), then runs `Maintenance::rewrap` to K2,
//! the same code as the server's background job and `rcrt kek rewrap`, and reports rows/s.
//!
//! ```text
//! cargo run --release -p rcrt-core --example rewrap_bench -- \
//!     --db-url postgres://postgres@127.0.0.1:5432/rcrt_rwb_x --rows 1000000 --batch-size 1000 \
//!     --k1 "$(openssl rand -base64 32)" --k2 "$(openssl rand -base64 32)" [--verify-sample 1000]
//! ```
//!
//! Options: `--value-bytes 64` (plaintext size), `--seed-only` (seed and stop: for a server to
//! re-wrap), `--ids-out FILE` with `--ids-count 1000` (ids spread over the table, for wrk),
//! `--breakdown-batches 20` (before the run, time the scan and the crypto of that many batches,
//! read-only, to split the cost). Without `--k1`/`--k2` the keys are fresh random ones.
//! Seeding happens only when the store has no secret versions. Output: `key=value` lines
//! starting with `RESULT`, `SEED`, `BREAKDOWN`, `REWRAP`, `BATCHES`, `VERIFY`.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcrt_core::maintenance::{BatchHook, Maintenance, Progress};
use rcrt_core::{CoreError, SystemClock};
use rcrt_crypto::{Kek, SealedValue, ValueContext, WrapContext, WrappedDek};
use rcrt_keys::{KeyProvider, LocalKeyring};
use rcrt_store::{Store, VersionFilter};
use rcrt_types::{SecretId, TenantId};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

type R<T> = Result<T, Box<dyn Error + Send + Sync>>;

const TENANT: &str = "default";
/// The SQLite store's timestamp text (see `rcrt-store/src/sqlite.rs`).
const TS_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

#[derive(Clone)]
struct Args {
    db_url: String,
    rows: u64,
    batch_size: u32,
    value_bytes: usize,
    k1: Option<String>,
    k2: Option<String>,
    verify_sample: u64,
    seed_only: bool,
    ids_out: Option<String>,
    ids_count: u64,
    breakdown_batches: u32,
}

fn parse_args() -> R<Args> {
    let mut a = Args {
        db_url: String::new(),
        rows: 1_000_000,
        batch_size: 1000,
        value_bytes: 64,
        k1: None,
        k2: None,
        verify_sample: 0,
        seed_only: false,
        ids_out: None,
        ids_count: 1000,
        breakdown_batches: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db-url" => a.db_url = val()?,
            "--rows" => a.rows = val()?.parse()?,
            "--batch-size" => a.batch_size = val()?.parse()?,
            "--value-bytes" => a.value_bytes = val()?.parse()?,
            "--k1" => a.k1 = Some(val()?),
            "--k2" => a.k2 = Some(val()?),
            "--verify-sample" => a.verify_sample = val()?.parse()?,
            "--ids-out" => a.ids_out = Some(val()?),
            "--ids-count" => a.ids_count = val()?.parse()?,
            "--breakdown-batches" => a.breakdown_batches = val()?.parse()?,
            "--seed-only" => a.seed_only = true,
            "-h" | "--help" => {
                println!("see the header of crates/rcrt-core/examples/rewrap_bench.rs");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.db_url.is_empty() {
        return Err("--db-url is required".into());
    }
    Ok(a)
}

fn kek(text: Option<&str>, name: &str) -> R<Kek> {
    match text {
        Some(t) => Ok(rcrt_keys::parse_kek(t, name)?),
        None => Ok(Kek::generate()?),
    }
}

/// The plaintext of row `n`: recognisable, exactly `len` bytes.
fn value_of(n: u64, len: usize) -> Vec<u8> {
    let mut v = format!("rwb-{n:012}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.truncate(len.max(1));
    v
}

/// One seeded row: its id and real envelope under K1.
struct SeedRow {
    id: Uuid,
    wrapped: Vec<u8>,
    sealed: Vec<u8>,
}

fn make_row(k1: &Kek, n: u64, value_bytes: usize) -> R<SeedRow> {
    let id = SecretId::new();
    let vctx = ValueContext {
        tenant: TENANT,
        secret_id: id.as_bytes(),
        version: 1,
    };
    let (dek, sealed) = rcrt_crypto::seal_value(&value_of(n, value_bytes), &vctx)?;
    let wctx = WrapContext {
        kek_id: k1.id(),
        secret_id: id.as_bytes(),
        version: 1,
    };
    let wrapped = k1.wrap(&dek, &wctx)?;
    Ok(SeedRow {
        id: id.as_uuid(),
        wrapped: wrapped.as_bytes().to_vec(),
        sealed: sealed.as_bytes().to_vec(),
    })
}

fn is_pg(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

/// Seeds PostgreSQL with binary COPY, in chunks of `CHUNK` rows (one transaction each).
async fn seed_pg(url: &str, k1: &Kek, a: &Args) -> R<Vec<Uuid>> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    const CHUNK: u64 = 100_000;
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("seed connection: {e}");
        }
    });
    // Foreign-key triggers off for the bulk load (every row is inserted with its secret).
    for sql in [
        "SET session_replication_role = replica",
        "SET synchronous_commit = off",
    ] {
        client.batch_execute(sql).await?;
    }
    let now = OffsetDateTime::now_utc();
    let mut ids = Vec::with_capacity(a.rows as usize);
    let mut n = 0u64;
    while n < a.rows {
        let end = (n + CHUNK).min(a.rows);
        let rows: Vec<SeedRow> = (n..end)
            .map(|i| make_row(k1, i, a.value_bytes))
            .collect::<R<_>>()?;
        let tx = client.transaction().await?;
        {
            let sink = tx
                .copy_in(
                    "COPY secrets (id, tenant, name, scope_type, scope_id, current_version, \
                     created_at, updated_at) FROM STDIN BINARY",
                )
                .await?;
            let types = [
                Type::UUID,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
            ];
            let mut w = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
            for (k, r) in rows.iter().enumerate() {
                let name = format!("s{}", n + k as u64);
                w.as_mut()
                    .write(&[&r.id, &TENANT, &name, &"global", &"", &1i64, &now, &now])
                    .await?;
            }
            w.finish().await?;
        }
        {
            let sink = tx
                .copy_in(
                    "COPY secret_versions (secret_id, version, kek_id, wrapped_dek, sealed_value, \
                     created_at, sealed_at, tenant) FROM STDIN BINARY",
                )
                .await?;
            let types = [
                Type::UUID,
                Type::INT8,
                Type::TEXT,
                Type::BYTEA,
                Type::BYTEA,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::TEXT,
            ];
            let mut w = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
            let kid = k1.id().as_str();
            for r in &rows {
                w.as_mut()
                    .write(&[
                        &r.id, &1i64, &kid, &r.wrapped, &r.sealed, &now, &now, &TENANT,
                    ])
                    .await?;
            }
            w.finish().await?;
        }
        tx.commit().await?;
        ids.extend(rows.iter().map(|r| r.id));
        n = end;
    }
    client
        .batch_execute("SET session_replication_role = origin")
        .await?;
    // A freshly loaded table is not what a running service has: vacuum (hint bits, visibility
    // map) and analyze, and checkpoint so the load's writes are not flushed during the run.
    let t = Instant::now();
    for sql in [
        "VACUUM ANALYZE secrets",
        "VACUUM ANALYZE secret_versions",
        "CHECKPOINT",
    ] {
        client.batch_execute(sql).await?;
    }
    println!(
        "SEED vacuum_analyze_checkpoint_s={:.1}",
        t.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Seeds SQLite in one transaction with two prepared single-row INSERTs (fast in-process).
fn seed_sqlite(path: &str, k1: &Kek, a: &Args) -> R<Vec<Uuid>> {
    let mut c = rusqlite::Connection::open(path)?;
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;")?;
    let now = OffsetDateTime::now_utc().format(TS_FORMAT)?;
    let kid = k1.id().as_str().to_owned();
    let mut ids = Vec::with_capacity(a.rows as usize);
    let tx = c.transaction()?;
    {
        let mut s = tx.prepare(
            "INSERT INTO secrets (id, tenant, name, scope_type, scope_id, current_version, \
             created_at, updated_at) VALUES (?1, ?2, ?3, 'global', '', 1, ?4, ?4)",
        )?;
        let mut v = tx.prepare(
            "INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_dek, sealed_value, \
             created_at, sealed_at) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?5)",
        )?;
        for n in 0..a.rows {
            let r = make_row(k1, n, a.value_bytes)?;
            let id = r.id.hyphenated().to_string();
            s.execute(rusqlite::params![id, TENANT, format!("s{n}"), now])?;
            v.execute(rusqlite::params![id, kid, r.wrapped, r.sealed, now])?;
            ids.push(r.id);
        }
    }
    tx.commit()?;
    c.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(ids)
}

async fn count_versions(store: &Arc<dyn Store>) -> R<i64> {
    Ok(store.kek_usage().await?.iter().map(|u| u.versions).sum())
}

/// Records each batch's wall time and prints progress every ~10%.
struct Timer {
    rows: u64,
    last: Mutex<(Instant, u64)>,
    batch_ms: Mutex<Vec<f64>>,
}

#[async_trait::async_trait]
impl BatchHook for Timer {
    async fn after_batch(&self, total: Progress) -> Result<(), CoreError> {
        if let (Ok(mut last), Ok(mut v)) = (self.last.lock(), self.batch_ms.lock()) {
            let now = Instant::now();
            v.push((now - last.0).as_secs_f64() * 1000.0);
            let step = (self.rows / 10).max(1);
            if total.scanned / step != last.1 / step {
                eprintln!(
                    "[rewrap_bench] {} / {} rows re-wrapped",
                    total.changed, self.rows
                );
            }
            *last = (now, total.scanned);
        }
        Ok(())
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// This process's CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the comm field: state is index 0, utime 11, stime 12.
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Read-only split of the cost: scan time and crypto time of `batches` batches.
async fn breakdown(m: &Maintenance, keys: &LocalKeyring, batch: u32, batches: u32) -> R<()> {
    let filter = VersionFilter::NotUnderKek(keys.current_kek_id().as_str().to_owned());
    let (mut scan, mut crypto, mut rows_n) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut after = None;
    for _ in 0..batches {
        let t = Instant::now();
        let rows = m
            .store()
            .scan_versions(&filter, after, batch, false)
            .await?;
        scan += t.elapsed();
        let Some(last) = rows.last() else { break };
        after = Some((last.secret_id, last.version));
        let t = Instant::now();
        let cur = keys.current_kek_id().clone();
        for r in &rows {
            let old = rcrt_crypto::KekId::from_stored(r.kek_id.clone());
            let id = r.secret_id.as_bytes();
            let dek = keys
                .unwrap(
                    &WrappedDek::from_stored(r.wrapped_dek.clone()),
                    &WrapContext {
                        kek_id: &old,
                        secret_id: id,
                        version: r.version,
                    },
                )
                .await?;
            let w = keys
                .wrap(
                    &dek,
                    &WrapContext {
                        kek_id: &cur,
                        secret_id: id,
                        version: r.version,
                    },
                )
                .await?;
            std::hint::black_box(w);
        }
        crypto += t.elapsed();
        rows_n += rows.len() as u64;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / rows_n.max(1) as f64;
    println!(
        "BREAKDOWN rows={rows_n} scan_us_per_row={:.2} crypto_us_per_row={:.2}",
        per(scan),
        per(crypto)
    );
    Ok(())
}

async fn verify(store: &Arc<dyn Store>, keys: &LocalKeyring, ids: &[Uuid], a: &Args) -> R<()> {
    let mut sample: Vec<SecretId> = Vec::new();
    if ids.is_empty() {
        let rows = store
            .scan_versions(&VersionFilter::All, None, a.verify_sample as u32, false)
            .await?;
        sample.extend(rows.iter().map(|r| r.secret_id));
    } else {
        // xorshift: a reproducible spread over the whole table.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..a.verify_sample {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sample.push(SecretId::from(ids[(x % ids.len() as u64) as usize]));
        }
    }
    let tenant = TenantId::new(TENANT);
    let (mut ok, mut wrong_kek, mut bad) = (0u64, 0u64, 0u64);
    for id in &sample {
        let Some((_, v)) = store.get_current(&tenant, *id).await? else {
            bad += 1;
            continue;
        };
        if v.kek_id != keys.current_kek_id().as_str() {
            wrong_kek += 1;
        }
        let kid = rcrt_crypto::KekId::from_stored(v.kek_id.clone());
        let wctx = WrapContext {
            kek_id: &kid,
            secret_id: id.as_bytes(),
            version: v.version,
        };
        let vctx = ValueContext {
            tenant: TENANT,
            secret_id: id.as_bytes(),
            version: v.version,
        };
        let opened = match keys
            .unwrap(&WrappedDek::from_stored(v.wrapped_dek.clone()), &wctx)
            .await
        {
            Ok(dek) => {
                rcrt_crypto::open_value(&dek, &SealedValue::from_stored(v.sealed_value), &vctx).ok()
            }
            Err(_) => None,
        };
        match opened {
            Some(p) if p.expose_secret().starts_with(b"rwb-") => ok += 1,
            _ => bad += 1,
        }
    }
    println!(
        "VERIFY sample={} decrypted_ok={ok} not_under_k2={wrong_kek} failed={bad}",
        sample.len()
    );
    if bad > 0 || wrong_kek > 0 {
        return Err("verification failed".into());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> R<()> {
    let a = parse_args()?;
    let k1 = kek(a.k1.as_deref(), "--k1")?;
    let k2 = kek(a.k2.as_deref(), "--k2")?;
    let backend = if is_pg(&a.db_url) {
        "postgres"
    } else {
        "sqlite"
    };
    let store = rcrt_store::open(&a.db_url).await?;

    let existing = count_versions(&store).await?;
    let mut ids = Vec::new();
    if existing == 0 {
        let t = Instant::now();
        ids = if is_pg(&a.db_url) {
            seed_pg(&a.db_url, &k1, &a).await?
        } else {
            let path = sqlite_path(&a.db_url).to_owned();
            // rusqlite is blocking: keep it off the async workers.
            let k1b = Kek::from_bytes(Zeroizing::new(*k1.expose_secret()));
            let a2 = a.clone();
            tokio::task::spawn_blocking(move || seed_sqlite(&path, &k1b, &a2)).await??
        };
        let s = t.elapsed().as_secs_f64();
        println!(
            "SEED backend={backend} rows={} seconds={s:.1} rows_per_s={:.0} value_bytes={} kek1={}",
            ids.len(),
            ids.len() as f64 / s,
            a.value_bytes,
            k1.id()
        );
    } else {
        println!("SEED backend={backend} skipped existing_versions={existing}");
    }
    if let Some(path) = &a.ids_out {
        if ids.is_empty() {
            return Err("--ids-out needs a fresh (empty) store".into());
        }
        let step = (ids.len() as u64 / a.ids_count.max(1)).max(1) as usize;
        let text: String = ids
            .iter()
            .step_by(step)
            .take(a.ids_count as usize)
            .map(|u| format!("{}\n", u.hyphenated()))
            .collect();
        std::fs::write(path, text)?;
    }
    if a.seed_only {
        return Ok(());
    }

    let keys = Arc::new(LocalKeyring::new(k2, vec![k1]));
    let m = Maintenance::new(store.clone(), keys.clone(), Arc::new(SystemClock));
    if a.breakdown_batches > 0 {
        breakdown(&m, &keys, a.batch_size, a.breakdown_batches).await?;
    }
    let remaining = m.remaining().await?;
    let timer = Timer {
        rows: remaining,
        last: Mutex::new((Instant::now(), 0)),
        batch_ms: Mutex::new(Vec::new()),
    };
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let (progress, failures) = m.rewrap(a.batch_size, &timer).await?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "REWRAP backend={backend} rows={} scanned={} failed={} batch_size={} seconds={secs:.2} \
         rows_per_s={:.0} bench_process_cpu_pct={:.0}",
        progress.changed,
        progress.scanned,
        failures.len(),
        a.batch_size,
        progress.changed as f64 / secs,
        100.0 * cpu / secs
    );
    if let Ok(mut v) = timer.batch_ms.lock() {
        v.sort_by(f64::total_cmp);
        println!(
            "BATCHES n={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    }
    if a.verify_sample > 0 {
        verify(&store, &keys, &ids, &a).await?;
    }
    let left = m.remaining().await?;
    println!(
        "RESULT backend={backend} rows_per_s={:.0} remaining_after={left}",
        progress.changed as f64 / secs
    );
    if left != 0 || !failures.is_empty() {
        return Err(format!("{left} versions left under an old KEK").into());
    }
    Ok(())
}
