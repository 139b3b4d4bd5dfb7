//! Certificate revocation, as a value held in the replicated state.
//!
//! `shoal node remove` and `shoal cert revoke` add entries to a
//! [`RevocationList`]; the Raft state machine holds that list and, whenever
//! it changes, stores the new value in a [`SharedRevocations`] handle that
//! every TLS verifier reads on every handshake, and that servers watch to
//! close the open connections of a certificate it now revokes
//! ([`SharedRevocations::subscribe`]).
//!
//! Two kinds of entry:
//! - by serial: that one certificate is dead;
//! - by identity (role + id), with a **generation**: every certificate names
//!   the generation of its identity it was issued at
//!   ([`CertInfo::generation`]). Revoking an identity moves its generation
//!   past every certificate issued so far — whatever their validity dates,
//!   and renewals too, which keep the generation of the certificate they
//!   renew — so no certificate issued before the revocation, or renewed from
//!   one, ever passes again. An identity admitted again afterwards (a new
//!   join token, `shoal cert create`) is issued the new generation
//!   ([`RevocationList::generation`]). Entries are never dropped: that
//!   would hand out old generations again.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::role::{CertInfo, Role};
use super::{PkiError, Result};

/// A certificate serial number, as lowercase hex of the DER integer's
/// content bytes (what `openssl x509 -serial` prints, in lowercase).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Serial(String);

impl Serial {
    /// From the raw big-endian bytes of the serial.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Serial(hex::encode(bytes))
    }

    /// The raw big-endian bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Constructed only from valid hex, so decoding cannot fail.
        hex::decode(&self.0).unwrap_or_default()
    }

    /// Lowercase hex.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Serial {
    type Err = PkiError;
    /// Accepts hex digits, upper or lower case, optionally separated by `:`.
    fn from_str(s: &str) -> Result<Self> {
        let cleaned: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(cleaned.to_ascii_lowercase())
            .map_err(|e| PkiError::BadCertificate(format!("serial {s:?}: {e}")))?;
        if bytes.is_empty() {
            return Err(PkiError::BadCertificate("empty serial".to_string()));
        }
        Ok(Serial::from_bytes(&bytes))
    }
}

/// Why and when something was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When the revocation was decided, Unix ms.
    pub revoked_unix_ms: u64,
    /// Free text for operators and refusal messages ("node removed", ...).
    pub reason: String,
    /// For serial entries: the certificate's own expiry, if known, so the
    /// entry can be dropped once the certificate would be refused anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after_unix_ms: Option<u64>,
    /// For identity entries: the identity's generation now. Its
    /// certificates of an earlier generation are revoked; it is the
    /// generation the identity's next certificate gets. An entry written
    /// before generations existed reads as 1: it still revokes the
    /// certificates (all of generation 0) it revoked then.
    #[serde(default = "legacy_generation")]
    pub generation: u64,
}

fn legacy_generation() -> u64 {
    1
}

/// Most entries (serials and identities together) a [`RevocationList`]
/// holds: a revocation past it is refused ([`RevocationsFull`]).
pub const REVOCATIONS_MAX: usize = 65_536;

/// A revocation refused because the list is at [`REVOCATIONS_MAX`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("the revocation list is full ({max} entries)")]
pub struct RevocationsFull {
    /// The bound.
    pub max: usize,
}

/// The cluster's revocation list: a plain value for the replicated state.
///
/// Its maps are persistent (a clone shares them, O(1)), and every change
/// bumps [`version`](Self::version): the state machine clones the state
/// after each applied batch and asks "did the list change?" on every one,
/// which must not cost a list of up to [`REVOCATIONS_MAX`] entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Revoked certificates by serial.
    #[serde(default)]
    serials: imbl::OrdMap<Serial, Revocation>,
    /// Revoked identities, keyed `"<role>/<id>"`, with their generation.
    #[serde(default)]
    identities: imbl::OrdMap<String, Revocation>,
    /// How many changes the list has seen (applied deterministically, so
    /// every node counts the same).
    #[serde(default)]
    version: u64,
}

