//! Verifying the audit hash chain and its signed checkpoints (`rcrt audit verify`).
//!
//! The walk goes lane by lane in sequence order and keeps only a few values per lane, so the
//! whole table streams through in pages. What it checks:
//! - every row's link is `link_hash(previous row's link, its content, lane, seq)` (else
//!   *changed*), seqs run 1, 2, 3... without gaps (else *missing*), ids grow with seq (else
//!   *reordered*);
//! - rows without a link all come before the first chained row (else *inserted*), and no lane
//!   runs past its head in `audit_chain_heads` (else *inserted*);
//! - each lane reaches the head it had when the walk started, with the same hash (else
//!   *missing*: a truncated tail, or *head mismatch*);
//! - each checkpoint is signed by a trusted key (else *bad signature* / *untrusted key*), and
//!   every head it names is in the chain with the same hash (else *checkpoint mismatch*, or
//!   *missing* when the row is gone).
//!
//! What it cannot see: rows appended after the newest checkpoint by someone who can write the
//! database and recomputes the links and the head table are indistinguishable from real ones;
//! the checkpoint lines in the server's log are the external witness for those.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rcrt_keys::KeyProvider;
use rcrt_store::chain::{content_hash, link_hash, GENESIS};
use rcrt_store::{AuditCheckpoint, AuditRecord, AuditSigningKey, ChainHead, Store};
use time::OffsetDateTime;

use super::checkpoint::{heads_digest, signing_key_id, verify_checkpoint, CheckpointSigner};
use crate::CoreError;

/// Rows per page when the verifier reads the store.
pub const VERIFY_PAGE: u32 = 5000;

/// At most this many problems are kept (the count goes on).
const MAX_KEPT: usize = 1000;

/// Which statement of a lane's head a row failed to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// A signed checkpoint.
    Checkpoint {
        /// Its id.
        id: i64,
        /// When it was made.
        created_at: OffsetDateTime,
    },
    /// The `audit_chain_heads` table (unsigned) when the walk started.
    HeadTable,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checkpoint { id, created_at } => {
                write!(f, "signed checkpoint {id} of {created_at}")
            }
            Self::HeadTable => f.write_str("the chain head table"),
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row's content or link does not match its link hash.
    Changed {
        /// Row id.
        id: i64,
        /// Lane.
        lane: i32,
        /// Seq.
        seq: i64,
    },
    /// Rows `from..=to` of a lane are not there (deleted, or the tail truncated).
    Missing {
        /// Lane.
        lane: i32,
        /// First missing seq.
        from: i64,
        /// Last missing seq.
        to: i64,
        /// The row before the gap, if any.
        after_id: Option<i64>,
        /// The row after the gap; `None` when the tail is gone.
        before_id: Option<i64>,
    },
    /// A row that the chain does not account for.
    Inserted {
        /// Row id.
        id: i64,
        /// Its claimed place in the chain, if it has one.
        link: Option<(i32, i64)>,
    },
    /// The row's id is not above the id of the row before it in its lane.
    Reordered {
        /// Row id.
        id: i64,
        /// Lane.
        lane: i32,
        /// Seq.
        seq: i64,
        /// The id of the row before it in the lane.
        previous_id: i64,
    },
    /// A head named by a checkpoint or the head table has another hash in the chain.
    WitnessMismatch {
        /// Who named the head.
        witness: Witness,
        /// The row at that place.
        id: i64,
        /// Lane.
        lane: i32,
        /// Seq.
        seq: i64,
    },
    /// A checkpoint's signature does not verify under its key.
    BadSignature {
        /// The checkpoint's id.
        checkpoint_id: i64,
        /// Its key id.
        key_id: String,
    },
    /// A checkpoint is signed by a key that could not be authenticated.
    UntrustedKey {
        /// The checkpoint's id.
        checkpoint_id: i64,
        /// Its key id.
        key_id: String,
        /// Why the key is not trusted.
        why: String,
    },
}

