use std::path::Path;

use bytes::Bytes;
use diego_garden::{Backend, Error};

use crate::common::*;

fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Bytes {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_bytes()).unwrap();
            }
        }
    }
    Bytes::from(b.into_inner().unwrap())
}

/// tar::Builder refuses `..`; write such a header by hand.
fn raw_tar(path: &str) -> Bytes {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    let mut data = b"evil".to_vec();
    data.resize(512, 0);
    out.extend_from_slice(&data);
    out.extend_from_slice(&[0; 1024]);
    Bytes::from(out)
}

fn assert_escape(r: Result<(), Error>, what: &str) {
    match r {
        Err(Error::PathEscape {
            handle,
            path,
            reason,
        }) => {
            assert!(!handle.is_empty() && !path.is_empty() && !reason.is_empty());
        }
        other => panic!("{what}: expected a path escape error, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_in_out_and_escapes_are_refused() {
    if !root_or_skip("tar") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(3).await;
    let h = b.create(busybox()).await.unwrap();

    // a normal archive lands where asked, with modes and links
    let app = tar_of(&[
        ("app", tar::EntryType::Directory, ""),
        (
            "app/start.sh",
            tar::EntryType::Regular,
            "#!/bin/sh\necho started from tar\n",
        ),
        ("app/link.sh", tar::EntryType::Symlink, "start.sh"),
    ]);
    b.stream_in_bytes(&h, "/home/vcap", app).await.unwrap();
    let out = run_sh(&b, &h, "/home/vcap/app/link.sh").await;
    assert_eq!(
        out.stdout_str(),
        "started from tar\n",
        "{}",
        out.stderr_str()
    );

    // into the container's /tmp (a tmpfs in its own mount namespace)
    b.stream_in_bytes(
        &h,
        "/tmp",
        tar_of(&[("t.txt", tar::EntryType::Regular, "tmpdata")]),
    )
    .await
    .unwrap();
    assert_eq!(
        run_sh(&b, &h, "cat /tmp/t.txt").await.stdout_str(),
        "tmpdata"
    );

    // and back out
    let tar_out = b.stream_out_bytes(&h, "/home/vcap/app").await.unwrap();
    let mut a = tar::Archive::new(tar_out.as_ref());
    let mut names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["app", "app/link.sh", "app/start.sh"]);

    // refused: `..` in entry names, hard links out of the destination, kernel files
    let marker = "/tmp/diego-garden-escape-marker";
    let _ = std::fs::remove_file(marker);
    assert_escape(
        b.stream_in_bytes(
            &h,
            "/",
            raw_tar("../../../../../../../tmp/diego-garden-escape-marker"),
        )
        .await,
        "dotdot",
    );
    assert_escape(
        b.stream_in_bytes(
            &h,
            "/home",
            raw_tar("x/../../../tmp/diego-garden-escape-marker"),
        )
        .await,
        "dotdot2",
    );
    assert_escape(
        b.stream_in_bytes(
            &h,
            "/",
            tar_of(&[("hl", tar::EntryType::Link, "../../etc/passwd")]),
        )
        .await,
        "hard link out",
    );
    assert_escape(
        b.stream_in_bytes(
            &h,
            "/proc/sys/kernel",
            tar_of(&[("hostname", tar::EntryType::Regular, "x")]),
        )
        .await,
        "the container's /proc",
    );
    assert_escape(
        b.stream_in_bytes(
            &h,
            "/",
            tar_of(&[
                ("k", tar::EntryType::Symlink, "/sys/kernel"),
                ("k/x", tar::EntryType::Regular, "x"),
            ]),
        )
        .await,
        "the container's /sys through a link",
    );

    // links resolve inside the container, like Garden's tar in the container's namespaces:
    // an absolute target is the container's path, `..` stops at its root
    let name = format!("diego-garden-escape-{}", std::process::id());
    b.stream_in_bytes(
        &h,
        "/",
        tar_of(&[
            ("abs", tar::EntryType::Symlink, "/etc"),
            ("up", tar::EntryType::Symlink, "../../../../etc"),
            ("abs/from-abs", tar::EntryType::Regular, "a"),
            ("up/from-up", tar::EntryType::Regular, "u"),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(
        run_sh(&b, &h, "readlink /abs; cat /etc/from-abs /etc/from-up")
            .await
            .stdout_str(),
        "/etc\nau"
    );
    // links planted by a process in the container, at host paths: the host's /etc, the
    // marker file, the host's /tmp
    run_sh(
        &b,
        &h,
        &format!(
            "ln -s /etc /home/vcap/etc-link; ln -s {marker} /home/vcap/planted; \
             ln -s /tmp /home/vcap/planted-dir"
        ),
    )
    .await;
    b.stream_in_bytes(
        &h,
        "/home/vcap/etc-link",
        tar_of(&[(name.as_str(), tar::EntryType::Regular, "inside")]),
    )
    .await
    .unwrap();
    b.stream_in_bytes(
        &h,
        "/home/vcap",
        tar_of(&[
            ("planted", tar::EntryType::Regular, "replaced"),
            ("etc-link/sub/deep", tar::EntryType::Regular, "made"),
        ]),
    )
    .await
    .unwrap();
    b.stream_in_bytes(
        &h,
        "/home/vcap/planted-dir",
        tar_of(&[("f", tar::EntryType::Regular, "tmp")]),
    )
    .await
    .unwrap();
    let out = run_sh(
        &b,
        &h,
        &format!(
            "cat /etc/{name} /etc/sub/deep /tmp/f; [ -L /home/vcap/planted ] || cat /home/vcap/planted"
        ),
    )
    .await;
    assert_eq!(
        out.stdout_str(),
        "insidemadetmpreplaced",
        "{}",
        out.stderr_str()
    );
    // out through a planted link: the container's file
    let tarball = b
        .stream_out_bytes(&h, "/home/vcap/planted-dir/f")
        .await
        .unwrap();
    let mut a = tar::Archive::new(tarball.as_ref());
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut e, &mut body).unwrap();
    assert_eq!(body, "tmp");

    // nothing was written outside the container
    assert!(
        !Path::new(marker).exists(),
        "something was written outside the container"
    );
    for host in [
        format!("/etc/{name}"),
        "/etc/sub/deep".to_string(),
        "/etc/from-abs".to_string(),
        "/etc/from-up".to_string(),
    ] {
        assert!(!Path::new(&host).exists(), "{host} written on the host");
    }
    // an archive refused by the first pass wrote nothing inside either (one refused while
    // writing, at `k/x`, may have written its link `k`: harmless, like Garden's tar)
    assert_eq!(
        run_sh(&b, &h, "ls / | grep -c -E '^hl$'")
            .await
            .stdout_str(),
        "0\n"
    );

    b.destroy(&h).await.unwrap();
}
