//! Real etcd processes for tests: one member ([`EtcdServer`]) or a static cluster
//! ([`EtcdCluster`]) on 127.0.0.1.
//!
//! Each member listens on two free loopback ports (client and peer), keeps its data and its log
//! (stdout and stderr) in a temporary directory, and is killed with SIGKILL when its owner is
//! dropped. A small watchdog (`sh`, reading a pipe from this process) kills the member too if the
//! test process dies without dropping it, e.g. a server kept in a `static`.
//!
//! Readiness and status go through etcd's HTTP endpoints on the client port: `GET /health` (true
//! once the member has a leader and answers a quorum read) and the grpc-gateway's
//! `POST /v3/maintenance/status`, so nothing here needs an async runtime.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::Result;

/// How long a member may take to answer `/health` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a start is retried on fresh ports when a port turned out to be taken.
const PORT_RETRIES: usize = 5;
/// Raft timing for tests: fast elections so that a cluster converges in about a second.
const HEARTBEAT_MS: u32 = 100;
const ELECTION_MS: u32 = 1000;

/// The etcd binary: `$ETCD_BIN` if set, else `etcd` found on `PATH`.
pub fn etcd_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("ETCD_BIN={} is not a file", bin.display());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!(
                "etcd not found: set ETCD_BIN or install it (Debian: `apt-get install etcd-server`)"
            )
        })
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before (so two members started together never get the same port).
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => panic!("cannot bind a free port on 127.0.0.1: {e}"),
        };
        if lock(handed_out).insert(port) {
            return port;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A temporary directory for etcd data (under `$TMPDIR`, else `/tmp`). Not on tmpfs: each member
/// preallocates a 64 MiB WAL, which on tmpfs would be RAM.
fn temp_dir() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("diego-etcd-")
        .tempdir()
        .context("creating a temp dir for etcd")
}

/// The shared settings of the members of one cluster.
#[derive(Debug, Clone)]
struct ClusterSpec {
    bin: PathBuf,
    /// The temporary directory holding every member's files; the watchdogs remove it.
    dir: PathBuf,
    token: String,
    initial_cluster: String,
}

/// One member: its identity, ports, files, and its process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    process: Option<Process>,
}

#[derive(Debug)]
struct Process {
    etcd: Child,
    /// `sh` blocked reading a pipe from this process; it SIGKILLs etcd when the pipe closes.
    watchdog: Option<Child>,
}

impl Process {
    fn kill(mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

impl Member {
    fn new(dir: &Path, name: String) -> Self {
        Member {
            data_dir: dir.join(format!("{name}.etcd")),
            log_path: dir.join(format!("{name}.log")),
            name,
            client_port: free_port(),
            peer_port: free_port(),
            process: None,
        }
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn new_ports(&mut self) {
        self.client_port = free_port();
        self.peer_port = free_port();
    }

    /// Spawns the member; `existing` restarts it on its data dir.
    fn spawn(&mut self, spec: &ClusterSpec, existing: bool) -> Result<()> {
        if self.process.is_some() {
            bail!("etcd member {} is already running", self.name);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the etcd log file")?;
        let (client, peer) = (self.client_url(), self.peer_url());
        let mut command = Command::new(&spec.bin);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &spec.initial_cluster])
            .args([
                "--initial-cluster-state",
                if existing { "existing" } else { "new" },
            ])
            .args(["--initial-cluster-token", &spec.token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let etcd = command.spawn().with_context(|| {
            format!(
                "spawning {} (install it with `apt-get install etcd-server`)",
                spec.bin.display()
            )
        })?;
        let watchdog = Command::new("sh")
            .args([
                "-c",
                "read -r line; kill -9 \"$1\" 2>/dev/null; rm -rf \"$2\"",
                "etcd-watchdog",
            ])
            .arg(etcd.id().to_string())
            .arg(&spec.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| tracing::warn!("no watchdog for etcd {}: {e}", self.name))
            .ok();
        tracing::debug!(member = %self.name, pid = etcd.id(), %client, %peer, "spawned etcd");
        self.process = Some(Process { etcd, watchdog });
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            tracing::debug!(member = %self.name, "killing etcd");
            process.kill();
        }
    }

    /// `Err` with the log's tail if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        let Some(process) = self.process.as_mut() else {
            bail!("etcd member {} is not running", self.name);
        };
        match process.etcd.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.kill();
                Err(anyhow!(
                    "etcd member {} exited ({status}); log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    log_tail(&self.log_path)
                ))
            }
            Err(e) => Err(anyhow!("waiting for etcd member {}: {e}", self.name)),
        }
    }

    fn port_was_taken(&self) -> bool {
        std::fs::read_to_string(&self.log_path)
            .is_ok_and(|log| log.contains("address already in use"))
    }

    fn healthy(&self) -> bool {
        health(self.client_port).unwrap_or(false)
    }

    /// Waits until the member answers `/health` with true.
    fn wait_healthy(&mut self, deadline: Instant) -> Result<()> {
        loop {
            self.check_alive()?;
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd member {} did not become healthy; log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    const LINES: usize = 30;
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::from("(no log)");
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; returns the status code and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(1);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    Ok((code, body.to_string()))
}

/// Whether the member on `port` says it is healthy (`{"health":"true"}`).
fn health(port: u16) -> Result<bool> {
    let (code, body) = http(port, "GET", "/health", "")?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    Ok(code == 200 && json.get("health").and_then(serde_json::Value::as_str) == Some("true"))
}

/// A member's id and the id of the leader it follows (0: none), from the grpc-gateway.
fn status(port: u16) -> Result<(u64, u64)> {
    let (code, body) = http(port, "POST", "/v3/maintenance/status", "{}")?;
    if code != 200 {
        bail!("status: HTTP {code}: {body}");
    }
    let json: serde_json::Value = serde_json::from_str(&body)?;
    // The gateway encodes uint64 as JSON strings.
    let number = |v: Option<&serde_json::Value>| -> u64 {
        match v {
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        }
    };
    let member = number(json.get("header").and_then(|h| h.get("member_id")));
    let leader = number(json.get("leader"));
    if member == 0 {
        bail!("status without a member id: {body}");
    }
    Ok((member, leader))
}

/// One etcd member on loopback, started fresh in a temporary directory; killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    _dir: TempDir,
}

