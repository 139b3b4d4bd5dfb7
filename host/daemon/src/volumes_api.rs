//! `/v1/volumes...` on the control API: operators create, list and remove
//! shared volumes and copy files in and out (`shoal volume`; the routes
//! are in [`shoal_api::volumes`]).
//!
//! Every request acts as the certificate that made it: its own volumes,
//! or with `owner=ROLE:ID` another owner's when the ownership rule lets it
//! (an admin). The state machine checks the rule again at apply
//! ([`shoal_cluster::state::VolumeActor::Caller`]). A file upload is cut
//! into chunks as it streams in (never held whole), each stored in this
//! node's registry, then replicated and committed like a guest's close.

use crate::api::routes::ApiBody;
use crate::link::volumes::{refusal_error, Refused};
use crate::records::owners::forbidden;
use crate::records::write_err;
use crate::Inner;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use shoal_api::kv::{owner_text, parse_owner, percent_decode_bytes};
use shoal_api::volumes::{
    VolumeCreate, VolumeEntryView, VolumeSummary, VolumeWritten, SHARED_BYTES_MAX_DEFAULT,
    SHARED_FILES_MAX_DEFAULT, VOLUME_FILE_BYTES_MAX,
};
use shoal_cluster::state::volumes::{check_name, check_path, parent, SharedVolume, VolumeOp};
use shoal_cluster::state::{Refusal, VolumeActor};
use shoal_cluster::ClusterState;
use shoal_net::RemoteError;
use shoal_pki::Owner;
use shoal_registry::Sha256;
use shoal_runtime::volume::CHUNK_BYTES;
use std::sync::Arc;

