//! The etcd helpers start real members that answer, and a cluster survives losing one.

// Helpers of integration tests are test code too (clippy.toml only exempts `#[test]` fns).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diego_testkit::{EtcdCluster, EtcdServer, free_port};

/// One HTTP/1.0 request to a client URL; the response body.
fn http(endpoint: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Base64 without padding rules beyond what etcd needs for short ASCII.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn put(endpoint: &str, key: &str, value: &str) {
    let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
    let response = http(endpoint, "POST", "/v3/kv/put", &body);
    assert!(response.contains("revision"), "put failed: {response}");
}

fn get(endpoint: &str, key: &str) -> Option<String> {
    let response = http(
        endpoint,
        "POST",
        "/v3/kv/range",
        &format!(r#"{{"key":"{}"}}"#, b64(key)),
    );
    let json: serde_json::Value = serde_json::from_str(&response).unwrap();
    json["kvs"][0]["value"].as_str().map(str::to_string)
}

#[test]
fn free_ports_are_distinct() {
    let a = free_port();
    let b = free_port();
    assert_ne!(a, b);
    std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
}

#[test]
fn single_server_answers_and_dies_on_drop() {
    let server = EtcdServer::start().unwrap();
    let endpoint = server.endpoint();
    assert_eq!(server.endpoints(), vec![endpoint.clone()]);
    put(&endpoint, "k", "v");
    assert_eq!(get(&endpoint, "k").as_deref(), Some(b64("v").as_str()));
    assert!(server.log_path().exists());
    drop(server);
    let addr = endpoint.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "etcd still listens after drop"
    );
}

#[test]
fn two_servers_run_side_by_side() {
    let a = EtcdServer::start().unwrap();
    let b = EtcdServer::start().unwrap();
    assert_ne!(a.endpoint(), b.endpoint());
    put(&a.endpoint(), "only-in-a", "1");
    assert_eq!(get(&b.endpoint(), "only-in-a"), None);
}

#[test]
fn cluster_survives_losing_a_member_and_takes_it_back() {
    let cluster = EtcdCluster::start(3).unwrap();
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(cluster.member_endpoint(1), endpoints[1]);
    put(&endpoints[0], "before", "1");
    for endpoint in &endpoints {
        assert_eq!(
            get(endpoint, "before").as_deref(),
            Some(b64("1").as_str()),
            "replicated to {endpoint}"
        );
    }

    let leader = cluster.leader_index().unwrap();
    cluster.kill(leader).unwrap();
    assert!(!cluster.is_running(leader));
    cluster.wait_healthy().unwrap();
    let new_leader = cluster.leader_index().unwrap();
    assert_ne!(new_leader, leader, "a dead member cannot lead");
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    put(&cluster.member_endpoint(survivor), "during", "2");
    assert_eq!(
        get(&cluster.member_endpoint(new_leader), "during").as_deref(),
        Some(b64("2").as_str())
    );

    cluster.restart(leader).unwrap();
    assert!(cluster.is_running(leader));
    cluster.wait_healthy().unwrap();
    // The restarted member caught up on what it missed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&cluster.member_endpoint(leader), "during").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "restarted member did not catch up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
