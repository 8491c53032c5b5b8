//! The platform as real processes: a `diego bbs`, `diego brain`s and `diego cell`s on loopback,
//! each with its own data directory and log file, for end-to-end tests and the cell-loss
//! benchmark. Everything here blocks (std processes and sockets); call it from
//! `spawn_blocking` in async code.
//!
//! Cell `i` listens on its own loopback address, 127.0.0.(10+i): a cell derives its bridge,
//! subnet and host-port range from it, so cells on one machine never share a host object.
//! Containers' host ports are mapped on the host, so an instance answers at the
//! `address:host_port` of its net info.
//! When the [`Platform`] is dropped every process is killed and every cell's containers are
//! destroyed (`diego cell --cleanup`), so a failed test leaks nothing.
//!
//! With [`PlatformConfig::tls`] every role serves and calls over mutual TLS with certificates
//! `diego certs` made in the platform's directory ([`Platform::tls_dir`]); URLs are https://
//! (the router's proxy stays plain), and [`Platform::diego`] and the waits use the `client`
//! certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Result, free_port};

/// One `diego` role process; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub url: String,
    pub log: PathBuf,
    child: Option<Child>,
    /// How it was started, for [`Proc::restart`].
    diego: PathBuf,
    args: Vec<String>,
    own_group: bool,
}

impl Proc {
    pub(crate) fn spawn(
        diego: &Path,
        name: &str,
        url: String,
        args: &[String],
        log: PathBuf,
    ) -> Result<Proc> {
        Self::spawn_with(diego, name, url, args, log, false)
    }

    /// Like `spawn`; with `own_group` the process leads a process group of its own, so
    /// [`Proc::interrupt_group`] reaches everything it started, as a terminal's Ctrl-C does.
    pub(crate) fn spawn_with(
        diego: &Path,
        name: &str,
        url: String,
        args: &[String],
        log: PathBuf,
        own_group: bool,
    ) -> Result<Proc> {
        let child = Self::start(diego, args, &log, own_group, false)?;
        Ok(Proc {
            name: name.to_string(),
            url,
            log,
            child: Some(child),
            diego: diego.to_path_buf(),
            args: args.to_vec(),
            own_group,
        })
    }

    fn start(
        diego: &Path,
        args: &[String],
        log: &Path,
        own_group: bool,
        append: bool,
    ) -> Result<Child> {
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new(diego);
        if own_group {
            command.process_group(0);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("cannot start {} {}", diego.display(), args.join(" ")))?;
        Ok(child)
    }

    /// Stops it with SIGTERM (waiting up to `timeout`, then SIGKILL) and starts it again with
    /// the same flags (so on the same address and data), its log continued.
    pub fn restart(&mut self, timeout: Duration) -> Result<()> {
        if self.child.is_some() {
            self.sigterm();
            if let Err(e) = self.wait_exit(timeout) {
                eprintln!("{e:#}; killed");
            }
        }
        self.child = Some(Self::start(
            &self.diego,
            &self.args,
            &self.log,
            self.own_group,
            true,
        )?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; the process stays owned until [`wait_exit`](Self::wait_exit).
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    }

    /// SIGINT to its whole process group (see [`Proc::spawn_with`]), as Ctrl-C at a terminal.
    pub fn interrupt_group(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the process group our child leads; it is not yet reaped, so
            // the group id is still ours.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGINT);
            }
        }
    }

    /// Waits for the process to exit on its own; kills it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub cells: usize,
    pub brains: usize,
    /// Each cell's memory capacity.
    pub cell_memory_mb: u32,
    pub cell_disk_mb: u32,
    /// Preloaded root filesystems every cell offers: `(name, dir)` → `preloaded:name`.
    pub rootfs: Vec<(String, PathBuf)>,
    /// Presence and lock TTL in seconds (short, so a lost cell or brain is noticed fast).
    pub ttl_seconds: u32,
    /// The first crash backoff step (Diego: 30 s).
    pub crash_backoff_min: Duration,
    /// Extra flags for every cell.
    pub cell_args: Vec<String>,
    /// Extra flags for every brain.
    pub brain_args: Vec<String>,
    /// Mutual TLS between every part (see the module doc).
    pub tls: bool,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            cells: 1,
            brains: 1,
            cell_memory_mb: 2048,
            cell_disk_mb: 8192,
            rootfs: Vec::new(),
            ttl_seconds: 3,
            crash_backoff_min: Duration::from_secs(2),
            cell_args: Vec::new(),
            brain_args: Vec::new(),
            tls: false,
        }
    }
}

