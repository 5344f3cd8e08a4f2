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

/// Encoded associated data: on the stack when it fits (it always does for tenant names under
/// about 100 bytes), so the per-operation cost is a few copies, not an allocation.
pub(crate) enum AadBytes {
    Stack([u8; 160], usize),
    Heap(Vec<u8>),
}

impl AsRef<[u8]> for AadBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Stack(buf, len) => buf.get(..*len).unwrap_or_default(),
            Self::Heap(v) => v,
        }
    }
}

/// Length-prefixed concatenation, so no two field lists encode to the same bytes.
fn encode(label: &[u8], header: &[u8], fields: &[&[u8]]) -> AadBytes {
    let parts = || [label, header].into_iter().chain(fields.iter().copied());
    let total: usize = parts().map(|p| 4 + p.len()).sum();
    let mut stack = [0u8; 160];
    let mut heap = Vec::new();
    let out: &mut [u8] = if total <= stack.len() {
        &mut stack[..total]
    } else {
        heap.resize(total, 0);
        &mut heap
    };
    let mut at = 0;
    for part in parts() {
        // Fields are short (ids, a tenant name), far below u32::MAX.
        out[at..at + 4].copy_from_slice(&(part.len() as u32).to_be_bytes());
        out[at + 4..at + 4 + part.len()].copy_from_slice(part);
        at += 4 + part.len();
    }
    if heap.is_empty() {
        AadBytes::Stack(stack, total)
    } else {
        AadBytes::Heap(heap)
    }
}

impl ValueContext<'_> {
    pub(crate) fn encode(&self, header: &[u8]) -> AadBytes {
        encode(
            b"rcrt/value",
            header,
            &[
                self.tenant.as_bytes(),
                self.secret_id,
                &self.version.to_be_bytes(),
            ],
        )
    }
}

impl WrapContext<'_> {
    /// The associated data for a wrap under this context, with the wrapped-DEK header.
    ///
    /// Public so that KEK providers outside this crate (KMS, HSM) bind the same fields.
    pub fn encode(&self, header: &[u8]) -> Vec<u8> {
        self.encode_fast(header).as_ref().to_vec()
    }

    pub(crate) fn encode_fast(&self, header: &[u8]) -> AadBytes {
        encode(
            b"rcrt/dek",
            header,
            &[
                self.kek_id.as_str().as_bytes(),
                self.secret_id,
                &self.version.to_be_bytes(),
            ],
        )
    }
}