fn json<T: serde::Serialize>(v: &T) -> Result<Response<ApiBody>, RemoteError> {
    let body = serde_json::to_vec(v).map_err(|e| RemoteError::new(500, e.to_string()))?;
    let mut r = shoal_net::reply(200, Bytes::from(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn refused(r: Refusal) -> RemoteError {
    RemoteError::typed(r.http_status(), &r)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn summary(owner: &Owner, name: &str, v: &SharedVolume) -> VolumeSummary {
    VolumeSummary {
        owner: owner_text(owner),
        name: name.to_string(),
        replicas: v.replicas,
        bytes: v.bytes,
        files: v.files,
        bytes_max: v.bytes_max,
        files_max: v.files_max,
        created_unix_ms: v.created_ms,
    }
}

/// The value of query parameter `key`, percent-decoded.
fn query_value(query: Option<&str>, key: &str) -> Result<Option<String>, RemoteError> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode_bytes(v)
                .and_then(|b| String::from_utf8(b).ok())
                .map(Some)
                .ok_or_else(|| RemoteError::new(400, format!("query `{key}` is not UTF-8")));
        }
    }
    Ok(None)
}

/// A path of a request, percent-decoded, as a volume path (checked).
fn volume_path(raw: &str, allow_root: bool) -> Result<String, RemoteError> {
    let parts: Vec<String> = raw
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| {
            percent_decode_bytes(c)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| RemoteError::new(400, "the path is not percent-encoded UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let path = parts.join("/");
    if path.is_empty() && allow_root {
        return Ok(path);
    }
    check_path(&path).map_err(|e| refused(e.into()))?;
    Ok(path)
}

fn write_refused(e: Refused) -> RemoteError {
    match e {
        Refused::Refusal(r) => refused(r),
        Refused::Forbidden(f) => forbidden(f),
        Refused::Unavailable(why) => RemoteError::new(503, why),
    }
}

/// Serve `/v1/volumes{rest}` for `direct`.
pub async fn route(
    inner: &Arc<Inner>,
    direct: &Owner,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    let owner_q = query_value(query, "owner")?;
    if rest.is_empty() || rest == "/" {
        return match method {
            Method::GET => list(inner, direct, owner_q.as_deref()).await,
            Method::POST => create(inner, direct, req).await,
            m => Err(RemoteError::new(
                405,
                format!("method {m} is not allowed on /v1/volumes (allowed: GET, POST)"),
            )),
        };
    }
    let rest = rest.trim_start_matches('/');
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let name = percent_decode_bytes(name)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| RemoteError::new(400, "the volume name is not percent-encoded UTF-8"))?;
    check_name(&name).map_err(|e| refused(e.into()))?;
    let owner = match owner_q {
        Some(text) => parse_owner(&text).map_err(|e| RemoteError::new(400, e.to_string()))?,
        None => direct.clone(),
    };
    shoal_pki::may_act(direct, &owner, &format!("volume {name:?} of {owner}"))
        .map_err(forbidden)?;
    let (what, path) = tail.split_once('/').unwrap_or((tail, ""));
    match (&method, what) {
        (&Method::DELETE, "") => {
            let state = inner.raft.linearizable_state().await.map_err(write_err)?;
            let v = state
                .volumes
                .get(&owner, &name)
                .map(|v| summary(&owner, &name, v))
                .ok_or_else(|| RemoteError::new(404, format!("no volume {name:?}")))?;
            inner
                .link
                .volume_write(
                    VolumeActor::Caller { by: direct.clone() },
                    owner,
                    &name,
                    VolumeOp::Remove,
                )
                .await
                .map_err(write_refused)?;
            json(&v)
        }
        (&Method::GET, "tree") => {
            let dir = volume_path(path, true)?;
            let state = inner.raft.linearizable_state().await.map_err(write_err)?;
            let v = volume(&state, &owner, &name)?;
            if !v.is_dir(&dir) {
                return Err(RemoteError::new(
                    404,
                    format!("{dir:?} is not a directory of {name}"),
                ));
            }
            let list: Vec<VolumeEntryView> = v
                .list(&dir)
                .into_iter()
                .map(|(n, e)| {
                    let s = crate::link::volumes::stat_of(&e);
                    VolumeEntryView {
                        name: n,
                        kind: if s.is_dir { "dir" } else { "file" }.into(),
                        size: s.size,
                        version: s.version,
                        mtime_unix_ms: s.mtime_ms,
                        holders: s.holders,
                    }
                })
                .collect();
            json(&list)
        }
        (&Method::GET, "files") => {
            let path = volume_path(path, false)?;
            let state = inner.raft.linearizable_state().await.map_err(write_err)?;
            let v = volume(&state, &owner, &name)?;
            let e = v.entry(&path).ok_or_else(|| {
                RemoteError::new(404, format!("{path:?}: no such file in {name}"))
            })?;
            let s = crate::link::volumes::stat_of(e);
            if s.is_dir {
                return Err(RemoteError::new(400, format!("{path:?} is a directory")));
            }
            inner
                .link
                .fetch_chunks(&s.holders, &s.chunks)
                .await
                .map_err(|e| {
                    RemoteError::new(503, format!("cannot fetch the file's chunks: {e}"))
                })?;
            let registry = inner.node.registry().clone();
            let chunks = s.chunks.clone();
            let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, RemoteError> {
                let mut out = Vec::with_capacity(s.size as usize);
                for c in &chunks {
                    let b = registry
                        .get(c)
                        .map_err(|e| RemoteError::new(503, format!("chunk {c}: {e}")))?;
                    out.extend_from_slice(&b);
                }
                Ok(out)
            })
            .await
            .map_err(|e| RemoteError::new(500, format!("chunk reader failed: {e}")))??;
            Ok(shoal_net::reply(200, Bytes::from(body)))
        }
        (&Method::PUT, "files") => {
            let path = volume_path(path, false)?;
            put_file(inner, direct, owner, &name, &path, req).await
        }
        (m, _) => Err(RemoteError::new(
            405,
            format!(
                "{m} /v1/volumes/{name}/{what} is not a volume route (see `shoal volume --help`)"
            ),
        )),
    }
}

fn volume<'a>(
    state: &'a ClusterState,
    owner: &Owner,
    name: &str,
) -> Result<&'a SharedVolume, RemoteError> {
    state.volumes.get(owner, name).ok_or_else(|| {
        RemoteError::new(404, format!("no volume {name:?} of {}", owner_text(owner)))
    })
}

async fn list(
    inner: &Arc<Inner>,
    direct: &Owner,
    owner_q: Option<&str>,
) -> Result<Response<ApiBody>, RemoteError> {
    let all = owner_q == Some("all");
    if all {
        shoal_pki::need_admin(direct, "listing everyone's volumes").map_err(forbidden)?;
    }
    let state = inner.raft.linearizable_state().await.map_err(write_err)?;
    let list: Vec<VolumeSummary> = state
        .volumes
        .all()
        .filter(|(k, _)| all || k.owner == *direct)
        .map(|(k, v)| summary(&k.owner, &k.name, v))
        .collect();
    json(&list)
}

