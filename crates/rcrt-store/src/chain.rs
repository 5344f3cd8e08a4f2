//! The audit hash chain's row encoding, shared by both stores and the verifier.
//!
//! Every audit row belongs to one *lane* (a short independent chain) and carries its sequence
//! number in the lane and its link hash:
//!
//! ```text
//! content = SHA-256("rcrt-audit-row-v1\0" || ts_micros:i64be || field(action) || field(outcome)
//!                   || opt(secret_id) || opt(token_id) (16 UUID bytes) || field(tenant) || field(user_id)
//!                   || opt(reason) || field(request_id))
//! link    = SHA-256(prev_link || content || lane:i32be || seq:i64be)
//! field(s) = len(s):u32be || s        opt(None) = 0xFFFFFFFF
//! ```
//!
//! A row that names a secret version (a decrypt of a given version, a rollback, a destroyed
//! version) appends `"version" || version:i64be` to `content`'s input; rows without one hash as
//! they did before versions were recorded, so older chains still verify.
//!
//! The first row of a lane has `seq` 1 and links to [`GENESIS`]. Several lanes let concurrent
//! writers (and replicas) commit without waiting for one chain head; PostgreSQL computes `link`
//! in the insert statement itself (`sha256`, `int4send`, `int8send`) from a `content` computed
//! here, so a row costs no extra round trip, and the decrypt path's row (one statement, its own
//! transaction) holds its lane for that statement only.

use ring::digest::{Context, SHA256};
use time::OffsetDateTime;

/// The link a lane's first row points back to.
pub const GENESIS: [u8; 32] = [0; 32];

/// The fields of a row the chain covers, borrowed from an entry to write or a row read back.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    /// When (only whole microseconds are kept: both databases store microseconds).
    pub timestamp: OffsetDateTime,
    /// The action's storage spelling.
    pub action: &'a str,
    /// The outcome's storage spelling.
    pub outcome: &'a str,
    /// The secret's 16 UUID bytes.
    pub secret_id: Option<[u8; 16]>,
    /// The token's 16 UUID bytes.
    pub token_id: Option<[u8; 16]>,
    /// The tenant.
    pub tenant: &'a str,
    /// Who.
    pub user_id: &'a str,
    /// Why.
    pub reason: Option<&'a str>,
    /// The request id.
    pub request_id: &'a str,
    /// The secret version the row names, if any.
    pub version: Option<i64>,
}

/// `t` cut to whole microseconds, as both stores keep it (hash and store the same instant).
pub fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.nanosecond();
    t.replace_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

/// The content hash of a row.
pub fn content_hash(f: &ChainFields<'_>) -> [u8; 32] {
    let mut h = Context::new(&SHA256);
    h.update(b"rcrt-audit-row-v1\0");
    let micros =
        i64::try_from(to_micros(f.timestamp).unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
    h.update(&micros.to_be_bytes());
    field(&mut h, Some(f.action.as_bytes()));
    field(&mut h, Some(f.outcome.as_bytes()));
    field(&mut h, f.secret_id.as_ref().map(|b| &b[..]));
    field(&mut h, f.token_id.as_ref().map(|b| &b[..]));
    field(&mut h, Some(f.tenant.as_bytes()));
    field(&mut h, Some(f.user_id.as_bytes()));
    field(&mut h, f.reason.map(str::as_bytes));
    field(&mut h, Some(f.request_id.as_bytes()));
    if let Some(v) = f.version {
        h.update(b"version");
        h.update(&v.to_be_bytes());
    }
    finish(h)
}

/// The link hash of the row at `seq` in `lane` whose predecessor's link is `prev`.
pub fn link_hash(prev: &[u8; 32], content: &[u8; 32], lane: i32, seq: i64) -> [u8; 32] {
    let mut h = Context::new(&SHA256);
    h.update(prev);
    h.update(content);
    h.update(&lane.to_be_bytes());
    h.update(&seq.to_be_bytes());
    finish(h)
}

fn finish(h: Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

fn field(h: &mut Context, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            // Audit fields are bounded far below 4 GiB (reasons, ids); saturate rather than wrap.
            h.update(&u32::try_from(v.len()).unwrap_or(u32::MAX - 1).to_be_bytes());
            h.update(v);
        }
        None => h.update(&u32::MAX.to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(reason: Option<&str>) -> ChainFields<'_> {
        ChainFields {
            timestamp: OffsetDateTime::UNIX_EPOCH,
            action: "decrypt",
            outcome: "success",
            secret_id: None,
            token_id: None,
            tenant: "default",
            user_id: "u",
            reason,
            request_id: "r",
            version: None,
        }
    }

    #[test]
    fn absent_and_empty_differ_and_fields_do_not_run_together() {
        assert_ne!(content_hash(&fields(None)), content_hash(&fields(Some(""))));
        let a = ChainFields {
            tenant: "ab",
            user_id: "c",
            ..fields(None)
        };
        let b = ChainFields {
            tenant: "a",
            user_id: "bc",
            ..fields(None)
        };
        assert_ne!(content_hash(&a), content_hash(&b));
    }

    #[test]
    fn a_version_changes_the_hash_and_its_absence_keeps_the_old_one() {
        let plain = content_hash(&fields(None));
        let v1 = ChainFields {
            version: Some(1),
            ..fields(None)
        };
        let v2 = ChainFields {
            version: Some(2),
            ..fields(None)
        };
        assert_ne!(plain, content_hash(&v1));
        assert_ne!(content_hash(&v1), content_hash(&v2));
        // A pinned digest of a row without a version: chains written before versions existed
        // must still verify.
        assert_eq!(
            hex::encode(plain),
            "5573cd127bf78d661cc0347d4ef56d966b20ed93a0b92d04081fb0105828eccd"
        );
    }

    #[test]
    fn sub_microsecond_digits_do_not_count() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(1_234_567);
        let a = ChainFields {
            timestamp: t,
            ..fields(None)
        };
        let b = ChainFields {
            timestamp: to_micros(t),
            ..fields(None)
        };
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_eq!(to_micros(t).nanosecond(), 1_234_000);
    }

    #[test]
    fn link_covers_lane_and_seq() {
        let c = content_hash(&fields(None));
        let base = link_hash(&GENESIS, &c, 0, 1);
        assert_ne!(base, link_hash(&GENESIS, &c, 1, 1));
        assert_ne!(base, link_hash(&GENESIS, &c, 0, 2));
        assert_ne!(base, link_hash(&[1; 32], &c, 0, 1));
    }
}
