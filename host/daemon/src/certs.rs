//! Certificates after issue: renewal and revocation by identity.
//!
//! **Renewal** (`POST /v1/certs/renew` for anyone, for its own certificate;
//! `POST /v1/peer/renew` node to node): a [`RenewRequest`] carries the
//! certificate to renew and a CSR for its key. Any node takes it and
//! forwards it to the CA node, which signs only if
//!
//! - the certificate is this cluster's, valid now and **not revoked**, by
//!   serial or by its identity's generation — checked against the list as
//!   applied now, not when the connection was opened;
//! - a node certificate's node is still a **member** (a removed node cannot
//!   renew, whatever connection it still holds);
//! - the CSR is for the certificate's key (the certificate is public; the
//!   CSR's signature proves the requester holds the key).
//!
//! The new certificate keeps role, id and **generation**: a renewal is
//! revoked with the certificate it renews, so renewing never outlives a
//! revocation (`shoal_pki::revocation`).
//!
//! **Revocation** (`POST /v1/certs/revoke`, admin only): `Command::Revoke`
//! of an identity through Raft, on behalf of the admin who asked (the
//! leader checks the role again). Every node's verifiers refuse the
//! identity's certificates from the next handshake on, and every node
//! closes the connections they hold open (`shoal_net` watches the list).
//!
//! **CA takeover** (`POST /v1/ca/takeover`, admin only, sent to the node
//! that is to become the CA node): when the CA node is lost, an operator
//! restores the CA key from a backup onto another member's data dir
//! (`shoal ca restore`, with that node stopped; `shoal_pki::backup` checks
//! the backup is of this cluster's CA), starts it, and asks it to take
//! over: it checks it holds this cluster's CA key and writes
//! `Command::SetCaNode` for itself on behalf of the admin (the leader checks
//! the role again). Joins and renewals go to it from then on.

use crate::{encode_json, from_net, Inner};
use bytes::Bytes;
use shoal_api::cluster::{CaTakeover, RenewRequest, RevokeRequest, Revoked};
use shoal_cluster::{Command, CommandResult, RevokeTarget};
use shoal_net::RemoteError;
use shoal_pki::join::JoinError;
use shoal_pki::{Forbidden, IssuedCert, Owner, Rejection, Role};

/// Node-to-node renewal, on the CA node (any node forwards it there).
pub const PATH_PEER_RENEW: &str = "/v1/peer/renew";
/// Renewal for any certificate holder, of its own certificate.
pub const PATH_RENEW: &str = "/v1/certs/renew";
/// Revocation of an identity (admin only).
pub const PATH_REVOKE: &str = "/v1/certs/revoke";
/// Make this node the CA node (admin only).
pub const PATH_CA_TAKEOVER: &str = "/v1/ca/takeover";

/// Make this node the CA node on behalf of admin `by`: it must hold this
/// cluster's CA key (see the module docs).
pub async fn take_over_ca(
    inner: &Inner,
    by: &Owner,
    headers: &hyper::HeaderMap,
) -> Result<CaTakeover, RemoteError> {
    shoal_pki::need_admin(by, "making a node the CA node")
        .map_err(crate::records::owners::forbidden)?;
    let ca = inner.ca.as_ref().ok_or_else(|| {
        RemoteError::new(
            409,
            format!(
                "node {:?} holds no CA key: stop it, restore the key with `shoal ca restore \
                 --data-dir <its data dir> BACKUP`, start it, then ask again",
                inner.name
            ),
        )
    })?;
    if ca.ca_cert_der() != inner.trust.ca_cert_der() {
        return Err(RemoteError::new(
            409,
            format!(
                "node {:?} holds the key of another CA ({}) than its cluster's",
                inner.name,
                ca.ca_pin()
            ),
        ));
    }
    let intent = shoal_pki::Intent::TakeOverCa {
        node: inner.name.clone(),
    };
    let proof = crate::records::signed::checked_proof(&inner.raft.state(), headers, &intent)?;
    let r = inner
        .raft
        .write_as(
            crate::records::signed::signed(proof, Command::SetCaNode { node: inner.me }),
            by,
        )
        .await
        .map_err(crate::records::write_err)?;
    match r {
        CommandResult::Ok => {
            tracing::info!(node = inner.me, "this node is now the CA node (by {by})");
            Ok(CaTakeover {
                node: inner.name.clone(),
                id: inner.me,
                ca_pin: ca.ca_pin().to_string(),
            })
        }
        other => Err(crate::records::refused(other)
            .err()
            .unwrap_or_else(|| RemoteError::new(500, "unexpected answer to SetCaNode"))),
    }
}

