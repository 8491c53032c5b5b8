use diego_garden::{Backend, ContainerSpec, ProcessEvent, ProcessSpec};
use futures::StreamExt;

use crate::common::*;

#[tokio::test]
async fn isolation_pid1_hostname_no_host_processes() {
    if !root_or_skip("isolation") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(1).await;
    let mut spec = busybox();
    spec.handle = Some("iso-1".into());
    spec.env = vec!["GREETING=hello".into()];
    let h = b.create(spec).await.unwrap();

    let out = run_sh(
        &b,
        &h,
        "echo $$; hostname; echo $GREETING; ls /proc | grep -c '^[0-9]'",
    )
    .await;
    assert_eq!(out.exit_status, 0, "stderr: {}", out.stderr_str());
    let lines: Vec<&str> = out
        .stdout
        .split(|c| *c == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    // the shell is not pid 1 (init is), and sees only init, itself and ls
    assert_ne!(lines[0], "1");
    assert_eq!(lines[1], "iso-1");
    assert_eq!(lines[2], "hello");
    let visible: usize = lines[3].parse().unwrap();
    assert!(visible <= 4, "container sees {visible} processes");

    let out = run_sh(&b, &h, "cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; cat /proc/mounts | awk '{print $2}' | sort | tr '\\n' ' '").await;
    let s = out.stdout_str();
    assert!(s.contains("diego-garden-init init"), "{s}");
    assert!(
        s.contains("/dev/pts")
            && s.contains("/dev/shm")
            && s.contains("/proc")
            && s.contains("/sys")
            && s.contains("/tmp"),
        "{s}"
    );

    // /sys is read-only, devices work, the rootfs is writable (overlay upper)
    let out = run_sh(&b, &h, "touch /sys/x 2>/dev/null && echo sys-rw; echo hi > /dev/null && head -c 4 /dev/urandom | wc -c; echo data > /etc/newfile && cat /etc/newfile").await;
    assert_eq!(
        out.stdout_str(),
        "4\ndata\n",
        "stderr: {}",
        out.stderr_str()
    );

    // a non-root user from /etc/passwd, a working directory, exit codes and stderr
    let out = b
        .run_and_wait(
            &h,
            ProcessSpec {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "id -u; pwd; echo oops >&2; exit 3".into(),
                ],
                user: Some("vcap".into()),
                dir: Some("/home/vcap".into()),
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 3);
    assert_eq!(out.stdout_str(), "2000\n/home/vcap\n");
    assert_eq!(out.stderr_str(), "oops\n");

    // missing programs are a clear error
    let err = b
        .run(
            &h,
            ProcessSpec {
                argv: vec!["no-such-program".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-program"), "{err}");

    // signal a running process, attach twice
    let id = b.run(&h, sh("echo started; sleep 100")).await.unwrap();
    let mut s1 = b.attach(&h, &id).await.unwrap();
    assert_eq!(
        s1.next().await.unwrap().unwrap(),
        ProcessEvent::Stdout("started\n".into())
    );
    b.signal(&h, &id, libc::SIGTERM).await.unwrap();
    assert_eq!(
        s1.next().await.unwrap().unwrap(),
        ProcessEvent::Exit(128 + libc::SIGTERM)
    );
    let all: Vec<_> = b.attach(&h, &id).await.unwrap().collect().await;
    assert_eq!(all.len(), 2);

    // stdin
    let out = b
        .run_and_wait(
            &h,
            ProcessSpec {
                argv: vec!["cat".into()],
                stdin: Some("piped".into()),
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "piped");

    // a pseudo-terminal, when asked for
    let out = b
        .run_and_wait(
            &h,
            ProcessSpec {
                tty: Some(diego_garden::TtySpec::default()),
                ..sh("tty; test -t 0 && test -t 1 && echo in-tty; stty size; echo err >&2")
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_status, 0);
    assert_eq!(out.stdout_str(), "/dev/pts/0\r\nin-tty\r\n24 80\r\nerr\r\n");
    let out = b
        .run_and_wait(
            &h,
            ProcessSpec {
                tty: Some(diego_garden::TtySpec::default()),
                stdin: Some("typed\n".into()),
                argv: vec!["cat".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    assert!(out.stdout_str().contains("typed"), "{:?}", out.stdout_str());

    // bind mounts: read-only by default, read-write when asked
    let ro = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("config.txt"), "from-host").unwrap();
    let spec = ContainerSpec {
        bind_mounts: vec![
            diego_garden::BindMount {
                src_path: ro.path().into(),
                dst_path: "/etc/app".into(),
                read_write: false,
            },
            diego_garden::BindMount {
                src_path: rw.path().into(),
                dst_path: "/data".into(),
                read_write: true,
            },
        ],
        ..busybox()
    };
    let hb = b.create(spec).await.unwrap();
    let out = run_sh(&b, &hb, "cat /etc/app/config.txt; echo; touch /etc/app/x 2>/dev/null || echo ro; echo out > /data/result").await;
    assert_eq!(out.stdout_str(), "from-host\nro\n");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("result")).unwrap(),
        "out\n"
    );
    b.destroy(&hb).await.unwrap();
    let bad = ContainerSpec {
        bind_mounts: vec![diego_garden::BindMount {
            src_path: ro.path().into(),
            dst_path: "../x".into(),
            read_write: false,
        }],
        ..busybox()
    };
    assert!(matches!(
        b.create(bad).await,
        Err(diego_garden::Error::InvalidRequest(_))
    ));
    // a destination through a symlink of the image (/linuxrc -> bin/busybox) is refused
    let through_link = ContainerSpec {
        bind_mounts: vec![diego_garden::BindMount {
            src_path: ro.path().into(),
            dst_path: "/linuxrc/x".into(),
            read_write: false,
        }],
        ..busybox()
    };
    let err = b.create(through_link).await.unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");

    // exited processes are kept for late attachers, but not without bound
    for _ in 0..140 {
        b.run_and_wait(
            &h,
            ProcessSpec {
                argv: vec!["true".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    }
    let kept = b.info(&h).await.unwrap().process_ids.len();
    assert!((128..=130).contains(&kept), "{kept} processes kept");

    // a second container does not see the first one's files or processes
    let h2 = b
        .create(ContainerSpec {
            handle: Some("iso-2".into()),
            ..busybox()
        })
        .await
        .unwrap();
    let out = run_sh(&b, &h2, "cat /etc/newfile 2>&1; hostname").await;
    assert!(
        out.stdout_str().contains("No such file"),
        "{}",
        out.stdout_str()
    );
    assert!(out.stdout_str().ends_with("iso-2\n"));

    b.destroy(&h).await.unwrap();
    b.destroy(&h2).await.unwrap();
    assert!(b.list(&Default::default()).await.unwrap().is_empty());
}
