//! Test peer: azure_standin (filled in by its provider's work).
