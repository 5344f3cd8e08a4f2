//! `rcrt audit verify | query | export`: the audit log, read straight from the store (every
//! tenant unless `--tenant`), on SQLite and PostgreSQL alike.

use std::io::Write;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcrt_core::audit::verify::{verify_store, Report, TrustedKeys, VERIFY_PAGE};
use rcrt_store::{AuditOrder, AuditQuery, AuditRecord, Store};
use rcrt_types::{AuditAction, AuditOutcome, SecretId, TenantId};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::input::keyring;
use crate::KekArgs;

/// Rows per page read from the store.
const PAGE: u32 = 1000;

/// How `rcrt audit query` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum QueryFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON array of objects.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// The filters of `rcrt audit query` and `rcrt audit export`.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct Filters {
    /// Only rows at or after this time: a duration back from now (30d, 12h, "1h 30m") or an
    /// RFC 3339 time (2026-01-31T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only rows before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only rows about this secret (its id).
    #[arg(long = "secret", value_name = "ID")]
    pub secret: Option<String>,
    /// Only rows by this principal (user_id).
    #[arg(long)]
    pub user: Option<String>,
    /// Only this action (create, decrypt, update, delete, ...).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this outcome (success, failure, denied).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only this tenant [default: every tenant].
    #[arg(long)]
    pub tenant: Option<String>,
}

/// A time from `--since`/`--until`: a duration back from `now`, or RFC 3339.
pub(crate) fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    let t = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let d = humantime::parse_duration(text).map_err(|_| {
                format!(
                    "{text:?} is neither a duration (30d, 12h, \"1h 30m\") nor an RFC 3339 time"
                )
            })?;
            let d = time::Duration::try_from(d).map_err(|_| format!("{text:?} is too long ago"))?;
            now.checked_sub(d)
                .ok_or_else(|| format!("{text:?} is too long ago"))?
        }
    };
    // In UTC it must still be a year the stores can hold (an offset can push 9999-12-31 past
    // it, and converting that would panic in the drivers).
    t.checked_to_offset(time::UtcOffset::UTC)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| format!("{text:?} is outside the years 0 to 9999 in UTC"))
}

