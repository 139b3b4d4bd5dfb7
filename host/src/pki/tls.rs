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

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use webpki::{EndEntityCert, KeyUsage};

use super::ca::{first_cert_der, key_spki_der, CaPin};
use super::files::{self, Overwrite, PkiPaths};
use super::revocation::{Serial, SharedRevocations};
use super::role::{inspect, CertInfo, Role};
use super::{PkiError, Result};

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

/// Why a peer certificate was refused. Each case is named so the log says
/// what happened without guessing from a generic TLS alert.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The chain does not lead to this cluster's CA (another cluster's CA,
    /// self-signed, or a bad signature).
    #[error("certificate not issued by this cluster's CA: {0}")]
    OtherCa(String),
    /// Past its `not_after`.
    #[error("certificate expired (not after unix ms {not_after_unix_ms}, now {now_unix_ms})")]
    Expired {
        /// End of validity.
        not_after_unix_ms: u64,
        /// The verifier's clock.
        now_unix_ms: u64,
    },
    /// Before its `not_before`.
    #[error(
        "certificate not yet valid (not before unix ms {not_before_unix_ms}, now {now_unix_ms})"
    )]
    NotYetValid {
        /// Start of validity.
        not_before_unix_ms: u64,
        /// The verifier's clock.
        now_unix_ms: u64,
    },
    /// Listed in the revocation list (by serial, or its holder was removed).
    #[error("certificate {serial} of {role}/{id} revoked: {reason}")]
    Revoked {
        /// The certificate's serial.
        serial: Serial,
        /// Its role.
        role: Role,
        /// Its id.
        id: String,
        /// The revocation reason.
        reason: String,
    },
    /// Valid, but its role is not accepted here (e.g. a client certificate
    /// on the node-to-node endpoint, or presented by a "server").
    #[error(
        "certificate of {role}/{id} has role {role}, but this endpoint accepts only {expected}"
    )]
    WrongRole {
        /// The role in the certificate.
        role: Role,
        /// Its id.
        id: String,
        /// What was acceptable, comma separated.
        expected: String,
    },
    /// Chains to the CA but carries no (or a malformed) Shoal role SAN.
    #[error("certificate carries no valid shoal:// role: {0}")]
    NoRole(String),
    /// Not a parsable certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// (Join only) no certificate presented by the server has the pinned
    /// CA public key.
    #[error("CA pin mismatch: expected {expected}, server presented {presented}")]
    WrongCaPin {
        /// The pin the joiner was given.
        expected: CaPin,
        /// Pins of the certificates the server sent, comma separated.
        presented: String,
    },
    /// Refused by webpki for another reason (key usage, constraints, ...).
    #[error("certificate refused: {0}")]
    Invalid(String),
}

impl Rejection {
    /// Wrap into the rustls error that aborts the handshake.
    pub fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

/// Find the [`Rejection`] behind a failed handshake, whatever wraps it
/// (`std::io::Error` from tokio-rustls, `rustls::Error`, ...). `None` if the
/// failure was something else (for instance the *peer* refused us: then we
/// only see its alert).
pub fn rejection_of<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Rejection> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Rejection>() {
            return Some(r);
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            let inner: &'a (dyn std::error::Error + 'static) = other.0.as_ref();
            return inner.downcast_ref::<Rejection>();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &'a (dyn std::error::Error + 'static) = inner;
                cur = Some(inner);
                continue;
            }
        }
        cur = e.source();
    }
    None
}

/// What every verifier of this cluster trusts: the CA certificate, plus the
/// shared handle to the current revocation list.
#[derive(Clone)]
pub struct ClusterTrust {
    ca_der: CertificateDer<'static>,
    anchors: Arc<Vec<rustls::pki_types::TrustAnchor<'static>>>,
    hints: Arc<Vec<DistinguishedName>>,
    revocations: SharedRevocations,
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClusterTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTrust")
            .field("ca_pin", &CaPin::of_cert_der(&self.ca_der).ok())
            .finish_non_exhaustive()
    }
}

impl ClusterTrust {
    /// Trust the CA certificate `ca_pem`; consult `revocations` on every
    /// verification.
    pub fn new(ca_pem: &str, revocations: SharedRevocations) -> Result<Self> {
        Self::from_der(first_cert_der(ca_pem)?, revocations)
    }

