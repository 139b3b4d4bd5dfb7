//! Signed requests: the proof an admin's cluster write carries in the Raft
//! log, checked by every node when the entry is applied.
//!
//! Raft does not tolerate a hostile member: a node that wins an election
//! can append any entry. The writes that mint or take away credentials and
//! authority (a join token, a revocation, a node's removal, the CA node)
//! therefore do not rest on the leader's word that an admin asked. The CLI
//! signs what it asks for ([`Intent`]) with the admin's own key
//! ([`Signer::sign`]); the entry carries that [`Proof`]; applying it
//! ([`verify`]) checks that the certificate chains to this cluster's CA and
//! was valid when the proof was made, that the signature over the intent
//! is the certificate's key's, and — in the state machine — that the
//! signer is an admin not revoked as of that log position, that the nonce
//! was never used, and that the proof is not older than the newest one
//! applied by more than [`PROOF_WINDOW_MS`]. A node without an admin's key
//! can forward such a proof but cannot make or change one.
//!
//! The signed bytes are a fixed domain tag, the CA pin (a proof made for
//! one cluster is worthless in another), the nonce, the time, and the
//! intent as JSON. Both ends serialize the same [`Intent`] value, so the
//! bytes are a function of what was asked.

use rcgen::{KeyPair, SigningKey};
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

use crate::{CaPin, CertInfo, Role};

/// How much older than the newest applied proof a proof may be (and how
/// far from a receiving node's clock), ms.
pub const PROOF_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Largest certificate a proof may carry, bytes (DER).
pub const PROOF_CERT_BYTES_MAX: usize = 8 * 1024;

/// Largest signature a proof may carry, bytes.
pub const PROOF_SIGNATURE_BYTES_MAX: usize = 512;

/// Length of a proof's nonce in hex characters (16 random bytes).
pub const PROOF_NONCE_HEX_CHARS: usize = 32;

/// Largest proof accepted as text (JSON, or its hex in a header), bytes.
pub const PROOF_TEXT_BYTES_MAX: usize = 32 * 1024;

/// The header a signed control-API request carries its proof in (hex of
/// the proof's JSON, so any value is a valid header).
pub const PROOF_HEADER: &str = "shoal-proof";

/// Domain tag at the head of the signed bytes.
const DOMAIN: &[u8] = b"shoal request proof v1\0";

/// What an admin asked for, in the terms the state machine checks the
/// Raft command against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// Add this join token record (the secret never leaves the CLI; only
    /// its hash is signed and stored).
    CreateToken {
        /// The token's public id.
        token_id: String,
        /// Hex SHA-256 of its secret.
        secret_hash: String,
        /// The role a join with it gets.
        role: Role,
        /// When it was made, Unix ms.
        created_unix_ms: u64,
        /// When it stops working, Unix ms.
        expires_unix_ms: u64,
    },
    /// Revoke every certificate of an identity.
    RevokeIdentity {
        /// Its role.
        role: Role,
        /// Its id.
        id: String,
    },
    /// Revoke one certificate.
    RevokeSerial {
        /// Its serial.
        serial: crate::Serial,
    },
    /// Remove the node called `node` from the cluster.
    RemoveNode {
        /// Its name.
        node: String,
    },
    /// Make the node called `node` the CA node.
    TakeOverCa {
        /// Its name.
        node: String,
    },
}

impl Intent {
    /// The intent to add `record` (a fresh, unused token record).
    pub fn create_token(record: &crate::TokenRecord) -> Intent {
        Intent::CreateToken {
            token_id: record.id.clone(),
            secret_hash: record.secret_hash.clone(),
            role: record.role,
            created_unix_ms: record.created_unix_ms,
            expires_unix_ms: record.expires_unix_ms,
        }
    }

    /// What it asks, for refusals and logs.
    pub fn describe(&self) -> String {
        match self {
            Intent::CreateToken { role, .. } => format!("create a {role} join token"),
            Intent::RevokeIdentity { role, id } => format!("revoke {role}/{id}"),
            Intent::RevokeSerial { serial } => format!("revoke certificate {}", serial.as_hex()),
            Intent::RemoveNode { node } => format!("remove node {node:?}"),
            Intent::TakeOverCa { node } => format!("make node {node:?} the CA node"),
        }
    }
}

/// An intent signed by its requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// What was asked.
    pub intent: Intent,
    /// The requester's certificate, DER as hex.
    pub cert_der_hex: String,
    /// 16 random bytes as hex: a proof is applied once.
    pub nonce: String,
    /// When it was made, Unix ms (the requester's clock).
    pub issued_unix_ms: u64,
    /// The signature over [`signed_bytes`], hex.
    pub signature_hex: String,
}

