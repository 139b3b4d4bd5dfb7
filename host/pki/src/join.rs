//! Joining a cluster and renewing certificates, as plain functions the
//! transport can call.
//!
//! Join (kubeadm style):
//! 1. An admin runs `shoal token create --ttl D`, which prints a
//!    [`JoinCommand`]: address, one-time token, and the CA pin.
//! 2. The joiner connects to the join endpoint with
//!    [`pinned_client_config`]: it trusts nothing yet, but the handshake only
//!    completes if the server presents a certificate chain whose CA has the
//!    pinned public key (else [`Rejection::WrongCaPin`]) and a node
//!    certificate signed by that CA.
//! 3. It generates its key locally ([`prepare_join`]) and sends a
//!    [`JoinRequest`] with the token and a CSR; the key never leaves it.
//! 4. The CA node runs [`handle_join`]: token checked and spent, CSR signed
//!    for the role the *token* grants and the requested (validated) name.
//! 5. The joiner checks the [`JoinResponse`] with [`finish_join`] (CA pin
//!    again, certificate matches its key and name) and saves it.
//!
//! Renewal: a node (or a CLI user) asks for a new certificate when
//! [`needs_renewal`] says so (2/3 into the lifetime), over a normal mTLS
//! connection, with a CSR for its current key; the CA node calls [`renew`]
//! with the current certificate, which keeps its role, id and generation.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};

use super::ca::{self, first_cert_der, CaPin, ClusterCa, IssuedCert, Validity};
use super::revocation::SharedRevocations;
use super::role::{inspect, validate_id, Role};
use super::tls::{verify_chain, ClusterTrust, Identity, Rejection, Usage, NODE_ONLY};
use super::token::{JoinToken, TokenBook, TokenError};
use super::PkiError;

/// Why a join or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token was malformed, unknown, expired or already used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The CA certificate offered does not have the pinned public key.
    #[error("CA pin mismatch: expected {expected}, got {got}")]
    WrongCaPin {
        /// The pin from the join command.
        expected: CaPin,
        /// The pin of the CA certificate actually received.
        got: CaPin,
    },
    /// The certificate presented for renewal was refused.
    #[error("certificate refused: {0}")]
    Rejected(#[from] Rejection),
    /// A renewal's CSR is not for the key of the certificate it renews.
    #[error(
        "the renewal CSR is not for the key of {role}/{id}'s certificate (renewal keeps the key)"
    )]
    KeyMismatch {
        /// The certificate's role.
        role: Role,
        /// Its id.
        id: String,
    },
    /// The CA's answer does not fit the request (wrong name, wrong key...).
    #[error("join response does not match the request: {0}")]
    Mismatch(String),
    /// Bad input (CSR, name) or a local PKI failure.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What `shoal token create` prints: everything a new node needs to join.
#[derive(Clone, Debug)]
pub struct JoinCommand {
    /// Address of a node holding the CA (`host:port`).
    pub addr: String,
    /// The one-time token.
    pub token: JoinToken,
    /// The CA pin.
    pub ca_pin: CaPin,
}

impl fmt::Display for JoinCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shoal node join {} --token {} --ca-pin {}",
            self.addr, self.token, self.ca_pin
        )
    }
}

/// Joiner → CA node: the token, a CSR for a key the joiner generated, and
/// the name it wants (used as its id). `Debug` hides the token secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// `id.secret` token text.
    pub token: String,
    /// PKCS#10 CSR, PEM.
    pub csr_pem: String,
    /// Requested node id (validated by [`validate_id`]).
    pub node_name: String,
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token_id = self.token.split('.').next().unwrap_or("");
        f.debug_struct("JoinRequest")
            .field("token", &format_args!("{token_id}.<redacted>"))
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// CA node → joiner: the signed certificate and the CA certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The new certificate and what it says.
    pub cert: IssuedCert,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// When the new certificate expires, Unix ms (renew before).
    pub expires_unix_ms: u64,
}