    /// Like [`new`](Self::new) from a DER certificate.
    pub fn from_der(
        ca_der: CertificateDer<'static>,
        revocations: SharedRevocations,
    ) -> Result<Self> {
        let anchor = webpki::anchor_from_trusted_cert(&ca_der)
            .map_err(|e| PkiError::BadCertificate(format!("CA certificate: {e}")))?
            .to_owned();
        let hint = DistinguishedName::in_sequence(anchor.subject.as_ref());
        Ok(ClusterTrust {
            ca_der,
            anchors: Arc::new(vec![anchor]),
            hints: Arc::new(vec![hint]),
            revocations,
            algs: super::provider().signature_verification_algorithms,
        })
    }

    /// The trusted CA certificate.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The revocation handle this trust consults.
    pub fn revocations(&self) -> &SharedRevocations {
        &self.revocations
    }

    /// Verify a peer certificate: chain to the cluster CA for `usage`
    /// (server or client authentication), validity at `now`, role in
    /// `accept`, not revoked. Returns what the certificate says on success.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
        accept: &[Role],
    ) -> std::result::Result<CertInfo, Rejection> {
        verify_chain(
            &self.anchors,
            self.algs,
            end_entity,
            intermediates,
            now,
            usage,
        )?;
        let info = inspect(end_entity.as_ref()).map_err(|e| Rejection::NoRole(e.to_string()))?;
        if let Some(r) = self.revocations.check(&info) {
            return Err(Rejection::Revoked {
                serial: info.serial,
                role: info.role,
                id: info.id,
                reason: r.reason,
            });
        }
        if !accept.contains(&info.role) {
            return Err(wrong_role(&info, accept));
        }
        Ok(info)
    }
}

/// Which end of a connection a certificate is being checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// The certificate of a server (needs the serverAuth key usage).
    Server,
    /// The certificate of a client (needs the clientAuth key usage).
    Client,
}

