//! The API in-process: routing and limits on a real socket, and the log
//! cursor's accounting of dropped output.

use super::handlers::frames_since;
use super::types::LogFrame;
use super::{Client, ClientError, ServeError, UnixServer};
use crate::{Node, NodeConfig};
use shoal_runtime::log::{Chunk, Stream};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

fn chunk(stream: Stream, data: &[u8]) -> Chunk {
    Chunk {
        stream,
        data: data.to_vec(),
    }
}

fn out(stream: Stream, data: &[u8]) -> LogFrame {
    LogFrame::Output {
        stream,
        data: data.to_vec(),
    }
}

#[test]
fn log_cursor_sends_each_byte_once_and_counts_what_was_lost() {
    let held = vec![
        chunk(Stream::Stdout, b"ab"),
        chunk(Stream::Stdout, b"cd"),
        chunk(Stream::Stderr, b"e"),
        chunk(Stream::Log(2), b"x"),
        chunk(Stream::Log(2), b"y"),
    ];
    // From the start: same-stream chunks merge, log lines do not.
    let (frames, sent) = frames_since(0, 0, &held);
    assert_eq!(
        frames,
        vec![
            out(Stream::Stdout, b"abcd"),
            out(Stream::Stderr, b"e"),
            out(Stream::Log(2), b"x"),
            out(Stream::Log(2), b"y"),
        ]
    );
    assert_eq!(sent, 7);
    // Nothing new: nothing sent.
    assert_eq!(frames_since(7, 0, &held), (vec![], 7));
    // The log dropped 4 bytes we had not read (we were at 1): 3 lost.
    let later = vec![chunk(Stream::Stdout, b"efg"), chunk(Stream::Stdout, b"h")];
    let (frames, sent) = frames_since(1, 4, &later);
    assert_eq!(
        frames,
        vec![LogFrame::Dropped(3), out(Stream::Stdout, b"efgh")]
    );
    assert_eq!(sent, 8);
    // Dropped bytes we had already read are not reported.
    let (frames, sent) = frames_since(7, 4, &later);
    assert_eq!(frames, vec![out(Stream::Stdout, b"h")]);
    assert_eq!(sent, 8);
}

struct Running {
    dir: Option<tempfile::TempDir>,
    socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("node.sock");
    let mut config = NodeConfig::new(dir.path().join("data"));
    config.engine.processes_max = 4;
    let node = Node::new(config).unwrap();
    let server = UnixServer::bind(&socket).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let conns = server
            .serve(node, async {
                let _ = rx.await;
            })
            .await;
        conns.drain(Duration::from_secs(1)).await;
    });
    Running {
        dir: Some(dir),
        socket,
        stop: Some(tx),
        task,
    }
}

impl Running {
    /// Stop the server; the data directory lives on until the returned
    /// guard is dropped.
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.dir.take().unwrap()
    }
}

/// Send raw bytes on a fresh connection and read the whole answer.
fn raw(socket: &Path, request: &[u8]) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_refuse_clearly() {
    let r = start().await;
    let socket = r.socket.clone();
    let answers = tokio::task::spawn_blocking(move || {
        [
            // A body announced over the limit is refused before it is sent.
            raw(
                &socket,
                b"POST /v1/modules HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\nconnection: close\r\n\r\n",
            ),
            raw(&socket, b"GET /v2/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
            raw(&socket, b"PUT /v1/processes HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"),
            raw(
                &socket,
                b"POST /v1/processes HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\n{oops",
            ),
            raw(&socket, b"DELETE /v1/processes/0 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        ]
    })
    .await
    .unwrap();
    let expect = [
        ("413", "over the limit"),
        ("404", "no API route"),
        ("405", "not allowed"),
        ("400", "invalid JSON"),
        ("400", "not a pid"),
    ];
    for (answer, (status, text)) in answers.iter().zip(expect) {
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("{\"error\":"), "{answer}");
        assert!(answer.contains(text), "{text} in {answer}");
    }

    // The client turns error answers into their messages.
    let client = Client::new(&r.socket);
    let e = client.kill(shoal_runtime::Pid(77)).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(e.to_string().starts_with("no process with pid 77"), "{e}");
    let e = client
        .spawn(&super::types::SpawnRequest {
            module: "nope:v1".into(),
            argv0: None,
            args: vec![],
            env: vec![],
            count: 5,
            memory_bytes_max: None,
            node: None,
            labels: Default::default(),
            preemptible: false,
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("more than this node runs at once"),
        "{e}"
    );
    let status = client.status().await.unwrap();
    assert_eq!(status.processes_max, 4);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_single_and_cleaned_up() {
    use std::os::unix::fs::PermissionsExt;
    let r = start().await;
    let mode = std::fs::metadata(&r.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(matches!(
        UnixServer::bind(&r.socket),
        Err(ServeError::AlreadyRunning(_))
    ));
    // No private staging directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(r.socket.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".shoal-sock"))
        .collect();
    assert!(leftovers.is_empty());
    let socket = r.socket.clone();
    let _dir = r.stop().await;
    assert!(!socket.exists(), "removed on shutdown");
    let e = Client::new(&socket).status().await.unwrap_err();
    assert!(matches!(e, ClientError::NotRunning(_)), "{e}");

    // Something that is not a socket is never removed.
    std::fs::write(&socket, b"precious").unwrap();
    assert!(matches!(
        UnixServer::bind(&socket),
        Err(ServeError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
    // A path too long for a Unix socket is a clear error.
    let long = socket.parent().unwrap().join("x".repeat(120));
    assert!(matches!(
        UnixServer::bind(&long),
        Err(ServeError::PathTooLong(_))
    ));
}

#[test]
fn percent_roundtrip() {
    use super::{percent_decode, percent_encode};
    for s in ["app:v1", "a b/c?d&e=f", "é", ""] {
        assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
    }
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%4"), None);
    assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
}
