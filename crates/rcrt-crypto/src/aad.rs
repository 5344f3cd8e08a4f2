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
/// about 60 bytes), so the per-operation cost is a few inlined copies, not an allocation.
pub(crate) struct AadBytes {
    inline: [u8; INLINE],
    len: usize,
    spill: Vec<u8>,
}

const INLINE: usize = 128;

impl AsRef<[u8]> for AadBytes {
    fn as_ref(&self) -> &[u8] {
        if self.spill.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.spill
        }
    }
}

impl AadBytes {
    /// Room for fields whose lengths (without prefixes) add up to `content`.
    #[inline(always)]
    fn for_fields(count: usize, content: usize) -> Self {
        let total = 4 * count + content;
        Self {
            inline: [0; INLINE],
            len: 0,
            spill: if total > INLINE {
                Vec::with_capacity(total)
            } else {
                Vec::new()
            },
        }
    }

    /// Appends one field, prefixed by its length as 4 big-endian bytes, so that no two field
    /// lists encode to the same bytes. Inlined so that fixed-size fields copy without a call.
    #[inline(always)]
    fn field(&mut self, part: &[u8]) {
        // Fields are short (ids, a tenant name), far below u32::MAX.
        let prefix = (part.len() as u32).to_be_bytes();
        if self.spill.capacity() > 0 {
            self.spill.extend_from_slice(&prefix);
            self.spill.extend_from_slice(part);
        } else if let Some(out) = self.inline.get_mut(self.len..self.len + 4 + part.len()) {
            out[..4].copy_from_slice(&prefix);
            out[4..].copy_from_slice(part);
            self.len += 4 + part.len();
        }
    }
}

const VALUE_LABEL: &[u8] = b"rcrt/value";
const DEK_LABEL: &[u8] = b"rcrt/dek";

impl ValueContext<'_> {
    pub(crate) fn encode(&self, header: &[u8; 2]) -> AadBytes {
        let tenant = self.tenant.as_bytes();
        let mut aad = AadBytes::for_fields(5, VALUE_LABEL.len() + 2 + tenant.len() + 16 + 8);
        aad.field(VALUE_LABEL);
        aad.field(header);
        aad.field(tenant);
        aad.field(self.secret_id);
        aad.field(&self.version.to_be_bytes());
        aad
    }
}

impl WrapContext<'_> {
    /// The associated data for a wrap under this context, with the wrapped-DEK header.
    ///
    /// Public so that KEK providers outside this crate (KMS, HSM) bind the same fields.
    pub fn encode(&self, header: &[u8; 2]) -> Vec<u8> {
        self.encode_fast(header).as_ref().to_vec()
    }

    pub(crate) fn encode_fast(&self, header: &[u8; 2]) -> AadBytes {
        let kek_id = self.kek_id.as_str().as_bytes();
        let mut aad = AadBytes::for_fields(5, DEK_LABEL.len() + 2 + kek_id.len() + 16 + 8);
        aad.field(DEK_LABEL);
        aad.field(header);
        aad.field(kek_id);
        aad.field(self.secret_id);
        aad.field(&self.version.to_be_bytes());
        aad
    }
}