/// A running platform. See the module doc.
#[derive(Debug)]
pub struct Platform {
    pub diego: PathBuf,
    pub bbs: Proc,
    pub brains: Vec<Proc>,
    pub cells: Vec<Proc>,
    /// `diego api` and `diego router`, when started.
    pub services: Vec<Proc>,
    pub config: PlatformConfig,
    /// A prefix that makes this platform's cell ids unique on the machine.
    pub prefix: String,
    /// The `client` identity in [`Platform::tls_dir`], with TLS on.
    tls: Option<diego_tls::Tls>,
    dir: tempfile::TempDir,
}

/// Every address a test platform's roles listen on: loopback and cells' 127.0.0.(10+i).
const TLS_HOSTS: &str = "127.0.0.1,localhost,127.0.0.10,127.0.0.11,127.0.0.12,127.0.0.13,\
127.0.0.14,127.0.0.15,127.0.0.16,127.0.0.17";

impl Platform {
    /// Starts the BBS, the brains and the cells, and waits until every cell's presence is in
    /// the BBS and a brain holds the lock.
    pub fn start(diego: &Path, config: PlatformConfig) -> Result<Platform> {
        let dir = tempfile::Builder::new()
            .prefix("diego-platform-")
            .tempdir()
            .context("cannot create the platform's temp dir")?;
        let prefix = format!("p{}", free_port());
        let tls = if config.tls {
            Some(make_certs(diego, &dir.path().join("tls"), &[])?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bbs_port = free_port();
        let bbs_url = format!("{scheme}://127.0.0.1:{bbs_port}");
        let mut bbs_args = tls_args(dir.path(), config.tls);
        bbs_args.extend([
            "--log".into(),
            "info".into(),
            "bbs".into(),
            "--listen".into(),
            format!("127.0.0.1:{bbs_port}"),
            "--data-dir".into(),
            dir.path().join("bbs").display().to_string(),
            "--crash-backoff-min".into(),
            format!("{}ms", config.crash_backoff_min.as_millis()),
        ]);
        let bbs = Proc::spawn(
            diego,
            "bbs",
            bbs_url.clone(),
            &bbs_args,
            dir.path().join("bbs.log"),
        )?;
        let mut platform = Platform {
            diego: diego.to_path_buf(),
            bbs,
            brains: Vec::new(),
            cells: Vec::new(),
            services: Vec::new(),
            config: config.clone(),
            prefix,
            tls,
            dir,
        };
        platform.wait_http(&format!("{bbs_url}/v1/ping"), "POST", "the BBS")?;
        for i in 0..config.brains {
            platform.start_brain(i)?;
        }
        for i in 0..config.cells {
            platform.start_cell(i)?;
        }
        platform.wait_for("every cell's presence", Duration::from_secs(60), |p| {
            Ok(p.cell_ids_present()?.len() >= config.cells)
        })?;
        if config.brains > 0 {
            platform.wait_for("an active brain", Duration::from_secs(60), |p| {
                Ok(p.active_brain()?.is_some())
            })?;
        }
        Ok(platform)
    }

    pub fn bbs_url(&self) -> &str {
        &self.bbs.url
    }

    /// Restarts the BBS (SIGTERM, then the same flags: same address, same data) and waits
    /// until it answers.
    pub fn restart_bbs(&mut self) -> Result<()> {
        self.bbs.restart(Duration::from_secs(10))?;
        let ping = format!("{}/v1/ping", self.bbs.url);
        self.wait_http(&ping, "POST", "the BBS")
    }

    /// Restarts the service (`diego api` or `diego router`) named `name` as
    /// [`Proc::restart`] does, and waits until it answers at `ready` (a URL).
    pub fn restart_service(&mut self, name: &str, ready: &str) -> Result<()> {
        let service = self
            .services
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no service {name}"))?;
        service.restart(Duration::from_secs(10))?;
        self.wait_http(ready, "GET", name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the certificates are (`ca.pem`, `NAME.pem`, `NAME-key.pem`), with TLS on.
    pub fn tls_dir(&self) -> Option<PathBuf> {
        self.config.tls.then(|| self.dir.path().join("tls"))
    }

    /// The `client` identity, with TLS on.
    pub fn tls(&self) -> Option<&diego_tls::Tls> {
        self.tls.as_ref()
    }

    fn scheme(&self) -> &'static str {
        if self.config.tls { "https" } else { "http" }
    }

    /// `--tls-dir DIR` with TLS on, else nothing: the global flags every `diego` gets.
    pub fn global_args(&self) -> Vec<String> {
        tls_args(self.dir.path(), self.config.tls)
    }

    pub fn cell_id(&self, i: usize) -> String {
        format!("{}-cell-{i}", self.prefix)
    }

    fn cell_data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cell-{i}"))
    }

    /// Cell `i`'s own loopback address.
    pub fn cell_ip(&self, i: usize) -> String {
        format!("127.0.0.{}", 10 + i)
    }

    /// `diego` with the TLS flags and this platform's BBS, then the `role` subcommand.
    fn role_args(&self, role: &str) -> Vec<String> {
        let mut args = self.global_args();
        args.extend(["--bbs-url".into(), self.bbs.url.clone(), role.into()]);
        args
    }

    fn cell_base_args(&self, i: usize) -> Vec<String> {
        let mut args = self.role_args("cell");
        args.extend([
            "--cell-id".into(),
            self.cell_id(i),
            "--data-dir".into(),
            self.cell_data_dir(i).display().to_string(),
        ]);
        for (name, dir) in &self.config.rootfs {
            args.push("--rootfs".into());
            args.push(format!("{name}={}", dir.display()));
        }
        args
    }

    /// Starts (or restarts) cell `i` on a fresh port.
    pub fn start_cell(&mut self, i: usize) -> Result<()> {
        let port = free_port();
        let ip = self.cell_ip(i);
        let url = format!("{}://{ip}:{port}", self.scheme());
        let mut args = vec!["--log".to_string(), "info".into()];
        args.extend(self.cell_base_args(i));
        args.extend([
            "--listen".into(),
            format!("{ip}:{port}"),
            "--memory-mb".into(),
            self.config.cell_memory_mb.to_string(),
            "--disk-mb".into(),
            self.config.cell_disk_mb.to_string(),
            "--presence-ttl".into(),
            format!("{}s", self.config.ttl_seconds),
        ]);
        args.extend(self.config.cell_args.iter().cloned());
        let log = self.dir.path().join(format!("cell-{i}.log"));
        let proc = Proc::spawn(&self.diego, &self.cell_id(i), url.clone(), &args, log)?;
        if i < self.cells.len() {
            self.cells[i] = proc;
        } else {
            self.cells.push(proc);
        }
        self.wait_http(&format!("{url}/ping"), "GET", &self.cell_id(i))
    }

    /// Starts (or restarts) brain `i` on a fresh port.
    pub fn start_brain(&mut self, i: usize) -> Result<()> {
        let port = free_port();
        let url = format!("{}://127.0.0.1:{port}", self.scheme());
        let mut args = vec!["--log".to_string(), "info".into()];
        args.extend(self.role_args("brain"));
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--lock-ttl".into(),
            format!("{}s", self.config.ttl_seconds),
            "--convergence-interval".into(),
            "2s".into(),
        ]);
        args.extend(self.config.brain_args.iter().cloned());
        let log = self.dir.path().join(format!("brain-{i}.log"));
        let proc = Proc::spawn(&self.diego, &format!("brain-{i}"), url.clone(), &args, log)?;
        if i < self.brains.len() {
            self.brains[i] = proc;
        } else {
            self.brains.push(proc);
        }
        self.wait_http(&format!("{url}/v1/policy"), "GET", &format!("brain-{i}"))
    }

