//! The admin's signed request that the credential-bearing writes carry
//! into the log ([`shoal_cluster::state::proofs`] checks it when applied).
//!
//! The control API takes it from the [`PROOF_HEADER`] of the request and
//! checks it here first — the CA, the signature, the time against this
//! node's clock, the admin role, and that it asks for what the route is
//! about to write — so a bad one is refused before anything is written
//! (node removal changes Raft membership before its entry).

use hyper::HeaderMap;
use shoal_cluster::{Command, Refusal};
use shoal_net::RemoteError;
use shoal_pki::proof::{Intent, Proof, ProofError, PROOF_HEADER};
use shoal_pki::{ClusterTrust, Role};

fn refuse(why: ProofError) -> RemoteError {
    RemoteError::typed(403, &Refusal::Proof(why))
}

/// The signed request in `headers`, checked to ask for `expected`, made by
/// an admin of this cluster within the window of this node's clock.
pub fn checked_proof(
    trust: &ClusterTrust,
    headers: &HeaderMap,
    expected: &Intent,
) -> Result<Proof, RemoteError> {
    let Some(value) = headers.get(PROOF_HEADER) else {
        return Err(refuse(ProofError::Missing {
            what: expected.describe(),
        }));
    };
    let proof = shoal_pki::proof::from_header(value.as_bytes()).map_err(refuse)?;
    shoal_pki::proof::check_fresh(&proof, shoal_pki::now_unix_ms()).map_err(refuse)?;
    let info = shoal_pki::proof::verify(trust.ca_cert_der().as_ref(), &proof).map_err(refuse)?;
    if info.role != Role::Admin {
        return Err(refuse(ProofError::NotAdmin {
            what: expected.describe(),
            role: info.role,
            id: info.id,
        }));
    }
    if let Some(r) = trust.revocations().check(&info) {
        return Err(refuse(ProofError::Revoked {
            role: info.role,
            id: info.id,
            reason: r.reason,
        }));
    }
    if proof.intent != *expected {
        return Err(refuse(ProofError::WrongIntent {
            signed: proof.intent.describe(),
            asked: expected.describe(),
        }));
    }
    Ok(proof)
}

/// `cmd` wrapped with its proof, as the log carries it.
pub fn signed(proof: Proof, cmd: Command) -> Command {
    Command::Signed {
        proof,
        cmd: Box::new(cmd),
    }
}