fn identity_key(role: Role, id: &str) -> String {
    format!("{role}/{id}")
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revoke one certificate by serial. `Ok(false)` if it already was
    /// (the first revocation's time and reason are kept); refused when the
    /// list is full, so the caller never believes a certificate revoked
    /// that is not.
    pub fn revoke_serial(
        &mut self,
        serial: Serial,
        now_unix_ms: u64,
        reason: impl Into<String>,
        cert_not_after_unix_ms: Option<u64>,
    ) -> Result<bool, RevocationsFull> {
        if self.serials.contains_key(&serial) {
            return Ok(false);
        }
        if self.len() >= REVOCATIONS_MAX {
            return Err(RevocationsFull {
                max: REVOCATIONS_MAX,
            });
        }
        self.serials.insert(
            serial,
            Revocation {
                revoked_unix_ms: now_unix_ms,
                reason: reason.into(),
                cert_not_after_unix_ms,
                generation: 0,
            },
        );
        self.version += 1;
        Ok(true)
    }

    /// Revoke every certificate of `role`/`id` issued so far (and every
    /// renewal of one): the identity moves to a new generation, which it
    /// returns. Each call is a new revocation (a re-admitted identity
    /// revoked again loses its new certificates too).
    pub fn revoke_identity(
        &mut self,
        role: Role,
        id: &str,
        now_unix_ms: u64,
        reason: impl Into<String>,
    ) -> Result<u64, RevocationsFull> {
        let key = identity_key(role, id);
        let current = match self.identities.get(&key) {
            Some(r) => r.generation,
            None if self.len() >= REVOCATIONS_MAX => {
                return Err(RevocationsFull {
                    max: REVOCATIONS_MAX,
                })
            }
            None => 0,
        };
        let generation = current.saturating_add(1);
        self.identities.insert(
            key,
            Revocation {
                revoked_unix_ms: now_unix_ms,
                reason: reason.into(),
                cert_not_after_unix_ms: None,
                generation,
            },
        );
        self.version += 1;
        Ok(generation)
    }

    /// The generation a new certificate of `role`/`id` is issued at: 0 for
    /// an identity never revoked, else the one its last revocation moved it
    /// to.
    pub fn generation(&self, role: Role, id: &str) -> u64 {
        self.identities
            .get(&identity_key(role, id))
            .map_or(0, |r| r.generation)
    }

    /// The revocation that applies to a certificate, if any: its serial is
    /// listed, or its identity was revoked after the certificate's
    /// generation was issued.
    pub fn check(&self, cert: &CertInfo) -> Option<&Revocation> {
        if let Some(r) = self.serials.get(&cert.serial) {
            return Some(r);
        }
        self.identities
            .get(&identity_key(cert.role, &cert.id))
            .filter(|r| cert.generation < r.generation)
    }

    /// The entry for one serial, if revoked by serial.
    pub fn get_serial(&self, serial: &Serial) -> Option<&Revocation> {
        self.serials.get(serial)
    }

    /// The entry for one identity, if it was ever revoked.
    pub fn get_identity(&self, role: Role, id: &str) -> Option<&Revocation> {
        self.identities.get(&identity_key(role, id))
    }

    /// Revoked serials, in order.
    pub fn serials(&self) -> impl Iterator<Item = (&Serial, &Revocation)> {
        self.serials.iter()
    }

    /// Revoked identities as `("<role>/<id>", revocation)`, in order.
    pub fn identities(&self) -> impl Iterator<Item = (&str, &Revocation)> {
        self.identities.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries of both kinds.
    pub fn len(&self) -> usize {
        self.serials.len() + self.identities.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop serial entries whose certificate has expired by `now_unix_ms`
    /// (an expired certificate is refused anyway), keeping the replicated
    /// state small. Identity entries are kept. Returns how many were dropped.
    pub fn prune_expired(&mut self, now_unix_ms: u64) -> usize {
        let expired: Vec<Serial> = self
            .serials
            .iter()
            .filter(|(_, r)| r.cert_not_after_unix_ms.is_some_and(|t| t <= now_unix_ms))
            .map(|(s, _)| s.clone())
            .collect();
        for serial in &expired {
            self.serials.remove(serial);
        }
        let dropped = expired.len();
        if dropped > 0 {
            self.version += 1;
        }
        dropped
    }

    /// How many changes the list has seen: equal versions of one list's
    /// history are equal lists, so "did it change?" costs O(1).
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// A shared, cheaply clonable handle to the *current* revocation list.
///
/// The state machine calls [`replace`](Self::replace) (or
/// [`update`](Self::update)) when the replicated list changes; TLS verifiers
/// hold clones and call [`check`](Self::check) on every handshake; servers
/// [`subscribe`](Self::subscribe) to close the connections of a certificate
/// that a change revokes.
#[derive(Clone, Debug)]
pub struct SharedRevocations(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    list: RwLock<RevocationList>,
    /// Bumped after every change of `list`.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for SharedRevocations {
    fn default() -> Self {
        Self::new(RevocationList::default())
    }
}

impl SharedRevocations {
    /// A handle holding `list`.
    pub fn new(list: RevocationList) -> Self {
        SharedRevocations(Arc::new(Shared {
            list: RwLock::new(list),
            changes: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Install a new list (e.g. after a Raft apply or snapshot install).
    pub fn replace(&self, list: RevocationList) {
        *self.write() = list;
        self.changed();
    }

    /// Change the list in place; returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut RevocationList) -> R) -> R {
        let r = f(&mut self.write());
        self.changed();
        r
    }

    /// A receiver told of every change from now on (the value is a change
    /// count): wait on it, then [`check`](Self::check) again.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes.subscribe()
    }

    /// A copy of the current list.
    pub fn snapshot(&self) -> RevocationList {
        self.read().clone()
    }

    /// The revocation applying to `cert`, if any (a copy, lock released).
    pub fn check(&self, cert: &CertInfo) -> Option<Revocation> {
        self.read().check(cert).cloned()
    }

    fn changed(&self) {
        self.0.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    // A panic while holding the lock cannot leave a RevocationList half
    // updated in a way that matters (every mutation is a single map
    // operation), so a poisoned lock is simply recovered.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevocationList> {
        self.0.list.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RevocationList> {
        self.0.list.write().unwrap_or_else(|e| e.into_inner())
    }
}
