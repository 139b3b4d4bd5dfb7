//! Signed requests in the log: which writes need one, and the checks
//! every node makes when it applies one (#11 item 2).
//!
//! Raft does not tolerate a hostile member. The leader's check of who may
//! forward what ([`writers`](super::writers)) stops a node that is not
//! the leader; a node that wins an election can append what it likes. So
//! the writes that mint or take away credentials and authority —
//! `CreateToken`, `Revoke`, `RemoveNode`, `SetCaNode` — are applied only
//! inside [`Command::Signed`], with the requesting admin's
//! [`shoal_pki::Proof`], and every node checks when it applies the entry:
//!
//! 1. the proof's certificate chains to the CA recorded at bootstrap and
//!    was valid when the proof was made, and its key signed this intent
//!    ([`shoal_pki::proof::verify`]);
//! 2. the signer is an admin, not revoked as of this log position;
//! 3. the intent is what the command does (the token record, the identity,
//!    the node by name);
//! 4. the nonce was not used in an applied proof, and the proof is not
//!    older than the newest applied one by more than
//!    [`PROOF_WINDOW_MS`](shoal_pki::proof::PROOF_WINDOW_MS) (nonces are
//!    kept that long, at most [`PROOF_NONCES_MAX`]).
//!
//! All of it reads only the entry and the state, so every node decides the
//! same. The receiving node also checks the proof's time against its own
//! clock before writing. What a hostile leader can still do is refuse or
//! delay writes, or repeat none of these: it cannot make one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_pki::proof::{Intent, Proof, ProofError, PROOF_WINDOW_MS};
use shoal_pki::Role;

use super::{ClusterState, Command, CommandResult, Refusal, RevokeTarget};

/// Most nonces of applied proofs kept (within the window).
pub const PROOF_NONCES_MAX: usize = 4096;

/// The nonces of the signed requests applied in the last window, and the
/// newest one's time: the state machine's clock for proofs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBook {
    /// Newest `issued_unix_ms` of an applied proof.
    pub newest_unix_ms: u64,
    /// Nonce → when its proof was made, Unix ms.
    pub nonces: BTreeMap<String, u64>,
}

/// Whether `cmd` is applied only with a signed request.
pub fn needs_proof(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::CreateToken { .. }
            | Command::Revoke { .. }
            | Command::RemoveNode { .. }
            | Command::SetCaNode { .. }
    )
}

impl ClusterState {
    /// Check `proof` for `cmd` (see the module docs), then apply `cmd`.
    pub(super) fn apply_signed(&mut self, proof: &Proof, cmd: &Command) -> CommandResult {
        match self.check_proof(proof, cmd) {
            Ok(()) => {}
            Err(why) => return CommandResult::Refused(Refusal::Proof(why)),
        }
        self.proofs.newest_unix_ms = self.proofs.newest_unix_ms.max(proof.issued_unix_ms);
        self.proofs
            .nonces
            .insert(proof.nonce.clone(), proof.issued_unix_ms);
        let oldest = self.proofs.newest_unix_ms.saturating_sub(PROOF_WINDOW_MS);
        self.proofs.nonces.retain(|_, issued| *issued >= oldest);
        debug_assert!(self.proofs.nonces.len() <= PROOF_NONCES_MAX);
        self.apply_checked(cmd)
    }

    fn check_proof(&self, proof: &Proof, cmd: &Command) -> Result<(), ProofError> {
        let what = super::writers::command_name(cmd);
        if !needs_proof(cmd) {
            return Err(ProofError::WrongIntent {
                signed: proof.intent.describe(),
                asked: what.to_string(),
            });
        }
        let oldest = self.proofs.newest_unix_ms.saturating_sub(PROOF_WINDOW_MS);
        if proof.issued_unix_ms < oldest {
            return Err(ProofError::Stale {
                issued_unix_ms: proof.issued_unix_ms,
                now_unix_ms: self.proofs.newest_unix_ms,
                window_ms: PROOF_WINDOW_MS,
            });
        }
        if self.proofs.nonces.contains_key(&proof.nonce) {
            return Err(ProofError::Replayed {
                nonce: proof.nonce.clone(),
            });
        }
        let live = self
            .proofs
            .nonces
            .values()
            .filter(|issued| **issued >= proof.issued_unix_ms.saturating_sub(PROOF_WINDOW_MS))
            .count();
        if live >= PROOF_NONCES_MAX {
            return Err(ProofError::TooMany {
                max: PROOF_NONCES_MAX,
                window_ms: PROOF_WINDOW_MS,
            });
        }
        self.admin_signer(proof)?;
        if !self.intent_matches(&proof.intent, cmd) {
            return Err(ProofError::WrongIntent {
                signed: proof.intent.describe(),
                asked: self.describe_cmd(cmd),
            });
        }
        Ok(())
    }

