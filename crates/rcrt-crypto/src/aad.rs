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

/// Length-prefixed concatenation, so no two field lists encode to the same bytes.
fn encode(label: &[u8], header: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    for part in [label, header].into_iter().chain(fields.iter().copied()) {
        // Fields are short (ids, a tenant name), far below u32::MAX.
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

impl ValueContext<'_> {
    pub(crate) fn encode(&self, header: &[u8]) -> Vec<u8> {
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
