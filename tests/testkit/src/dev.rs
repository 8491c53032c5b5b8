//! `diego dev` as a user runs it: one process with the BBS, the brain, cells, the apps API
//! (with the blob store and the log server) and the router, on ports picked for the test, its
//! data kept in a directory that outlives a restart. Commands run as `diego …` with
//! `DIEGO_ADDR` and `DIEGO_API` pointing at it; apps are reached through the router by Host
//! header, as a browser reaches `http://APP.localhost:PORT`.
//!
//! Blocking, like [`crate::platform`]. Dropping it stops `diego dev` with SIGTERM (its cells
//! destroy their containers), then kills it if it hangs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;

use crate::platform::Proc;
use crate::{Result, free_port};

/// What to start.
#[derive(Debug, Clone)]
pub struct DevConfig {
    pub cells: usize,
    /// The apps' domain (`APP.<domain>`).
    pub domain: String,
    /// Extra `diego dev` flags.
    pub args: Vec<String>,
    /// The log filter (`--log`).
    pub log: String,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            cells: 1,
            domain: "localhost".into(),
            args: vec!["--crash-backoff-min".into(), "2s".into()],
            log: "info".into(),
        }
    }
}

/// A running `diego dev`. See the module doc.
#[derive(Debug)]
pub struct DevPlatform {
    pub diego: PathBuf,
    pub config: DevConfig,
    pub bbs_url: String,
    pub api_url: String,
    /// The router's proxy address (`127.0.0.1:PORT`).
    pub router_addr: String,
    pub router_admin_url: String,
    /// The brain's API (start requests, policy, `/metrics`).
    pub brain_url: String,
    /// The ssh proxy (`127.0.0.1:PORT`).
    pub ssh_addr: String,
    /// The ssh proxy's HTTP API (one-time codes).
    pub ssh_api_url: String,
    proc: Option<Proc>,
    starts: usize,
    /// Where the data and logs are; `None` once kept after a failure.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl DevPlatform {
    /// Starts `diego dev` and waits until its API answers and its cells are present.
    pub fn start(diego: &Path, config: DevConfig) -> Result<DevPlatform> {
        let dir = tempfile::Builder::new()
            .prefix("diego-dev-test-")
            .tempdir()
            .context("cannot create the dev platform's temp dir")?;
        let bbs_port = free_port();
        let mut dev = DevPlatform {
            diego: diego.to_path_buf(),
            bbs_url: format!("http://127.0.0.1:{bbs_port}"),
            api_url: format!("http://127.0.0.1:{}", free_port()),
            router_addr: format!("127.0.0.1:{}", free_port()),
            router_admin_url: format!("http://127.0.0.1:{}", free_port()),
            brain_url: format!("http://127.0.0.1:{}", free_port()),
            ssh_addr: format!("127.0.0.1:{}", free_port()),
            ssh_api_url: format!("http://127.0.0.1:{}", free_port()),
            config,
            proc: None,
            starts: 0,
            root: dir.path().to_path_buf(),
            dir: Some(dir),
        };
        dev.launch()?;
        Ok(dev)
    }