    /// Starts `diego api` (the apps API with the blob store and the log server) on `port`,
    /// naming `router_port` in apps' URLs; its URL.
    pub fn start_api(&mut self, port: u16, router_port: u16) -> Result<String> {
        let url = format!("{}://127.0.0.1:{port}", self.scheme());
        let mut args = vec!["--log".to_string(), "info".into()];
        args.extend(self.role_args("api"));
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            self.dir.path().join("api").display().to_string(),
            "--router-port".into(),
            router_port.to_string(),
            "--sync-interval".into(),
            "5s".into(),
        ]);
        let log = self.dir.path().join("api.log");
        let proc = Proc::spawn(&self.diego, "api", url.clone(), &args, log)?;
        self.services.push(proc);
        self.wait_http(&format!("{url}/v1/info"), "GET", "diego api")?;
        Ok(url)
    }

    /// Starts `diego router` proxying on `proxy_port`, its access logs to `logs_url`; the URL
    /// of its registration API.
    pub fn start_router(&mut self, proxy_port: u16, logs_url: &str) -> Result<String> {
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let admin = format!("{}://{admin_addr}", self.scheme());
        let mut args = vec!["--log".to_string(), "info".into()];
        args.extend(self.role_args("router"));
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{proxy_port}"),
            "--admin-listen".into(),
            admin_addr,
            "--logs-url".into(),
            logs_url.to_string(),
        ]);
        let log = self.dir.path().join("router.log");
        let proc = Proc::spawn(&self.diego, "router", admin.clone(), &args, log)?;
        self.services.push(proc);
        self.wait_http(&format!("{admin}/v1/routes"), "GET", "diego router")?;
        Ok(admin)
    }

    /// Runs a `diego` command against this platform's BBS.
    pub fn diego(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.diego)
            .args(self.global_args())
            .args(["--log", "warn", "--bbs-url", &self.bbs.url])
            .args(args)
            .output()
            .with_context(|| format!("cannot run diego {}", args.join(" ")))
    }

    /// Runs a `diego` command that must succeed; its stdout.
    pub fn diego_ok(&self, args: &[&str]) -> Result<String> {
        succeeded(args, self.diego(args)?)
    }

    /// `diego <args>` parsed as one JSON record per line.
    pub fn records(&self, args: &[&str]) -> Result<Vec<serde_json::Value>> {
        self.diego_ok(args)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }

    pub fn cell_ids_present(&self) -> Result<Vec<String>> {
        Ok(self
            .records(&["cells"])?
            .iter()
            .filter_map(|c| c["cell_id"].as_str().map(str::to_string))
            .collect())
    }

    /// The URL in the `auctioneer` lock, if a brain holds it.
    pub fn active_brain(&self) -> Result<Option<String>> {
        Ok(self
            .records(&["locks"])?
            .iter()
            .find(|l| l["key"] == "auctioneer")
            .and_then(|l| l["value"].as_str().map(str::to_string)))
    }

    /// The actual LRPs of `process_guid`.
    pub fn actual_lrps(&self, process_guid: &str) -> Result<Vec<serde_json::Value>> {
        self.records(&["actual-lrps", "--process-guid", process_guid])
    }

    /// Polls `check` every 200 ms until it is true or `timeout` passes; the error names `what`
    /// and carries every process's log tail.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Platform) -> Result<bool>,
    ) -> Result<Duration> {
        crate::poll_until(
            what,
            timeout,
            Duration::from_millis(200),
            || check(self),
            || self.logs(),
        )
    }

    /// Every process's log tail, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in std::iter::once(&self.bbs)
            .chain(&self.brains)
            .chain(&self.cells)
            .chain(&self.services)
        {
            out.push_str(&format!("---- {} ----\n{}\n", p.name, p.log_tail()));
        }
        out
    }

    fn wait_http(&self, url: &str, method: &str, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_request_with(url, method, "", self.tls.as_ref())
                .is_ok_and(|(status, _)| status < 500)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} did not answer at {url} within 30 s\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        for p in self.brains.iter_mut().chain(self.cells.iter_mut()) {
            p.kill9();
        }
        // Containers outlive a killed rep (as on a real cell): destroy them.
        for i in 0..self.cells.len() {
            let mut args = self.cell_base_args(i);
            args.extend([
                "--listen".into(),
                format!("{}:0", self.cell_ip(i)),
                "--cleanup".into(),
            ]);
            match Command::new(&self.diego).args(&args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "cleanup of {} failed: {}",
                    self.cell_id(i),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("cannot run the cleanup of {}: {e}", self.cell_id(i)),
            }
        }
        self.bbs.kill9();
    }
}

