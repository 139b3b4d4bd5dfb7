//! Valid inputs for each target, built by the real encoders: mutations of
//! well-formed bytes reach the checks behind the first length or magic,
//! where random bytes would not.

use bytes::BytesMut;
use shoal_net::frame;
use shoal_net::LaneTag;
use shoal_registry::Sha256;
use shoal_snapshot_format::{
    encode_file_from_memory, split_pages, GlobalVal, GlobalValue, Manifest, FORMAT_VERSION,
};

/// The seeds of target `name` (empty for an unknown name).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "snapshot_file" => snapshot_files(),
        "lane_frames" => lane_frames(),
        "api_bodies" => api_bodies(),
        "log_stream" => log_streams(),
        "migration_wire" => migration_wire(),
        _ => Vec::new(),
    }
}

/// A snapshot file of `memory`.
fn snapshot_of(memory: &[u8], state: serde_json::Value) -> Vec<u8> {
    let split = split_pages(memory, None);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        module: Sha256::of(b"a module"),
        pid: 7,
        parent: None,
        created_unix_ms: 1_700_000_000_000,
        memory_bytes: memory.len() as u64,
        page_bytes: split.page_bytes,
        pages: split.pages,
        globals: vec![
            GlobalValue {
                export: "__stack_pointer".into(),
                value: GlobalVal::I32(65_000),
            },
            GlobalValue {
                export: "g".into(),
                value: GlobalVal::I64(-1),
            },
        ],
        state,
        blobs: Vec::new(),
    };
    encode_file_from_memory(&manifest, memory).unwrap_or_default()
}

fn snapshot_files() -> Vec<Vec<u8>> {
    let mut memory = vec![0u8; 65536];
    memory[10] = 1;
    memory[4096 * 3 + 5] = 2;
    // Two equal pages: the second has no record of its own.
    memory[4096 * 5..4096 * 6].fill(9);
    memory[4096 * 7..4096 * 8].fill(9);
    vec![
        snapshot_of(&memory, serde_json::json!({"mailbox": [], "pending": "x"})),
        snapshot_of(&[], serde_json::json!(null)),
    ]
}

fn lane_frames() -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    frame::put_hello(&mut buf, 0x0123_4567_89ab_cdef_0011_2233_4455_6677, 1);
    frame::put_data(&mut buf, 1, 10, 20, LaneTag::default(), b"hello");
    frame::put_data(
        &mut buf,
        2,
        10,
        20,
        LaneTag {
            kind: 2,
            reference: 99,
            seq: 3,
            life: 7,
        },
        b"a reply",
    );
    frame::put_ack(&mut buf, 2);
    frame::put_dead(&mut buf, 3, 77);
    [0u8, 3, 255]
        .iter()
        .map(|&chunk| {
            let mut v = vec![chunk];
            v.extend_from_slice(&buf);
            v
        })
        .collect()
}

fn api_bodies() -> Vec<Vec<u8>> {
    let bodies: &[(u8, &str)] = &[
        (
            0,
            r#"{"module":"sha256:00","argv0":"a","args":["x"],"env":[["K","V"]],"count":3,"memory_bytes_max":65536,"node":"n1","labels":{"zone":"a"},"preemptible":true}"#,
        ),
        (1, r#"{"module":"echo"}"#),
        (2, r#"{"follow":true,"from":12,"epoch":3}"#),
        (3, r#"{"stop":true,"wait_max_ms":500}"#),
        (
            4,
            r#"{"replace":false,"dirs":[{"host":"/srv/a","guest":"/data"}],"env":[["A","1"]],"memory_bytes_max":1048576}"#,
        ),
        (5, r#"{"ttl_ms":60000,"role":"client"}"#),
        (6, r#"{"role":"node","id":"n2","reason":"lost"}"#),
        (7, r#"{"node":"n2","id":2,"ca_pin":"abcd"}"#),
        (
            8,
            r#"{"csr_pem":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n","cert_pem":""}"#,
        ),
        (9, r#"{"id":4,"name":"n4","addr":"127.0.0.1:7000"}"#),
        (10, r#"{"to":"n3"}"#),
        (11, r#"{"deadline_ms":30000}"#),
        (
            12,
            r#"{"pid":5,"code":0,"reason":{"exited":{"code":0}},"message":"exited"}"#,
        ),
        (
            13,
            r#"{"error":"no such process","detail":{"refusal":"taken"}}"#,
        ),
        (14, r#"{}"#),
        (15, r#"[]"#),
        (16, r#"{}"#),
        (17, r#"{}"#),
    ];
    bodies
        .iter()
        .map(|(which, json)| {
            let mut v = vec![*which];
            v.extend_from_slice(json.as_bytes());
            v
        })
        .collect()
}

fn log_streams() -> Vec<Vec<u8>> {
    use shoal_abi::Stream;
    use shoal_api::types::LogFrame;
    let frames = [
        LogFrame::Output {
            stream: Stream::Stdout,
            data: b"line 1\n".to_vec(),
        },
        LogFrame::Output {
            stream: Stream::Stderr,
            data: b"oops\n".to_vec(),
        },
        LogFrame::Output {
            stream: Stream::Log(2),
            data: b"info".to_vec(),
        },
        LogFrame::Dropped(4096),
        LogFrame::End(None),
    ];
    let mut out = vec![0u8];
    for f in &frames {
        f.encode(&mut out);
    }
    let mut coarse = out.clone();
    coarse[0] = 200;
    vec![out, coarse]
}

fn migration_wire() -> Vec<Vec<u8>> {
    use shoal_api::migrate as m;
    let header = m::PagesHeader {
        id: "m-1".into(),
        indices: vec![1, 4],
        memory_bytes: Some(131072),
    };
    let pages = [[1u8; 8], [2u8; 8]];
    let mut batch = vec![0u8, 0];
    batch.extend(m::encode_pages(&header, &[&pages[0], &pages[1]]));
    let control = |c: m::Control| {
        let mut v = vec![1u8];
        v.extend(c.encode());
        v
    };
    let json = |which: u8, text: &str| {
        let mut v = vec![which];
        v.extend_from_slice(text.as_bytes());
        v
    };
    vec![
        batch,
        control(m::Control::Go { epoch: 4 }),
        control(m::Control::Fence {
            origin: 2,
            epoch: 4,
        }),
        json(
            2,
            r#"{"id":"m-1","pid":9,"module":"00","source":1,"epoch":3,"memory_bytes":65536,"page_bytes":4096,"pages":[[0,"ab"]],"preemptible":false}"#,
        ),
        json(3, r#"{"need":[0,3,5]}"#),
        json(4, r#"{"id":"m-1"}"#),
        json(5, r#"{"resumed_unix_us":1700000000000000}"#),
    ]
}