/// Check that the PEM CA certificate `ca_pem` has public-key pin `pin`.
/// Returns the CA certificate (DER) on success.
pub fn check_ca_pin(ca_pem: &str, pin: &CaPin) -> Result<CertificateDer<'static>, JoinError> {
    let der = first_cert_der(ca_pem)?;
    let got = CaPin::of_cert_der(&der)?;
    if got != *pin {
        return Err(JoinError::WrongCaPin {
            expected: *pin,
            got,
        });
    }
    Ok(der)
}

/// Joiner side: generate a key and a CSR, build the request. Returns the
/// request and the private key (PEM) to keep locally (mode 0600).
pub fn prepare_join(token: &str, node_name: &str) -> Result<(JoinRequest, String), JoinError> {
    validate_id(node_name)?;
    let (key_pem, csr_pem) = ca::generate_key_and_csr(node_name)?;
    Ok((
        JoinRequest {
            token: token.to_string(),
            csr_pem,
            node_name: node_name.to_string(),
        },
        key_pem,
    ))
}

/// CA side: check the token, sign the CSR for the token's role and the
/// requested name, valid for `ttl` from `now_unix_ms`, and spend the token.
///
/// The token is spent only when a certificate is actually issued, so a
/// joiner that sent a broken CSR can retry with the same token.
pub fn handle_join(
    book: &mut TokenBook,
    ca: &ClusterCa,
    request: &JoinRequest,
    now_unix_ms: u64,
    ttl: Duration,
) -> Result<JoinResponse, JoinError> {
    let role = book.check(&request.token, now_unix_ms)?;
    validate_id(&request.node_name)?;
    let cert = ca.sign_csr_with_validity(
        &request.csr_pem,
        role,
        &request.node_name,
        Validity::for_ttl(now_unix_ms, ttl),
    )?;
    book.redeem(&request.token, now_unix_ms)?;
    Ok(JoinResponse {
        expires_unix_ms: cert.not_after_unix_ms,
        cert,
        ca_pem: ca.ca_cert_pem().to_string(),
    })
}

/// Joiner side: check the response against the pin from the join command,
/// the key we generated and the name we asked for; returns our identity,
/// ready for [`Identity::save_pem`] and the TLS configs.
pub fn finish_join(
    response: &JoinResponse,
    key_pem: &str,
    pin: &CaPin,
    node_name: &str,
    now_unix_ms: u64,
) -> Result<Identity, JoinError> {
    let ca_der = check_ca_pin(&response.ca_pem, pin)?;
    let trust = ClusterTrust::from_der(ca_der, SharedRevocations::default())?;
    let cert_der = response.cert.cert_der()?;
    let info = trust.verify(
        &cert_der,
        &[],
        unix_time(now_unix_ms),
        Usage::Client,
        &Role::ALL,
    )?;
    if info.id != node_name {
        return Err(JoinError::Mismatch(format!(
            "certificate is for {:?}, we asked for {node_name:?}",
            info.id
        )));
    }
    Identity::from_pem(&response.cert.cert_pem, key_pem, &response.ca_pem).map_err(|e| match e {
        PkiError::BadKey(m) => JoinError::Mismatch(m),
        other => JoinError::Pki(other),
    })
}

/// When a certificate should be renewed: `num/den` of the way through its
/// lifetime, Unix ms.
pub fn renewal_due_unix_ms(cert_der: &[u8], num: u32, den: u32) -> Result<u64, PkiError> {
    let info = inspect(cert_der)?;
    let life = u128::from(
        info.not_after_unix_ms
            .saturating_sub(info.not_before_unix_ms),
    );
    let den = den.max(1);
    let num = num.min(den);
    let into = life * u128::from(num) / u128::from(den);
    Ok(info
        .not_before_unix_ms
        .saturating_add(u64::try_from(into).unwrap_or(u64::MAX)))
}