impl Filters {
    /// The store query (without cursor, order and limit).
    pub(crate) fn query(&self, now: OffsetDateTime) -> Result<AuditQuery, String> {
        let secret_id = match &self.secret {
            Some(s) => Some(
                s.trim()
                    .parse::<SecretId>()
                    .map_err(|_| format!("--secret {s:?} is not a secret id"))?,
            ),
            None => None,
        };
        let action = match &self.action {
            Some(a) => Some(AuditAction::parse(a.trim()).ok_or_else(|| {
                format!("--action {a:?} is not an audit action (e.g. create, decrypt, update, delete, kek_rewrap)")
            })?),
            None => None,
        };
        let outcome = match &self.outcome {
            Some(o) => Some(AuditOutcome::parse(o.trim()).ok_or_else(|| {
                format!("--outcome {o:?} is not an outcome (success, failure, denied)")
            })?),
            None => None,
        };
        Ok(AuditQuery {
            tenant: self.tenant.as_deref().map(TenantId::new),
            secret_id,
            user_id: self.user.clone(),
            action,
            outcome,
            since: self
                .since
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?,
            ..AuditQuery::default()
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

async fn open(db_url: Option<&str>) -> Result<std::sync::Arc<dyn Store>, String> {
    let url = crate::input::db_url(&crate::DbArgs {
        db_url: db_url.map(str::to_owned),
        batch_size: PAGE,
        max_rows_per_sec: 0,
    })?;
    rcrt_store::open(&url).await.map_err(|e| e.to_string())
}

fn time_text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// A row as a JSON object: the table's columns, and its chain lane, seq and hash (hex).
pub(crate) fn row_json(r: &AuditRecord) -> Value {
    json!({
        "id": r.id,
        "timestamp": time_text(r.timestamp),
        "action": r.action,
        "secret_id": r.secret_id.map(|s| s.to_string()),
        "token_id": r.token_id.map(|t| t.to_string()),
        "tenant": r.tenant,
        "user_id": r.user_id,
        "reason": r.reason,
        "outcome": r.outcome,
        "request_id": r.request_id,
        "version": r.version,
        "chain_lane": r.chain.as_ref().map(|c| c.lane),
        "chain_seq": r.chain.as_ref().map(|c| c.seq),
        "chain_hash": r.chain.as_ref().map(|c| hex::encode(c.hash)),
    })
}

const COLUMNS: [&str; 11] = [
    "id",
    "timestamp",
    "action",
    "outcome",
    "tenant",
    "user_id",
    "secret_id",
    "token_id",
    "request_id",
    "version",
    "reason",
];

fn cells(r: &AuditRecord) -> [String; 11] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        r.id.to_string(),
        time_text(r.timestamp),
        r.action.clone(),
        r.outcome.clone(),
        r.tenant.clone(),
        r.user_id.clone(),
        opt(r.secret_id.map(|s| s.to_string())),
        opt(r.token_id.map(|t| t.to_string())),
        r.request_id.clone(),
        opt(r.version.map(|v| v.to_string())),
        opt(r.reason.clone()),
    ]
}

/// One CSV field: quoted when it holds a comma, quote, CR or LF (RFC 4180), or starts with a
/// character a spreadsheet would take for a formula (the field is data, never a formula).
fn csv_field(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || s.contains([',', '"', '\r', '\n']) {
        let body = if formula {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        format!("\"{}\"", body.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `s` with every control character written as an escape (`\n`, `\u{1b}`).
fn without_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Rows rendered in `format`.
pub(crate) fn render(rows: &[AuditRecord], format: QueryFormat) -> String {
    match format {
        QueryFormat::Json => {
            let all: Vec<Value> = rows.iter().map(row_json).collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into())
            )
        }
        QueryFormat::Csv => {
            let mut out = COLUMNS.join(",");
            out.push_str("\r\n");
            for r in rows {
                let line: Vec<String> = cells(r).iter().map(|c| csv_field(c)).collect();
                out.push_str(&line.join(","));
                out.push_str("\r\n");
            }
            out
        }
        QueryFormat::Table => {
            // Control characters escaped: a row edited in the database must not move the
            // terminal's cursor or fake a line.
            let body: Vec<[String; 11]> = rows
                .iter()
                .map(|r| cells(r).map(|c| without_controls(&c)))
                .collect();
            let mut widths = COLUMNS.map(str::len);
            for row in &body {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: &[String]| {
                let mut l = String::new();
                for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                    if i + 1 == cells.len() {
                        l.push_str(c);
                    } else {
                        l.push_str(&format!("{c:<w$}  "));
                    }
                }
                l.trim_end().to_owned() + "\n"
            };
            let mut out = line(&COLUMNS.map(str::to_owned));
            for row in &body {
                out.push_str(&line(row));
            }
            out
        }
    }
}

/// `rcrt audit query`: newest first, at most `limit` rows.
pub(crate) fn query(
    db_url: Option<&str>,
    filters: &Filters,
    limit: u32,
    format: QueryFormat,
) -> Result<(), String> {
    if limit == 0 {
        return Err("--limit must be at least 1".into());
    }
    let base = filters.query(OffsetDateTime::now_utc())?;
    let (rows, more) = runtime()?.block_on(async {
        let store = open(db_url).await?;
        let mut rows: Vec<AuditRecord> = Vec::new();
        let mut cursor = None;
        loop {
            let want = (limit as usize - rows.len()).min(PAGE as usize) as u32;
            // One more than wanted shows whether rows are left out.
            let page = store
                .query_audit(&AuditQuery {
                    cursor,
                    order: AuditOrder::NewestFirst,
                    limit: want + 1,
                    ..base.clone()
                })
                .await
                .map_err(|e| e.to_string())?;
            let full = page.len() > want as usize;
            rows.extend(page.into_iter().take(want as usize));
            cursor = rows.last().map(|r| r.id);
            if !full {
                return Ok::<_, String>((rows, false));
            }
            if rows.len() >= limit as usize {
                return Ok((rows, true));
            }
        }
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(render(&rows, format).as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the rows: {e}"))?;
    if more {
        eprintln!(
            "rcrt: more rows match than --limit {limit}; raise --limit, or use `rcrt audit export`"
        );
    }
    Ok(())
}

/// `rcrt audit export`: JSON lines, oldest first, streamed page by page.
pub(crate) fn export(
    db_url: Option<&str>,
    filters: &Filters,
    after_id: Option<i64>,
    out: Option<&PathBuf>,
) -> Result<(), String> {
    let base = filters.query(OffsetDateTime::now_utc())?;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = runtime()?.block_on(async {
        let store = open(db_url).await?;
        let mut cursor = after_id;
        let mut written = 0u64;
        loop {
            let page = store
                .query_audit(&AuditQuery {
                    cursor,
                    order: AuditOrder::OldestFirst,
                    limit: PAGE,
                    ..base.clone()
                })
                .await
                .map_err(|e| e.to_string())?;
            for r in &page {
                writeln!(sink, "{}", row_json(r)).map_err(|e| format!("cannot write: {e}"))?;
            }
            written += page.len() as u64;
            match page.last() {
                Some(r) if page.len() == PAGE as usize => cursor = Some(r.id),
                _ => return Ok::<_, String>(written),
            }
        }
    })?;
    sink.flush().map_err(|e| format!("cannot write: {e}"))?;
    eprintln!("exported {written} audit rows");
    Ok(())
}

/// `rcrt audit verify`: walks the whole chain and checks every checkpoint; exit 1 on any
/// problem, naming the first broken row.
pub(crate) fn verify(
    db_url: Option<&str>,
    public_keys: &[String],
    keks: &KekArgs,
) -> Result<(), String> {
    let report = runtime()?.block_on(async {
        let store = open(db_url).await?;
        let trusted = if public_keys.is_empty() {
            let ring = keyring(keks).await.map_err(|e| {
                format!(
                    "the checkpoint signing keys cannot be authenticated: {e}. Give the KEK as \
                     for `rcrt kek verify` (LOCAL_KEK_BASE64, LOCAL_KEK_BASE64_OLD, KEK_PROVIDER, \
                     ...), or --public-key BASE64 with the key the server logged at start-up \
                     (\"audit checkpoint signing key\")"
                )
            })?;
            let stored = store
                .audit_signing_keys()
                .await
                .map_err(|e| e.to_string())?;
            TrustedKeys::from_keyring(&ring, &stored).await
        } else {
            let keys = public_keys
                .iter()
                .map(|k| {
                    STANDARD
                        .decode(k.trim())
                        .ok()
                        .filter(|b| b.len() == 32)
                        .ok_or_else(|| {
                            format!(
                                "--public-key {k:?} is not a base64 Ed25519 public key (32 bytes)"
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            TrustedKeys::from_public_keys(keys)
        };
        verify_store(&*store, &trusted, VERIFY_PAGE)
            .await
            .map_err(|e| e.to_string())
    })?;
    print!("{}", summary(&report));
    if report.is_ok() {
        println!("OK: the audit chain and every checkpoint verify");
        return Ok(());
    }
    println!("FAILED: {} problem(s) found:", report.problem_count);
    for p in report.problems.iter().take(50) {
        println!("  {p}");
    }
    if report.problem_count > 50 {
        println!("  ... and {} more", report.problem_count - 50);
    }
    let first = report
        .first()
        .map_or_else(String::new, |p| format!("; first broken: {p}"));
    Err(format!("the audit log does not verify{first}"))
}

fn summary(r: &Report) -> String {
    let mut s = format!(
        "audit chain: {} chained rows in {} lanes; {} rows from before the chain\n",
        r.chained_rows, r.lanes, r.unchained_rows
    );
    match &r.newest_checkpoint {
        Some((id, at, digest)) => s.push_str(&format!(
            "checkpoints: {} (newest: {id} at {}, heads digest {digest}); {} rows after it are \
             protected by the chain only, not by a signature\n",
            r.checkpoints,
            time_text(*at),
            r.rows_after_newest_checkpoint
        )),
        None => s.push_str(&format!(
            "checkpoints: {} valid none; all {} rows are protected by the chain only: a \
             truncated tail cannot be detected\n",
            r.checkpoints, r.rows_after_newest_checkpoint
        )),
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_back_or_rfc3339() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(100);
        assert_eq!(
            parse_time("30d", now).unwrap(),
            now - time::Duration::days(30)
        );
        assert_eq!(
            parse_time("1h 30m", now).unwrap(),
            now - time::Duration::minutes(90)
        );
        assert_eq!(
            parse_time("1970-01-02T00:00:00Z", now).unwrap(),
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(1)
        );
        assert!(parse_time("yesterday", now).is_err());
        // Out of the stores' range once in UTC: refused, not a panic in the driver.
        assert!(parse_time("9999-12-31T23:59:59-23:59", now).is_err());
        assert!(parse_time("0000-01-01T00:00:00+23:59", now).is_err());
        assert!(parse_time("9000y", now).is_err());
    }

    #[test]
    fn filters_are_checked() {
        let now = OffsetDateTime::now_utc();
        let bad = |f: Filters| f.query(now).unwrap_err();
        assert!(bad(Filters {
            action: Some("read_everything".into()),
            ..Filters::default()
        })
        .contains("not an audit action"));
        assert!(bad(Filters {
            outcome: Some("meh".into()),
            ..Filters::default()
        })
        .contains("not an outcome"));
        assert!(bad(Filters {
            secret: Some("nope".into()),
            ..Filters::default()
        })
        .contains("not a secret id"));
        let q = Filters {
            action: Some("decrypt".into()),
            tenant: Some("acme".into()),
            ..Filters::default()
        }
        .query(now)
        .unwrap();
        assert_eq!(q.action, Some(AuditAction::Decrypt));
        assert_eq!(q.tenant.unwrap().as_str(), "acme");
    }

    #[test]
    fn csv_quotes_what_it_must_and_defuses_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
        assert_eq!(csv_field("\tcmd"), "\"'\tcmd\"");
    }

    #[test]
    fn table_cells_show_control_characters_escaped() {
        assert_eq!(without_controls("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(without_controls("plain é"), "plain é");
    }
}
