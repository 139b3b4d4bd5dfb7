//! Ownership: who a resource belongs to, and the one rule that says who may
//! act on it.
//!
//! Every resource a caller creates in the cluster (a process, a process
//! name, a module name, and what later features add: buckets, locks,
//! volumes) records the [`Owner`] that created it: the role and id of the
//! certificate that asked. Whether someone may act on it (kill, snapshot,
//! migrate, restore over it, read its logs, repoint or remove it) is
//! decided by [`may_act`] and nothing else:
//!
//! - an **admin** acts on everything;
//! - anyone else (a **client**, or a **node** acting as itself) acts only
//!   on what it owns itself: same role, same id.
//!
//! What nobody created through the API (processes started before owners
//! were recorded, host mailboxes) belongs to [`Owner::cluster`]: only an
//! admin acts on it. Processes a guest spawns belong to their parent's
//! owner, so a guest never leaves its owner's namespace.
//!
//! Capabilities come from who asked (the certificate the TLS handshake
//! verified), never from data a caller hands over: callers build the
//! acting `Owner` with [`Owner::of`].

use crate::role::{CertInfo, Role};
use serde::{Deserialize, Serialize};

/// The identity a resource belongs to: the role and id of the certificate
/// that created it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Its role.
    pub role: Role,
    /// Its id (client, admin or node name).
    pub id: String,
}

impl Owner {
    /// The owner of what nobody created through the API (and the namespace
    /// of names such processes register): only an admin acts on it. A node
    /// certificate's own identity always has a non-empty id, so it is not
    /// this owner.
    pub fn cluster() -> Owner {
        Owner {
            role: Role::Node,
            id: String::new(),
        }
    }

    /// The identity a verified certificate proves.
    pub fn of(cert: &CertInfo) -> Owner {
        Owner {
            role: cert.role,
            id: cert.id.clone(),
        }
    }

    /// Whether this is [`Owner::cluster`].
    pub fn is_cluster(&self) -> bool {
        *self == Owner::cluster()
    }

    /// The key of its namespace: `role:id`.
    pub fn namespace(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.id)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_cluster() {
            f.write_str("the cluster")
        } else {
            write!(f, "{} {:?}", self.role.as_str(), self.id)
        }
    }
}

/// A refusal by the ownership rule or a role check. Travels typed on the
/// wire (the `detail` of a 403 answer), tagged by `code`, so programs
/// never parse the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Forbidden {
    /// The resource belongs to someone else.
    #[error("{who} may not act on {what}: it belongs to {owner} (a client acts only on what it created; an admin on everything)")]
    NotOwner {
        /// Who asked.
        who: Owner,
        /// Whose it is.
        owner: Owner,
        /// What was asked about (`process 65537`, `module name "app"`).
        what: String,
    },
    /// The action needs a role the caller does not have.
    #[error("{what} needs an admin certificate ({who} is not an admin)")]
    NeedsAdmin {
        /// Who asked.
        who: Owner,
        /// What was asked.
        what: String,
    },
    /// The caller's certificate was revoked after its connection was
    /// opened (the connection is being closed too).
    #[error("the certificate of {who} is revoked ({reason}): it may do nothing more")]
    Revoked {
        /// Whose certificate.
        who: Owner,
        /// The revocation's reason.
        reason: String,
    },
    /// A node certificate whose node is not (any more) a member of the
    /// cluster: it may not renew.
    #[error("{who} is not a member of the cluster (removed, or never admitted)")]
    NotMember {
        /// Who asked.
        who: Owner,
    },
}

/// The ownership rule: may `who` act on `what`, which belongs to `owner`?
/// An admin may act on everything; anyone else only on what it owns.
pub fn may_act(who: &Owner, owner: &Owner, what: &str) -> Result<(), Forbidden> {
    if who.role == Role::Admin || (who == owner && !owner.is_cluster()) {
        Ok(())
    } else {
        Err(Forbidden::NotOwner {
            who: who.clone(),
            owner: owner.clone(),
            what: what.to_string(),
        })
    }
}

/// The role rule for cluster-wide verbs (tokens, certificates, node
/// removal, cordons): only an admin.
pub fn need_admin(who: &Owner, what: &str) -> Result<(), Forbidden> {
    if who.role == Role::Admin {
        Ok(())
    } else {
        Err(Forbidden::NeedsAdmin {
            who: who.clone(),
            what: what.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(role: Role, id: &str) -> Owner {
        Owner {
            role,
            id: id.into(),
        }
    }

    #[test]
    fn admin_acts_on_all_others_on_their_own() {
        let alice = o(Role::Client, "alice");
        let bob = o(Role::Client, "bob");
        let root = o(Role::Admin, "root");
        let n1 = o(Role::Node, "n1");
        let cluster = Owner::cluster();
        for owner in [&alice, &bob, &root, &n1, &cluster] {
            assert_eq!(may_act(&root, owner, "x"), Ok(()));
        }
        assert_eq!(may_act(&alice, &alice, "x"), Ok(()));
        assert_eq!(may_act(&n1, &n1, "x"), Ok(()));
        for (who, owner) in [
            (&alice, &bob),
            (&alice, &root),
            (&alice, &cluster),
            (&n1, &alice),
            (&n1, &cluster),
            // Same id, other role: another identity.
            (&o(Role::Client, "n1"), &n1),
        ] {
            assert!(
                matches!(may_act(who, owner, "x"), Err(Forbidden::NotOwner { .. })),
                "{who} on {owner}"
            );
        }
        // An empty node id is the cluster, not a node's own identity.
        assert!(may_act(&cluster, &cluster, "x").is_err());
        assert!(need_admin(&alice, "t").is_err());
        assert!(need_admin(&n1, "t").is_err());
        assert_eq!(need_admin(&root, "t"), Ok(()));
    }

    #[test]
    fn a_refusal_travels_typed() {
        let f = may_act(&o(Role::Client, "a"), &o(Role::Client, "b"), "process 7").unwrap_err();
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["code"], "not_owner");
        assert_eq!(json["owner"]["id"], "b");
        let back: Forbidden = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }
}
