//! The `diego` binary as real processes: BBS crash safety on the embedded store, several BBS
//! processes over one etcd, and a BBS over a 3-member etcd cluster losing its leader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod abuse;
mod crash;
mod etcd_cluster;
mod multi_bbs;
mod tls;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diego_bbs_client::BbsClient;
use diego_model::{Action, DesiredLrp};

/// A `diego bbs` process; killed when dropped.
pub struct BbsProcess {
    pub child: Child,
    pub url: String,
    pub client: BbsClient,
}

impl std::fmt::Debug for BbsProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BbsProcess")
            .field("url", &self.url)
            .finish()
    }
}

impl Drop for BbsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BbsProcess {
    /// Starts `diego bbs` with these store flags on a free loopback port and waits for it.
    pub async fn start(store_args: &[String]) -> BbsProcess {
        let port = diego_testkit::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_diego"))
            .args([
                "--log",
                "warn",
                "bbs",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(store_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn diego bbs");
        let client = BbsClient::new(&url);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client.ping().await.unwrap_or(false) {
            assert!(
                Instant::now() < deadline,
                "diego bbs did not come up on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        BbsProcess { child, url, client }
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

pub fn lrp(process_guid: &str, instances: i32) -> DesiredLrp {
    DesiredLrp {
        process_guid: process_guid.into(),
        domain: "tests".into(),
        rootfs: "preloaded:cflinuxfs4".into(),
        instances,
        action: Some(Action::run("/bin/app", &[])),
        memory_mb: 64,
        ..DesiredLrp::default()
    }
}