/// Why a proof was not accepted. Travels typed inside a refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "proof", rename_all = "snake_case")]
pub enum ProofError {
    /// The write needs an admin's signed request and has none.
    #[error("{what} needs a request signed by an admin (none was sent)")]
    Missing {
        /// What was asked.
        what: String,
    },
    /// A field is not what a proof holds (bad hex, sizes out of bounds).
    #[error("malformed proof: {why}")]
    Malformed {
        /// What is wrong.
        why: String,
    },
    /// The certificate does not chain to this cluster's CA, or was not
    /// valid when the proof was made.
    #[error("the proof's certificate is not acceptable: {why}")]
    Certificate {
        /// The verifier's reason.
        why: String,
    },
    /// The signature is not the certificate key's over this intent.
    #[error("the proof's signature does not match its certificate and intent")]
    Signature,
    /// The proof is for something other than the command it came with.
    #[error("the proof is for {signed}, not for {asked}")]
    WrongIntent {
        /// What the proof says.
        signed: String,
        /// What the command does.
        asked: String,
    },
    /// The signer is not an admin.
    #[error("{what} needs an admin's signature; {role}/{id} is not an admin")]
    NotAdmin {
        /// What was asked.
        what: String,
        /// The signer's role.
        role: Role,
        /// The signer's id.
        id: String,
    },
    /// The signer's certificate is revoked as of this entry.
    #[error("the signer {role}/{id} is revoked ({reason})")]
    Revoked {
        /// The signer's role.
        role: Role,
        /// The signer's id.
        id: String,
        /// The revocation's reason.
        reason: String,
    },
    /// The proof was applied before (a replay).
    #[error("this signed request was already used (nonce {nonce})")]
    Replayed {
        /// Its nonce.
        nonce: String,
    },
    /// The proof is too old or too far in the future.
    #[error("the signed request was made at {issued_unix_ms}, more than {window_ms} ms from {now_unix_ms}")]
    Stale {
        /// When it was made.
        issued_unix_ms: u64,
        /// The clock it was judged by (a node's, or the newest applied proof's).
        now_unix_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// The state holds as many recent nonces as it keeps.
    #[error("too many signed requests in the last {window_ms} ms (at most {max})")]
    TooMany {
        /// The most kept.
        max: usize,
        /// The window.
        window_ms: u64,
    },
    /// The cluster state records no CA certificate to check proofs with.
    #[error("the cluster state records no CA certificate")]
    NoCa,
}

/// An admin's (or anyone's) certificate and key, ready to sign intents for
/// the cluster whose CA is given.
pub struct Signer {
    cert_der: Vec<u8>,
    info: CertInfo,
    key: KeyPair,
    ca_pin: CaPin,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("role", &self.info.role)
            .field("id", &self.info.id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From PEM texts: the certificate, its key, and the cluster CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> crate::Result<Signer> {
        let cert = crate::ca::first_cert_der(cert_pem)?;
        let info = crate::role::inspect(cert.as_ref())?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| crate::PkiError::BadKey(e.to_string()))?;
        if crate::ca::key_spki_der(key_pem)? != spki_of(cert.as_ref())? {
            return Err(crate::PkiError::BadKey(
                "the key is not the certificate's".to_string(),
            ));
        }
        Ok(Signer {
            cert_der: cert.as_ref().to_vec(),
            info,
            key,
            ca_pin: CaPin::of_cert_pem(ca_pem)?,
        })
    }

    /// From a credentials directory (`client.crt`, `client.key`, `ca.crt`,
    /// as `shoal cert create` writes; the key must be mode 0600).
    pub fn load(dir: &Path) -> crate::Result<Signer> {
        let cert = crate::files::read_certificate(&dir.join("client.crt"))?;
        let key = crate::files::read_private_key(&dir.join("client.key"))?;
        let ca = crate::files::read_certificate(&dir.join("ca.crt"))?;
        Signer::from_pem(&cert, &key, &ca)
    }

    /// Who signs.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Sign `intent` now.
    pub fn sign(&self, intent: Intent) -> crate::Result<Proof> {
        self.sign_at(intent, crate::now_unix_ms())
    }

