//! Authorization: which principal may do what, where. The README's access table is this module.
//!
//! | action | role | global | workspace `W` | agent `A` |
//! |---|---|---|---|---|
//! | list, read metadata (secrets and vaults) | `secrets.read` | yes | `W` in `workspaces`, or admin | `A` = `sub`, or admin |
//! | decrypt (secrets and vaults) | `secrets.decrypt` | yes | same | same |
//! | create, update, delete | `secrets.write` | admin only | same | same |
//! | KEK status and re-wrap | `rcrt.operator` | | | |
//!
//! `secrets.admin` is the tenant's administrator: every scope and every token of its tenant.
//! `rcrt.operator` acts on the whole deployment (the KEK is shared by every tenant), so it is a
//! role of its own that no tenant administrator has unless given it.
//!
//! Tokens ([`may_mint`], [`may_revoke`]): minting needs `secrets.admin` or `tokens.create` and
//! never escalates; revoking needs `secrets.admin`, or a token the caller minted or acts as.
//!
//! Everything is inside the caller's tenant; another tenant's secrets do not exist for it.

use rcrt_types::{Principal, Role, Roles, Scope, ScopeType};
use time::OffsetDateTime;

/// What the caller wants to do with a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List or read metadata.
    Read,
    /// Read the value.
    Decrypt,
    /// Create, update or delete.
    Write,
}

impl Action {
    fn role(self) -> Role {
        match self {
            Self::Read => Role::Read,
            Self::Decrypt => Role::Decrypt,
            Self::Write => Role::Write,
        }
    }
}

/// True if `p` may reach `scope` at all (ignoring roles).
pub fn reaches(p: &Principal, scope: &Scope) -> bool {
    if p.roles.has(Role::Admin) {
        return true;
    }
    match scope.scope_type() {
        ScopeType::Global => true,
        ScopeType::Workspace => scope
            .scope_id()
            .is_some_and(|w| p.workspaces.iter().any(|m| m == w)),
        ScopeType::Agent => scope.scope_id() == Some(p.user_id.as_str()),
    }
}

/// True if `p` may do `action` on a secret in `scope` (of its own tenant).
pub fn allows(p: &Principal, action: Action, scope: &Scope) -> bool {
    if !p.roles.has(action.role()) || !reaches(p, scope) {
        return false;
    }
    // Global secrets are readable tenant-wide but only admins change them.
    !(action == Action::Write
        && scope.scope_type() == ScopeType::Global
        && !p.roles.has(Role::Admin))
}

/// True if `p` is its tenant's administrator (every scope and token of the tenant).
pub fn is_admin(p: &Principal) -> bool {
    p.roles.has(Role::Admin)
}

/// True if `p` may use the deployment-wide KEK endpoints.
pub fn is_operator(p: &Principal) -> bool {
    p.roles.has(Role::Operator)
}

/// Whether `caller` may mint a token acting as `principal` with `roles` and `workspaces`,
/// expiring at `expires_at`, in its own tenant; the refusal says which rule it broke.
///
/// No escalation: the roles are a subset of the caller's; a non-administrator mints only for
/// itself and only within its own workspaces; no token outlives the service token minting it
/// (a JWT caller has no such limit: see `Principal::expires_at`).
pub fn may_mint(
    caller: &Principal,
    principal: &str,
    roles: Roles,
    workspaces: &[String],
    expires_at: OffsetDateTime,
) -> Result<(), &'static str> {
    let admin = is_admin(caller);
    if !admin && !caller.roles.has(Role::TokensCreate) {
        return Err("minting tokens needs secrets.admin or tokens.create");
    }
    if !roles.is_subset_of(caller.roles) {
        return Err("a token's roles must be a subset of the caller's roles");
    }
    if !admin && principal != caller.user_id {
        return Err("only secrets.admin mints tokens for another principal");
    }
    if !admin && !workspaces.iter().all(|w| caller.workspaces.contains(w)) {
        return Err("a token's workspaces must be a subset of the caller's workspaces");
    }
    if caller.expires_at.is_some_and(|e| expires_at > e) {
        return Err("a token cannot outlive the token that mints it");
    }
    Ok(())
}

