//! Container networking with the `ip` and `iptables` commands: one bridge per backend, a veth
//! pair per container, an address from the configured subnet, outbound NAT (MASQUERADE) and
//! net-in port mappings (DNAT, also for connections from the host itself, to 127.0.0.1 or the
//! bridge address).
//!
//! Everything a backend adds is named after its `tag` (bridge `<tag>`, chains `<TAG>-PRE`,
//! `<TAG>-POST`, `<TAG>-FWD`) and every per-container rule carries the handle as an iptables
//! comment, so a restarted server can find and delete what a crashed one left.

use std::net::Ipv4Addr;

use tokio::process::Command;

use crate::error::{Error, Result};

/// Network settings of a backend.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Prefix of everything created on the host (bridge name, chain names); at most 10 bytes.
    pub tag: String,
    /// Network address of the container subnet (a /24 is enough for tests).
    pub subnet: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
    /// Range of host ports handed out for net-in when the caller asks for port 0.
    pub host_ports: (u16, u16),
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            tag: "garden".into(),
            subnet: Ipv4Addr::new(10, 254, 0, 0),
            prefix_len: 22,
            host_ports: (61000, 61999),
        }
    }
}

impl NetConfig {
    /// Bridge device name.
    pub fn bridge(&self) -> String {
        format!("{}-br", self.tag)
    }

    fn chain(&self, what: &str) -> String {
        format!("{}-{what}", self.tag.to_uppercase())
    }

    /// The bridge's (gateway's) address: the first host address of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix_len)
    }

    /// All container addresses, in allocation order.
    pub fn container_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.subnet);
        let size = 1u32 << (32 - u32::from(self.prefix_len.min(30)));
        (2..size - 1).map(move |i| Ipv4Addr::from(base + i))
    }

    /// Host-side veth name for a handle (deterministic, at most 15 bytes).
    pub fn host_veth(&self, handle: &str) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in handle.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        format!(
            "g{}{:08x}",
            &self.tag.chars().take(4).collect::<String>(),
            h as u32
        )
    }
}

async fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| Error::io(format!("run {program}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

async fn run_stdin(program: &str, args: &[&str], input: String) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("run {program}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| Error::io(format!("write to {program}"), e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::io(format!("wait {program}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!(
                "{program} {} <<{}",
                args.join(" "),
                input.replace('\n', "; ")
            ),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

async fn ipt(args: &[&str]) -> Result<String> {
    let mut full = vec!["-w"];
    full.extend_from_slice(args);
    run("iptables", &full).await
}

/// Adds a rule unless an identical one exists.
async fn ensure_rule(table: &str, chain: &str, rule: &[&str]) -> Result<()> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if ipt(&check).await.is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", table, "-A", chain];
    add.extend_from_slice(rule);
    ipt(&add).await.map(drop)
}

async fn ensure_chain(table: &str, chain: &str) -> Result<()> {
    if ipt(&["-t", table, "-S", chain]).await.is_err() {
        ipt(&["-t", table, "-N", chain]).await?;
    }
    Ok(())
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(format!("write {value} to {path}"), e))
}

/// Host-wide setup: bridge, chains, jumps, forwarding. Idempotent.
pub async fn setup_host(cfg: &NetConfig) -> Result<()> {
    let br = cfg.bridge();
    if run("ip", &["link", "show", &br]).await.is_err() {
        run("ip", &["link", "add", &br, "type", "bridge"]).await?;
    }
    let gw = format!("{}/{}", cfg.gateway(), cfg.prefix_len);
    let addrs = run("ip", &["-o", "-4", "addr", "show", "dev", &br]).await?;
    if !addrs.contains(&gw) {
        run("ip", &["addr", "add", &gw, "dev", &br]).await?;
    }
    run("ip", &["link", "set", &br, "up"]).await?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    // lets the host reach net-in ports through 127.0.0.1
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/route_localnet"), "1")?;

    let (pre, post, fwd) = (cfg.chain("PRE"), cfg.chain("POST"), cfg.chain("FWD"));
    ensure_chain("nat", &pre).await?;
    ensure_chain("nat", &post).await?;
    ensure_chain("filter", &fwd).await?;
    ensure_rule(
        "nat",
        "PREROUTING",
        &["-m", "addrtype", "--dst-type", "LOCAL", "-j", &pre],
    )
    .await?;
    ensure_rule(
        "nat",
        "OUTPUT",
        &["-m", "addrtype", "--dst-type", "LOCAL", "-j", &pre],
    )
    .await?;
    ensure_rule("nat", "POSTROUTING", &["-j", &post]).await?;
    ensure_rule("filter", "FORWARD", &["-j", &fwd]).await?;
    let cidr = cfg.cidr();
    ensure_rule(
        "nat",
        &post,
        &["-s", &cidr, "!", "-o", &br, "-j", "MASQUERADE"],
    )
    .await?;
    ensure_rule(
        "nat",
        &post,
        &[
            "-o",
            &br,
            "-m",
            "addrtype",
            "--src-type",
            "LOCAL",
            "!",
            "-s",
            &cidr,
            "-j",
            "MASQUERADE",
        ],
    )
    .await?;
    ensure_rule("filter", &fwd, &["-i", &br, "-j", "ACCEPT"]).await?;
    ensure_rule("filter", &fwd, &["-o", &br, "-j", "ACCEPT"]).await?;
    Ok(())
}

/// Removes everything [`setup_host`] created (for tests and uninstall).
pub async fn teardown_host(cfg: &NetConfig) -> Result<()> {
    let (pre, post, fwd) = (cfg.chain("PRE"), cfg.chain("POST"), cfg.chain("FWD"));
    let jumps: [(&str, &str, Vec<&str>); 4] = [
        (
            "nat",
            "PREROUTING",
            vec!["-m", "addrtype", "--dst-type", "LOCAL", "-j", &pre],
        ),
        (
            "nat",
            "OUTPUT",
            vec!["-m", "addrtype", "--dst-type", "LOCAL", "-j", &pre],
        ),
        ("nat", "POSTROUTING", vec!["-j", &post]),
        ("filter", "FORWARD", vec!["-j", &fwd]),
    ];
    for (table, chain, rule) in &jumps {
        let mut args = vec!["-t", table, "-D", chain];
        args.extend_from_slice(rule);
        while ipt(&args).await.is_ok() {}
    }
    for (table, chain) in [("nat", &pre), ("nat", &post), ("filter", &fwd)] {
        let _ = ipt(&["-t", table, "-F", chain]).await;
        let _ = ipt(&["-t", table, "-X", chain]).await;
    }
    let _ = run("ip", &["link", "del", &cfg.bridge()]).await;
    Ok(())
}

/// Creates the veth pair for a container whose init has host pid `pid`, and configures eth0
/// inside with `ip` and a default route via the bridge.
pub async fn setup_container(cfg: &NetConfig, handle: &str, pid: i32, ip: Ipv4Addr) -> Result<()> {
    let host = cfg.host_veth(handle);
    let pid_s = pid.to_string();
    let br = cfg.bridge();
    run_stdin(
        "ip",
        &["-batch", "-"],
        format!(
            "link add {host} mtu 1500 type veth peer name eth0 netns {pid_s}\n\
             link set {host} master {br}\n\
             link set {host} up\n"
        ),
    )
    .await?;
    let netns = format!("--net=/proc/{pid}/ns/net");
    run_stdin(
        "nsenter",
        &[&netns, "ip", "-batch", "-"],
        format!(
            "link set lo up\n\
             addr add {ip}/{} dev eth0\n\
             link set eth0 up\n\
             route add default via {}\n",
            cfg.prefix_len,
            cfg.gateway()
        ),
    )
    .await
}

/// Adds a DNAT rule host_port -> ip:container_port tagged with the handle.
pub async fn add_net_in(
    cfg: &NetConfig,
    handle: &str,
    ip: Ipv4Addr,
    host_port: u16,
    container_port: u16,
) -> Result<()> {
    let hp = host_port.to_string();
    let to = format!("{ip}:{container_port}");
    ensure_rule(
        "nat",
        &cfg.chain("PRE"),
        &[
            "-p",
            "tcp",
            "--dport",
            &hp,
            "-m",
            "comment",
            "--comment",
            handle,
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ],
    )
    .await
}

/// Deletes the container's rules (found by their comment) and its host veth if still there.
pub async fn teardown_container(cfg: &NetConfig, handle: &str) -> Result<()> {
    let chain = cfg.chain("PRE");
    if let Ok(rules) = ipt(&["-t", "nat", "-S", &chain]).await {
        for line in rules.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let tagged = words
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == handle);
            if tagged && words.first() == Some(&"-A") {
                let mut args = vec!["-t", "nat", "-D"];
                args.extend(words[1..].iter().map(|w| w.trim_matches('"')));
                ipt(&args).await?;
            }
        }
    }
    let veth = cfg.host_veth(handle);
    if std::path::Path::new("/sys/class/net").join(&veth).exists() {
        let _ = run("ip", &["link", "del", &veth]).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let cfg = NetConfig {
            tag: "gt1".into(),
            subnet: Ipv4Addr::new(10, 254, 1, 0),
            prefix_len: 24,
            host_ports: (1, 2),
        };
        assert_eq!(cfg.bridge(), "gt1-br");
        assert_eq!(cfg.gateway(), Ipv4Addr::new(10, 254, 1, 1));
        let addrs: Vec<_> = cfg.container_addresses().collect();
        assert_eq!(addrs.first(), Some(&Ipv4Addr::new(10, 254, 1, 2)));
        assert_eq!(addrs.last(), Some(&Ipv4Addr::new(10, 254, 1, 254)));
        let v = cfg.host_veth("some-long-handle-name");
        assert!(v.len() <= 15, "{v}");
        assert_eq!(v, cfg.host_veth("some-long-handle-name"));
        assert_ne!(v, cfg.host_veth("other"));
    }
}
