//! RCRT service rules, reachable without HTTP: validation, envelope use, audit, KEK checks.
//!
//! What it does: [`Service`] implements every secrets operation the API offers, decides each
//! request's outcome, and writes the audit row that goes with it. Fail closed: a decrypt returns
//! plaintext only after its audit row is durable. What it does not do: parse HTTP, read the
//! environment, or know which database or KEK provider sits behind the traits it is given.

pub mod audit;
pub mod authz;
mod error;
pub mod lifecycle;
pub mod maintenance;
mod metrics;
pub mod rewrap_job;
mod service;
pub mod tokens;
pub mod vaults;

pub use error::CoreError;
pub use metrics::Metrics;
pub use service::{
    check_not_empty, Clock, CreateSecret, Limits, Page, RequestContext, Service, SystemClock,
    DEFAULT_MAX_VALUE_BYTES,
};