impl Problem {
    /// The kind's name: `changed`, `missing`, `inserted`, `reordered`, `checkpoint mismatch`,
    /// `head mismatch`, `bad signature`, `untrusted key`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Changed { .. } => "changed",
            Self::Missing { .. } => "missing",
            Self::Inserted { .. } => "inserted",
            Self::Reordered { .. } => "reordered",
            Self::WitnessMismatch {
                witness: Witness::Checkpoint { .. },
                ..
            } => "checkpoint mismatch",
            Self::WitnessMismatch { .. } => "head mismatch",
            Self::BadSignature { .. } => "bad signature",
            Self::UntrustedKey { .. } => "untrusted key",
        }
    }

    /// The row the problem is reported at (for a gap: the row after it, else the one before).
    pub fn row_id(&self) -> Option<i64> {
        match self {
            Self::Changed { id, .. }
            | Self::Inserted { id, .. }
            | Self::Reordered { id, .. }
            | Self::WitnessMismatch { id, .. } => Some(*id),
            Self::Missing {
                after_id,
                before_id,
                ..
            } => before_id.or(*after_id),
            Self::BadSignature { .. } | Self::UntrustedKey { .. } => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Changed { id, lane, seq } => write!(
                f,
                "row {id} (lane {lane}, seq {seq}): changed: its fields or link no longer match its link hash"
            ),
            Self::Missing {
                lane,
                from,
                to,
                after_id,
                before_id,
            } => {
                let seqs = if from == to {
                    format!("seq {from}")
                } else {
                    format!("seqs {from}..{to}")
                };
                match (after_id, before_id) {
                    (Some(a), Some(b)) => write!(
                        f,
                        "lane {lane} {seqs}: missing: rows deleted between row {a} and row {b}"
                    ),
                    (None, Some(b)) => {
                        write!(f, "lane {lane} {seqs}: missing: rows deleted before row {b}")
                    }
                    (Some(a), None) => write!(
                        f,
                        "lane {lane} {seqs}: missing: the tail after row {a} was removed (truncated)"
                    ),
                    (None, None) => write!(
                        f,
                        "lane {lane} {seqs}: missing: every row of the lane was removed (truncated)"
                    ),
                }
            }
            Self::Inserted {
                id,
                link: Some((lane, seq)),
            } => write!(
                f,
                "row {id} (lane {lane}, seq {seq}): inserted: it is past its lane's head"
            ),
            Self::Inserted { id, link: None } => write!(
                f,
                "row {id}: inserted: it has no chain link but comes after the chain began"
            ),
            Self::Reordered {
                id,
                lane,
                seq,
                previous_id,
            } => write!(
                f,
                "row {id} (lane {lane}, seq {seq}): reordered: its id is not above row {previous_id}, which precedes it in the chain"
            ),
            Self::WitnessMismatch {
                witness,
                id,
                lane,
                seq,
            } => write!(
                f,
                "row {id} (lane {lane}, seq {seq}): {}: {witness} names another hash here; rows up to it were changed, inserted or removed (and the links recomputed)",
                self.kind()
            ),
            Self::BadSignature {
                checkpoint_id,
                key_id,
            } => write!(
                f,
                "checkpoint {checkpoint_id}: bad signature: it does not verify under key {key_id}"
            ),
            Self::UntrustedKey {
                checkpoint_id,
                key_id,
                why,
            } => write!(
                f,
                "checkpoint {checkpoint_id}: untrusted key: signed by {key_id}, {why}"
            ),
        }
    }
}

/// The public keys checkpoints may be signed with, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, Vec<u8>>,
    /// Stored keys that could not be authenticated, and why.
    refused: HashMap<String, String>,
}

