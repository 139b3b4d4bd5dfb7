//! The local daemon's listener: a Unix socket only its owner can use, and
//! the loop that serves each connection with [`super::routes`].
//!
//! The socket is the authentication (see [`super`]): it is bound inside a
//! fresh 0700 directory, set to 0600, and only then hard-linked to its
//! public path, so there is no moment at which another user could connect.
//! Linking (unlike renaming) fails if the path exists, so two daemons
//! starting at once cannot both take the same socket.

use super::routes;
use super::HEADER_READ_TIMEOUT;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shoal_runtime::node::Node;
use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes,
/// NUL included).
const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another node already answers on the socket.
    #[error(
        "a Shoal node is already running at {}: stop it first, or give this one another --data-dir or --socket",
        .0.display()
    )]
    AlreadyRunning(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket: move it away, or use --socket", .0.display())]
    NotASocket(PathBuf),
    /// The path does not fit in a Unix socket address.
    #[error(
        "socket path {} is too long for a Unix socket (at most {SOCKET_PATH_BYTES_MAX} bytes): use a shorter --socket or --data-dir",
        .0.display()
    )]
    PathTooLong(PathBuf),
    /// The OS refused.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServeError {
    let path = path.to_path_buf();
    move |source| ServeError::Io { what, path, source }
}

/// The daemon's Unix socket, bound and owned. Dropping it removes the
/// socket file (if it is still the one this server created).
pub struct UnixServer {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

/// Check whether a node is live at `path`: `Err(AlreadyRunning)` if one
/// answers, `Ok` (after removing the stale file) if the socket is dead.
fn clear_stale(path: &Path) -> Result<(), ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("cannot inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServeError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            // Nobody listens: a node that died without cleaning up.
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("cannot remove the stale socket", path)(e)),
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot check whether a node is running at", path)(e)),
    }
}

impl UnixServer {
    /// Bind the socket at `path` with mode 0600, creating its directory if
    /// needed. Refuses if a node already answers there; removes a stale
    /// socket left by a node that died. Must be called inside a tokio
    /// runtime.
    pub fn bind(path: &Path) -> Result<UnixServer, ServeError> {
        if path.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
            return Err(ServeError::PathTooLong(path.to_path_buf()));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io("cannot create the directory", &parent))?;
        clear_stale(path)?;

        // Bind in a private directory, restrict, then link into place.
        let private = parent.join(format!(".shoal-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io("cannot create the private directory", &private))?;
        let staged = private.join("s");
        if staged.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
            let _ = std::fs::remove_dir_all(&private);
            return Err(ServeError::PathTooLong(path.to_path_buf()));
        }
        let result = (|| {
            let listener = std::os::unix::net::UnixListener::bind(&staged)
                .map_err(io("cannot listen on", &staged))?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .map_err(io("cannot restrict the permissions of", &staged))?;
            match std::fs::hard_link(&staged, path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    // Another node started between our check and now.
                    return Err(ServeError::AlreadyRunning(path.to_path_buf()));
                }
                Err(e) => return Err(io("cannot create the socket", path)(e)),
            }
            Ok(listener)
        })();
        let _ = std::fs::remove_dir_all(&private);
        let listener = result?;
        let meta = std::fs::symlink_metadata(path).map_err(io("cannot inspect", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io("cannot configure", path))?;
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(io("cannot listen on", path))?;
        Ok(UnixServer {
            listener,
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve connections until `shutdown` completes. Then stop accepting
    /// and remove the socket (so new clients are told no node runs), and
    /// hand back the connections still open so the caller can end what
    /// they wait on (e.g. kill processes whose logs are followed) and then
    /// [`Connections::drain`] them.
    pub async fn serve(self, node: Node, shutdown: impl Future<Output = ()>) -> Connections {
        self.serve_each(shutdown, move |stream| {
            serve_connection(stream, node.clone())
        })
        .await
    }

    /// Serve each accepted connection with `conn` until `shutdown`
    /// completes (see [`UnixServer::serve`]); the cluster daemon serves its
    /// own verbs this way (`crate::local_api`).
    pub async fn serve_each<F, Fut>(
        self,
        shutdown: impl Future<Output = ()>,
        conn: F,
    ) -> Connections
    where
        F: Fn(tokio::net::UnixStream) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(conn(stream));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin; the listener itself stays fine.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(self);
        Connections { conns }
    }

    fn remove_socket(&self) {
        // Only remove the file if it is still ours (not a later node's).
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.inode {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        self.remove_socket();
    }
}

/// Connections still open after [`UnixServer::serve`] returned.
pub struct Connections {
    conns: JoinSet<()>,
}

impl Connections {
    /// How many connections are still open.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Let open connections finish for at most `grace`, then cut them.
    pub async fn drain(mut self, grace: Duration) {
        let _ = tokio::time::timeout(grace, async {
            while self.conns.join_next().await.is_some() {}
        })
        .await;
        self.conns.abort_all();
    }
}

/// Serve one connection (any byte stream: a Unix socket today, a TLS
/// stream later) with the API's routes, until the peer closes it.
pub async fn serve_connection<IO>(io: IO, node: Node)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let node = node.clone();
        // Whoever reaches the socket (mode 0600) is the node's operator.
        async move {
            Ok::<_, Infallible>(
                routes::route(&node, req, shoal_runtime::grants::DirAuthority::Any).await,
            )
        }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
    // A client that hangs up mid-request is its own business; nothing to
    // report on the node's terminal.
    let _ = result;
}
