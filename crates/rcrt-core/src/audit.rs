//! Reading the audit log (`GET /audit`), its checkpoints and their signing key, and verifying
//! the hash chain.

pub mod checkpoint;
pub mod verify;

use rcrt_store::{AuditOrder, AuditQuery, AuditRecord};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, Role, SecretId};
use time::OffsetDateTime;

use crate::{CoreError, RequestContext, Service};

/// The most rows one page of `GET /audit` returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// What `GET /audit` filters on (always within the caller's tenant).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only rows about this secret.
    pub secret_id: Option<SecretId>,
    /// Only rows by this principal.
    pub user_id: Option<String>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only this outcome.
    pub outcome: Option<AuditOutcome>,
    /// Only rows at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only rows before this time.
    pub until: Option<OffsetDateTime>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<i64>,
    /// At most this many rows (1..=[`MAX_AUDIT_PAGE`]).
    pub limit: u32,
}

/// One page of audit rows, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The rows.
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next (older) page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

impl Service {
    /// Writes the audit row of a deployment-wide KEK administration request (`/admin/kek/*`),
    /// before it is answered. `action` is [`AuditAction::KekStatus`] or
    /// [`AuditAction::KekRewrapTrigger`]; `summary` names KEK ids, never key material.
    pub async fn audit_kek_admin(
        &self,
        ctx: &RequestContext,
        action: AuditAction,
        summary: Option<String>,
    ) -> Result<(), CoreError> {
        let p = &ctx.principal;
        self.store
            .append_audit(AuditEntry {
                timestamp: self.clock.now(),
                action,
                secret_id: None,
                token_id: None,
                tenant: p.tenant.clone(),
                user_id: p.user_id.clone(),
                reason: summary,
                outcome: AuditOutcome::Success,
                request_id: ctx.request_id.clone(),
                version: None,
            })
            .await?;
        Ok(())
    }

    /// One page of the caller's tenant's audit log. Needs `audit.read`. The read itself is
    /// audited first (fail closed: no audit row, no answer).
    pub async fn query_audit(
        &self,
        ctx: &RequestContext,
        filter: AuditFilter,
    ) -> Result<AuditPage, CoreError> {
        let p = &ctx.principal;
        if !p.roles.has(Role::AuditRead) {
            return Err(CoreError::Forbidden(
                "reading the audit log needs audit.read",
            ));
        }
        if filter.limit == 0 || filter.limit > MAX_AUDIT_PAGE {
            return Err(CoreError::Invalid(format!(
                "limit must be between 1 and {MAX_AUDIT_PAGE}"
            )));
        }
        self.store
            .append_audit(AuditEntry {
                timestamp: self.clock.now(),
                action: AuditAction::AuditRead,
                secret_id: filter.secret_id,
                token_id: None,
                tenant: p.tenant.clone(),
                user_id: p.user_id.clone(),
                reason: None,
                outcome: AuditOutcome::Success,
                request_id: ctx.request_id.clone(),
                version: None,
            })
            .await?;
        let query = AuditQuery {
            tenant: Some(p.tenant.clone()),
            secret_id: filter.secret_id,
            user_id: filter.user_id,
            action: filter.action,
            outcome: filter.outcome,
            since: filter.since,
            until: filter.until,
            cursor: filter.cursor,
            order: AuditOrder::NewestFirst,
            // One more than asked shows whether another page follows.
            limit: filter.limit + 1,
        };
        let mut records = self.store.query_audit(&query).await?;
        let more = records.len() > filter.limit as usize;
        records.truncate(filter.limit as usize);
        let next_cursor = if more {
            records.last().map(|r| r.id)
        } else {
            None
        };
        Ok(AuditPage {
            records,
            next_cursor,
        })
    }
}
