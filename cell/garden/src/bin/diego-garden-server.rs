//! A standalone Garden server: `diego-garden-server [--listen ADDR] [--depot DIR]
//! [--init-bin PATH] [--cgroup-parent NAME] [--net-tag TAG] [--subnet A.B.C.0/N]`.
//! On start it adopts live containers from the depot and cleans up dead ones; it prints
//! `listening on http://ADDR` once ready and stops on SIGINT/SIGTERM.

use diego_garden::api::{ServerConfig, run};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: diego-garden-server [--listen ADDR] [--depot DIR] [--init-bin PATH] \
                     [--cgroup-parent NAME] [--net-tag TAG] [--subnet A.B.C.D/N]";

fn usage(msg: &str) -> ! {
    eprintln!("diego-garden-server: {msg}");
    eprintln!("{USAGE}");
    #[allow(clippy::exit)] // usage and start-up errors end the process with status 2
    std::process::exit(2)
}

fn parse_args() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                #[allow(clippy::exit)] // --help answers and ends, as every tool does
                std::process::exit(0)
            }
            "--listen" => {
                cfg.listen = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--listen wants IP:PORT"))
            }
            "--depot" => cfg.backend.depot = value().into(),
            "--init-bin" => cfg.backend.init_bin = value().into(),
            "--cgroup-parent" => cfg.backend.cgroup_parent = value(),
            "--net-tag" => cfg.backend.network.tag = value(),
            "--subnet" => {
                let v = value();
                let (addr, len) = v
                    .split_once('/')
                    .unwrap_or_else(|| usage("--subnet wants A.B.C.D/N"));
                cfg.backend.network.subnet =
                    addr.parse().unwrap_or_else(|_| usage("bad subnet address"));
                cfg.backend.network.prefix_len =
                    len.parse().unwrap_or_else(|_| usage("bad prefix length"));
            }
            other => usage(&format!("unknown flag {other}")),
        }
    }
    cfg
}

#[tokio::main]
async fn main() {
    let cfg = parse_args();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let result = run(cfg, shutdown, |addr| {
        use std::io::Write;
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })
    .await;
    if let Err(e) = result {
        usage(&e.to_string());
    }
}
