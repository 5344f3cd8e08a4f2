//! Test peer: moto (filled in by its provider's work).
