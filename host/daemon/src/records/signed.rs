//! The admin's signed request that the credential-bearing writes carry
//! into the log ([`shoal_cluster::state::proofs`] checks it when applied).
//!
//! The control API takes it from the [`PROOF_HEADER`] of the request and
//! checks it here first — the CA, the signature, the time against this
//! node's clock, the admin role, and that it asks for what the route is
//! about to write — so a bad one is refused before anything is written
//! (node removal changes Raft membership before its entry).

use hyper::HeaderMap;
use shoal_cluster::{ClusterState, Command, Refusal};
use shoal_net::RemoteError;
use shoal_pki::proof::{Intent, Proof, ProofError, PROOF_HEADER};

fn refuse(why: ProofError) -> RemoteError {
    RemoteError::typed(403, &Refusal::Proof(why))
}

/// The signed request in `headers`, checked to ask for `expected`, made
/// within the window of this node's clock by an admin of this cluster as
/// `state` knows it (the same check the state machine makes when it
/// applies the entry: [`ClusterState::admin_signer`]).
pub fn checked_proof(
    state: &ClusterState,
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
    state.admin_signer(&proof).map_err(refuse)?;
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