/// Sign `req` on this node, which must hold the CA: see the module docs
/// for what is checked.
pub fn renew_here(inner: &Inner, req: &RenewRequest) -> Result<IssuedCert, RemoteError> {
    let ca = inner
        .ca
        .as_ref()
        .ok_or_else(|| RemoteError::new(409, "this node does not hold the CA"))?;
    let presented = shoal_pki::ca::first_cert_der(&req.cert_pem)
        .map_err(|e| RemoteError::new(400, format!("the certificate to renew: {e}")))?;
    let info = shoal_pki::role::inspect(presented.as_ref())
        .map_err(|e| RemoteError::new(400, format!("the certificate to renew: {e}")))?;
    let who = Owner::of(&info);
    // Against the state as applied now (the verifiers' copy of the list
    // follows it a moment later).
    let state = inner.raft.state();
    if let Some(r) = state.revocations.check(&info) {
        let why = Forbidden::Revoked {
            who,
            reason: r.reason.clone(),
        };
        tracing::warn!("renewal refused: {why}");
        return Err(RemoteError::typed(403, &why));
    }
    if info.role == Role::Node && state.member_by_name(&info.id).is_none() {
        let why = Forbidden::NotMember { who };
        tracing::warn!("renewal refused: {why}");
        return Err(RemoteError::typed(403, &why));
    }
    shoal_pki::join::renew(
        ca,
        &inner.trust,
        &presented,
        &req.csr_pem,
        shoal_pki::now_unix_ms(),
        inner.cert_ttl,
    )
    .map_err(|e| {
        tracing::warn!("renewal of {who} refused: {e}");
        match e {
            JoinError::Rejected(Rejection::Revoked { reason, .. }) => {
                RemoteError::typed(403, &Forbidden::Revoked { who, reason })
            }
            JoinError::Rejected(r) => RemoteError::new(403, r.to_string()),
            other => RemoteError::new(400, other.to_string()),
        }
    })
}

/// Sign `req` here if this node holds the CA, else forward it to the CA
/// node (`POST /v1/peer/renew`).
pub async fn renew_or_forward(inner: &Inner, req: &RenewRequest) -> Result<Bytes, RemoteError> {
    let state = inner.raft.state();
    let ca_node = state
        .ca_node
        .ok_or_else(|| RemoteError::new(503, "the cluster has no CA node (it was removed)"))?;
    if ca_node == inner.me {
        return encode_json(&renew_here(inner, req)?);
    }
    let addr = state
        .member(ca_node)
        .map(|n| n.addr.clone())
        .ok_or_else(|| RemoteError::new(503, "the CA node is not a member"))?;
    let body = encode_json(req)?;
    inner
        .peers
        .call(&addr, PATH_PEER_RENEW, body)
        .await
        .map_err(|e| {
            from_net(
                e,
                &format!("the CA node ({addr}) cannot be reached to sign the renewal"),
            )
        })
}

/// `POST /v1/certs/renew`: the caller renews the certificate it connected
/// with (and no other).
pub async fn renew_own(
    inner: &Inner,
    caller: &shoal_net::Caller,
    req: &RenewRequest,
) -> Result<Bytes, RemoteError> {
    let cert = caller
        .cert
        .as_ref()
        .ok_or_else(|| RemoteError::new(401, "renewal needs a certificate"))?;
    let presented = shoal_pki::ca::first_cert_der(&req.cert_pem)
        .and_then(|der| shoal_pki::role::inspect(der.as_ref()))
        .map_err(|e| RemoteError::new(400, format!("the certificate to renew: {e}")))?;
    if presented.serial != cert.serial || presented.role != cert.role || presented.id != cert.id {
        return Err(RemoteError::new(
            403,
            format!(
                "renew the certificate you connected with ({}/{}), not another",
                cert.role, cert.id
            ),
        ));
    }
    renew_or_forward(inner, req).await
}

/// `POST /v1/certs/revoke` on behalf of `by` (an admin; checked here and by
/// the leader).
pub async fn revoke(
    inner: &Inner,
    req: RevokeRequest,
    by: &Owner,
    headers: &hyper::HeaderMap,
) -> Result<Revoked, RemoteError> {
    shoal_pki::need_admin(by, "revoking a certificate")
        .map_err(crate::records::owners::forbidden)?;
    shoal_pki::role::validate_id(&req.id).map_err(|e| RemoteError::new(400, e.to_string()))?;
    if req.role == Role::Node {
        if let Some(n) = inner.raft.state().member_by_name(&req.id) {
            return Err(RemoteError::new(
                409,
                format!(
                    "{:?} is a member of the cluster (node {}): use `shoal node remove {}`, \
                     which revokes its certificates and takes it out of the cluster",
                    n.name, n.id, n.name
                ),
            ));
        }
    }
    let intent = shoal_pki::Intent::RevokeIdentity {
        role: req.role,
        id: req.id.clone(),
    };
    let proof = crate::records::signed::checked_proof(&inner.raft.state(), headers, &intent)?;
    let now = shoal_pki::now_unix_ms();
    let reason = req
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("revoked by {by}"));
    let r = inner
        .raft
        .write_as(
            crate::records::signed::signed(
                proof,
                Command::Revoke {
                    target: RevokeTarget::Identity {
                        role: req.role,
                        id: req.id.clone(),
                    },
                    reason,
                    now_ms: now,
                },
            ),
            by,
        )
        .await
        .map_err(crate::records::write_err)?;
    match r {
        CommandResult::Generation(generation) => {
            tracing::info!(
                "revoked {}/{} (now generation {generation}) on behalf of {by}",
                req.role,
                req.id
            );
            Ok(Revoked {
                role: req.role,
                id: req.id,
                generation,
                revoked_unix_ms: now,
            })
        }
        CommandResult::Refused(why) => Err(RemoteError::typed(why.http_status(), &why)),
        CommandResult::Forbidden(f) => Err(crate::records::owners::forbidden(f)),
        other => Err(RemoteError::new(
            500,
            format!("unexpected answer to a revocation: {other:?}"),
        )),
    }
}
