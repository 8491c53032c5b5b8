//! SSH into app instances end to end: `diego dev` (its ssh proxy, a cell with real containers),
//! a pushed buildpack app, and Debian's OpenSSH client (`ssh`) logging in with one-time codes
//! from `diego ssh-code` (given by an SSH_ASKPASS script): a command's output and exit status
//! as the app's user with its environment, a terminal session resized while it runs, a `-L`
//! forward reaching the app, and refusals (a wrong code, a reused one, SSH disabled, an
//! instance that does not exist), then the same through `diego ssh`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::repo;
use diego_testkit::{DevConfig, DevPlatform, free_port};
use serde_json::Value;

/// The python test app in a temp dir.
fn python_app(dir: &Path) -> PathBuf {
    let app = dir.join("python-web");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(
        repo().join("lifecycles/test-apps/python-web/app.py"),
        app.join("app.py"),
    )
    .unwrap();
    app
}

/// Fails the test (as root) if Debian's OpenSSH client is missing; outside root the whole
/// test was skipped already.
fn ssh_client() {
    let found = Command::new("ssh")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the ssh client is missing: install openssh-client (scripts/setup.sh does)"
    );
}

/// A one-time code for `app`, from `diego ssh-code`.
fn code(dev: &DevPlatform, app: &str) -> String {
    let out = dev.diego_ok(&["ssh-code", app]).unwrap();
    let code = out.trim().to_string();
    assert_eq!(code.len(), 32, "{out}");
    code
}