fn wrong_role(info: &CertInfo, accept: &[Role]) -> Rejection {
    Rejection::WrongRole {
        role: info.role,
        id: info.id.clone(),
        expected: accept
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Webpki chain verification with errors mapped to [`Rejection`]s.
pub(crate) fn verify_chain(
    anchors: &[rustls::pki_types::TrustAnchor<'_>],
    algs: WebPkiSupportedAlgorithms,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> std::result::Result<(), Rejection> {
    let cert =
        EndEntityCert::try_from(end_entity).map_err(|e| Rejection::Malformed(e.to_string()))?;
    let key_usage = match usage {
        Usage::Server => KeyUsage::server_auth(),
        Usage::Client => KeyUsage::client_auth(),
    };
    let now_ms = now.as_secs().saturating_mul(1000);
    match cert.verify_for_usage(algs.all, anchors, intermediates, now, key_usage, None, None) {
        Ok(_) => Ok(()),
        Err(e) => Err(map_webpki_error(e, end_entity, now_ms, usage)),
    }
}

fn map_webpki_error(
    e: webpki::Error,
    end_entity: &CertificateDer<'_>,
    now_ms: u64,
    usage: Usage,
) -> Rejection {
    use webpki::Error as W;
    let info = inspect(end_entity.as_ref()).ok();
    match e {
        W::CertExpired { .. } => Rejection::Expired {
            not_after_unix_ms: info.map(|i| i.not_after_unix_ms).unwrap_or(0),
            now_unix_ms: now_ms,
        },
        W::CertNotValidYet { .. } => Rejection::NotYetValid {
            not_before_unix_ms: info.map(|i| i.not_before_unix_ms).unwrap_or(0),
            now_unix_ms: now_ms,
        },
        W::UnknownIssuer | W::InvalidSignatureForPublicKey | W::CaUsedAsEndEntity => {
            Rejection::OtherCa(format!("{e:?}"))
        }
        // A certificate without the needed key usage, e.g. a client/admin
        // certificate presented by a server: report it by role when we can.
        W::RequiredEkuNotFoundContext(_) => match info {
            Some(i) => wrong_role(
                &i,
                if usage == Usage::Server {
                    NODE_ONLY
                } else {
                    CONTROL_API
                },
            ),
            None => Rejection::Invalid(format!("{e:?}")),
        },
        W::BadDer | W::BadDerTime => Rejection::Malformed(format!("{e:?}")),
        other => Rejection::Invalid(format!("{other:?}")),
    }
}

/// The verifier used on both ends of a connection.
#[derive(Debug)]
struct PeerVerifier {
    trust: ClusterTrust,
    accept: Vec<Role>,
    /// Server side only: may a client connect without a certificate? (A
    /// joining node has none yet; the server then allows only the join
    /// route.) A certificate that *is* presented is always fully checked.
    client_auth_optional: bool,
}

impl PeerVerifier {
    fn check_signature12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.trust.algs)
    }

    fn check_signature13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.trust.algs)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.trust
            .verify(end_entity, intermediates, now, Usage::Server, &self.accept)
            .map(|_| ServerCertVerified::assertion())
            .map_err(Rejection::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.trust.hints
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.client_auth_optional
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.trust
            .verify(end_entity, intermediates, now, Usage::Client, &self.accept)
            .map(|_| ClientCertVerified::assertion())
            .map_err(Rejection::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.algs.supported_schemes()
    }
}

/// Our own certificate chain and key, presented to peers.
///
/// The chain is `[our cert, CA cert]`: sending the CA lets a joiner pin it
/// during the bootstrap handshake. `Debug` hides the key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    info: CertInfo,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            info: self.info.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("info", &self.info)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Build from PEM certificate, PEM private key and the PEM CA
    /// certificate. Checks that the key matches the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self> {
        let cert = first_cert_der(cert_pem)?;
        let ca = first_cert_der(ca_pem)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        if parsed.public_key().raw != key_spki_der(key_pem)?.as_slice() {
            return Err(PkiError::BadKey(
                "private key does not match the certificate".into(),
            ));
        }
        let info = inspect(&cert)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| PkiError::BadKey(e.to_string()))?;
        Ok(Identity {
            chain: vec![cert, ca],
            key,
            info,
        })
    }

    /// Load `node.crt`, `node.key` (must be 0600) and `ca.crt` from
    /// `<data_dir>/pki/`.
    pub fn load(data_dir: &std::path::Path) -> Result<Self> {
        let paths = PkiPaths::new(data_dir);
        let cert = files::read_certificate(&paths.node_cert())?;
        let key = files::read_private_key(&paths.node_key())?;
        let ca = files::read_certificate(&paths.ca_cert())?;
        Self::from_pem(&cert, &key, &ca)
    }

    /// Save a node's credentials to `<data_dir>/pki/` (key 0600, certs
    /// 0644, each replaced atomically). Writes the key first so a crash
    /// never leaves a certificate without its key.
    pub fn save_pem(
        data_dir: &std::path::Path,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Result<()> {
        let paths = PkiPaths::new(data_dir);
        paths.ensure_dir()?;
        files::write_private_key(&paths.node_key(), key_pem, Overwrite::Replace)?;
        files::write_certificate(&paths.ca_cert(), ca_pem, Overwrite::Replace)?;
        files::write_certificate(&paths.node_cert(), cert_pem, Overwrite::Replace)
    }

    /// What our certificate says (role, id, serial, validity).
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Our certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The chain we present.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
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

/// A certificate and key that can be replaced while connections use them:
/// a renewed certificate takes effect at the next handshake, on both the
/// server and the client configs built from it ([`server_config_live`],
/// [`client_config_live`]), without restarting anything.
#[derive(Debug)]
pub struct LiveIdentity {
    current: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, CertInfo)>,
}

fn certified_key(identity: &Identity) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let key = super::provider()
        .key_provider
        .load_private_key(identity.key.clone_key())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        identity.chain.clone(),
        key,
    )))
}

impl LiveIdentity {
    /// Start with `identity`.
    pub fn new(identity: &Identity) -> Result<Arc<LiveIdentity>> {
        Ok(Arc::new(LiveIdentity {
            current: std::sync::RwLock::new((certified_key(identity)?, identity.info.clone())),
        }))
    }

    /// Present `identity` from the next handshake on.
    pub fn replace(&self, identity: &Identity) -> Result<()> {
        let key = certified_key(identity)?;
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        *c = (key, identity.info.clone());
        Ok(())
    }

    /// What the current certificate says.
    pub fn info(&self) -> CertInfo {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn key(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for LiveIdentity {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }
}

impl rustls::client::ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
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
    let mut config = ServerConfig::builder_with_provider(super::provider())
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
    let mut config = ClientConfig::builder_with_provider(super::provider())
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
    let mut config = ClientConfig::builder_with_provider(super::provider())
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
    let mut config = ServerConfig::builder_with_provider(super::provider())
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