impl EtcdServer {
    /// Starts one member and waits until it answers. Blocks for about a second.
    pub fn start() -> Result<EtcdServer> {
        let bin = etcd_binary()?;
        let dir = temp_dir()?;
        let mut member = Member::new(dir.path(), "single".into());
        for attempt in 1..=PORT_RETRIES {
            let spec = ClusterSpec {
                bin: bin.clone(),
                dir: dir.path().to_path_buf(),
                token: format!("diego-test-{}-{}", std::process::id(), member.peer_port),
                initial_cluster: format!("{}={}", member.name, member.peer_url()),
            };
            member.spawn(&spec, false)?;
            match member.wait_healthy(Instant::now() + START_TIMEOUT) {
                Ok(()) => {
                    tracing::info!(endpoint = %member.client_url(), dir = %dir.path().display(), "etcd started");
                    return Ok(EtcdServer { member, _dir: dir });
                }
                Err(e) if attempt < PORT_RETRIES && member.port_was_taken() => {
                    tracing::warn!("etcd could not bind its ports, retrying on others: {e}");
                    member.kill();
                    let _ = std::fs::remove_dir_all(&member.data_dir);
                    let _ = std::fs::remove_file(&member.log_path);
                    member.new_ports();
                }
                Err(e) => {
                    member.kill();
                    eprintln!("{e:#}");
                    return Err(e);
                }
            }
        }
        bail!("etcd could not find free ports in {PORT_RETRIES} attempts")
    }

    /// The client URLs (one).
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.member.client_url()]
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        self.member.client_url()
    }

    /// The member's log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.member.log_path
    }

    /// The member's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.member.data_dir
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.member.kill();
    }
}

