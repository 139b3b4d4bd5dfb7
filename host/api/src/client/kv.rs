//! The key-value and lock verbs of [`Client`] (`shoal kv`, `shoal locks`;
//! `shoal-daemon`'s `cluster_api` serves the routes, see [`crate::kv`]).
//!
//! Every call acts as the certificate the client presents: its own
//! buckets by default; `owner` names another owner's, which only an admin
//! may (a client gets [`ClientError::Forbidden`]).

use super::{Client, ClientError};
use crate::kv::{
    owner_text, percent_encode_bytes, KvDeleted, KvEntryView, KvKeyView, KvPage, KvWritten,
    LockSummary, KV_PAGE_MAX,
};
use bytes::Bytes;
use hyper::Method;
use shoal_pki::Owner;
use std::time::Duration;

/// A key-value call is answered after one Raft write or read index at
/// most; allow for an election on the way.
const KV_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The query naming whose bucket (none: ours) and how to read:
/// linearizable (the default: every write that completed before the read
/// began is seen) or, with `stale`, the answering node's applied state.
fn query(owner: Option<&Owner>, stale: bool) -> Vec<String> {
    let mut q = Vec::new();
    if let Some(o) = owner {
        q.push(format!(
            "owner={}",
            percent_encode_bytes(owner_text(o).as_bytes())
        ));
    }
    if stale {
        q.push("stale=true".to_string());
    }
    q
}

fn with_query(path: String, q: &[String]) -> String {
    if q.is_empty() {
        path
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

fn entry_path(bucket: &str, key: &[u8]) -> String {
    format!(
        "/v1/kv/{}/{}",
        percent_encode_bytes(bucket.as_bytes()),
        percent_encode_bytes(key)
    )
}

impl Client {
    /// `GET /v1/kv/{bucket}/{key}`: one entry of `owner`'s bucket (default:
    /// ours). A missing key is a 404 ([`ClientError::Api`]).
    pub async fn kv_get(
        &self,
        owner: Option<&Owner>,
        bucket: &str,
        key: &[u8],
        stale: bool,
    ) -> Result<KvEntryView, ClientError> {
        let path = with_query(entry_path(bucket, key), &query(owner, stale));
        self.call(Method::GET, &path, None, Bytes::new(), KV_CALL_TIMEOUT)
            .await
    }

    /// `PUT /v1/kv/{bucket}/{key}`: set the key to `value` (at most
    /// [`crate::kv::VALUE_BYTES_MAX`] bytes) through Raft.
    pub async fn kv_set(
        &self,
        owner: Option<&Owner>,
        bucket: &str,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<KvWritten, ClientError> {
        let path = with_query(entry_path(bucket, key), &query(owner, false));
        self.call(
            Method::PUT,
            &path,
            Some("application/octet-stream"),
            Bytes::from(value),
            KV_CALL_TIMEOUT,
        )
        .await
    }

    /// `DELETE /v1/kv/{bucket}/{key}`: delete the key through Raft
    /// (`existed` says whether it was there).
    pub async fn kv_delete(
        &self,
        owner: Option<&Owner>,
        bucket: &str,
        key: &[u8],
    ) -> Result<KvDeleted, ClientError> {
        let path = with_query(entry_path(bucket, key), &query(owner, false));
        self.call(Method::DELETE, &path, None, Bytes::new(), KV_CALL_TIMEOUT)
            .await
    }

    /// `GET /v1/kv/{bucket}?prefix=&after=&limit=`: one page of keys that
    /// start with `prefix`, after `after` (exclusive), at most `limit`
    /// (bounded by [`KV_PAGE_MAX`]), in byte order.
    pub async fn kv_list_page(
        &self,
        owner: Option<&Owner>,
        bucket: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        stale: bool,
    ) -> Result<KvPage, ClientError> {
        let mut q = query(owner, stale);
        if !prefix.is_empty() {
            q.push(format!("prefix={}", percent_encode_bytes(prefix)));
        }
        if let Some(a) = after {
            q.push(format!("after={}", percent_encode_bytes(a)));
        }
        q.push(format!("limit={}", limit.clamp(1, KV_PAGE_MAX)));
        let path = with_query(
            format!("/v1/kv/{}", percent_encode_bytes(bucket.as_bytes())),
            &q,
        );
        self.call(Method::GET, &path, None, Bytes::new(), KV_CALL_TIMEOUT)
            .await
    }

    /// Every key of `owner`'s bucket that starts with `prefix`, page by
    /// page ([`Client::kv_list_page`]; each page is read on its own, so a
    /// key written or deleted while this runs may or may not be listed).
    pub async fn kv_keys(
        &self,
        owner: Option<&Owner>,
        bucket: &str,
        prefix: &[u8],
        stale: bool,
    ) -> Result<Vec<KvKeyView>, ClientError> {
        let mut keys: Vec<KvKeyView> = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .kv_list_page(owner, bucket, prefix, after.as_deref(), KV_PAGE_MAX, stale)
                .await?;
            let last = match page.keys.last() {
                Some(k) => Some(k.bytes().map_err(|e| self.protocol(e))?),
                None => None,
            };
            keys.extend(page.keys);
            match last {
                Some(last) if !page.complete => after = Some(last),
                _ => return Ok(keys),
            }
        }
    }

    /// `GET /v1/locks`: every lock held or waited for that we may see (our
    /// own; an admin's: all), with holder, node, token and waiters.
    pub async fn locks(&self, stale: bool) -> Result<Vec<LockSummary>, ClientError> {
        let path = with_query("/v1/locks".to_string(), &query(None, stale));
        self.call(Method::GET, &path, None, Bytes::new(), KV_CALL_TIMEOUT)
            .await
    }
}
