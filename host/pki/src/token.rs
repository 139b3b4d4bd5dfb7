//! One-time join tokens, kubeadm style.
//!
//! A token reads `abcdef.0123456789abcdef`: a 6-character public id and a
//! 16-character secret, both `[a-z0-9]`. `shoal token create --ttl D` makes
//! one; the joining node presents it with its CSR. The cluster keeps, in a
//! replicated [`TokenBook`], only the id, the SHA-256 of the secret, the
//! expiry, the role to grant and whether it was used — never the secret.
//!
//! Randomness happens only in [`JoinToken::generate`] (on the node that runs
//! the command); the book's mutations take `now` as a parameter, so a Raft
//! state machine can apply them deterministically: generate the token on the
//! leader, replicate [`TokenBook::insert`] of its [`TokenRecord`], and
//! replicate [`TokenBook::redeem`] of a presented token.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::role::Role;
use super::{duration_ms, Result};

/// Length of the public token id.
pub const TOKEN_ID_LEN: usize = 6;
/// Length of the token secret.
pub const TOKEN_SECRET_LEN: usize = 16;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token was refused. Distinct cases so the joiner (and the log) can
/// tell a typo from a stale token from a replay.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TokenError {
    /// Not of the form `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("malformed join token: expected [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Malformed,
    /// No such token id, or the secret does not match (not told apart, so a
    /// guesser learns nothing about which ids exist).
    #[error("unknown join token (no such token, or wrong secret)")]
    Unknown,
    /// The token's TTL has passed.
    #[error("join token {id} expired at unix ms {expired_unix_ms}")]
    Expired {
        /// The token id.
        id: String,
        /// When it expired.
        expired_unix_ms: u64,
    },
    /// The token was already redeemed once.
    #[error("join token {id} was already used at unix ms {used_unix_ms}")]
    AlreadyUsed {
        /// The token id.
        id: String,
        /// When it was used.
        used_unix_ms: u64,
    },
    /// A record with this id is already in the book (only from `insert`).
    #[error("a join token with id {0} already exists")]
    DuplicateId(String),
}

/// A join token: public id + secret. `Display` prints `id.secret`; `Debug`
/// hides the secret so tokens do not leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: String,
    secret: String,
}

impl JoinToken {
    /// A fresh random token (from the OS CSPRNG, uniform over the alphabet).
    pub fn generate() -> Result<Self> {
        Ok(JoinToken {
            id: random_string(TOKEN_ID_LEN)?,
            secret: random_string(TOKEN_SECRET_LEN)?,
        })
    }

    /// The public id (first 6 characters), safe to log and list.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part. Show it only to the operator who created the token.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Hex SHA-256 of the secret: what the book stores.
    pub fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({}.<redacted>)", self.id)
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let (id, secret) = s.split_once('.').ok_or(TokenError::Malformed)?;
        let valid = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| ALPHABET.contains(&b))
        };
        if !valid(id, TOKEN_ID_LEN) || !valid(secret, TOKEN_SECRET_LEN) {
            return Err(TokenError::Malformed);
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// What the cluster remembers about a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's public id.
    pub id: String,
    /// Hex SHA-256 of the secret (never the secret itself).
    pub secret_hash: String,
    /// The role a successful join gets.
    pub role: Role,
    /// When the token was made, Unix ms.
    pub created_unix_ms: u64,
    /// When it stops being accepted, Unix ms.
    pub expires_unix_ms: u64,
    /// Whether it was redeemed.
    pub used: bool,
    /// When it was redeemed, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_unix_ms: Option<u64>,
}

impl TokenRecord {
    /// The record for `token`, valid from `now_unix_ms` for `ttl`.
    pub fn new(token: &JoinToken, role: Role, now_unix_ms: u64, ttl: Duration) -> Self {
        TokenRecord {
            id: token.id.clone(),
            secret_hash: token.secret_hash(),
            role,
            created_unix_ms: now_unix_ms,
            expires_unix_ms: now_unix_ms.saturating_add(duration_ms(ttl)),
            used: false,
            used_unix_ms: None,
        }
    }
}