/// A static etcd cluster of `n` members on loopback with fast raft timings; every member is
/// killed on drop. Members can be killed and restarted on the same data dir and ports.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Mutex<Member>>,
    spec: ClusterSpec,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one is healthy and they agree on a leader.
    pub fn start(n: usize) -> Result<EtcdCluster> {
        if n == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let bin = etcd_binary()?;
        let dir = temp_dir()?;
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member::new(dir.path(), format!("m{i}")))
            .collect();
        for attempt in 1..=PORT_RETRIES {
            let spec = ClusterSpec {
                bin: bin.clone(),
                dir: dir.path().to_path_buf(),
                token: format!("diego-test-{}-{}", std::process::id(), members[0].peer_port),
                initial_cluster: members
                    .iter()
                    .map(|m| format!("{}={}", m.name, m.peer_url()))
                    .collect::<Vec<_>>()
                    .join(","),
            };
            match Self::spawn_all(&mut members, &spec) {
                Ok(()) => {
                    let cluster = EtcdCluster {
                        members: members.into_iter().map(Mutex::new).collect(),
                        spec,
                        dir,
                    };
                    cluster.wait_healthy()?;
                    tracing::info!(endpoints = ?cluster.endpoints(), "etcd cluster started");
                    return Ok(cluster);
                }
                Err(e) => {
                    let retry =
                        attempt < PORT_RETRIES && members.iter().any(Member::port_was_taken);
                    for m in &mut members {
                        m.kill();
                        let _ = std::fs::remove_dir_all(&m.data_dir);
                        if retry {
                            let _ = std::fs::remove_file(&m.log_path);
                            m.new_ports();
                        }
                    }
                    if !retry {
                        eprintln!("{e:#}");
                        return Err(e);
                    }
                    tracing::warn!("etcd could not bind its ports, retrying on others: {e}");
                }
            }
        }
        bail!("etcd could not find free ports in {PORT_RETRIES} attempts")
    }

    fn spawn_all(members: &mut [Member], spec: &ClusterSpec) -> Result<()> {
        for m in members.iter_mut() {
            m.spawn(spec, false)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for m in members.iter_mut() {
            m.wait_healthy(deadline)?;
        }
        Ok(())
    }

    fn member(&self, i: usize) -> Result<MutexGuard<'_, Member>> {
        let member = self
            .members
            .get(i)
            .ok_or_else(|| anyhow!("no member {i} in a cluster of {}", self.len()))?;
        Ok(lock(member))
    }

    /// The number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| lock(m).client_url()).collect()
    }

    /// Member `i`'s client URL.
    ///
    /// # Panics
    /// If there is no member `i`.
    pub fn member_endpoint(&self, i: usize) -> String {
        lock(&self.members[i]).client_url()
    }

    /// Member `i`'s name (`m0`, `m1`, ...), as etcd reports it.
    ///
    /// # Panics
    /// If there is no member `i`.
    pub fn member_name(&self, i: usize) -> String {
        lock(&self.members[i]).name.clone()
    }

    /// Member `i`'s log (its stdout and stderr, across restarts).
    ///
    /// # Panics
    /// If there is no member `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        lock(&self.members[i]).log_path.clone()
    }

    /// The directory holding every member's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether member `i`'s process is running (it was not killed and has not exited).
    pub fn is_running(&self, i: usize) -> bool {
        self.member(i)
            .is_ok_and(|mut m| m.process.is_some() && m.check_alive().is_ok())
    }

    /// SIGKILLs member `i` (no-op if it is not running).
    pub fn kill(&self, i: usize) -> Result<()> {
        self.member(i)?.kill();
        Ok(())
    }

    /// Starts member `i` again on its data dir and ports (`--initial-cluster-state existing`) and
    /// waits until it is healthy.
    pub fn restart(&self, i: usize) -> Result<()> {
        let mut member = self.member(i)?;
        member.spawn(&self.spec, true)?;
        member.wait_healthy(Instant::now() + START_TIMEOUT)
    }

    /// The index of the member the running members follow as leader.
    pub fn leader_index(&self) -> Result<usize> {
        let statuses: Vec<(usize, u64, u64)> = (0..self.len())
            .filter_map(|i| {
                let port = {
                    let m = self.member(i).ok()?;
                    m.process.as_ref()?;
                    m.client_port
                };
                status(port).ok().map(|(id, leader)| (i, id, leader))
            })
            .collect();
        statuses
            .iter()
            .filter(|(_, _, leader)| *leader != 0)
            .find_map(|(_, _, leader)| {
                statuses
                    .iter()
                    .find(|(_, id, _)| id == leader)
                    .map(|(i, _, _)| *i)
            })
            .ok_or_else(|| anyhow!("no running member is the leader (statuses: {statuses:?})"))
    }

    /// Waits until every running member answers `/health` and they agree on a running leader.
    pub fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut all = true;
            for i in 0..self.len() {
                let mut m = self.member(i)?;
                if m.process.is_none() {
                    continue;
                }
                m.check_alive()?;
                all &= m.healthy();
            }
            if all && self.leader_index().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..self.len())
                    .map(|i| {
                        format!(
                            "--- {}:\n{}",
                            self.member_name(i),
                            log_tail(&self.log_path(i))
                        )
                    })
                    .collect();
                bail!("etcd cluster did not become healthy:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &self.members {
            lock(m).kill();
        }
    }
}
