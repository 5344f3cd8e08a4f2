//! Associated data: binds each ciphertext to the row it was written for.

use crate::keys::KekId;

/// Where a sealed value belongs: (tenant, secret id, version).
#[derive(Debug, Clone, Copy)]
pub struct ValueContext<'a> {
    /// The owning tenant.
    pub tenant: &'a str,
    /// The secret's 16-byte id.
    pub secret_id: &'a [u8; 16],
    /// The secret version.
    pub version: i64,
}

/// Where a wrapped DEK belongs: (KEK id, secret id, version).
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    /// The KEK that wraps it.
    pub kek_id: &'a KekId,
    /// The secret's 16-byte id.
    pub secret_id: &'a [u8; 16],
    /// The secret version.
    pub version: i64,
}

/// Room for encoded associated data on the caller's stack: it fits inline for tenant names under
/// about 60 bytes, so the per-operation cost is a few copies, with no allocation and no move of
/// the buffer. Longer data spills to the heap.
pub(crate) struct AadBuf {
    inline: [u8; INLINE],
    spill: Vec<u8>,
}

const INLINE: usize = 128;

impl AadBuf {
    pub(crate) fn new() -> Self {
        Self {
            inline: [0; INLINE],
            spill: Vec::new(),
        }
    }

    /// Writes `fields`, each prefixed by its length as 4 big-endian bytes so that no two field
    /// lists encode to the same bytes, and returns the encoding.
    #[inline(always)]
    fn encode(&mut self, fields: [&[u8]; 5]) -> &[u8] {
        let total = fields.iter().map(|f| 4 + f.len()).sum::<usize>();
        let out: &mut [u8] = if total <= INLINE {
            &mut self.inline[..total]
        } else {
            self.spill.resize(total, 0);
            &mut self.spill
        };
        // `out` is exactly `total` bytes, the sum of the same prefixes and fields written below,
        // so no slice index can go past its end.
        let mut at = 0;
        for field in fields {
            // Fields are short (ids, a tenant name), far below u32::MAX.
            out[at..at + 4].copy_from_slice(&(field.len() as u32).to_be_bytes());
            out[at + 4..at + 4 + field.len()].copy_from_slice(field);
            at += 4 + field.len();
        }
        out
    }
}

impl ValueContext<'_> {
    pub(crate) fn encode<'b>(&self, header: &[u8; 2], buf: &'b mut AadBuf) -> &'b [u8] {
        buf.encode([
            b"rcrt/value",
            header,
            self.tenant.as_bytes(),
            self.secret_id,
            &self.version.to_be_bytes(),
        ])
    }
}

impl WrapContext<'_> {
    /// The associated data for a wrap under this context, with the wrapped-DEK header.
    ///
    /// Public so that KEK providers outside this crate (KMS, HSM) bind the same fields.
    pub fn encode(&self, header: &[u8; 2]) -> Vec<u8> {
        self.encode_into(header, &mut AadBuf::new()).to_vec()
    }

    pub(crate) fn encode_into<'b>(&self, header: &[u8; 2], buf: &'b mut AadBuf) -> &'b [u8] {
        buf.encode([
            b"rcrt/dek",
            header,
            self.kek_id.as_str().as_bytes(),
            self.secret_id,
            &self.version.to_be_bytes(),
        ])
    }
}