    /// Who signed `proof`, if it is an admin of this cluster not revoked
    /// as of this state: the CA recorded at bootstrap, the signature and
    /// the certificate's validity when the proof was made
    /// ([`shoal_pki::proof::verify`]), the role and the revocation list.
    /// What the state machine checks of every signed entry, and what a
    /// node's control API checks before it writes one.
    pub fn admin_signer(&self, proof: &Proof) -> Result<shoal_pki::CertInfo, ProofError> {
        if self.ca_cert_pem.is_empty() {
            return Err(ProofError::NoCa);
        }
        let ca = shoal_pki::ca::first_cert_der(&self.ca_cert_pem).map_err(|_| ProofError::NoCa)?;
        let info = shoal_pki::proof::verify(ca.as_ref(), proof)?;
        if info.role != Role::Admin {
            return Err(ProofError::NotAdmin {
                what: proof.intent.describe(),
                role: info.role,
                id: info.id,
            });
        }
        if let Some(r) = self.revocations.check(&info) {
            return Err(ProofError::Revoked {
                role: info.role,
                id: info.id,
                reason: r.reason.clone(),
            });
        }
        Ok(info)
    }

    /// Whether `cmd` does exactly what `intent` asks.
    fn intent_matches(&self, intent: &Intent, cmd: &Command) -> bool {
        // A node id the state does not know: the command itself is
        // refused (`NoNode`), so the intent cannot be misapplied.
        let named = |id: &u64, name: &str| self.nodes.get(id).is_none_or(|n| n.name == name);
        match (intent, cmd) {
            (Intent::CreateToken { .. }, Command::CreateToken { record }) => {
                *intent == Intent::create_token(record)
                    && !record.used
                    && record.used_unix_ms.is_none()
            }
            (
                Intent::RevokeIdentity { role, id },
                Command::Revoke {
                    target:
                        RevokeTarget::Identity {
                            role: cmd_role,
                            id: cmd_id,
                        },
                    ..
                },
            ) => role == cmd_role && id == cmd_id,
            (
                Intent::RevokeSerial { serial },
                Command::Revoke {
                    target:
                        RevokeTarget::Serial {
                            serial: cmd_serial, ..
                        },
                    ..
                },
            ) => serial == cmd_serial,
            (Intent::RemoveNode { node }, Command::RemoveNode { id, .. }) => named(id, node),
            (Intent::TakeOverCa { node }, Command::SetCaNode { node: id }) => named(id, node),
            _ => false,
        }
    }

    fn describe_cmd(&self, cmd: &Command) -> String {
        let name = |id: &u64| {
            self.nodes
                .get(id)
                .map(|n| format!("{:?}", n.name))
                .unwrap_or_else(|| format!("id {id}"))
        };
        match cmd {
            Command::CreateToken { record } => {
                format!("create a {} join token ({})", record.role, record.id)
            }
            Command::Revoke {
                target: RevokeTarget::Identity { role, id },
                ..
            } => format!("revoke {role}/{id}"),
            Command::Revoke {
                target: RevokeTarget::Serial { serial, .. },
                ..
            } => format!("revoke certificate {}", serial.as_hex()),
            Command::RemoveNode { id, .. } => format!("remove node {}", name(id)),
            Command::SetCaNode { node } => format!("make node {} the CA node", name(node)),
            other => super::writers::command_name(other).to_string(),
        }
    }
}