impl TrustedKeys {
    /// Trust exactly these public keys (`rcrt audit verify --public-key`).
    pub fn from_public_keys(keys: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (signing_key_id(&k), k)).collect(),
            refused: HashMap::new(),
        }
    }

    /// Trust each stored key whose seed `keys` unwraps to the stored public key (so only
    /// someone holding the KEK could have made it); the others are refused, with the reason.
    pub async fn from_keyring(keys: &dyn KeyProvider, stored: &[AuditSigningKey]) -> Self {
        let mut out = Self::default();
        for key in stored {
            match CheckpointSigner::unwrap(keys, key).await {
                Ok(signer) => {
                    out.keys
                        .insert(signer.id().to_owned(), signer.public_key().to_vec());
                }
                Err(e) => {
                    out.refused.insert(
                        key.id.clone(),
                        format!("which the given KEKs do not authenticate ({e})"),
                    );
                }
            }
        }
        out
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug, Default)]
struct Lane {
    seq: i64,
    hash: [u8; 32],
    id: Option<i64>,
    rows: u64,
    /// Rows past the head the walk started from: appended during the walk, or inserted.
    past_head: Vec<(i64, i64)>,
}

/// What the walk found, and a summary.
#[derive(Debug, Clone)]
pub struct Report {
    /// Chained rows walked.
    pub chained_rows: u64,
    /// Rows without a link (from before the chain existed, unless reported as inserted).
    pub unchained_rows: u64,
    /// Lanes with at least one row.
    pub lanes: usize,
    /// Checkpoints in the store.
    pub checkpoints: usize,
    /// The newest checkpoint whose signature verified: id, time, heads digest.
    pub newest_checkpoint: Option<(i64, OffsetDateTime, String)>,
    /// Chained rows after the newest valid checkpoint: protected by the chain only.
    pub rows_after_newest_checkpoint: u64,
    /// The problems, by row id (problems without a row last); at most 1000 kept.
    pub problems: Vec<Problem>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

impl Report {
    /// True when nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    /// The first broken row (smallest row id), or the first problem without a row.
    pub fn first(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

/// A witness's claim of the link hash at one place in a lane.
type Claim = (Witness, [u8; 32]);

/// The chain walk. Feed it [`Verifier::chained`] pages in (lane, seq) order, then
/// [`Verifier::unchained`] pages, then [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    start: BTreeMap<i32, ChainHead>,
    /// (lane, seq) -> who says which hash is there.
    expected: HashMap<(i32, i64), Vec<Claim>>,
    /// The newest checkpoint whose signature verified.
    newest: Option<AuditCheckpoint>,
    checkpoints: usize,
    lanes: BTreeMap<i32, Lane>,
    min_chained_id: Option<i64>,
    unchained_rows: u64,
    problems: Vec<Problem>,
    problem_count: u64,
}

impl Verifier {
    /// A walk against the heads read before it (`start`), the stored checkpoints and the keys
    /// trusted to sign them (signatures are checked here).
    pub fn new(
        start: Vec<ChainHead>,
        checkpoints: Vec<AuditCheckpoint>,
        keys: &TrustedKeys,
    ) -> Self {
        let mut v = Self {
            start: BTreeMap::new(),
            expected: HashMap::new(),
            newest: None,
            checkpoints: checkpoints.len(),
            lanes: BTreeMap::new(),
            min_chained_id: None,
            unchained_rows: 0,
            problems: Vec::new(),
            problem_count: 0,
        };
        for h in start {
            if h.seq > 0 {
                v.expected
                    .entry((h.lane, h.seq))
                    .or_default()
                    .push((Witness::HeadTable, h.hash));
            }
            v.start.insert(h.lane, h);
        }
        for cp in checkpoints {
            match keys.keys.get(&cp.key_id) {
                None => {
                    let why = keys
                        .refused
                        .get(&cp.key_id)
                        .cloned()
                        .unwrap_or_else(|| "which is not among the trusted keys".to_owned());
                    v.problem(Problem::UntrustedKey {
                        checkpoint_id: cp.id,
                        key_id: cp.key_id.clone(),
                        why,
                    });
                }
                Some(public) if !verify_checkpoint(public, &cp) => {
                    v.problem(Problem::BadSignature {
                        checkpoint_id: cp.id,
                        key_id: cp.key_id.clone(),
                    })
                }
                Some(_) => {
                    for h in cp.heads.iter().filter(|h| h.seq > 0) {
                        let claims = v.expected.entry((h.lane, h.seq)).or_default();
                        // Quiet lanes repeat their head in checkpoint after checkpoint: one
                        // claim per distinct hash keeps memory bounded by the rows, not by
                        // checkpoints x lanes.
                        if claims.iter().all(|(_, hash)| *hash != h.hash) {
                            claims.push((
                                Witness::Checkpoint {
                                    id: cp.id,
                                    created_at: cp.created_at,
                                },
                                h.hash,
                            ));
                        }
                    }
                    if v.newest
                        .as_ref()
                        .is_none_or(|n| (n.created_at, n.id) < (cp.created_at, cp.id))
                    {
                        v.newest = Some(cp);
                    }
                }
            }
        }
        v
    }

