//! Test peer: softhsm (filled in by its provider's work).
