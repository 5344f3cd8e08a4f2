//! Authorization: which principal may do what, where. The README's access table is this module.
//!
//! | action | role | global | workspace `W` | agent `A` |
//! |---|---|---|---|---|
//! | list, read metadata | `secrets.read` | yes | `W` in `workspaces`, or admin | `A` = `sub`, or admin |
//! | decrypt (secrets and vaults) | `secrets.decrypt` | yes | same | same |
//! | create, update, delete | `secrets.write` | admin only | same | same |
//! | KEK status and re-wrap | `secrets.admin` | | | |
//!
//! Everything is inside the caller's tenant; another tenant's secrets do not exist for it.

use rcrt_types::{Principal, Role, Scope, ScopeType};

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

/// True if `p` may use the KEK and audit endpoints.
pub fn is_admin(p: &Principal) -> bool {
    p.roles.has(Role::Admin)
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
    }
}