    fn problem(&mut self, p: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_KEPT {
            self.problems.push(p);
        }
    }

    /// A page of chained rows, in (lane, seq) order, continuing the previous page.
    pub fn chained(&mut self, rows: &[AuditRecord]) {
        for r in rows {
            let Some(link) = &r.chain else {
                // Not a chained row: count it where it belongs.
                self.unchained(std::slice::from_ref(r));
                continue;
            };
            self.min_chained_id = Some(self.min_chained_id.map_or(r.id, |m| m.min(r.id)));
            let start_seq = self.start.get(&link.lane).map_or(0, |h| h.seq);
            let lane = self.lanes.entry(link.lane).or_insert_with(|| Lane {
                hash: GENESIS,
                ..Lane::default()
            });
            let mut found = Vec::new();
            if link.seq <= lane.seq {
                found.push(Problem::Inserted {
                    id: r.id,
                    link: Some((link.lane, link.seq)),
                });
            } else {
                if link.seq > lane.seq + 1 {
                    found.push(Problem::Missing {
                        lane: link.lane,
                        from: lane.seq + 1,
                        to: link.seq - 1,
                        after_id: lane.id,
                        before_id: Some(r.id),
                    });
                } else {
                    let content = content_hash(&r.chain_fields());
                    if link_hash(&lane.hash, &content, link.lane, link.seq) != link.hash {
                        found.push(Problem::Changed {
                            id: r.id,
                            lane: link.lane,
                            seq: link.seq,
                        });
                    }
                }
                if let Some(prev) = lane.id.filter(|p| r.id <= *p) {
                    found.push(Problem::Reordered {
                        id: r.id,
                        lane: link.lane,
                        seq: link.seq,
                        previous_id: prev,
                    });
                }
                if link.seq > start_seq {
                    lane.past_head.push((link.seq, r.id));
                }
                // Go on from the stored link: one bad row is reported once, not every row after.
                lane.seq = link.seq;
                lane.hash = link.hash;
                lane.id = Some(r.id);
            }
            lane.rows += 1;
            if let Some(witnesses) = self.expected.remove(&(link.lane, link.seq)) {
                for (witness, hash) in witnesses {
                    if hash != link.hash {
                        found.push(Problem::WitnessMismatch {
                            witness,
                            id: r.id,
                            lane: link.lane,
                            seq: link.seq,
                        });
                    }
                }
            }
            for p in found {
                self.problem(p);
            }
        }
    }

    /// A page of rows without a link, in id order (after every chained page).
    pub fn unchained(&mut self, rows: &[AuditRecord]) {
        for r in rows {
            if self.min_chained_id.is_some_and(|m| r.id > m) {
                self.problem(Problem::Inserted {
                    id: r.id,
                    link: None,
                });
            } else {
                self.unchained_rows += 1;
            }
        }
    }

