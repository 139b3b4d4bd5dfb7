//! Mutual TLS for node↔node and CLI↔node connections.
//!
//! Both ends present a certificate and both verify the other's with
//! [`ClusterTrust::verify`]: the chain must lead to *this* cluster's CA
//! (webpki, with the right key usage), be inside its validity window, not be
//! revoked in the current [`SharedRevocations`], and carry an acceptable
//! [`Role`]. Host names are never checked — a peer is who its CA-signed role
//! SAN says it is.
//!
//! A refusal is a [`Rejection`] naming the case. rustls aborts the handshake
//! with `rustls::Error::InvalidCertificate(CertificateError::Other(..))`
//! wrapping it (the peer receives a `bad_certificate` alert); the refusing
//! side's handshake error can be turned back into the `Rejection` with
//! [`rejection_of`], for the caller to log or return.
//!
//! Only TLS 1.3 is offered: both ends are always Shoal. Session resumption
//! is off on both ends: a resumed session skips certificate verification,
//! which would let a revoked or expired certificate keep connecting.

mod identity;
mod verify;

pub use identity::{Identity, LiveIdentity};
pub(crate) use verify::verify_chain;
use verify::PeerVerifier;
pub use verify::{rejection_of, ClusterTrust, Rejection, Usage};

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};

use crate::role::{inspect, CertInfo, Role};
use crate::Result;

/// Roles accepted on the node-to-node endpoint.
pub const NODE_ONLY: &[Role] = &[Role::Node];
/// Roles accepted on the control API (CLI and nodes).
pub const CONTROL_API: &[Role] = &[Role::Client, Role::Admin, Role::Node];
/// Roles allowed to perform administrative operations on the control API.
pub const ADMIN_ONLY: &[Role] = &[Role::Admin];

/// The server name a client passes to rustls. Shoal's verifier ignores it,
/// so any valid name does; an IP address also keeps rustls from sending SNI.
pub fn placeholder_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST).into())
}

/// A server config for an mTLS endpoint: presents `identity`, requires a
/// client certificate from this cluster with a role in `accept` (e.g.
/// [`NODE_ONLY`] for node-to-node, [`CONTROL_API`] for the control API).
pub fn server_config(
    identity: &Identity,
    trust: &ClusterTrust,
    accept: &[Role],
) -> Result<Arc<ServerConfig>> {
    server_config_with(identity, trust, accept, false)
}

/// The config of a node's one port: like [`server_config`], but a client
/// may also connect *without* a certificate. Such a connection carries no
/// identity ([`peer_info`] is `None`), and the node serves it only the join
/// route, where the join token authenticates. A presented certificate is
/// checked exactly as in [`server_config`] and refused at the handshake if
/// it is from another CA, expired, revoked or of a role not in `accept`.
pub fn node_server_config(
    identity: &Identity,
    trust: &ClusterTrust,
    accept: &[Role],
) -> Result<Arc<ServerConfig>> {
    server_config_with(identity, trust, accept, true)
}

fn server_config_with(
    identity: &Identity,
    trust: &ClusterTrust,
    accept: &[Role],
    client_auth_optional: bool,
) -> Result<Arc<ServerConfig>> {
    server_config_live(
        &LiveIdentity::new(identity)?,
        trust,
        accept,
        client_auth_optional,
    )
}

/// [`server_config`] / [`node_server_config`] presenting a [`LiveIdentity`].
pub fn server_config_live(
    identity: &Arc<LiveIdentity>,
    trust: &ClusterTrust,
    accept: &[Role],
    client_auth_optional: bool,
) -> Result<Arc<ServerConfig>> {
    let verifier = Arc::new(PeerVerifier {
        trust: trust.clone(),
        accept: accept.to_vec(),
        client_auth_optional,
    });
    let mut config = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity.clone());
    no_server_resumption(&mut config);
    Ok(Arc::new(config))
}

/// [`client_config`] presenting a [`LiveIdentity`].
pub fn client_config_live(
    identity: &Arc<LiveIdentity>,
    trust: &ClusterTrust,
) -> Result<Arc<ClientConfig>> {
    let verifier = Arc::new(PeerVerifier {
        trust: trust.clone(),
        accept: NODE_ONLY.to_vec(),
        client_auth_optional: false,
    });
    let mut config = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(identity.clone());
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client config: presents `identity`, accepts only a server holding a
/// [`Role::Node`] certificate of this cluster (whatever its host name).
pub fn client_config(identity: &Identity, trust: &ClusterTrust) -> Result<Arc<ClientConfig>> {
    let verifier = Arc::new(PeerVerifier {
        trust: trust.clone(),
        accept: NODE_ONLY.to_vec(),
        client_auth_optional: false,
    });
    let mut config = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A server config for the join endpoint: presents `identity` (with the CA
/// in its chain, for pinning) and asks for no client certificate, since a
/// joiner has none yet; the join token authenticates it instead.
pub fn join_server_config(identity: &Identity) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    no_server_resumption(&mut config);
    Ok(Arc::new(config))
}

/// Turn off TLS session resumption on a server config. A resumed session
/// skips certificate verification, so a certificate revoked (or expired)
/// after the first handshake would keep working; full handshakes are cheap
/// next to that, and cluster connections are long-lived anyway.
pub fn no_server_resumption(config: &mut ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// The role and id of the peer of an established connection, read from its
/// (already verified) certificate. For servers to authorise per request.
pub fn peer_info(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<CertInfo> {
    let first = peer_certificates?.first()?;
    inspect(first.as_ref()).ok()
}