/// True if `caller` may revoke a token of its tenant minted by `created_by`, acting as
/// `principal`.
pub fn may_revoke(caller: &Principal, created_by: &str, principal: &str) -> bool {
    is_admin(caller) || created_by == caller.user_id || principal == caller.user_id
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcrt_types::{Roles, TenantId};

    fn principal(roles: &[Role], workspaces: &[&str]) -> Principal {
        Principal {
            user_id: "agent-1".into(),
            tenant: TenantId::new("t1"),
            roles: roles.iter().copied().collect::<Roles>(),
            workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
            expires_at: None,
        }
    }

    #[test]
    fn the_readme_table() {
        let global = Scope::global();
        let ws = Scope::new(ScopeType::Workspace, Some("w1")).unwrap();
        let other_ws = Scope::new(ScopeType::Workspace, Some("w2")).unwrap();
        let me = Scope::new(ScopeType::Agent, Some("agent-1")).unwrap();
        let other_agent = Scope::new(ScopeType::Agent, Some("agent-2")).unwrap();

        let reader = principal(&[Role::Read], &["w1"]);
        assert!(allows(&reader, Action::Read, &global));
        assert!(allows(&reader, Action::Read, &ws));
        assert!(!allows(&reader, Action::Read, &other_ws));
        assert!(allows(&reader, Action::Read, &me));
        assert!(!allows(&reader, Action::Read, &other_agent));
        assert!(!allows(&reader, Action::Decrypt, &global));
        assert!(!allows(&reader, Action::Write, &ws));

        let writer = principal(&[Role::Write, Role::Decrypt], &["w1"]);
        assert!(allows(&writer, Action::Write, &ws));
        assert!(allows(&writer, Action::Write, &me));
        assert!(
            !allows(&writer, Action::Write, &global),
            "global writes need admin"
        );
        assert!(!allows(&writer, Action::Write, &other_ws));
        assert!(allows(&writer, Action::Decrypt, &global));
        assert!(
            !allows(&writer, Action::Read, &global),
            "decrypt does not imply read"
        );

        let admin = principal(&[Role::Admin, Role::Write, Role::Read], &[]);
        assert!(allows(&admin, Action::Write, &global));
        assert!(allows(&admin, Action::Read, &other_ws));
        assert!(allows(&admin, Action::Write, &other_agent));
        assert!(
            !allows(&admin, Action::Decrypt, &other_ws),
            "admin still needs decrypt"
        );
        assert!(is_admin(&admin) && !is_admin(&writer));
        assert!(!is_operator(&admin), "a tenant admin is no operator");
        assert!(is_operator(&principal(&[Role::Operator], &[])));
    }

    fn roles(r: &[Role]) -> Roles {
        r.iter().copied().collect()
    }

    #[test]
    fn minting_never_escalates() {
        let soon = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        let ws = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // A plain reader may not mint at all.
        let reader = principal(&[Role::Read], &["w1"]);
        assert!(may_mint(&reader, "agent-1", roles(&[Role::Read]), &[], soon).is_err());

        let minter = principal(
            &[Role::Read, Role::Decrypt, Role::TokensCreate],
            &["w1", "w2"],
        );
        let ok = |r: &[Role], w: &[&str], who: &str| may_mint(&minter, who, roles(r), &ws(w), soon);
        assert_eq!(ok(&[Role::Read], &["w1"], "agent-1"), Ok(()));
        assert_eq!(
            ok(&[Role::Read, Role::TokensCreate], &["w1", "w2"], "agent-1"),
            Ok(())
        );
        assert!(ok(&[Role::Write], &[], "agent-1").is_err(), "role it lacks");
        assert!(
            ok(&[Role::Admin], &[], "agent-1").is_err(),
            "admin it lacks"
        );
        assert!(
            ok(&[Role::Operator], &[], "agent-1").is_err(),
            "operator it lacks"
        );
        assert!(
            ok(&[Role::Read], &["w3"], "agent-1").is_err(),
            "workspace it lacks"
        );
        assert!(
            ok(&[Role::Read], &[], "agent-2").is_err(),
            "another principal"
        );

        // A credential that expires caps its children.
        let mut short = minter.clone();
        short.expires_at = Some(soon);
        let later = soon + time::Duration::seconds(1);
        assert!(may_mint(&short, "agent-1", roles(&[Role::Read]), &[], soon).is_ok());
        assert!(may_mint(&short, "agent-1", roles(&[Role::Read]), &[], later).is_err());

        // A tenant admin mints for anyone, in any workspace, but only with roles it has.
        let admin = principal(&[Role::Admin, Role::Read], &[]);
        assert!(may_mint(&admin, "svc", roles(&[Role::Read]), &ws(&["w9"]), soon).is_ok());
        assert!(may_mint(&admin, "svc", roles(&[Role::Admin]), &[], soon).is_ok());
        assert!(may_mint(&admin, "svc", roles(&[Role::Decrypt]), &[], soon).is_err());
        assert!(may_mint(&admin, "svc", roles(&[Role::Operator]), &[], soon).is_err());
    }

    #[test]
    fn revoking() {
        let me = principal(&[Role::Read], &[]);
        assert!(may_revoke(&me, "agent-1", "ci-job"), "one it minted");
        assert!(may_revoke(&me, "admin", "agent-1"), "one acting as it");
        assert!(!may_revoke(&me, "admin", "someone"));
        assert!(may_revoke(&principal(&[Role::Admin], &[]), "x", "y"));
    }
}
