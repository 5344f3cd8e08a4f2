//! Response bodies that carry secret values (decrypts, vault reads).
//!
//! The JSON is written once into a buffer sized exactly beforehand, so no reallocation leaves a
//! copy of a value in freed memory; the buffer is handed to hyper as `Bytes` that own it, and
//! it is wiped when hyper drops them after writing. Hyper writes a body it does not copy (its
//! vectored-write strategy, used for TCP connections), so no other copy is made in this
//! process; the kernel's socket buffers are outside its reach.

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::Response;
use serde::Serialize;
use zeroize::Zeroizing;

use super::ApiError;

/// Counts the bytes a serializer writes, without keeping them.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The secret-carrying JSON bytes of `value`, in one exactly sized buffer that wipes itself.
fn to_json(value: &impl Serialize) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *buf, value)?;
    Ok(buf)
}

/// A 200 `application/json` response with `value` as its body (see the module docs); a caller
/// may set another status (201 for a minted token).
pub(crate) fn json(value: &impl Serialize) -> Result<Response, ApiError> {
    let buf = to_json(value).map_err(|e| {
        // Serializing strings and numbers cannot fail; the error text holds no value.
        ApiError::from(rcrt_core::CoreError::Internal(format!(
            "serializing a response: {:?}",
            e.classify()
        )))
    })?;
    let mut resp = Response::new(Body::from(Bytes::from_owner(buf)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sized_once_and_exact() {
        let value = serde_json::json!({"value": "s3cr\"et\n\u{1}\u{e4}", "version": 3});
        let buf = to_json(&value).unwrap();
        assert_eq!(buf.len(), buf.capacity(), "no spare room: sized exactly");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&buf).unwrap(),
            value
        );
    }
}
