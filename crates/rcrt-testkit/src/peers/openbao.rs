//! Test peer: openbao (filled in by its provider's work).
