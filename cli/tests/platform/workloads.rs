//! Desired work runs, keeps running, and comes back when a cell dies.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::json;

use super::*;

#[test]
fn six_instances_run_on_three_cells_and_come_back_after_a_cell_is_killed() {
    let _serial = serial();
    let Some(mut p) = platform("six_instances_survive_kill9", 3, |_| {}) else {
        return;
    };
    desire(&p, &web_lrp("web", 6, 64));
    wait_running_and_answering(&p, "web", 6, Duration::from_secs(90));
    let before = cells_of(&p, "web");
    let per_cell: BTreeMap<&String, usize> = before.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c).or_default() += 1;
        m
    });
    assert_eq!(
        per_cell.len(),
        3,
        "classic spreads 6 instances over 3 cells: {per_cell:?}"
    );

    let victim = before[0].clone();
    let i = (0..3).find(|i| p.cell_id(*i) == victim).unwrap();
    p.cells[i].kill9();
    // The killed cell's containers outlive its rep (as on a real machine) and still answer:
    // only instances on the live cells count.
    let took = p
        .wait_for(
            "6 instances RUNNING and answering on the live cells",
            Duration::from_secs(60),
            |p| {
                let up = running(p, "web");
                Ok(up.len() == 6
                    && up.iter().all(|a| {
                        let (address, port) = endpoint(a);
                        a["cell_id"] != victim.as_str() && answers_http(&address, port)
                    }))
            },
        )
        .unwrap();
    let after: HashSet<String> = cells_of(&p, "web").into_iter().collect();
    assert!(
        !after.contains(&victim),
        "instances still on the killed cell: {after:?}"
    );
    eprintln!("all 6 instances RUNNING and answering elsewhere {took:?} after kill -9 of {victim}");
}

#[test]
fn a_crashing_instance_follows_the_backoff_schedule() {
    let _serial = serial();
    let Some(p) = platform("crash_backoff", 1, |_| {}) else {
        return;
    };
    let mut lrp = web_lrp("crasher", 1, 32);
    lrp["action"] = json!({"run": {"path": "/bin/sh", "args": ["-c", "sleep 0.3; exit 7"]}});
    lrp.as_object_mut().unwrap().remove("check_definition");
    desire(&p, &lrp);
    // Three immediate restarts, then CRASHED waiting out the backoff (2 s, 4 s, ...).
    p.wait_for(
        "crash_count >= 3 and CRASHED",
        Duration::from_secs(60),
        |p| {
            Ok(p.actual_lrps("crasher")?
                .iter()
                .any(|a| a["state"] == "CRASHED" && a["crash_count"].as_i64() >= Some(3)))
        },
    )
    .unwrap();
    let a = &p.actual_lrps("crasher").unwrap()[0];
    assert!(
        a["crash_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Exited with status 7"),
        "crash reason: {a}"
    );
    assert!(a["since"].as_i64().unwrap_or_default() > 0);
    // No tight loop: the count grows by about one per backoff step, not per second.
    let count = |p: &Platform| {
        p.actual_lrps("crasher").unwrap()[0]["crash_count"]
            .as_i64()
            .unwrap()
    };
    let start = count(&p);
    std::thread::sleep(Duration::from_secs(5));
    let grown = count(&p) - start;
    assert!(
        grown <= 2,
        "crash count grew by {grown} in 5 s with a 2 s backoff step"
    );
    // And it is restarted after the backoff: the count keeps growing.
    p.wait_for(
        "a restart after the backoff",
        Duration::from_secs(40),
        |p| Ok(count(p) > start),
    )
    .unwrap();
}

#[test]
fn a_task_completes_with_its_result_and_callback() {
    let _serial = serial();
    let Some(p) = platform("task_completes", 1, |_| {}) else {
        return;
    };
    // The completion callback: a tiny HTTP server that records the body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let callback = format!("http://{}/done", listener.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                    return body.to_string();
                }
            }
            if n == 0 {
                return String::new();
            }
        }
    });
    let task = json!({
        "task_guid": "answer",
        "domain": "tests",
        "task_definition": {
            "rootfs": "preloaded:busybox",
            "memory_mb": 32,
            "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo 42 > /tmp/result"]}},
            "result_file": "/tmp/result",
            "completion_callback_url": callback,
        }
    });
    let file = p.dir().join("task.json");
    std::fs::write(&file, task.to_string()).unwrap();
    p.diego_ok(&["desire-task", file.to_str().unwrap()])
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&received.join().unwrap()).unwrap();
    assert_eq!(body["task_guid"], "answer");
    assert_eq!(body["failed"], false);
    assert_eq!(body["result"].as_str().map(str::trim), Some("42"));
    // The callback resolved it: the BBS deletes the task.
    p.wait_for(
        "the task deleted after its callback",
        Duration::from_secs(20),
        |p| Ok(p.records(&["tasks"])?.is_empty()),
    )
    .unwrap();

    // A failing task completes as failed, with Diego's reason; no callback: it stays COMPLETED.
    let task = json!({
        "task_guid": "fails",
        "domain": "tests",
        "task_definition": {
            "rootfs": "preloaded:busybox",
            "memory_mb": 32,
            "action": {"run": {"path": "/bin/sh", "args": ["-c", "exit 7"]}},
        }
    });
    std::fs::write(&file, task.to_string()).unwrap();
    p.diego_ok(&["desire-task", file.to_str().unwrap()])
        .unwrap();
    p.wait_for("the failing task COMPLETED", Duration::from_secs(30), |p| {
        Ok(p.records(&["tasks"])?.iter().any(|t| {
            t["state"] == "Completed"
                && t["failed"] == true
                && t["failure_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Exited with status 7")
        }))
    })
    .unwrap();
}

#[test]
fn placement_errors_are_recorded_and_disturb_nothing_else() {
    let _serial = serial();
    let Some(p) = platform("placement_errors", 2, |c| c.cell_memory_mb = 512) else {
        return;
    };
    desire(&p, &web_lrp("fine", 2, 64));
    let mut no_rootfs = web_lrp("no-rootfs", 1, 64);
    no_rootfs["rootfs"] = json!("preloaded:nosuchstack");
    desire(&p, &no_rootfs);
    desire(&p, &web_lrp("too-big", 1, 4096));
    p.wait_for("placement errors recorded", Duration::from_secs(30), |p| {
        let a = p.actual_lrps("no-rootfs")?;
        let b = p.actual_lrps("too-big")?;
        Ok(a.iter()
            .any(|x| x["placement_error"] == "found no compatible cell for required rootfs")
            && b.iter().any(|x| {
                x["placement_error"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("insufficient resources")
            }))
    })
    .unwrap();
    wait_running_and_answering(&p, "fine", 2, Duration::from_secs(60));
}
