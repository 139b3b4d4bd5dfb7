//! Certificate revocation, as a value held in the replicated state.
//!
//! `shoal node remove` adds entries to a [`RevocationList`]; the Raft state
//! machine holds that list and, whenever it changes, stores the new value in
//! a [`SharedRevocations`] handle that every TLS verifier reads on every
//! handshake. So a revocation takes effect for all new connections as soon
//! as the node applies it, without rebuilding any TLS config.
//!
//! Two kinds of entry:
//! - by serial: that one certificate is dead;
//! - by identity (role + id): every certificate of that holder whose
//!   validity started at or before the removal is dead, which also covers
//!   renewals in flight and serials the caller never learned. A later re-join
//!   under the same id gets a newer certificate and is accepted again (or
//!   call [`RevocationList::restore_identity`]).

use std::collections::BTreeMap;
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
}

/// The cluster's revocation list: a plain value for the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Revoked certificates by serial.
    #[serde(default)]
    serials: BTreeMap<Serial, Revocation>,
    /// Removed holders, keyed `"<role>/<id>"`.
    #[serde(default)]
    identities: BTreeMap<String, Revocation>,
}

fn identity_key(role: Role, id: &str) -> String {
    format!("{role}/{id}")
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revoke one certificate by serial. Returns false if it already was
    /// (the first revocation's time and reason are kept).
    pub fn revoke_serial(
        &mut self,
        serial: Serial,
        now_unix_ms: u64,
        reason: impl Into<String>,
        cert_not_after_unix_ms: Option<u64>,
    ) -> bool {
        if self.serials.contains_key(&serial) {
            return false;
        }
        self.serials.insert(
            serial,
            Revocation {
                revoked_unix_ms: now_unix_ms,
                reason: reason.into(),
                cert_not_after_unix_ms,
            },
        );
        true
    }

    /// Revoke every certificate of `role`/`id` that started being valid at
    /// or before `now_unix_ms` (what `shoal node remove` does). Returns false
    /// if that identity was already removed.
    pub fn remove_identity(
        &mut self,
        role: Role,
        id: &str,
        now_unix_ms: u64,
        reason: impl Into<String>,
    ) -> bool {
        let key = identity_key(role, id);
        if self.identities.contains_key(&key) {
            return false;
        }
        self.identities.insert(
            key,
            Revocation {
                revoked_unix_ms: now_unix_ms,
                reason: reason.into(),
                cert_not_after_unix_ms: None,
            },
        );
        true
    }

    /// Undo [`remove_identity`](Self::remove_identity) (e.g. an operator
    /// re-admits a node). Returns whether there was such an entry.
    pub fn restore_identity(&mut self, role: Role, id: &str) -> bool {
        self.identities.remove(&identity_key(role, id)).is_some()
    }

    /// The revocation that applies to a certificate, if any: its serial is
    /// listed, or its holder was removed no earlier than the certificate's
    /// `not_before`.
    pub fn check(&self, cert: &CertInfo) -> Option<&Revocation> {
        if let Some(r) = self.serials.get(&cert.serial) {
            return Some(r);
        }
        self.identities
            .get(&identity_key(cert.role, &cert.id))
            .filter(|r| cert.not_before_unix_ms <= r.revoked_unix_ms)
    }

    /// The entry for one serial, if revoked by serial.
    pub fn get_serial(&self, serial: &Serial) -> Option<&Revocation> {
        self.serials.get(serial)
    }

    /// Revoked serials, in order.
    pub fn serials(&self) -> impl Iterator<Item = (&Serial, &Revocation)> {
        self.serials.iter()
    }

    /// Removed identities as `("<role>/<id>", revocation)`, in order.
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
        let before = self.serials.len();
        self.serials
            .retain(|_, r| r.cert_not_after_unix_ms.is_none_or(|t| t > now_unix_ms));
        before - self.serials.len()
    }
}

/// A shared, cheaply clonable handle to the *current* revocation list.
///
/// The state machine calls [`replace`](Self::replace) (or
/// [`update`](Self::update)) when the replicated list changes; TLS verifiers
/// hold clones and call [`check`](Self::check) on every handshake.
#[derive(Clone, Debug, Default)]
pub struct SharedRevocations(Arc<RwLock<RevocationList>>);

impl SharedRevocations {
    /// A handle holding `list`.
    pub fn new(list: RevocationList) -> Self {
        SharedRevocations(Arc::new(RwLock::new(list)))
    }

    /// Install a new list (e.g. after a Raft apply or snapshot install).
    pub fn replace(&self, list: RevocationList) {
        *self.write() = list;
    }

    /// Change the list in place; returns what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut RevocationList) -> R) -> R {
        f(&mut self.write())
    }

    /// A copy of the current list.
    pub fn snapshot(&self) -> RevocationList {
        self.read().clone()
    }

    /// The revocation applying to `cert`, if any (a copy, lock released).
    pub fn check(&self, cert: &CertInfo) -> Option<Revocation> {
        self.read().check(cert).cloned()
    }

    // A panic while holding the lock cannot leave a RevocationList half
    // updated in a way that matters (every mutation is a single map
    // operation), so a poisoned lock is simply recovered.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RevocationList> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RevocationList> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}