    /// The data directory `diego dev` keeps (across [`DevPlatform::restart`]).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn launch(&mut self) -> Result<()> {
        let host_port = |url: &str| url.trim_start_matches("http://").to_string();
        let mut args: Vec<String> = vec![
            "--log".into(),
            self.config.log.clone(),
            "dev".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--listen".into(),
            host_port(&self.bbs_url),
            "--brain-listen".into(),
            host_port(&self.brain_url),
            "--api-listen".into(),
            host_port(&self.api_url),
            "--router-listen".into(),
            self.router_addr.clone(),
            "--router-admin-listen".into(),
            host_port(&self.router_admin_url),
            "--ssh-listen".into(),
            self.ssh_addr.clone(),
            "--ssh-admin-listen".into(),
            host_port(&self.ssh_api_url),
            "--domain".into(),
            self.config.domain.clone(),
            "--cells".into(),
            self.config.cells.to_string(),
        ];
        args.extend(self.config.args.iter().cloned());
        let log = self.root.join(format!("dev-{}.log", self.starts));
        self.starts += 1;
        self.proc = Some(Proc::spawn_with(
            &self.diego,
            "dev",
            self.api_url.clone(),
            &args,
            log,
            true,
        )?);
        // The first start may build the stack rootfs (cached after).
        self.wait_for("diego dev's API and cells", Duration::from_secs(300), |d| {
            let (status, _) = http(&format!("{}/v1/info", d.api_url), "GET", None, "")?;
            Ok(status == 200 && d.cells()? >= d.config.cells)
        })?;
        Ok(())
    }

    fn cells(&self) -> Result<usize> {
        let out = self.diego_ok(&["cells"])?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    }

    /// Stops `diego dev` as Ctrl-C at its terminal does (SIGINT to its whole process group),
    /// and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.interrupt_group();
            proc.wait_exit(Duration::from_secs(30))
                .context("diego dev did not stop within 30 s of SIGTERM")?;
        }
        Ok(())
    }

    /// Stops and starts `diego dev` again on the same data and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// `diego <args>` against this platform.
    pub fn diego(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.diego)
            .args(["--log", "warn"])
            .args(args)
            .env("DIEGO_ADDR", &self.bbs_url)
            .env("DIEGO_API", &self.api_url)
            .env("DIEGO_SSH_PROXY", &self.ssh_api_url)
            .env("NO_COLOR", "1")
            .output()
            .with_context(|| format!("cannot run diego {}", args.join(" ")))
    }

    /// `diego <args>` that must succeed; its stdout.
    pub fn diego_ok(&self, args: &[&str]) -> Result<String> {
        crate::platform::succeeded(args, self.diego(args)?)
    }

    /// `GET path` through the router for `host` (e.g. `web.localhost`): status and body.
    pub fn get(&self, host: &str, path: &str) -> Result<(u16, String)> {
        http(
            &format!("http://{}{path}", self.router_addr),
            "GET",
            Some(host),
            "",
        )
    }

    /// A request through the router for `host`.
    pub fn request(&self, method: &str, host: &str, path: &str) -> Result<(u16, String)> {
        http(
            &format!("http://{}{path}", self.router_addr),
            method,
            Some(host),
            "",
        )
    }

    /// Polls `check` every 250 ms until it is true or `timeout` passes; the error names
    /// `what` and carries the log tail.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&DevPlatform) -> Result<bool>,
    ) -> Result<Duration> {
        crate::poll_until(
            what,
            timeout,
            Duration::from_millis(250),
            || check(self),
            || self.log_tail(),
        )
    }

    /// The whole log of the current `diego dev` run (its stderr).
    pub fn log(&self) -> Result<String> {
        let proc = self.proc.as_ref().context("diego dev is not running")?;
        std::fs::read_to_string(&proc.log)
            .with_context(|| format!("cannot read {}", proc.log.display()))
    }

    /// The tail of the current `diego dev` log.
    pub fn log_tail(&self) -> String {
        self.proc
            .as_ref()
            .map(|p| format!("---- diego dev ----\n{}", p.log_tail()))
            .unwrap_or_default()
    }
}

impl Drop for DevPlatform {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.sigterm();
            if proc.wait_exit(Duration::from_secs(30)).is_err() {
                proc.kill9();
            }
        }
        // A failed test keeps the logs and data to look at.
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "diego dev's logs and data are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// One HTTP/1.1 request with `Connection: close` (optionally with another Host header).
pub fn http(url: &str, method: &str, host: Option<&str>, body: &str) -> Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not an http URL: {url}"))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        host.unwrap_or(addr),
        body.len()
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer to {method} {url}"))?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status from {url}: {response:.100}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
