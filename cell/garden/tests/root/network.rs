use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use diego_garden::{Backend, ContainerSpec, NetIn, NetworkSpec};

use crate::common::*;

fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

async fn http_get_retry(addr: SocketAddr) -> String {
    for _ in 0..50 {
        if let Ok(body) = http_get(addr)
            && body.contains("200")
        {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no answer from {addr}");
}

fn sh_ok(cmd: &str) {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

/// An app listening on $PORT is reachable from the host through a net-in mapping (on
/// 127.0.0.1 and the bridge address), containers reach each other and the host, and
/// outbound traffic is masqueraded.
#[tokio::test]
async fn port_mapping_outbound_nat_and_bridge() {
    if !root_or_skip("network") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(5).await;
    let net = NetworkSpec {
        net_in: vec![NetIn {
            host_port: 0,
            container_port: 8080,
        }],
    };
    let h = b
        .create(ContainerSpec {
            network: Some(net),
            env: vec!["PORT=8080".into()],
            ..busybox()
        })
        .await
        .unwrap();
    let info = b.info(&h).await.unwrap();
    let cip: Ipv4Addr = info.container_ip.clone().unwrap().parse().unwrap();
    let gw: Ipv4Addr = info.host_ip.clone().unwrap().parse().unwrap();
    assert_eq!(gw, Ipv4Addr::new(10, 254, 5, 1));
    let host_port = info.mapped_ports[0].host_port;
    assert!((40500..40600).contains(&host_port));

    b.run(&h, sh("mkdir -p /www && echo hello-from-container > /www/index.html && exec httpd -f -p $PORT -h /www"))
        .await
        .unwrap();
    let body = http_get_retry(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port))).await;
    assert!(body.contains("hello-from-container"), "{body}");
    let body = http_get_retry(SocketAddr::from((gw, host_port))).await;
    assert!(body.contains("hello-from-container"), "{body}");
    let body = http_get_retry(SocketAddr::from((cip, 8080))).await;
    assert!(body.contains("hello-from-container"), "{body}");

    // the host's resolver configuration is copied in
    let resolv = run_sh(&b, &h, "cat /etc/resolv.conf").await.stdout_str();
    assert_eq!(resolv, std::fs::read_to_string("/etc/resolv.conf").unwrap());

    // a second mapping added later
    let m = b
        .net_in(
            &h,
            NetIn {
                host_port: 0,
                container_port: 9090,
            },
        )
        .await
        .unwrap();
    b.run(
        &h,
        sh("mkdir -p /www2 && echo second > /www2/index.html && exec httpd -f -p 9090 -h /www2"),
    )
    .await
    .unwrap();
    let body = http_get_retry(SocketAddr::from((Ipv4Addr::LOCALHOST, m.host_port))).await;
    assert!(body.contains("second"), "{body}");

    // a host port maps to one place only
    let dup = b
        .net_in(
            &h,
            NetIn {
                host_port: m.host_port,
                container_port: 1,
            },
        )
        .await;
    assert!(
        matches!(dup, Err(diego_garden::Error::InvalidRequest(_))),
        "{dup:?}"
    );

    // container -> host side (a server on the bridge address)
    let listener = TcpListener::bind((gw, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        s.write_all(b"from-host\n").unwrap();
        peer
    });
    let out = run_sh(&b, &h, &format!("nc {gw} {port} </dev/null")).await;
    assert_eq!(out.stdout_str(), "from-host\n", "{}", out.stderr_str());
    assert_eq!(accept.join().unwrap().ip(), std::net::IpAddr::V4(cip));

    // outbound NAT: a test host in its own network namespace (10.254.250.2, reached from the
    // host over a veth) sees the host's address, not the container's. The namespace lives as
    // long as the `unshare` process holding it; no `ip netns` mounts are left behind.
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "gt5o-h"])
        .stderr(std::process::Stdio::null())
        .status();
    let mut holder = std::process::Command::new("unshare")
        .args(["--net", "--", "sleep", "120"])
        .spawn()
        .unwrap();
    let ns_pid = holder.id();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sh_ok(&format!(
        "ip link add gt5o-h type veth peer name eth0 netns {ns_pid} && \
         ip addr add 10.254.250.1/30 dev gt5o-h && ip link set gt5o-h up && \
         nsenter --net=/proc/{ns_pid}/ns/net sh -c 'ip addr add 10.254.250.2/30 dev eth0 && ip link set eth0 up && ip link set lo up'"
    ));
    let ns_path = format!("/proc/{ns_pid}/ns/net");
    let server = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind("10.254.250.2:7070").unwrap();
        let (mut s, peer) = l.accept().unwrap();
        s.write_all(b"outside\n").unwrap();
        peer
    });
    let mut got = String::new();
    for _ in 0..30 {
        let out = run_sh(&b, &h, "nc 10.254.250.2 7070 </dev/null").await;
        got = out.stdout_str();
        if got == "outside\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, "outside\n");
    let peer = server.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(Ipv4Addr::new(10, 254, 250, 1)),
        "masqueraded source"
    );
    let _ = holder.kill();
    let _ = holder.wait();

    // two containers on the bridge reach each other
    let h2 = b
        .create(ContainerSpec {
            network: Some(NetworkSpec::default()),
            ..busybox()
        })
        .await
        .unwrap();
    let out = run_sh(&b, &h2, &format!("wget -q -O - http://{cip}:8080/")).await;
    assert_eq!(
        out.stdout_str(),
        "hello-from-container\n",
        "{}",
        out.stderr_str()
    );

    b.destroy(&h).await.unwrap();
    b.destroy(&h2).await.unwrap();
    assert!(http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port))).is_err());
    let rules = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains(&h));
    b.teardown_host_network().await.unwrap();
}
