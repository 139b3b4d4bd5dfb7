//! Who the peer is: verifying a presented certificate against this
//! cluster's CA, revocations and accepted roles, and the refusals.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use webpki::{EndEntityCert, KeyUsage};

use super::{CONTROL_API, NODE_ONLY};
use crate::ca::{first_cert_der, CaPin};
use crate::revocation::{Serial, SharedRevocations};
use crate::role::{inspect, CertInfo, Role};
use crate::{PkiError, Result};
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
            algs: crate::provider().signature_verification_algorithms,
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

pub(super) fn wrong_role(info: &CertInfo, accept: &[Role]) -> Rejection {
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
pub(super) struct PeerVerifier {
    pub(super) trust: ClusterTrust,
    pub(super) accept: Vec<Role>,
    /// Server side only: may a client connect without a certificate? (A
    /// joining node has none yet; the server then allows only the join
    /// route.) A certificate that *is* presented is always fully checked.
    pub(super) client_auth_optional: bool,
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
