//! Tests of the transport: real TLS (certificates from a real cluster CA),
//! real HTTP/2, 127.0.0.1 with ephemeral ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::frame::{self, Decoder, Frame, FrameError};
use super::LaneTag;
use super::*;
use shoal_pki::tls::{client_config, server_config, CONTROL_API, NODE_ONLY};
use shoal_pki::{ClusterCa, ClusterTrust, Identity, Role, SharedRevocations};

const TTL: Duration = Duration::from_secs(3600);
/// Generous bound for anything that should finish quickly.
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- PKI ---

struct Pki {
    _dir: tempfile::TempDir,
    ca: ClusterCa,
    trust: ClusterTrust,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::init_at(dir.path(), shoal_pki::now_unix_ms()).expect("ca");
    let trust = ClusterTrust::new(ca.ca_cert_pem(), SharedRevocations::default()).expect("trust");
    Pki {
        _dir: dir,
        ca,
        trust,
    }
}

fn identity(p: &Pki, role: Role, id: &str) -> Identity {
    let creds = p.ca.issue_with_new_key(role, id, TTL).expect("issue");
    Identity::from_pem(&creds.cert.cert_pem, &creds.key_pem, p.ca.ca_cert_pem()).expect("identity")
}

fn node_server_tls(p: &Pki, id: &str) -> Arc<rustls::ServerConfig> {
    server_config(&identity(p, Role::Node, id), &p.trust, NODE_ONLY).expect("server config")
}

fn client_tls(p: &Pki, role: Role, id: &str) -> Arc<rustls::ClientConfig> {
    client_config(&identity(p, role, id), &p.trust).expect("client config")
}

// ------------------------------------------------------------- server ---

struct TestServer {
    addr: SocketAddr,
    counters: Arc<ServerCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServerStats>,
}

impl TestServer {
    async fn start(
        tls: Arc<rustls::ServerConfig>,
        handler: Arc<dyn Handler>,
        config: NetConfig,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(ServerCounters::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_stats(
            listener,
            tls,
            handler,
            config,
            counters.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            counters,
            stop: Some(stop),
            task,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    async fn stop(mut self) -> ServerStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server stops")
            .expect("server task")
    }
}

/// Poll `cond` every 5 ms until it holds; panic with `what` after PATIENCE.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- sink ---

/// The test node: a few unary routes and a lane sink that checks order.
///
/// Lane payloads start with a big-endian u64 counter, numbered from 0 per
/// (from, to) pair by the sender; the sink records any counter that is not
/// the next expected one (loss, duplicate or reordering).
#[derive(Default)]
struct Sink {
    next: Mutex<HashMap<(u64, u64), u64>>,
    errors: Mutex<Vec<String>>,
    delivered: AtomicU64,
    /// Pids that do not exist here.
    missing: Vec<u64>,
    /// While false, `deliver` waits (a full mailbox).
    open: Option<watch::Receiver<bool>>,
    /// Echo every message back to its sender through this pool and address.
    echo: Option<(Peers, String)>,
    /// Report every delivered counter here.
    report: Option<mpsc::Sender<u64>>,
    /// Callers seen on the lane.
    lane_callers: Mutex<Vec<Option<String>>>,
}

fn counter_of(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[..8]);
    u64::from_be_bytes(b)
}

fn numbered(counter: u64, pad_bytes: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + pad_bytes);
    b.put_u64(counter);
    b.put_bytes(0xab, pad_bytes);
    b.freeze()
}

impl Sink {
    fn delivered(&self) -> u64 {
        self.delivered.load(SeqCst)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors").clone()
    }

    fn counts(&self) -> HashMap<(u64, u64), u64> {
        self.next.lock().expect("next").clone()
    }
}