    /// Ends the walk with the heads read after it.
    pub fn finish(mut self, end: Vec<ChainHead>) -> Report {
        let end: BTreeMap<i32, ChainHead> = end.into_iter().map(|h| (h.lane, h)).collect();
        // Heads named by the head table or a checkpoint that the walk never reached: the rows
        // there are gone. Reported once per lane, up to the furthest such head.
        let mut gone: BTreeMap<i32, i64> = BTreeMap::new();
        for (lane, seq) in self.expected.keys() {
            let reached = self.lanes.get(lane).map_or(0, |l| l.seq);
            if *seq > reached {
                let e = gone.entry(*lane).or_insert(*seq);
                *e = (*e).max(*seq);
            }
        }
        for (lane, to) in gone {
            let (from, after_id) = self
                .lanes
                .get(&lane)
                .map_or((1, None), |l| (l.seq + 1, l.id));
            self.problem(Problem::Missing {
                lane,
                from,
                to,
                after_id,
                before_id: None,
            });
        }
        // Rows past the head the walk started from must be within the head read after it.
        let mut extra = Vec::new();
        for (lane_id, lane) in &self.lanes {
            let head = end.get(lane_id).map_or(0, |h| h.seq);
            for (seq, id) in &lane.past_head {
                if *seq > head {
                    extra.push(Problem::Inserted {
                        id: *id,
                        link: Some((*lane_id, *seq)),
                    });
                }
            }
        }
        for p in extra {
            self.problem(p);
        }
        self.problems
            .sort_by_key(|p| (p.row_id().is_none(), p.row_id().unwrap_or(i64::MAX)));

        let newest = self.newest.as_ref();
        let rows_after_newest_checkpoint = end
            .values()
            .map(|h| {
                let at = newest
                    .and_then(|c| c.heads.iter().find(|x| x.lane == h.lane))
                    .map_or(0, |x| x.seq);
                (h.seq - at).max(0) as u64
            })
            .sum();
        Report {
            chained_rows: self.lanes.values().map(|l| l.rows).sum(),
            unchained_rows: self.unchained_rows,
            lanes: self.lanes.len(),
            checkpoints: self.checkpoints,
            newest_checkpoint: newest.map(|c| (c.id, c.created_at, heads_digest(&c.heads))),
            rows_after_newest_checkpoint,
            problems: self.problems,
            problem_count: self.problem_count,
        }
    }
}

/// Verifies a store's whole audit chain and checkpoints against `keys`, in pages of `page`.
pub async fn verify_store(
    store: &dyn Store,
    keys: &TrustedKeys,
    page: u32,
) -> Result<Report, CoreError> {
    let page = page.max(1);
    let start = store.audit_heads().await?;
    let checkpoints = store.audit_checkpoints().await?;
    let mut v = Verifier::new(start, checkpoints, keys);
    let mut after = None;
    loop {
        let rows = store.audit_chain_page(after, page).await?;
        v.chained(&rows);
        match rows.last().and_then(|r| r.chain.as_ref()) {
            Some(link) if rows.len() == page as usize => after = Some((link.lane, link.seq)),
            _ => break,
        }
    }
    let mut after_id = None;
    loop {
        let rows = store.unchained_audit(after_id, page).await?;
        v.unchained(&rows);
        match rows.last() {
            Some(r) if rows.len() == page as usize => after_id = Some(r.id),
            _ => break,
        }
    }
    let end = store.audit_heads().await?;
    Ok(v.finish(end))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rcrt_store::ChainLink;

    use super::super::checkpoint::CheckpointSigner;

    fn record(id: i64, user: &str) -> AuditRecord {
        AuditRecord {
            id,
            timestamp: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(id),
            action: "decrypt".into(),
            secret_id: None,
            token_id: None,
            tenant: "default".into(),
            user_id: user.into(),
            reason: Some("r".into()),
            outcome: "success".into(),
            request_id: format!("req-{id}"),
            version: None,
            chain: None,
        }
    }

    /// A lane-0 chain of rows with ids `ids`, as a writer would store it, and its head.
    fn chain(lane: i32, ids: &[i64]) -> (Vec<AuditRecord>, ChainHead) {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut r = record(*id, &format!("u{id}"));
            let seq = i as i64 + 1;
            let hash = link_hash(&prev, &content_hash(&r.chain_fields()), lane, seq);
            r.chain = Some(ChainLink { lane, seq, hash });
            prev = hash;
            out.push(r);
        }
        let head = ChainHead {
            lane,
            seq: ids.len() as i64,
            hash: prev,
        };
        (out, head)
    }