async fn create(
    inner: &Arc<Inner>,
    direct: &Owner,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    let body = shoal_net::read_body(req, 64 * 1024).await?;
    let r: VolumeCreate = serde_json::from_slice(&body)
        .map_err(|e| RemoteError::new(400, format!("bad JSON body: {e}")))?;
    let op = VolumeOp::Create {
        replicas: r.replicas,
        bytes_max: r.bytes_max.unwrap_or(SHARED_BYTES_MAX_DEFAULT),
        files_max: r.files_max.unwrap_or(SHARED_FILES_MAX_DEFAULT),
        now_ms: unix_ms(),
    };
    inner
        .link
        .volume_write(
            VolumeActor::Caller { by: direct.clone() },
            direct.clone(),
            &r.name,
            op,
        )
        .await
        .map_err(write_refused)?;
    let state = inner.raft.state();
    json(&summary(direct, &r.name, volume(&state, direct, &r.name)?))
}

/// Stream the request body into chunks, store them here, replicate them,
/// create missing parent directories, then commit the version.
async fn put_file(
    inner: &Arc<Inner>,
    direct: &Owner,
    owner: Owner,
    name: &str,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, RemoteError> {
    let state = inner.raft.linearizable_state().await.map_err(write_err)?;
    let v = volume(&state, &owner, name)?;
    let limit = v.bytes_max.min(VOLUME_FILE_BYTES_MAX);
    let registry = inner.node.registry().clone();
    let mut body = req.into_body();
    let mut chunks: Vec<Sha256> = Vec::new();
    let mut size: u64 = 0;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES as usize);
    let store = |bytes: Vec<u8>| {
        let registry = registry.clone();
        async move {
            tokio::task::spawn_blocking(move || registry.put(&bytes))
                .await
                .map_err(|e| RemoteError::new(500, format!("chunk writer failed: {e}")))?
                .map_err(|e| RemoteError::new(507, format!("cannot store a chunk: {e}")))
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| RemoteError::new(400, format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > limit {
            return Err(RemoteError::new(
                413,
                format!(
                    "the file is over {limit} bytes (the volume's quota, at most 4 GiB per file)"
                ),
            ));
        }
        let mut data = &data[..];
        while !data.is_empty() {
            let take = (CHUNK_BYTES as usize - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if buf.len() == CHUNK_BYTES as usize {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK_BYTES as usize));
                chunks.push(store(full).await?);
            }
        }
    }
    if !buf.is_empty() {
        chunks.push(store(buf).await?);
    }
    // Missing parents first (each a single Raft write; one that exists is
    // fine).
    let mut dirs = Vec::new();
    let mut p = parent(path);
    while !p.is_empty() && !state.volumes.get(&owner, name).is_some_and(|v| v.is_dir(p)) {
        dirs.push(p.to_string());
        p = parent(p);
    }
    let actor = VolumeActor::Caller { by: direct.clone() };
    for d in dirs.into_iter().rev() {
        let op = VolumeOp::Mkdir {
            path: d,
            mtime_ms: unix_ms(),
        };
        match inner
            .link
            .volume_write(actor.clone(), owner.clone(), name, op)
            .await
        {
            Ok(_) => {}
            Err(Refused::Refusal(r))
                if refusal_error(&r) == shoal_runtime::cluster_link::SharedError::Exists => {}
            Err(e) => return Err(write_refused(e)),
        }
    }
    let holders = inner
        .link
        .replicate(&owner, name, &chunks)
        .await
        .map_err(|e| RemoteError::new(503, format!("cannot replicate the file: {e}")))?;
    let op = VolumeOp::Put {
        path: path.to_string(),
        size,
        chunks: chunks.iter().map(Sha256::to_hex).collect(),
        holders: holders.clone(),
        mtime_ms: unix_ms(),
        exclusive: false,
    };
    let version = inner
        .link
        .volume_write(actor, owner, name, op)
        .await
        .map_err(write_refused)?;
    json(&VolumeWritten {
        volume: name.to_string(),
        path: path.to_string(),
        size,
        version,
        holders,
    })
}
