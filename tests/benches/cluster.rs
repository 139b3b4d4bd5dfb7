//! Cluster benchmarks on loopback: cross-node message round trip and
//! throughput over mTLS, remote spawn latency, leader election time.
//!
//! Run with `cargo bench -p shoal-tests --bench cluster`. Prints figures
//! with the aims beside them; never fails on a slow machine.

#[path = "../tests/it/common/cluster.rs"]
#[allow(dead_code)] // the shared helpers this bench does not use
mod cluster;

use cluster::TestCluster;
use shoal_daemon::peer_api::PeerSpawnRequest;
use shoal_runtime::mailbox::PushError;
use shoal_runtime::Pid;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

async fn round_trips(c: &TestCluster, pong: Pid, n: usize) -> Vec<Duration> {
    let mb = c.node(0).node().open_mailbox();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let payload = (i as u64).to_le_bytes().to_vec();
        let t = Instant::now();
        mb.send(pong, payload.clone()).expect("send");
        let reply = mb.recv(Duration::from_secs(10)).await.expect("reply");
        lat.push(t.elapsed());
        assert_eq!(reply.data, payload);
    }
    lat.sort();
    lat
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut c = TestCluster::start(3).await;
    let hash = c.add_guest(0, shoal_tests::PING_PONG, "ping_pong").await;
    let b = c.node(1).node().clone();

    // Round trip: host mailbox on n1 <-> pong guest on n2.
    let pong = b
        .spawn_by_reference(&hash.to_string(), vec!["pong".into()])
        .await
        .unwrap();
    let _warm = round_trips(&c, pong, 500).await;
    let lat = round_trips(&c, pong, 5_000).await;
    println!(
        "cross-node round trip (n1 host mailbox <-> n2 guest, mTLS h2): p50 {:?}  p99 {:?}   (aim p50 <= 150us)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Guest to guest: ping on n1, pong spawned on n2 with spawn_on.
    let a = c.node(0).node().clone();
    let rounds = 5_000;
    let spec = shoal_runtime::SpawnSpec::new(
        hash,
        vec![
            "ping_pong".into(),
            "ping".into(),
            "ping_pong".into(),
            rounds.to_string(),
            "n2".into(),
        ],
    );
    let t = Instant::now();
    let pid = a.spawn(spec).await.unwrap();
    let st = a.wait(pid).await.unwrap();
    let el = t.elapsed();
    assert_eq!(st.code(), 0, "{}", a.stdout_text(pid));
    println!(
        "cross-node guest<->guest round trip (ping on n1, pong on n2, incl. remote spawn): mean {:?}",
        el / rounds
    );

    // Throughput: n1 -> sink guest on n2, 16-byte messages, counted when the
    // sink has checked every sequence number.
    let n: u64 = 300_000;
    let sink = b
        .spawn_by_reference(&hash.to_string(), vec!["sink".into(), n.to_string()])
        .await
        .unwrap();
    let mb = a.open_mailbox();
    let t = Instant::now();
    let mut full_waits = 0u64;
    for seq in 0..n {
        let mut payload = seq.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 8]);
        loop {
            match mb.send(sink, payload.clone()) {
                Ok(()) => break,
                Err(PushError::Full) => {
                    full_waits += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    let st = b.wait(sink).await.unwrap();
    let el = t.elapsed();
    assert_eq!(st.code(), 0, "{}", b.stdout_text(sink));
    println!(
        "cross-node one-way throughput (n1 -> n2 sink, 16 B, in order): {:.0} msgs/s over {:?} ({} full-lane retries)   (aim >= 100,000/s)",
        n as f64 / el.as_secs_f64(),
        el,
        full_waits
    );

    // Remote spawn latency: n1 asks n2 to start a process.
    let link = c.node(0).inner().link.clone();
    let req = PeerSpawnRequest {
        module: hash.to_string(),
        args: vec!["ping_pong".into(), "sink".into(), "0".into()],
        env: vec![],
        memory_bytes_max: None,
        preemptible: false,
        owner: None,
        volumes: Vec::new(),
        restart: None,
        recorded: None,
    };
    let id2 = c.node(1).id();
    let mut lat = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        link.spawn_at(id2, &req).await.expect("remote spawn");
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "remote spawn (n1 -> n2, module cached): p50 {:?}  p99 {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // Leader election: stop the leader, time until another node leads.
    let mut times = Vec::new();
    for _ in 0..3 {
        let old = c.leader().expect("leader");
        let t = Instant::now();
        c.stop(old).await;
        loop {
            if let Some(l) = c.leader() {
                if l != old && c.nodes[l].is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(t.elapsed());
        c.restart(old).await;
        c.wait_healthy(3).await;
    }
    println!(
        "leader election after the leader stops (election timeout 300-600 ms): {:?}",
        times
    );
    c.shutdown().await;
}
