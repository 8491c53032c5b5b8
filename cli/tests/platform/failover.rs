//! The brain and the cells go away; the work does not.

use std::time::Duration;

use super::*;

#[test]
fn a_standby_brain_takes_over_and_places_work_desired_meanwhile() {
    let _serial = serial();
    let Some(mut p) = platform("brain_failover", 1, |c| c.brains = 2) else {
        return;
    };
    let active = p.active_brain().unwrap().expect("a brain holds the lock");
    let i = p.brains.iter().position(|b| b.url == active).unwrap();
    p.brains[i].kill9();
    // Desired while no brain is active: placed once the standby takes the lock.
    desire(&p, &web_lrp("meanwhile", 2, 64));
    wait_running_and_answering(&p, "meanwhile", 2, Duration::from_secs(60));
    let now_active = p.active_brain().unwrap().expect("a brain holds the lock");
    assert_ne!(now_active, active, "the killed brain cannot hold the lock");
}

#[test]
fn a_draining_cell_hands_each_instance_over_before_stopping_it() {
    let _serial = serial();
    let Some(mut p) = platform("cell_evacuation", 2, |_| {}) else {
        return;
    };
    desire(&p, &web_lrp("evac", 2, 64));
    wait_running_and_answering(&p, "evac", 2, Duration::from_secs(90));
    let victim_id = cells_of(&p, "evac")[0].clone();
    let i = (0..2).find(|i| p.cell_id(*i) == victim_id).unwrap();
    let on_victim: Vec<Value> = running(&p, "evac")
        .into_iter()
        .filter(|a| a["cell_id"] == victim_id)
        .collect();
    let old_endpoints: Vec<(String, u64)> = on_victim.iter().map(endpoint).collect();

    p.cells[i].sigterm();
    // While the cell evacuates, every old instance keeps answering until its replacement runs
    // elsewhere: watch both, and record any moment an old one stopped before its replacement.
    let mut handed_over = vec![false; on_victim.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while handed_over.iter().any(|h| !h) {
        assert!(
            std::time::Instant::now() < deadline,
            "evacuation did not finish\n{}",
            p.logs()
        );
        let lrps = p.actual_lrps("evac").unwrap();
        for (k, old) in on_victim.iter().enumerate() {
            if handed_over[k] {
                continue;
            }
            let replacement_running = lrps.iter().any(|a| {
                a["index"] == old["index"]
                    && presence(a) == "ORDINARY"
                    && a["state"] == "RUNNING"
                    && a["cell_id"] != victim_id
            });
            let (address, port) = &old_endpoints[k];
            let old_alive = answers_http(address, *port);
            if replacement_running {
                handed_over[k] = true;
            } else {
                assert!(
                    old_alive,
                    "instance {} stopped answering before its replacement ran\n{}",
                    old["index"],
                    p.logs()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = p.cells[i].wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "the drained cell exited with {status}");
    wait_running_and_answering(&p, "evac", 2, Duration::from_secs(30));
    assert!(cells_of(&p, "evac").iter().all(|c| *c != victim_id));
    // Its evacuating copies are gone, and so is its presence.
    assert!(
        p.actual_lrps("evac")
            .unwrap()
            .iter()
            .all(|a| presence(a) != "EVACUATING")
    );
    assert!(!p.cell_ids_present().unwrap().contains(&victim_id));
}