#[async_trait::async_trait]
impl Handler for Sink {
    async fn request(
        &self,
        _caller: &Caller,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<BoxBody> {
        match req.uri().path() {
            "/echo" => match read_body(req, 1024 * 1024).await {
                Ok(body) => reply(200, body),
                Err(e) => error_reply(&e),
            },
            "/fail" => error_reply(&RemoteError::new(409, "conflict: the thing exists")),
            other => error_reply(&RemoteError::new(404, format!("no route {other}"))),
        }
    }

    async fn deliver(&self, caller: &Caller, msg: LaneMessage) -> Delivery {
        {
            let mut callers = self.lane_callers.lock().expect("callers");
            if callers.is_empty() {
                callers.push(caller.cert.as_ref().map(|c| c.id.clone()));
            }
        }
        if let Some(open) = &self.open {
            let mut open = open.clone();
            let _ = open.wait_for(|o| *o).await;
        }
        if self.missing.contains(&msg.to) {
            return Delivery::NoSuchProcess;
        }
        let counter = counter_of(&msg.data);
        {
            let mut next = self.next.lock().expect("next");
            let expected = next.entry((msg.from, msg.to)).or_insert(0);
            if counter != *expected {
                self.errors.lock().expect("errors").push(format!(
                    "{}→{}: got #{counter}, expected #{expected}",
                    msg.from, msg.to
                ));
            }
            *expected = counter + 1;
        }
        self.delivered.fetch_add(1, SeqCst);
        if let Some((peers, addr)) = &self.echo {
            let back = LaneMessage {
                tag: LaneTag::default(),
                from: msg.to,
                to: msg.from,
                data: msg.data.clone(),
            };
            if let Err(e) = peers.send(addr, back) {
                self.errors
                    .lock()
                    .expect("errors")
                    .push(format!("echo: {e}"));
            }
        }
        if let Some(report) = &self.report {
            let _ = report.send(counter).await;
        }
        Delivery::Delivered
    }
}

/// Send `count` messages round-robin over `pairs`, numbering them per pair,
/// retrying on `LaneFull`. Calls `at(n)` after each accepted message.
async fn send_numbered(
    peers: &Peers,
    addr: &str,
    pairs: &[(u64, u64)],
    count: u64,
    pad_bytes: usize,
    mut at: impl FnMut(u64),
) {
    let mut next: HashMap<(u64, u64), u64> = HashMap::new();
    let start = Instant::now();
    for i in 0..count {
        let (from, to) = pairs[(i % pairs.len() as u64) as usize];
        let counter = next.entry((from, to)).or_insert(0);
        let msg = LaneMessage {
            tag: LaneTag::default(),
            from,
            to,
            data: numbered(*counter, pad_bytes),
        };
        loop {
            match peers.send(addr, msg.clone()) {
                Ok(()) => break,
                Err(LaneError::LaneFull { .. }) => {
                    assert!(start.elapsed() < PATIENCE, "lane stayed full");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        *counter += 1;
        at(i + 1);
    }
}

// ------------------------------------------------------------- frames ---

#[test]
fn frames_round_trip_split_at_every_byte() {
    let mut wire = BytesMut::new();
    frame::put_hello(&mut wire, 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10, 7);
    frame::put_data(&mut wire, 7, 1, 2, LaneTag::default(), b"payload");
    frame::put_data(&mut wire, 8, 3, 4, LaneTag::default(), b"");
    let call = LaneTag {
        kind: 3,
        reference: 0x0102_0304_0506_0708,
        seq: 0,
        life: 0,
    };
    frame::put_data(&mut wire, 9, 5, 6, call, b"req");
    frame::put_ack(&mut wire, 8);
    frame::put_dead(&mut wire, 8, 4);
    let expected = vec![
        Frame::Hello {
            lane_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            first_seq: 7,
        },
        Frame::Data {
            seq: 7,
            from: 1,
            to: 2,
            tag: LaneTag::default(),
            payload: Bytes::from_static(b"payload"),
        },
        Frame::Data {
            seq: 8,
            from: 3,
            to: 4,
            tag: LaneTag::default(),
            payload: Bytes::new(),
        },
        Frame::Data {
            seq: 9,
            from: 5,
            to: 6,
            tag: call,
            payload: Bytes::from_static(b"req"),
        },
        Frame::Ack { seq: 8 },
        Frame::Dead { seq: 8, pid: 4 },
    ];
    for split in 0..=wire.len() {
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        for part in [&wire[..split], &wire[split..]] {
            d.push(part);
            while let Some(f) = d.next_frame().expect("valid frames") {
                got.push(f);
            }
        }
        assert_eq!(got, expected, "split at {split}");
        assert_eq!(d.buffered_bytes(), 0);
    }
}

#[test]
fn frames_over_the_limit_or_malformed_are_refused() {
    // A length over the limit is refused from the 4-byte prefix alone,
    // before any of the frame is buffered.
    let mut d = Decoder::new(100);
    d.push(&[0, 0, 0, 101]);
    assert_eq!(
        d.next_frame(),
        Err(FrameError::TooLarge { len: 101, max: 100 })
    );
    let mut d = Decoder::new(100);
    d.push(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    assert!(d.buffered_bytes() <= 4);

    let mut d = Decoder::new(100);
    d.push(&[0, 0, 0, 0]);
    assert_eq!(d.next_frame(), Err(FrameError::Empty));

    let mut d = Decoder::new(100);
    d.push(&[0, 0, 0, 1, 9]);
    assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(9)));

    // An ack with a 4-byte body.
    let mut d = Decoder::new(100);
    d.push(&[0, 0, 0, 5, frame::KIND_ACK, 0, 0, 0, 1]);
    assert_eq!(
        d.next_frame(),
        Err(FrameError::BadBody {
            kind: frame::KIND_ACK,
            body_bytes: 4
        })
    );
}

// -------------------------------------------------------------- unary ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_round_trip_and_report_errors() {
    let p = pki();
    let sink = Arc::new(Sink::default());
    let server = TestServer::start(node_server_tls(&p, "b"), sink, NetConfig::default()).await;
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let addr = server.addr();

    let got = peers
        .call(&addr, "/echo", Bytes::from_static(b"hello"))
        .await
        .expect("echo");
    assert_eq!(&got[..], b"hello");

    match peers.call(&addr, "/fail", Bytes::new()).await {
        Err(NetError::Remote {
            status, message, ..
        }) => {
            assert_eq!(status, 409);
            assert_eq!(message, "conflict: the thing exists");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }

    // Over the handler's 1 MiB limit: refused by the server with 413.
    let big = Bytes::from(vec![7u8; 2 * 1024 * 1024]);
    match peers.call(&addr, "/echo", big.clone()).await {
        Err(NetError::Remote {
            status, message, ..
        }) => {
            assert_eq!(status, 413);
            assert!(message.contains("exceeds the limit"), "{message}");
        }
        other => panic!("expected 413, got {other:?}"),
    }
    // Over our own request limit: refused before sending.
    let small = Peers::new(
        client_tls(&p, Role::Node, "a"),
        NetConfig {
            request_bytes_max: 1024,
            ..NetConfig::default()
        },
    );
    let err = small
        .call(&addr, "/echo", big)
        .await
        .expect_err("too large");
    assert!(
        matches!(err, NetError::RequestTooLarge { bytes, bytes_max: 1024 } if bytes == 2 * 1024 * 1024),
        "{err}"
    );

    match peers.call(&addr, "/nowhere", Bytes::new()).await {
        Err(NetError::Remote {
            status, message, ..
        }) => {
            assert_eq!(status, 404);
            assert!(message.contains("/nowhere"), "{message}");
        }
        other => panic!("expected 404, got {other:?}"),
    }

    // All of that on one connection.
    assert_eq!(peers.stats().connects, 1);
    assert_eq!(server.counters.snapshot().connections_accepted, 1);
    server.stop().await;
}

/// A node that takes over a member's address (another node certificate of
/// the same cluster, so TLS alone accepts it) gets nothing meant for the
/// member: a pool pinned to the member's name refuses the connection right
/// after the handshake, before any request; a connection opened before the
/// pin is checked again. Without the pin it would be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_address_served_by_another_node_is_refused() {
    let p = pki();
    let sink = Arc::new(Sink::default());
    let server = TestServer::start(node_server_tls(&p, "b"), sink, NetConfig::default()).await;
    let addr = server.addr();
    let pins = |name: &str| HashMap::from([(addr.clone(), name.to_string())]);

    let peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    peers.pin(pins("c"));
    match peers
        .call(&addr, "/echo", Bytes::from_static(b"for c"))
        .await
    {
        Err(NetError::WrongPeer {
            expected, found, ..
        }) => assert_eq!((expected.as_str(), found.as_str()), ("c", "b")),
        other => panic!("expected WrongPeer, got {other:?}"),
    }
    assert_eq!(server.counters.snapshot().requests, 0, "nothing was sent");

    // Pinned to who is really there: served.
    let right = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    right.pin(pins("b"));
    let got = right.call(&addr, "/echo", Bytes::from_static(b"hi")).await;
    assert_eq!(&got.expect("served")[..], b"hi");

    // Connected before any pin, then the cluster records another node
    // there: the open connection is not used again.
    let late = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    late.call(&addr, "/echo", Bytes::from_static(b"x"))
        .await
        .expect("unpinned: served");
    let served = server.counters.snapshot().requests;
    late.pin(pins("c"));
    let err = late
        .call(&addr, "/echo", Bytes::from_static(b"for c"))
        .await
        .expect_err("pinned elsewhere");
    assert!(matches!(err, NetError::WrongPeer { .. }), "{err}");
    assert_eq!(server.counters.snapshot().requests, served);
    server.stop().await;
}

/// A peer whose certificate is revoked while this node is connected to it
/// (a removed node) is talked to no more: the open connection is closed
/// as soon as the revocation list changes, and a new one is refused at the
/// handshake. Without the watch the pooled connection kept serving calls
/// to the removed node indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_a_peer_is_closed_when_its_certificate_is_revoked() {
    let p = pki();
    let sink = Arc::new(Sink::default());
    let server = TestServer::start(node_server_tls(&p, "b"), sink, NetConfig::default()).await;
    let addr = server.addr();
    let revocations = SharedRevocations::default();
    let trust = ClusterTrust::new(p.ca.ca_cert_pem(), revocations.clone()).expect("trust");
    let tls = client_config(&identity(&p, Role::Node, "a"), &trust).expect("client config");
    let peers = Peers::new(tls, NetConfig::default());
    peers.watch_revocations(revocations.clone());

    for _ in 0..3 {
        let got = peers.call(&addr, "/echo", Bytes::from_static(b"hi")).await;
        assert_eq!(&got.expect("served")[..], b"hi");
    }
    let before = peers.stats();
    assert_eq!(before.connects, 1, "one pooled connection: {before:?}");

    revocations
        .update(|l| l.revoke_identity(Role::Node, "b", shoal_pki::now_unix_ms(), "removed"))
        .expect("room in the list");
    // The close is asynchronous (the connection's task sees the change);
    // wait for the first call it refuses, bounded.
    let started = Instant::now();
    let err = loop {
        match peers
            .call(&addr, "/echo", Bytes::from_static(b"again"))
            .await
        {
            Err(e) => break e,
            Ok(_) => assert!(
                started.elapsed() < PATIENCE,
                "calls to a revoked peer were still served after {PATIENCE:?}"
            ),
        }
    };
    // The first refusal is either the old connection closing under the
    // call or a new handshake refusing the revoked certificate (which one
    // depends on timing); both say the old connection is gone.
    eprintln!("first call after the revocation: {err}");
    // And it stays refused: neither the old connection nor a new one to
    // the revoked node carries a request.
    let served = server.counters.snapshot().requests;
    for _ in 0..3 {
        peers
            .call(&addr, "/echo", Bytes::from_static(b"still?"))
            .await
            .expect_err("a revoked peer is refused");
    }
    assert_eq!(server.counters.snapshot().requests, served);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_fails_then_backs_off() {
    let p = pki();
    // A port with nothing listening: bind, learn the port, close.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let err = peers
        .call(&addr, "/echo", Bytes::new())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, NetError::Connect { .. }), "{err}");
    // The next attempt waits out the backoff (50 ms - 25 % jitter) first.
    let start = Instant::now();
    let err = peers
        .call_with_timeout(&addr, "/echo", Bytes::new(), Duration::from_secs(5))
        .await
        .expect_err("still nothing");
    assert!(matches!(err, NetError::Connect { .. }), "{err}");
    assert!(
        start.elapsed() >= Duration::from_millis(37),
        "{:?}",
        start.elapsed()
    );
    // A timeout shorter than the backoff fails as a timeout.
    let err = peers
        .call_with_timeout(&addr, "/echo", Bytes::new(), Duration::from_millis(1))
        .await
        .expect_err("still nothing");
    assert!(matches!(err, NetError::Timeout { .. }), "{err}");
    assert_eq!(peers.stats().connect_failures, 2);
    assert_eq!(peers.stats().connects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_another_ca_is_refused_and_good_clients_still_served() {
    let p = pki();
    let other = pki();
    let sink = Arc::new(Sink::default());
    let server = TestServer::start(node_server_tls(&p, "b"), sink, NetConfig::default()).await;
    let addr = server.addr();

    // The intruder's certificate is a node certificate of another cluster;
    // it trusts our CA so that only the server's check can stop it.
    let intruder_id = identity(&other, Role::Node, "intruder");
    let intruder_tls = client_config(&intruder_id, &p.trust).expect("client config");
    let intruder = Peers::new(intruder_tls, NetConfig::default());
    let err = intruder
        .call(&addr, "/echo", Bytes::from_static(b"x"))
        .await
        .expect_err("refused");
    assert!(matches!(err, NetError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Refused at connect time (not on a later request), with backoff.
    let stats = intruder.stats();
    assert_eq!(
        (stats.connect_failures, stats.tls_failures),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.connects, 0, "{stats:?}");
    eventually("the server to count the refused handshake", || {
        server.counters.snapshot().handshakes_failed == 1
    })
    .await;
    assert_eq!(server.counters.snapshot().requests, 0);

    let good = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let got = good
        .call(&addr, "/echo", Bytes::from_static(b"still here"))
        .await
        .expect("good client served");
    assert_eq!(&got[..], b"still here");
    server.stop().await;
}

// --------------------------------------------------------------- lane ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_delivers_200k_messages_exactly_once_in_order() {
    const COUNT: u64 = 200_000;
    let p = pki();
    let sink = Arc::new(Sink::default());
    let server =
        TestServer::start(node_server_tls(&p, "b"), sink.clone(), NetConfig::default()).await;
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let addr = server.addr();
    let pairs: Vec<(u64, u64)> = (1..=4)
        .flat_map(|from| (101..=104).map(move |to| (from, to)))
        .collect();

    let start = Instant::now();
    send_numbered(&peers, &addr, &pairs, COUNT, 0, |_| {}).await;
    eventually("every message delivered", || sink.delivered() >= COUNT).await;
    let elapsed = start.elapsed();
    println!(
        "lane throughput: {COUNT} messages in {:.3} s = {:.0} msgs/s one-way",
        elapsed.as_secs_f64(),
        COUNT as f64 / elapsed.as_secs_f64()
    );
    eventually("every message acked", || {
        peers.stats().frames_acked == COUNT
    })
    .await;

    assert_eq!(sink.errors(), Vec::<String>::new());
    assert_eq!(sink.delivered(), COUNT);
    let counts = sink.counts();
    assert_eq!(counts.len(), 16);
    for pair in &pairs {
        assert_eq!(counts.get(pair), Some(&(COUNT / 16)), "pair {pair:?}");
    }
    assert_eq!(
        sink.lane_callers.lock().expect("callers").clone(),
        vec![Some("a".to_string())]
    );
    let stats = peers.stats();
    assert_eq!(stats.frames_queued, COUNT);
    assert_eq!(stats.lane_streams_opened, 1);
    assert_eq!(peers.lane_backlog(&addr).map(|b| b.frames), Some(0));
    server.stop().await;
}

/// A TCP relay whose connections the test can cut at will.
struct Proxy {
    addr: String,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let list = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let relay = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                list.lock().expect("conns").push(relay.abort_handle());
            }
        });
        Proxy { addr, conns, task }
    }

    /// Cut every relayed connection (both sides see it close).
    fn kill_all(&self) -> usize {
        let mut conns = self.conns.lock().expect("conns");
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns.drain(..) {
            c.abort();
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill_all();
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_survives_connection_kills_without_loss_or_duplicates() {
    const COUNT: u64 = 50_000;
    let p = pki();
    let sink = Arc::new(Sink::default());
    let server =
        TestServer::start(node_server_tls(&p, "b"), sink.clone(), NetConfig::default()).await;
    let proxy = Proxy::start(server.addr).await;
    // A small unacked bound makes the sender wait for acks, so every cut
    // below lands on a live connection with messages in flight.
    let config = NetConfig {
        lane_unacked_frames_max: 2_000,
        ..NetConfig::default()
    };
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), config);
    let pairs = [(1, 101), (2, 101), (1, 102), (3, 103)];

    let proxy = Arc::new(proxy);
    let addr = proxy.addr.clone();
    let mut kills = 0;
    // Cut the connection 5 times while sending: at 5k, 15k, ... accepted.
    send_numbered(&peers, &addr, &pairs, COUNT, 16, |n| {
        if n % 10_000 == 5_000 && proxy.kill_all() > 0 {
            kills += 1;
        }
    })
    .await;
    // And once more with the tail still in flight, unless all is acked.
    if peers.stats().frames_acked < COUNT && proxy.kill_all() > 0 {
        kills += 1;
    }
    eventually("every message delivered", || sink.delivered() >= COUNT).await;
    eventually("every message acked", || {
        peers.stats().frames_acked == COUNT
    })
    .await;
    // Give stray resends a moment to show up as duplicates, if any.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stats = peers.stats();
    let server_stats = server.counters.snapshot();
    println!("after {kills} kills: client {stats:?}\nserver {server_stats:?}");
    assert!(kills >= 3, "only {kills} live connections were cut");
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(stats.lane_streams_opened >= 2, "{stats:?}");
    assert_eq!(sink.errors(), Vec::<String>::new());
    assert_eq!(sink.delivered(), COUNT);
    assert_eq!(server_stats.lane_frames_delivered, COUNT);
    let counts = sink.counts();
    for pair in &pairs {
        assert_eq!(counts.get(pair), Some(&(COUNT / 4)), "pair {pair:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_sink_fills_the_lane_then_everything_drains() {
    const FRAMES_MAX: usize = 500;
    const BYTES_MAX: usize = 64 * 1024;
    let p = pki();
    let (open_tx, open_rx) = watch::channel(false);
    let sink = Arc::new(Sink {
        open: Some(open_rx),
        ..Sink::default()
    });
    let server =
        TestServer::start(node_server_tls(&p, "b"), sink.clone(), NetConfig::default()).await;
    let config = NetConfig {
        lane_unacked_frames_max: FRAMES_MAX,
        lane_unacked_bytes_max: BYTES_MAX,
        ..NetConfig::default()
    };
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), config);
    let addr = server.addr();

    // Small messages: the frame bound is hit first.
    let mut accepted = 0u64;
    let mut full = None;
    for i in 0..10_000u64 {
        let msg = LaneMessage {
            tag: LaneTag::default(),
            from: 1,
            to: 2,
            data: numbered(i, 0),
        };
        match peers.send(&addr, msg) {
            Ok(()) => accepted += 1,
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(full, Some(LaneError::LaneFull { .. })),
        "expected LaneFull, got {full:?}"
    );
    assert_eq!(accepted, FRAMES_MAX as u64);
    // It stays full (and bounded) while the sink is blocked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = peers.send(
        &addr,
        LaneMessage {
            tag: LaneTag::default(),
            from: 1,
            to: 2,
            data: numbered(accepted, 0),
        },
    );
    assert!(
        matches!(refused, Err(LaneError::LaneFull { .. })),
        "{refused:?}"
    );
    let backlog = peers.lane_backlog(&addr).expect("lane exists");
    assert!(backlog.frames <= FRAMES_MAX, "{backlog:?}");
    assert!(backlog.bytes <= BYTES_MAX, "{backlog:?}");
    assert!(sink.delivered() == 0);
    // What the receiver is owed (a reply, a DOWN) still goes, into room
    // plain mail never takes, up to twice the bound and no further.
    let owed = |i: u64| LaneMessage {
        tag: LaneTag {
            kind: 2,
            reference: i,
            seq: 0,
            life: 0,
        },
        from: 1,
        to: 2,
        data: numbered(accepted + i, 0),
    };
    let mut owed_accepted = 0u64;
    let owed_full = loop {
        match peers.send_owed(&addr, owed(owed_accepted)) {
            Ok(()) => owed_accepted += 1,
            Err(e) => break e,
        }
        assert!(owed_accepted <= FRAMES_MAX as u64, "owed room unbounded");
    };
    assert!(
        matches!(owed_full, LaneError::LaneFull { .. }),
        "{owed_full:?}"
    );
    assert_eq!(owed_accepted, FRAMES_MAX as u64);
    assert!(
        peers.send(&addr, owed(owed_accepted)).is_err(),
        "plain room is still full"
    );
    let accepted = accepted + owed_accepted;

    // Unblock: everything accepted drains, in order, and the lane takes
    // more (1 KiB payloads now: the byte bound is what limits).
    open_tx.send_replace(true);
    eventually("the backlog delivered", || sink.delivered() == accepted).await;
    eventually("the backlog acked", || {
        peers.lane_backlog(&addr).map(|b| b.frames) == Some(0)
    })
    .await;
    let mut more = 0u64;
    while more < 2_000 {
        let msg = LaneMessage {
            tag: LaneTag::default(),
            from: 1,
            to: 2,
            data: numbered(accepted + more, 1024),
        };
        match peers.send(&addr, msg) {
            Ok(()) => more += 1,
            Err(LaneError::LaneFull { bytes, .. }) => {
                assert!(bytes <= BYTES_MAX, "{bytes}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    eventually("the rest delivered", || sink.delivered() == accepted + more).await;
    assert_eq!(sink.errors(), Vec::<String>::new());
    assert!(peers.stats().lane_full >= 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_such_process_reaches_the_dead_letter_hook() {
    let p = pki();
    let sink = Arc::new(Sink {
        missing: vec![999],
        ..Sink::default()
    });
    let server =
        TestServer::start(node_server_tls(&p, "b"), sink.clone(), NetConfig::default()).await;
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let dead: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen = dead.clone();
    peers.set_dead_letter_hook(Arc::new(move |pid| {
        seen.lock().expect("dead").push(pid);
    }));
    let addr = server.addr();
    for (i, to) in [(0, 101), (0, 999), (1, 101), (1, 999), (2, 101)] {
        peers
            .send(
                &addr,
                LaneMessage {
                    tag: LaneTag::default(),
                    from: 1,
                    to,
                    data: numbered(i, 0),
                },
            )
            .expect("send");
    }
    eventually("the live messages delivered", || sink.delivered() == 3).await;
    eventually("two dead letters", || dead.lock().expect("dead").len() == 2).await;
    assert_eq!(dead.lock().expect("dead").clone(), vec![999, 999]);
    assert_eq!(peers.stats().dead_letters, 2);
    assert_eq!(server.counters.snapshot().lane_frames_dead, 2);
    assert_eq!(sink.errors(), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_refuses_a_caller_that_is_not_a_node() {
    let p = pki();
    let sink = Arc::new(Sink::default());
    // The control-API endpoint accepts client certificates; its lane must
    // still refuse them.
    let tls = server_config(&identity(&p, Role::Node, "b"), &p.trust, CONTROL_API)
        .expect("server config");
    let server = TestServer::start(tls, sink.clone(), NetConfig::default()).await;
    let cli = Peers::new(client_tls(&p, Role::Client, "alice"), NetConfig::default());
    let addr = server.addr();
    // Unary requests go to the handler, which decides.
    let got = cli
        .call(&addr, "/echo", Bytes::from_static(b"hi"))
        .await
        .expect("unary call");
    assert_eq!(&got[..], b"hi");
    cli.send(
        &addr,
        LaneMessage {
            tag: LaneTag::default(),
            from: 1,
            to: 2,
            data: numbered(0, 0),
        },
    )
    .expect("queued");
    eventually("the lane refused", || {
        server.counters.snapshot().lanes_refused >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.delivered(), 0);
    assert_eq!(server.counters.snapshot().lanes_opened, 0);
    assert_eq!(cli.lane_backlog(&addr).map(|b| b.frames), Some(1));
    cli.forget(&addr);
    assert!(cli.lane_backlog(&addr).is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_ping_pong_latency() {
    const ROUNDS: usize = 2_000;
    const WARMUP: usize = 200;
    let p = pki();
    // Node A: records pongs. Node B: echoes pings back to A.
    let (report_tx, mut pongs) = mpsc::channel(16);
    let a_sink = Arc::new(Sink {
        report: Some(report_tx),
        ..Sink::default()
    });
    let a = TestServer::start(node_server_tls(&p, "a"), a_sink, NetConfig::default()).await;
    let b_peers = Peers::new(client_tls(&p, Role::Node, "b"), NetConfig::default());
    let b_sink = Arc::new(Sink {
        echo: Some((b_peers.clone(), a.addr())),
        ..Sink::default()
    });
    let b = TestServer::start(
        node_server_tls(&p, "b"),
        b_sink.clone(),
        NetConfig::default(),
    )
    .await;
    let a_peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let b_addr = b.addr();

    let mut rtts = Vec::with_capacity(ROUNDS);
    for i in 0..(WARMUP + ROUNDS) as u64 {
        let start = Instant::now();
        a_peers
            .send(
                &b_addr,
                LaneMessage {
                    tag: LaneTag::default(),
                    from: 1,
                    to: 2,
                    data: numbered(i, 0),
                },
            )
            .expect("ping");
        let pong = tokio::time::timeout(PATIENCE, pongs.recv())
            .await
            .expect("pong in time")
            .expect("pong");
        assert_eq!(pong, i);
        if i as usize >= WARMUP {
            rtts.push(start.elapsed());
        }
    }
    rtts.sort();
    let pct = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    println!(
        "lane round trip over {ROUNDS} ping-pongs: p50 {:?}, p90 {:?}, p99 {:?} (aim: p50 <= 150us)",
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    assert_eq!(b_sink.errors(), Vec::<String>::new());
    a.stop().await;
    b.stop().await;
}

/// Send `frames` as one whole `POST /v1/lane` body and collect the frames
/// the server answers until it ends the response.
async fn raw_lane(peers: &Peers, addr: &str, frames: BytesMut) -> (u16, Vec<Frame>) {
    use http_body_util::BodyExt;
    let mut sender = peers.raw_sender(addr).await.expect("connection");
    let req = hyper::Request::post(format!("https://{addr}{LANE_PATH}"))
        .body(http_body_util::Full::new(frames.freeze()).boxed())
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(PATIENCE, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    let mut decoder = Decoder::new(1024);
    decoder.push(&body);
    let mut got = Vec::new();
    while let Some(f) = decoder.next_frame().expect("well-formed answer") {
        got.push(f);
    }
    (status, got)
}

fn data(buf: &mut BytesMut, seq: u64, from: u64, to: u64, counter: u64) {
    frame::put_data(
        buf,
        seq,
        from,
        to,
        LaneTag::default(),
        &numbered(counter, 0),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_skips_resent_frames_and_ends_malformed_streams() {
    let p = pki();
    let sink = Arc::new(Sink::default());
    let server =
        TestServer::start(node_server_tls(&p, "b"), sink.clone(), NetConfig::default()).await;
    let peers = Peers::new(client_tls(&p, Role::Node, "a"), NetConfig::default());
    let addr = server.addr();

    // Stream 1 of lane 42: messages 1..=3, acked cumulatively.
    let mut b = BytesMut::new();
    frame::put_hello(&mut b, 42, 1);
    for seq in 1..=3 {
        data(&mut b, seq, 1, 2, seq - 1);
    }
    let (status, got) = raw_lane(&peers, &addr, b).await;
    assert_eq!(status, 200);
    assert_eq!(got, vec![Frame::Ack { seq: 3 }]);
    assert_eq!(sink.delivered(), 3);

    // Stream 2 of the same lane resends 1..=3 (as after a lost ack) and
    // adds 4: the server says what it has at once, skips 1..=3, delivers 4.
    let mut b = BytesMut::new();
    frame::put_hello(&mut b, 42, 1);
    for seq in 1..=4 {
        data(&mut b, seq, 1, 2, seq - 1);
    }
    let (_, got) = raw_lane(&peers, &addr, b).await;
    assert_eq!(got, vec![Frame::Ack { seq: 3 }, Frame::Ack { seq: 4 }]);
    assert_eq!(sink.delivered(), 4);
    assert_eq!(sink.errors(), Vec::<String>::new());
    assert_eq!(server.counters.snapshot().lane_frames_duplicate, 3);
    assert_eq!(server.counters.snapshot().lane_errors, 0);

    // A gap (1 then 3) ends the stream: 1 is delivered, 3 is not.
    let mut b = BytesMut::new();
    frame::put_hello(&mut b, 43, 1);
    data(&mut b, 1, 5, 6, 0);
    data(&mut b, 3, 5, 6, 1);
    let (_, got) = raw_lane(&peers, &addr, b).await;
    assert_eq!(got, vec![]);
    assert_eq!(sink.delivered(), 5);
    assert_eq!(server.counters.snapshot().lane_errors, 1);

    // A length over frame_bytes_max, data before hello, a second hello,
    // an ack from the sender: each ends its stream with nothing delivered.
    let mut huge = BytesMut::new();
    frame::put_hello(&mut huge, 44, 1);
    huge.put_u32(u32::MAX);
    huge.put_u8(frame::KIND_DATA);
    let mut no_hello = BytesMut::new();
    data(&mut no_hello, 1, 7, 8, 0);
    let mut two_hellos = BytesMut::new();
    frame::put_hello(&mut two_hellos, 45, 1);
    frame::put_hello(&mut two_hellos, 45, 1);
    let mut wrong_way = BytesMut::new();
    frame::put_hello(&mut wrong_way, 46, 1);
    frame::put_ack(&mut wrong_way, 1);
    for (i, bad) in [huge, no_hello, two_hellos, wrong_way]
        .into_iter()
        .enumerate()
    {
        let (status, got) = raw_lane(&peers, &addr, bad).await;
        assert_eq!(status, 200);
        assert_eq!(got, vec![], "case {i}");
        assert_eq!(server.counters.snapshot().lane_errors, 2 + i as u64);
    }
    assert_eq!(sink.delivered(), 5);
    assert_eq!(sink.errors(), Vec::<String>::new());

    // The connection is still fine for well-formed lanes and calls.
    let got = peers
        .call(&addr, "/echo", Bytes::from_static(b"ok"))
        .await
        .expect("call");
    assert_eq!(&got[..], b"ok");
    server.stop().await;
}
