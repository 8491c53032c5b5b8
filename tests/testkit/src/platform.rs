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
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::File::create(&log)
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
        Ok(Proc {
            name: name.to_string(),
            url,
            log,
            child: Some(child),
        })
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
    dir: tempfile::TempDir,
}

impl Platform {
    /// Starts the BBS, the brains and the cells, and waits until every cell's presence is in
    /// the BBS and a brain holds the lock.
    pub fn start(diego: &Path, config: PlatformConfig) -> Result<Platform> {
        let dir = tempfile::Builder::new()
            .prefix("diego-platform-")
            .tempdir()
            .context("cannot create the platform's temp dir")?;
        let prefix = format!("p{}", free_port());
        let bbs_port = free_port();
        let bbs_url = format!("http://127.0.0.1:{bbs_port}");
        let bbs = Proc::spawn(
            diego,
            "bbs",
            bbs_url.clone(),
            &[
                "--log".into(),
                "info".into(),
                "bbs".into(),
                "--listen".into(),
                format!("127.0.0.1:{bbs_port}"),
                "--data-dir".into(),
                dir.path().join("bbs").display().to_string(),
                "--crash-backoff-min".into(),
                format!("{}ms", config.crash_backoff_min.as_millis()),
            ],
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

    pub fn dir(&self) -> &Path {
        self.dir.path()
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

    fn cell_base_args(&self, i: usize) -> Vec<String> {
        let mut args = vec![
            "--bbs-url".into(),
            self.bbs.url.clone(),
            "cell".into(),
            "--cell-id".into(),
            self.cell_id(i),
            "--data-dir".into(),
            self.cell_data_dir(i).display().to_string(),
        ];
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
        let url = format!("http://{ip}:{port}");
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
        let url = format!("http://127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "--log".into(),
            "info".into(),
            "--bbs-url".into(),
            self.bbs.url.clone(),
            "brain".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--lock-ttl".into(),
            format!("{}s", self.config.ttl_seconds),
            "--convergence-interval".into(),
            "2s".into(),
        ];
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
        let url = format!("http://127.0.0.1:{port}");
        let args: Vec<String> = vec![
            "--log".into(),
            "info".into(),
            "--bbs-url".into(),
            self.bbs.url.clone(),
            "api".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            self.dir.path().join("api").display().to_string(),
            "--router-port".into(),
            router_port.to_string(),
            "--sync-interval".into(),
            "5s".into(),
        ];
        let log = self.dir.path().join("api.log");
        let proc = Proc::spawn(&self.diego, "api", url.clone(), &args, log)?;
        self.services.push(proc);
        self.wait_http(&format!("{url}/v1/info"), "GET", "diego api")?;
        Ok(url)
    }

    /// Starts `diego router` proxying on `proxy_port`, its access logs to `logs_url`; the URL
    /// of its registration API.
    pub fn start_router(&mut self, proxy_port: u16, logs_url: &str) -> Result<String> {
        let admin = format!("http://127.0.0.1:{}", free_port());
        let args: Vec<String> = vec![
            "--log".into(),
            "info".into(),
            "--bbs-url".into(),
            self.bbs.url.clone(),
            "router".into(),
            "--listen".into(),
            format!("127.0.0.1:{proxy_port}"),
            "--admin-listen".into(),
            admin.trim_start_matches("http://").to_string(),
            "--logs-url".into(),
            logs_url.to_string(),
        ];
        let log = self.dir.path().join("router.log");
        let proc = Proc::spawn(&self.diego, "router", admin.clone(), &args, log)?;
        self.services.push(proc);
        self.wait_http(&format!("{admin}/v1/routes"), "GET", "diego router")?;
        Ok(admin)
    }

    /// Runs a `diego` command against this platform's BBS.
    pub fn diego(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.diego)
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
            if http_request(url, method, "").is_ok_and(|(status, _)| status < 500) {
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
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http URL: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).with_context(|| format!("connect {host}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
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

/// `GET http://address:port/` answers 200.
pub fn answers_http(address: &str, port: u64) -> bool {
    http_request(&format!("http://{address}:{port}/"), "GET", "").is_ok_and(|(s, _)| s == 200)
}