/// Whether the certificate should be renewed at `now_unix_ms`: true from
/// 2/3 of its lifetime on (and when expired).
pub fn needs_renewal(cert_der: &[u8], now_unix_ms: u64) -> Result<bool, PkiError> {
    Ok(now_unix_ms >= renewal_due_unix_ms(cert_der, 2, 3)?)
}

/// CA side of renewal. `presented` is the requester's current certificate
/// (the one it authenticated with, or the one a node forwarded for it) and
/// `csr_pem` a CSR for that certificate's key. The certificate is checked
/// again here (this CA, valid now, not revoked: by serial, or by its
/// identity's generation), and the CSR must be for its key — a certificate
/// is public, the CSR's signature proves the requester holds the key. The
/// new certificate has the *same* role, id and generation, valid for `ttl`
/// from `now_unix_ms`: a renewal is revoked with the certificate it renews,
/// so renewing never outlives a revocation. (Whether a node is still a
/// member is the caller's to check, against the cluster state.)
pub fn renew(
    ca: &ClusterCa,
    trust: &ClusterTrust,
    presented: &CertificateDer<'_>,
    csr_pem: &str,
    now_unix_ms: u64,
    ttl: Duration,
) -> Result<IssuedCert, JoinError> {
    let info = trust.verify(
        presented,
        &[],
        unix_time(now_unix_ms),
        Usage::Client,
        &Role::ALL,
    )?;
    if !ca::csr_matches_cert(csr_pem, presented.as_ref())? {
        return Err(JoinError::KeyMismatch {
            role: info.role,
            id: info.id,
        });
    }
    Ok(ca.sign_csr_for(
        csr_pem,
        info.role,
        &info.id,
        info.generation,
        Validity::for_ttl(now_unix_ms, ttl),
    )?)
}

fn unix_time(unix_ms: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_millis(unix_ms))
}

/// The CA certificate captured during a pinned bootstrap handshake.
#[derive(Clone, Debug, Default)]
pub struct PinnedCa(Arc<Mutex<Option<CertificateDer<'static>>>>);

impl PinnedCa {
    /// The pinned CA certificate the server presented, once a handshake got
    /// past certificate verification.
    pub fn ca_cert_der(&self) -> Option<CertificateDer<'static>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, der: CertificateDer<'static>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(der);
    }
}

/// A client config for the join endpoint: no client certificate; the
/// server is accepted only if its chain contains a CA certificate with
/// public-key pin `pin`, and its own certificate is a [`Role::Node`]
/// certificate signed by that CA and valid now. Otherwise the handshake
/// fails with [`Rejection::WrongCaPin`] (or the chain's own rejection).
pub fn pinned_client_config(pin: CaPin) -> Result<(Arc<ClientConfig>, PinnedCa), PkiError> {
    let slot = PinnedCa::default();
    let verifier = Arc::new(PinnedVerifier {
        pin,
        slot: slot.clone(),
        algs: super::provider().signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Every bootstrap connection must show the pinned CA again.
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), slot))
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: CaPin,
    slot: PinnedCa,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Rejection> {
        let Some(ca) = intermediates.iter().find(|c| self.pin.matches_cert_der(c)) else {
            let presented = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| {
                    CaPin::of_cert_der(c)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|_| "<unparsable>".to_string())
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Rejection::WrongCaPin {
                expected: self.pin,
                presented,
            });
        };
        let anchor = webpki::anchor_from_trusted_cert(ca)
            .map_err(|e| Rejection::Malformed(format!("pinned CA: {e}")))?;
        verify_chain(&[anchor], self.algs, end_entity, &[], now, Usage::Server)?;
        let info = inspect(end_entity.as_ref()).map_err(|e| Rejection::NoRole(e.to_string()))?;
        if !NODE_ONLY.contains(&info.role) {
            return Err(Rejection::WrongRole {
                role: info.role,
                id: info.id,
                expected: Role::Node.to_string(),
            });
        }
        self.slot.set(ca.clone().into_owned());
        Ok(())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(Rejection::into_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