/// All join tokens of the cluster: a plain value for the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBook {
    #[serde(default)]
    records: BTreeMap<String, TokenRecord>,
}

impl TokenBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Generate a token granting `role` for `ttl` from `now_unix_ms`, record
    /// it, and return it with its record (the record is what to replicate).
    /// Regenerates on the (astronomically unlikely) id collision.
    pub fn create(
        &mut self,
        ttl: Duration,
        role: Role,
        now_unix_ms: u64,
    ) -> Result<(JoinToken, TokenRecord)> {
        loop {
            let token = JoinToken::generate()?;
            if self.records.contains_key(token.id()) {
                continue;
            }
            let record = TokenRecord::new(&token, role, now_unix_ms, ttl);
            self.records.insert(record.id.clone(), record.clone());
            return Ok((token, record));
        }
    }

    /// Add a record made elsewhere (the replicated half of `create`).
    pub fn insert(&mut self, record: TokenRecord) -> Result<(), TokenError> {
        if self.records.contains_key(&record.id) {
            return Err(TokenError::DuplicateId(record.id));
        }
        self.records.insert(record.id.clone(), record);
        Ok(())
    }

    /// Check `token` without consuming it; returns the role it grants.
    ///
    /// Order of checks: form, then id + secret (compared in constant time),
    /// then used, then expiry — so only a holder of the right secret learns
    /// whether the token is stale or spent.
    pub fn check(&self, token: &str, now_unix_ms: u64) -> Result<Role, TokenError> {
        self.find(token, now_unix_ms).map(|r| r.role)
    }

    /// Check `token` and mark it used: a second redeem fails with
    /// [`TokenError::AlreadyUsed`]. Returns the role it grants.
    pub fn redeem(&mut self, token: &str, now_unix_ms: u64) -> Result<Role, TokenError> {
        let id = self.find(token, now_unix_ms)?.id.clone();
        let record = self.records.get_mut(&id).ok_or(TokenError::Unknown)?;
        record.used = true;
        record.used_unix_ms = Some(now_unix_ms);
        Ok(record.role)
    }

    fn find(&self, token: &str, now_unix_ms: u64) -> Result<&TokenRecord, TokenError> {
        let token = JoinToken::from_str(token.trim())?;
        let record = self.records.get(token.id()).ok_or(TokenError::Unknown)?;
        let presented = token.secret_hash();
        if !bool::from(presented.as_bytes().ct_eq(record.secret_hash.as_bytes())) {
            return Err(TokenError::Unknown);
        }
        if record.used {
            return Err(TokenError::AlreadyUsed {
                id: record.id.clone(),
                used_unix_ms: record.used_unix_ms.unwrap_or(0),
            });
        }
        if now_unix_ms >= record.expires_unix_ms {
            return Err(TokenError::Expired {
                id: record.id.clone(),
                expired_unix_ms: record.expires_unix_ms,
            });
        }
        Ok(record)
    }

    /// Delete a token by id (`shoal token delete`). Returns whether it existed.
    pub fn remove(&mut self, id: &str) -> bool {
        self.records.remove(id).is_some()
    }

    /// Drop records that expired before `now_unix_ms` (used or not), keeping
    /// the replicated state small. Returns how many were dropped.
    pub fn prune_expired(&mut self, now_unix_ms: u64) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| r.expires_unix_ms > now_unix_ms);
        before - self.records.len()
    }

    /// All records, by id.
    pub fn records(&self) -> impl Iterator<Item = &TokenRecord> {
        self.records.values()
    }

    /// The record of one token id.
    pub fn get(&self, id: &str) -> Option<&TokenRecord> {
        self.records.get(id)
    }
}

fn random_string(len: usize) -> Result<String> {
    // Rejection sampling: bytes >= 252 (= 7 * 36) are discarded so every
    // character is uniform over the 36-letter alphabet.
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 32];
    while out.len() < len {
        super::random_bytes(&mut buf)?;
        for &b in &buf {
            if out.len() == len {
                break;
            }
            if b < 252 {
                out.push(char::from(ALPHABET[usize::from(b % 36)]));
            }
        }
    }
    Ok(out)
}