    fn run(
        heads: Vec<ChainHead>,
        cps: Vec<AuditCheckpoint>,
        keys: &TrustedKeys,
        rows: &[AuditRecord],
        unchained: &[AuditRecord],
    ) -> Report {
        let mut v = Verifier::new(heads.clone(), cps, keys);
        // Two pages, to cover continuation.
        let (a, b) = rows.split_at(rows.len() / 2);
        v.chained(a);
        v.chained(b);
        v.unchained(unchained);
        v.finish(heads)
    }

    fn relink(rows: &mut [AuditRecord]) -> ChainHead {
        let mut prev = GENESIS;
        let mut last = ChainHead {
            lane: 0,
            seq: 0,
            hash: GENESIS,
        };
        for (i, r) in rows.iter_mut().enumerate() {
            let seq = i as i64 + 1;
            let hash = link_hash(&prev, &content_hash(&r.chain_fields()), 0, seq);
            r.chain = Some(ChainLink { lane: 0, seq, hash });
            prev = hash;
            last = ChainHead { lane: 0, seq, hash };
        }
        last
    }

    #[test]
    fn an_intact_chain_with_a_checkpoint_verifies() {
        let (rows, head) = chain(0, &[10, 11, 12, 13, 14, 15]);
        let (rows1, head1) = chain(1, &[16, 18]);
        let signer = CheckpointSigner::generate().unwrap();
        let mid = ChainHead {
            lane: 0,
            seq: 4,
            hash: rows[3].chain.as_ref().unwrap().hash,
        };
        let cp = AuditCheckpoint {
            id: 1,
            ..signer.sign(OffsetDateTime::now_utc(), vec![mid, head1.clone()])
        };
        let keys = TrustedKeys::from_public_keys([signer.public_key().to_vec()]);
        let all: Vec<_> = rows.iter().chain(rows1.iter()).cloned().collect();
        let pre = [record(1, "old"), record(2, "old")];
        let report = run(vec![head, head1], vec![cp], &keys, &all, &pre);
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!(
            (report.chained_rows, report.unchained_rows, report.lanes),
            (8, 2, 2)
        );
        assert_eq!(report.rows_after_newest_checkpoint, 2);
    }

    #[test]
    fn a_changed_field_names_its_row() {
        let (mut rows, head) = chain(0, &[1, 2, 3, 4]);
        rows[1].reason = Some("nothing to see".into());
        let report = run(vec![head], vec![], &TrustedKeys::default(), &rows, &[]);
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        assert_eq!(
            report.first(),
            Some(&Problem::Changed {
                id: 2,
                lane: 0,
                seq: 2
            })
        );
    }

    #[test]
    fn a_deleted_row_is_a_gap() {
        let (mut rows, head) = chain(0, &[1, 2, 3, 4]);
        rows.remove(2);
        let report = run(vec![head], vec![], &TrustedKeys::default(), &rows, &[]);
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        let first = report.first().unwrap();
        assert_eq!(first.kind(), "missing");
        assert!(
            first.to_string().contains("between row 2 and row 4"),
            "{first}"
        );
    }