/// Signing for tests: one test CA and its admin, made once per test run.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use shoal_pki::{ClusterCa, Signer};
    use std::sync::OnceLock;
    use std::time::Duration;

    struct TestCa {
        ca_pem: String,
        admin: Signer,
        client: Signer,
    }

    fn test_ca() -> &'static TestCa {
        static CA: OnceLock<TestCa> = OnceLock::new();
        CA.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let ca = ClusterCa::init(dir.path()).expect("test CA");
            let issue = |role, id| {
                let c = ca
                    .issue_with_new_key(role, id, Duration::from_secs(3600))
                    .expect("credentials");
                Signer::from_pem(&c.cert.cert_pem, &c.key_pem, ca.ca_cert_pem()).expect("signer")
            };
            TestCa {
                ca_pem: ca.ca_cert_pem().to_string(),
                admin: issue(Role::Admin, "root"),
                client: issue(Role::Client, "carol"),
            }
        })
    }

    /// The test CA's certificate.
    pub(crate) fn ca_pem() -> &'static str {
        &test_ca().ca_pem
    }

    /// The test admin (`admin/root`).
    pub(crate) fn admin() -> &'static Signer {
        &test_ca().admin
    }

    /// A test client (`client/carol`).
    pub(crate) fn client() -> &'static Signer {
        &test_ca().client
    }

    /// What `cmd` does, as an intent (node names from `s`).
    pub(crate) fn intent_of(s: &ClusterState, cmd: &Command) -> Intent {
        let name = |id: &u64| s.nodes.get(id).map(|n| n.name.clone()).unwrap_or_default();
        match cmd {
            Command::CreateToken { record } => Intent::create_token(record),
            Command::Revoke {
                target: RevokeTarget::Identity { role, id },
                ..
            } => Intent::RevokeIdentity {
                role: *role,
                id: id.clone(),
            },
            Command::Revoke {
                target: RevokeTarget::Serial { serial, .. },
                ..
            } => Intent::RevokeSerial {
                serial: serial.clone(),
            },
            Command::RemoveNode { id, .. } => Intent::RemoveNode { node: name(id) },
            Command::SetCaNode { node } => Intent::TakeOverCa { node: name(node) },
            other => panic!("no intent for {other:?}"),
        }
    }

    /// `cmd` signed by `signer` (the state records the test CA if it
    /// recorded none).
    pub(crate) fn signed_by(s: &mut ClusterState, signer: &Signer, cmd: Command) -> Command {
        if s.ca_cert_pem.is_empty() {
            s.ca_cert_pem = ca_pem().to_string();
        }
        let proof = signer.sign(intent_of(s, &cmd)).expect("sign");
        Command::Signed {
            proof,
            cmd: Box::new(cmd),
        }
    }

    /// Apply `cmd` signed by the test admin.
    pub(crate) fn apply_signed(s: &mut ClusterState, cmd: Command) -> CommandResult {
        let signed = signed_by(s, admin(), cmd);
        s.apply(&signed)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{admin, apply_signed, client, signed_by};
    use super::*;
    use shoal_pki::{JoinToken, TokenRecord};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn cluster() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(&Command::Bootstrap {
            ca_node: 1,
            ca_cert_pem: super::test_support::ca_pem().to_string(),
            name: "n1".into(),
            addr: "n1:1".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        s.apply(&Command::AddNode {
            name: "n2".into(),
            addr: "n2:1".into(),
            labels: BTreeMap::new(),
            now_ms: 1,
        });
        s
    }

    fn mint(role: Role) -> (JoinToken, Command) {
        let token = JoinToken::generate().unwrap();
        let now = shoal_pki::now_unix_ms();
        let record = TokenRecord::new(&token, role, now, Duration::from_secs(600));
        (token, Command::CreateToken { record })
    }

    fn refusal(r: CommandResult) -> ProofError {
        match r {
            CommandResult::Refused(Refusal::Proof(why)) => why,
            other => panic!("expected a proof refusal, got {other:?}"),
        }
    }

    /// The attack of #11 item 2 by a node that won an election: it appends
    /// `CreateToken{role: admin}` itself. Without an admin's signature no
    /// node applies it, so the token cannot be redeemed.
    #[test]
    fn a_leader_cannot_mint_an_admin_token_without_an_admins_signature() {
        let mut s = cluster();
        let (token, cmd) = mint(Role::Admin);
        assert!(matches!(refusal(s.apply(&cmd)), ProofError::Missing { .. }));
        // Inside the at-most-once envelope every write travels in.
        let once = Command::Once {
            client: 7,
            seq: 1,
            cmd: Box::new(cmd),
        };
        assert!(matches!(
            refusal(s.apply(&once)),
            ProofError::Missing { .. }
        ));
        assert!(s.tokens.records().next().is_none());
        let redeem = s.apply(&Command::RedeemToken {
            token: token.to_string(),
            now_ms: shoal_pki::now_unix_ms(),
        });
        assert!(
            matches!(redeem, CommandResult::Refused(Refusal::Token(_))),
            "{redeem:?}"
        );
        // Every role-bearing write is refused unsigned.
        for cmd in [
            Command::RemoveNode { id: 2, now_ms: 1 },
            Command::SetCaNode { node: 2 },
            Command::Revoke {
                target: RevokeTarget::Identity {
                    role: Role::Admin,
                    id: "root".into(),
                },
                reason: String::new(),
                now_ms: 1,
            },
        ] {
            assert!(matches!(refusal(s.apply(&cmd)), ProofError::Missing { .. }));
        }
        assert_eq!(s.ca_node, Some(1));
        assert!(s.member(2).is_some());
    }

    #[test]
    fn an_admins_signed_token_is_applied_and_redeemable() {
        let mut s = cluster();
        let (token, cmd) = mint(Role::Admin);
        assert_eq!(apply_signed(&mut s, cmd), CommandResult::Ok);
        let redeem = s.apply(&Command::RedeemToken {
            token: token.to_string(),
            now_ms: shoal_pki::now_unix_ms(),
        });
        assert_eq!(redeem, CommandResult::Role(Role::Admin));
    }

    #[test]
    fn a_clients_signature_is_not_an_admins() {
        let mut s = cluster();
        let (_, cmd) = mint(Role::Admin);
        let signed = signed_by(&mut s, client(), cmd);
        assert!(matches!(
            refusal(s.apply(&signed)),
            ProofError::NotAdmin {
                role: Role::Client,
                ..
            }
        ));
    }

    /// A hostile leader takes an admin's signed request for a node token
    /// and makes it an admin token, or points a removal at another node.
    #[test]
    fn a_signature_covers_exactly_what_was_asked() {
        let mut s = cluster();
        let (_, asked) = mint(Role::Node);
        let Command::Signed { proof, cmd } = signed_by(&mut s, admin(), asked) else {
            panic!("signed");
        };
        let Command::CreateToken { mut record } = *cmd else {
            panic!("token");
        };
        record.role = Role::Admin;
        let forged = Command::Signed {
            proof,
            cmd: Box::new(Command::CreateToken { record }),
        };
        assert!(matches!(
            refusal(s.apply(&forged)),
            ProofError::WrongIntent { .. }
        ));
        let Command::Signed { proof, .. } =
            signed_by(&mut s, admin(), Command::RemoveNode { id: 2, now_ms: 1 })
        else {
            panic!("signed");
        };
        let forged = Command::Signed {
            proof,
            cmd: Box::new(Command::RemoveNode { id: 1, now_ms: 1 }),
        };
        assert!(matches!(
            refusal(s.apply(&forged)),
            ProofError::WrongIntent { .. }
        ));
        assert!(s.member(1).is_some() && s.tokens.records().next().is_none());
        // A proof does not make an unrelated write signed.
        let Command::Signed { proof, .. } = signed_by(&mut s, admin(), mint(Role::Node).1) else {
            panic!("signed");
        };
        let beat = Command::Signed {
            proof,
            cmd: Box::new(Command::SetCordon {
                id: 1,
                cordoned: true,
            }),
        };
        assert!(matches!(
            refusal(s.apply(&beat)),
            ProofError::WrongIntent { .. }
        ));
    }

    #[test]
    fn a_signed_request_is_applied_once() {
        let mut s = cluster();
        let signed = signed_by(&mut s, admin(), mint(Role::Node).1);
        assert_eq!(s.apply(&signed), CommandResult::Ok);
        assert!(matches!(
            refusal(s.apply(&signed)),
            ProofError::Replayed { .. }
        ));
        assert_eq!(s.tokens.records().count(), 1);
    }

    #[test]
    fn a_proof_older_than_the_window_behind_the_newest_is_refused() {
        let mut s = cluster();
        let old = signed_by(&mut s, admin(), mint(Role::Node).1);
        // A newer proof, applied first, moves the proofs' clock on.
        let Command::Signed { mut proof, cmd } = signed_by(&mut s, admin(), mint(Role::Node).1)
        else {
            panic!("signed");
        };
        proof = admin()
            .sign_at(proof.intent, proof.issued_unix_ms + PROOF_WINDOW_MS + 1)
            .unwrap();
        assert_eq!(s.apply(&Command::Signed { proof, cmd }), CommandResult::Ok);
        assert!(matches!(refusal(s.apply(&old)), ProofError::Stale { .. }));
        // Nonces older than the window are not kept.
        assert_eq!(s.proofs.nonces.len(), 1);
    }

    #[test]
    fn a_revoked_admins_proof_is_refused_from_the_revocation_on() {
        let mut s = cluster();
        let before = signed_by(&mut s, admin(), mint(Role::Node).1);
        let revoke = Command::Revoke {
            target: RevokeTarget::Identity {
                role: Role::Admin,
                id: admin().info().id.clone(),
            },
            reason: "left".into(),
            now_ms: 1,
        };
        assert_eq!(apply_signed(&mut s, revoke), CommandResult::Generation(1));
        assert!(matches!(
            refusal(s.apply(&before)),
            ProofError::Revoked { .. }
        ));
    }

    #[test]
    fn a_state_without_a_ca_refuses_every_proof() {
        let mut s = cluster();
        let signed = signed_by(&mut s, admin(), mint(Role::Node).1);
        s.ca_cert_pem.clear();
        assert_eq!(refusal(s.apply(&signed)), ProofError::NoCa);
    }
}
