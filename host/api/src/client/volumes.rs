//! The shared-volume verbs of [`Client`] (`shoal volume`; see
//! [`crate::volumes`] for the routes).

use super::{Client, ClientError};
use crate::kv::{owner_text, percent_encode_bytes};
use crate::volumes::{
    VolumeCreate, VolumeEntryView, VolumeSummary, VolumeWritten, VOLUME_FILE_BYTES_MAX,
};
use bytes::Bytes;
use hyper::Method;
use shoal_pki::Owner;
use std::time::Duration;

/// One Raft write or read, plus chunk transfers between nodes for a file.
const VOLUME_CALL_TIMEOUT: Duration = Duration::from_secs(300);

fn owner_query(owner: Option<&Owner>) -> String {
    match owner {
        Some(o) => format!("?owner={}", percent_encode_bytes(owner_text(o).as_bytes())),
        None => String::new(),
    }
}

/// `path` inside a volume, each component percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(|c| percent_encode_bytes(c.as_bytes()))
        .collect::<Vec<_>>()
        .join("/")
}

fn volume_path(name: &str) -> String {
    format!("/v1/volumes/{}", percent_encode_bytes(name.as_bytes()))
}

impl Client {
    /// `GET /v1/volumes`: the caller's shared volumes (`all`: everyone's,
    /// admins only).
    pub async fn volumes(&self, all: bool) -> Result<Vec<VolumeSummary>, ClientError> {
        let path = if all {
            "/v1/volumes?owner=all"
        } else {
            "/v1/volumes"
        };
        self.call(Method::GET, path, None, Bytes::new(), VOLUME_CALL_TIMEOUT)
            .await
    }

    /// `POST /v1/volumes`: create a shared volume.
    pub async fn volume_create(&self, req: &VolumeCreate) -> Result<VolumeSummary, ClientError> {
        self.call_json(Method::POST, "/v1/volumes", req, VOLUME_CALL_TIMEOUT)
            .await
    }

    /// `DELETE /v1/volumes/{name}`: remove a shared volume and its tree.
    pub async fn volume_remove(
        &self,
        owner: Option<&Owner>,
        name: &str,
    ) -> Result<VolumeSummary, ClientError> {
        let path = format!("{}{}", volume_path(name), owner_query(owner));
        self.call(
            Method::DELETE,
            &path,
            None,
            Bytes::new(),
            VOLUME_CALL_TIMEOUT,
        )
        .await
    }

    /// `GET /v1/volumes/{name}/tree/{dir}`: a directory's entries.
    pub async fn volume_list(
        &self,
        owner: Option<&Owner>,
        name: &str,
        dir: &str,
    ) -> Result<Vec<VolumeEntryView>, ClientError> {
        let path = format!(
            "{}/tree/{}{}",
            volume_path(name),
            encode_path(dir),
            owner_query(owner)
        );
        self.call(Method::GET, &path, None, Bytes::new(), VOLUME_CALL_TIMEOUT)
            .await
    }

    /// `PUT /v1/volumes/{name}/files/{path}`: write a file, whole.
    pub async fn volume_put(
        &self,
        owner: Option<&Owner>,
        name: &str,
        path: &str,
        content: Vec<u8>,
    ) -> Result<VolumeWritten, ClientError> {
        let path = format!(
            "{}/files/{}{}",
            volume_path(name),
            encode_path(path),
            owner_query(owner)
        );
        self.call(
            Method::PUT,
            &path,
            Some("application/octet-stream"),
            Bytes::from(content),
            VOLUME_CALL_TIMEOUT,
        )
        .await
    }

    /// `GET /v1/volumes/{name}/files/{path}`: a file's current version.
    pub async fn volume_get(
        &self,
        owner: Option<&Owner>,
        name: &str,
        path: &str,
    ) -> Result<Bytes, ClientError> {
        let path = format!(
            "{}/files/{}{}",
            volume_path(name),
            encode_path(path),
            owner_query(owner)
        );
        let work = async {
            let resp = self.send(Method::GET, &path, None, Bytes::new()).await?;
            let resp = self.check(resp).await?;
            self.body(resp, VOLUME_FILE_BYTES_MAX).await
        };
        tokio::time::timeout(VOLUME_CALL_TIMEOUT, work)
            .await
            .map_err(|_| ClientError::Timeout(VOLUME_CALL_TIMEOUT))?
    }
}