/// An SSH_ASKPASS program that answers `code`.
fn askpass(dir: &Path, code: &str) -> PathBuf {
    let path = dir.join(format!("askpass-{code}"));
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{code}'\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `ssh` to `user` through the dev platform's proxy, the password from `askpass`; no user
/// config, no known hosts.
fn ssh(dev: &DevPlatform, askpass: &Path, user: &str) -> Command {
    let (host, port) = dev.ssh_addr.split_once(':').unwrap();
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-p", port])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .arg(format!("{user}@{host}"))
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .stdin(Stdio::null());
    cmd
}

fn text(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for `child` to exit; its status code.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the ssh client did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything read from a terminal's master so far, collected by a thread.
struct Screen {
    seen: Arc<Mutex<String>>,
    master: std::fs::File,
}

impl Screen {
    fn new(master: OwnedFd) -> Screen {
        let seen = Arc::new(Mutex::new(String::new()));
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Screen {
            seen,
            master: std::fs::File::from(master),
        }
    }

    fn text(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// Types `line` every second until the screen shows `want`.
    fn until(&mut self, line: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(want) {
            assert!(
                Instant::now() < deadline,
                "{want:?} never showed; the screen: {:?}",
                self.text()
            );
            self.type_line(line);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.master),
                libc::TIOCSWINSZ,
                &ws,
            )
        };
        assert_eq!(r, 0, "cannot resize the test's terminal");
    }
}

/// Starts `cmd` on a new terminal of 100x30 that becomes its controlling terminal, as a user's
/// is; the terminal's screen.
fn on_terminal(mut cmd: Command) -> (Child, Screen) {
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: between fork and exec, only setsid and ioctl (async-signal-safe) on the child's
    // own stdin.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(pty.slave);
    (child, Screen::new(pty.master))
}

/// GET `/` on 127.0.0.1:`port` until it answers 200; the body.
fn get_forwarded(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("http://127.0.0.1:{port}/");
        match diego_testkit::dev::http(&url, "GET", Some("localhost"), "") {
            Ok((200, body)) => return body,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the forward never answered: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

#[test]
fn ssh_into_a_pushed_app_with_openssh_and_diego_ssh() {
    let _serial = super::serial();
    if !diego_testkit::root::root_or_skip("ssh_into_a_pushed_app_with_openssh_and_diego_ssh") {
        return;
    }
    ssh_client();
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let dev = DevPlatform::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_diego")),
        DevConfig::default(),
    )
    .unwrap();
    let python_bp = repo().join("lifecycles/buildpacks/python");
    dev.diego_ok(&["create-buildpack", "python", python_bp.to_str().unwrap()])
        .unwrap();
    let app_dir = python_app(work.path());
    dev.diego_ok(&["push", "web", "-p", app_dir.to_str().unwrap()])
        .unwrap();
    let view: Value =
        serde_json::from_str(&dev.diego_ok(&["app", "web", "-o", "json"]).unwrap()).unwrap();
    let pg = view["process_guid"].as_str().unwrap().to_string();
    let user = format!("{pg}/0");
    eprintln!("platform up, app pushed in {:?}", started.elapsed());

    // ---- a command: its output, its exit status, as the app's user in its environment ----
    let pass = askpass(work.path(), &code(&dev, "web"));
    let out = ssh(&dev, &pass, &user)
        .arg(
            "echo hi; id -un; pwd; echo port=$PORT index=$CF_INSTANCE_INDEX; echo oops >&2; exit 3",
        )
        .output()
        .unwrap();
    let (status, stdout, stderr) = text(&out);
    assert_eq!(status, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout, "hi\nvcap\n/home/vcap/app\nport=8080 index=0\n",
        "stderr: {stderr}"
    );
    assert!(stderr.contains("oops"), "{stderr}");

    // ---- the same code again: used up ----
    let out = ssh(&dev, &pass, &user).arg("true").output().unwrap();
    let (status, _, stderr) = text(&out);
    assert_eq!(status, Some(255), "{stderr}");
    assert!(stderr.contains("already used"), "{stderr}");

    // ---- a wrong code ----
    let wrong = askpass(work.path(), "0123456789abcdef0123456789abcdef");
    let out = ssh(&dev, &wrong, &user).arg("true").output().unwrap();
    let (status, _, stderr) = text(&out);
    assert_eq!(status, Some(255), "{stderr}");
    assert!(stderr.contains("the code is wrong"), "{stderr}");
    // said once: no second prompt for a code
    assert_eq!(stderr.matches("diego:").count(), 1, "{stderr}");

    // ---- an instance that does not exist ----
    let pass = askpass(work.path(), &code(&dev, "web"));
    let out = ssh(&dev, &pass, &format!("{pg}/5"))
        .arg("true")
        .output()
        .unwrap();
    let (status, _, stderr) = text(&out);
    assert_eq!(status, Some(255), "{stderr}");
    assert!(stderr.contains("has no instance 5"), "{stderr}");

    // ---- a terminal: /dev/pts, its size, a resize while the shell runs, the exit status ----
    let pass = askpass(work.path(), &code(&dev, "web"));
    let mut cmd = ssh(&dev, &pass, &user);
    cmd.arg("-tt");
    let (mut child, mut screen) = on_terminal(cmd);
    screen.until("tty; stty size", "30 100");
    assert!(screen.text().contains("/dev/pts/"), "{}", screen.text());
    screen.resize(120, 40);
    screen.until("stty size", "40 120");
    screen.type_line("exit 4");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)),
        Some(4),
        "{}",
        screen.text()
    );

    // ---- -L: a local port forwarded to the app's port; a port it does not expose refused ----
    let (port, unexposed) = (free_port(), free_port());
    let pass = askpass(work.path(), &code(&dev, "web"));
    let mut forward = ssh(&dev, &pass, &user)
        .args(["-o", "ExitOnForwardFailure=yes"])
        .args(["-N", "-L", &format!("{port}:localhost:8080")])
        .args(["-L", &format!("{unexposed}:localhost:9999")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = get_forwarded(port);
    assert!(body.contains("\"index\": \"0\""), "{body}");
    // the refused one: the connection is closed, and ssh says why
    let refused = std::net::TcpStream::connect(("127.0.0.1", unexposed))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).map(|_| answer)
        })
        .unwrap_or_default();
    assert!(refused.is_empty(), "{}", String::from_utf8_lossy(&refused));
    std::thread::sleep(Duration::from_millis(500));
    let _ = forward.kill();
    let out = forward.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not expose port 9999"), "{stderr}");

    // ---- SSH disabled: refused at login even with a code issued before, and no new codes ----
    let pass = askpass(work.path(), &code(&dev, "web"));
    dev.diego_ok(&["disable-ssh", "web"]).unwrap();
    let out = ssh(&dev, &pass, &user).arg("true").output().unwrap();
    let (status, _, stderr) = text(&out);
    assert_eq!(status, Some(255), "{stderr}");
    assert!(stderr.contains("SSH is disabled for app web"), "{stderr}");
    let out = dev.diego(&["ssh-code", "web"]).unwrap();
    let (status, _, stderr) = text(&out);
    assert_eq!(status, Some(4), "refused: {stderr}");
    assert!(stderr.contains("SSH is disabled"), "{stderr}");
    dev.diego_ok(&["enable-ssh", "web"]).unwrap();

    // ---- diego ssh: a command, its exit status; a forward; a refusal said plainly ----
    let out = dev.diego(&["ssh", "web", "-c", "echo hi; exit 3"]).unwrap();
    let (status, stdout, stderr) = text(&out);
    assert_eq!(status, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "hi\n", "stderr: {stderr}");
    let out = dev
        .diego(&["ssh", "web", "-c", "cat; echo done >&2"])
        .unwrap();
    let (status, _, stderr) = text(&out);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stderr.contains("done"), "{stderr}");
    let (status, _, stderr) = text(&dev.diego(&["ssh", "web", "-i", "7", "-c", "true"]).unwrap());
    assert_eq!(status, Some(4), "refused: {stderr}");
    assert!(stderr.contains("has no instance 7"), "{stderr}");
    // a shell on the local terminal: raw mode, its size, a resize, the exit status
    let mut cmd = Command::new(&dev.diego);
    cmd.args(["--log", "warn", "ssh", "web"])
        .env("DIEGO_ADDR", &dev.bbs_url)
        .env("DIEGO_API", &dev.api_url)
        .env("DIEGO_SSH_PROXY", &dev.ssh_api_url)
        .env("TERM", "xterm");
    let (mut child, mut screen) = on_terminal(cmd);
    screen.until("tty; stty size", "30 100");
    assert!(screen.text().contains("/dev/pts/"), "{}", screen.text());
    screen.resize(120, 40);
    screen.until("stty size", "40 120");
    screen.type_line("exit 5");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)),
        Some(5),
        "{}",
        screen.text()
    );
    let port = free_port();
    let mut forward = Command::new(&dev.diego)
        .args(["--log", "warn", "ssh", "web", "-N", "-L"])
        .arg(format!("{port}:localhost:8080"))
        .env("DIEGO_ADDR", &dev.bbs_url)
        .env("DIEGO_API", &dev.api_url)
        .env("DIEGO_SSH_PROXY", &dev.ssh_api_url)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let body = get_forwarded(port);
    assert!(body.contains("\"index\": \"0\""), "{body}");
    let pid = i32::try_from(forward.id()).unwrap();
    // SAFETY: kill with a pid of our own child that has not been waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    assert_eq!(wait_exit(&mut forward, Duration::from_secs(10)), Some(0));
    eprintln!("ssh test done in {:?}", started.elapsed());
}