    #[test]
    fn an_inserted_row_is_named() {
        let (rows, head) = chain(0, &[5, 6, 7]);
        // Without a link, after the chain began.
        let report = run(
            vec![head.clone()],
            vec![],
            &TrustedKeys::default(),
            &rows,
            &[record(1, "pre"), record(8, "forged")],
        );
        assert_eq!(
            report.problems,
            vec![Problem::Inserted { id: 8, link: None }]
        );
        // With a link past the head.
        let (mut longer, _) = chain(0, &[5, 6, 7, 9]);
        longer.truncate(4);
        let report = run(vec![head], vec![], &TrustedKeys::default(), &longer, &[]);
        assert_eq!(
            report.problems,
            vec![Problem::Inserted {
                id: 9,
                link: Some((0, 4))
            }]
        );
    }

    #[test]
    fn reordered_ids_are_named() {
        let (mut rows, head) = chain(0, &[1, 2, 3, 4]);
        rows[1].id = 3;
        rows[2].id = 2;
        let report = run(vec![head], vec![], &TrustedKeys::default(), &rows, &[]);
        let first = report.first().unwrap();
        assert_eq!(first.kind(), "reordered", "{:?}", report.problems);
        assert_eq!(first.row_id(), Some(2));
    }

    #[test]
    fn a_truncated_tail_is_caught_by_the_head_table_and_by_a_checkpoint() {
        let (rows, head) = chain(0, &[1, 2, 3, 4, 5]);
        let signer = CheckpointSigner::generate().unwrap();
        let keys = TrustedKeys::from_public_keys([signer.public_key().to_vec()]);
        let cp = signer.sign(OffsetDateTime::now_utc(), vec![head.clone()]);
        // Rows 4 and 5 deleted; the head table still says 5.
        let report = run(vec![head.clone()], vec![], &keys, &rows[..3], &[]);
        let first = report.first().unwrap();
        assert_eq!(first.kind(), "missing");
        assert!(first.to_string().contains("after row 3"), "{first}");
        // The head table rewound too: only the checkpoint knows.
        let rewound = ChainHead {
            lane: 0,
            seq: 3,
            hash: rows[2].chain.as_ref().unwrap().hash,
        };
        let report = run(vec![rewound.clone()], vec![cp], &keys, &rows[..3], &[]);
        let first = report.first().unwrap();
        assert_eq!(first.kind(), "missing", "{:?}", report.problems);
        assert!(first.to_string().contains("seqs 4..5"), "{first}");
        // Without a checkpoint it cannot be seen (documented).
        let report = run(vec![rewound], vec![], &keys, &rows[..3], &[]);
        assert!(report.is_ok());
    }

    #[test]
    fn a_recomputed_chain_is_caught_by_the_signed_checkpoint() {
        let (mut rows, head) = chain(0, &[1, 2, 3, 4]);
        let signer = CheckpointSigner::generate().unwrap();
        let keys = TrustedKeys::from_public_keys([signer.public_key().to_vec()]);
        let cp = AuditCheckpoint {
            id: 7,
            ..signer.sign(OffsetDateTime::now_utc(), vec![head])
        };
        rows[1].user_id = "someone else".into();
        let new_head = relink(&mut rows);
        let report = run(vec![new_head], vec![cp.clone()], &keys, &rows, &[]);
        assert_eq!(report.problem_count, 1, "{:?}", report.problems);
        let first = report.first().unwrap();
        assert_eq!(first.kind(), "checkpoint mismatch");
        assert!(first.to_string().contains("checkpoint 7"), "{first}");

        // Re-signing with another key does not help the attacker.
        let forger = CheckpointSigner::generate().unwrap();
        let forged = AuditCheckpoint {
            id: 7,
            ..forger.sign(cp.created_at, vec![relink(&mut rows)])
        };
        let report = run(
            vec![relink(&mut rows)],
            vec![forged.clone()],
            &keys,
            &rows,
            &[],
        );
        assert_eq!(report.first().unwrap().kind(), "untrusted key");
        let mut resigned = forged;
        resigned.key_id = signer.id().to_owned();
        let report = run(vec![relink(&mut rows)], vec![resigned], &keys, &rows, &[]);
        assert_eq!(report.first().unwrap().kind(), "bad signature");
    }
}
