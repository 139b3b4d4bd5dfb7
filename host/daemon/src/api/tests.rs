//! The API in-process: routing and limits on a real socket, and the log
//! cursor's accounting of dropped output.

use super::handlers::frames_since;
use super::types::LogFrame;
use super::{Client, ClientError, ServeError, UnixServer};
use shoal_runtime::log::{Chunk, Stream};
use shoal_runtime::{Node, NodeConfig};
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

/// Every byte of `frames`, with its stream, and the bytes reported dropped
/// before the first one.
fn flatten(frames: &[LogFrame]) -> (u64, Vec<(Stream, u8)>) {
    let mut dropped = 0;
    let mut bytes = Vec::new();
    for f in frames {
        match f {
            LogFrame::Dropped(n) => {
                assert!(bytes.is_empty(), "a gap after output: {frames:?}");
                dropped += n;
            }
            LogFrame::Output { stream, data } => bytes.extend(data.iter().map(|b| (*stream, *b))),
            LogFrame::End(_) => {}
        }
    }
    (dropped, bytes)
}

/// A reader that starts at a position (`from`: what it already has) gets
/// exactly the bytes after it, from the log of the node the process moved
/// to (carried there at the same positions, with a different cap), and the
/// dropped bytes it has not seen as one gap first.
#[test]
fn a_reader_goes_on_from_its_position_in_a_carried_log() {
    use shoal_runtime::log::{ProcessLog, CHUNK_OVERHEAD_BYTES};
    let mut written: Vec<(Stream, u8)> = Vec::new();
    let before = ProcessLog::new(1 << 20, false);
    let mut write = |log: &ProcessLog, stream: Stream, data: &[u8]| {
        log.append(stream, data);
        written.extend(data.iter().map(|b| (stream, *b)));
    };
    for i in 0..200u32 {
        write(&before, Stream::Stdout, format!("line {i}\n").as_bytes());
        if i % 10 == 0 {
            write(&before, Stream::Stderr, format!("mark {i}\n").as_bytes());
        }
        if i % 50 == 0 {
            write(&before, Stream::Log(2), format!("log {i}").as_bytes());
        }
    }
    // The process moves: a node with a smaller cap takes its log.
    let view = before.view();
    let after = ProcessLog::new(CHUNK_OVERHEAD_BYTES * 8 + 600, false);
    after.carry(view.start, &view.chunks);
    for i in 200..220u32 {
        write(&after, Stream::Stdout, format!("line {i}\n").as_bytes());
    }
    let total = written.len() as u64;
    let held = after.view();
    assert!(held.start > 0, "the smaller cap dropped some");
    assert_eq!(held.end(), total);
    for from in [
        0,
        1,
        held.start - 1,
        held.start,
        held.start + 3,
        total - 1,
        total,
        total + 5,
    ] {
        let (frames, sent) = frames_since(from, held.start, &held.chunks);
        let (dropped, bytes) = flatten(&frames);
        assert_eq!(sent, total.max(from), "from {from}");
        assert_eq!(dropped, held.start.saturating_sub(from), "from {from}");
        let first = from.max(held.start).min(total) as usize;
        assert_eq!(bytes, written[first..], "from {from}");
    }
    // Log lines stay whole frames of their own.
    let (frames, _) = frames_since(0, 0, &view.chunks);
    let lines: Vec<&LogFrame> = frames
        .iter()
        .filter(|f| {
            matches!(
                f,
                LogFrame::Output {
                    stream: Stream::Log(_),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1], &out(Stream::Log(2), b"log 50"));
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
            volumes: Vec::new(),
            restart: None,
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