/// The stdout of `diego <args>` that must have succeeded; else an error with its output.
pub fn succeeded(args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "diego {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A minimal HTTP/1.0 request (no client library: testkit stays blocking and small). Returns
/// the status and body.
pub fn http_request(url: &str, method: &str, body: &str) -> Result<(u16, String)> {
    http_request_with(url, method, body, None)
}

/// As [`http_request`]; an `https://` URL is spoken to over TLS with `tls`'s identity.
pub fn http_request_with(
    url: &str,
    method: &str,
    body: &str,
    tls: Option<&diego_tls::Tls>,
) -> Result<(u16, String)> {
    let (rest, tls) = match (url.strip_prefix("https://"), tls) {
        (Some(rest), Some(tls)) => (rest, Some(tls)),
        (Some(_), None) => bail!("{url} needs a TLS identity"),
        (None, _) => (
            url.strip_prefix("http://")
                .with_context(|| format!("not an http URL: {url}"))?,
            None,
        ),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = TcpStream::connect(host).with_context(|| format!("connect {host}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = tls_stream(tcp, host, tls)?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status from {url}: {response:.100}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A connection to `host` (`ADDR:PORT`), over TLS with `tls`.
pub(crate) fn tls_stream(
    tcp: TcpStream,
    host: &str,
    tls: Option<&diego_tls::Tls>,
) -> Result<Box<dyn ReadWrite>> {
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = host
        .rsplit_once(':')
        .map_or(host, |(name, _)| name)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .with_context(|| format!("not a server name: {name}"))?;
    let connection = rustls::ClientConnection::new(tls.client_config(), name)?;
    Ok(Box::new(rustls::StreamOwned::new(connection, tcp)))
}

/// How a TLS server at `url` treats a client with `config` that completes its side of the
/// handshake and then waits, sending nothing (so the server's verdict arrives as an alert, not
/// as a reset racing a request): `Ok(why)` when the server refused it, with the alert it sent;
/// an error when it kept the connection open.
pub fn tls_refusal(url: &str, config: std::sync::Arc<rustls::ClientConfig>) -> Result<String> {
    let host = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    let tcp = TcpStream::connect(host).with_context(|| format!("connect {host}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .with_context(|| format!("not a server name: {name}"))?;
    let connection = rustls::ClientConnection::new(config, name)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!("{url} kept the connection open")
        }
        Err(e) => Ok(e.to_string()),
        Ok(0) => Ok("closed without a word".into()),
        Ok(_) => bail!("{url} sent data unasked"),
    }
}

/// A blocking byte stream, plain or TLS.
pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Makes the CA and every role's certificates with `diego certs` in `dir` (hosts: loopback and
/// cells' addresses, plus `extra_hosts`); the `client` identity.
pub fn make_certs(diego: &Path, dir: &Path, extra_hosts: &[&str]) -> Result<diego_tls::Tls> {
    let mut hosts = TLS_HOSTS.to_string();
    for host in extra_hosts {
        hosts.push(',');
        hosts.push_str(host);
    }
    let out = Command::new(diego)
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--hosts", &hosts])
        .output()
        .context("cannot run diego certs")?;
    succeeded(&["certs"], out)?;
    diego_tls::Tls::load(&diego_tls::TlsFiles::in_dir(dir, "client"))
        .with_context(|| format!("cannot load the client certificate in {}", dir.display()))
}

/// `--tls-dir ROOT/tls` when `on`.
fn tls_args(root: &Path, on: bool) -> Vec<String> {
    if on {
        vec!["--tls-dir".into(), root.join("tls").display().to_string()]
    } else {
        Vec::new()
    }
}

/// `GET http://address:port/` answers 200.
pub fn answers_http(address: &str, port: u64) -> bool {
    http_request(&format!("http://{address}:{port}/"), "GET", "").is_ok_and(|(s, _)| s == 200)
}