    /// Sign `intent` as made at `now_unix_ms`.
    pub fn sign_at(&self, intent: Intent, now_unix_ms: u64) -> crate::Result<Proof> {
        let mut nonce = [0u8; PROOF_NONCE_HEX_CHARS / 2];
        crate::random_bytes(&mut nonce)?;
        let nonce = hex::encode(nonce);
        let msg = signed_bytes(&self.ca_pin, &nonce, now_unix_ms, &intent)?;
        let signature = self.key.sign(&msg)?;
        Ok(Proof {
            intent,
            cert_der_hex: hex::encode(&self.cert_der),
            nonce,
            issued_unix_ms: now_unix_ms,
            signature_hex: hex::encode(signature),
        })
    }
}

fn spki_of(cert_der: &[u8]) -> crate::Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| crate::PkiError::BadCertificate(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// The bytes a proof signs.
fn signed_bytes(
    ca: &CaPin,
    nonce: &str,
    issued_unix_ms: u64,
    intent: &Intent,
) -> crate::Result<Vec<u8>> {
    let intent = serde_json::to_vec(intent)
        .map_err(|e| crate::PkiError::Generate(format!("encoding the intent: {e}")))?;
    let mut msg = Vec::with_capacity(DOMAIN.len() + 32 + nonce.len() + 9 + intent.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(ca.as_bytes());
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(0);
    msg.extend_from_slice(&issued_unix_ms.to_be_bytes());
    msg.extend_from_slice(&intent);
    Ok(msg)
}

/// Check `proof` against the cluster CA `ca_cert_der`: sizes and encodings,
/// the certificate's chain and validity at the proof's time, and the
/// signature. Returns what the certificate says; the caller checks the
/// role, revocation, nonce and freshness against its own state.
pub fn verify(ca_cert_der: &[u8], proof: &Proof) -> Result<CertInfo, ProofError> {
    let malformed = |why: &str| ProofError::Malformed {
        why: why.to_string(),
    };
    if proof.cert_der_hex.len() > 2 * PROOF_CERT_BYTES_MAX {
        return Err(malformed("certificate too large"));
    }
    if proof.signature_hex.len() > 2 * PROOF_SIGNATURE_BYTES_MAX {
        return Err(malformed("signature too large"));
    }
    if proof.nonce.len() != PROOF_NONCE_HEX_CHARS
        || !proof.nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(malformed("the nonce is not 32 hex digits"));
    }
    let cert = hex::decode(&proof.cert_der_hex).map_err(|_| malformed("certificate hex"))?;
    let signature = hex::decode(&proof.signature_hex).map_err(|_| malformed("signature hex"))?;
    let ca = CertificateDer::from(ca_cert_der.to_vec());
    let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| ProofError::Certificate {
        why: format!("CA certificate: {e}"),
    })?;
    let when = UnixTime::since_unix_epoch(Duration::from_millis(proof.issued_unix_ms));
    let end_entity = CertificateDer::from(cert);
    let ee = webpki::EndEntityCert::try_from(&end_entity)
        .map_err(|e| ProofError::Certificate { why: e.to_string() })?;
    // The chain to the cluster CA, valid when the proof was made, for
    // client authentication (what CLI credentials carry).
    ee.verify_for_usage(
        crate::provider().signature_verification_algorithms.all,
        &[anchor],
        &[],
        when,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| ProofError::Certificate {
        why: format!("{e:?}"),
    })?;
    let info = crate::role::inspect(end_entity.as_ref())
        .map_err(|e| ProofError::Certificate { why: e.to_string() })?;
    let pin = CaPin::of_cert_der(ca_cert_der).map_err(|e| ProofError::Certificate {
        why: format!("CA certificate: {e}"),
    })?;
    let msg = signed_bytes(&pin, &proof.nonce, proof.issued_unix_ms, &proof.intent)
        .map_err(|e| malformed(&e.to_string()))?;
    ee.verify_signature(webpki::ring::ECDSA_P256_SHA256, &msg, &signature)
        .map_err(|_| ProofError::Signature)?;
    Ok(info)
}

/// Check `proof`'s time against a node's clock: within
/// [`PROOF_WINDOW_MS`] either way.
pub fn check_fresh(proof: &Proof, now_unix_ms: u64) -> Result<(), ProofError> {
    if proof.issued_unix_ms.abs_diff(now_unix_ms) > PROOF_WINDOW_MS {
        return Err(ProofError::Stale {
            issued_unix_ms: proof.issued_unix_ms,
            now_unix_ms,
            window_ms: PROOF_WINDOW_MS,
        });
    }
    Ok(())
}

/// A proof as a header value: hex of its JSON.
pub fn to_header(proof: &Proof) -> String {
    hex::encode(serde_json::to_vec(proof).unwrap_or_default())
}

/// A proof from a header value ([`to_header`]), bounded before decoding.
pub fn from_header(value: &[u8]) -> Result<Proof, ProofError> {
    if value.len() > 2 * PROOF_TEXT_BYTES_MAX {
        return Err(ProofError::Malformed {
            why: "the proof header is too large".to_string(),
        });
    }
    let json = hex::decode(value).map_err(|_| ProofError::Malformed {
        why: "the proof header is not hex".to_string(),
    })?;
    serde_json::from_slice(&json).map_err(|e| ProofError::Malformed {
        why: format!("the proof header: {e}"),
    })
}
