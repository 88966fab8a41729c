//! Service-manager integration: systemd socket activation, LISTEN_FDS hygiene, unit files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{field, Daemon, BIN};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `tool` is installed. In CI (`CI` set) a missing tool is a failure, not a skip:
/// `make test` installs it.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(found || std::env::var_os("CI").is_none(), "{tool} is missing in CI; `make deps` installs it");
    found
}

#[tokio::test]
async fn systemd_socket_activation_starts_the_daemon_on_first_connection() {
    if !have("systemd-socket-activate") {
        eprintln!("skipped: systemd-socket-activate not installed (Debian package `systemd`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = run.join("sock");
    let log_path = dir.path().join("activate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let home = dir.path().to_str().unwrap();
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .args(["-E", &format!("HOME={home}"), "-E", &format!("XDG_CONFIG_HOME={home}/config")])
        .args([BIN, "--log-level", "debug", "serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("LLM_SIDECAR_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "systemd-socket-activate did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !std::fs::read_to_string(&log_path).unwrap().contains("listening socket="),
        "daemon started before any client"
    );
    // The socket file exists from bind(); connections are refused until listen(), just after.
    let client = loop {
        match llm_sidecar::rpc::Client::connect(&sock).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let info =
        tokio::time::timeout(Duration::from_secs(20), client.call("daemon.info", vec![])).await.unwrap().unwrap();
    assert_eq!(field(&info, "socket").as_str(), Some(sock.to_str().unwrap()));
    let _ = activator.kill();
    let _ = activator.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("listening"), "{log}");
}

#[tokio::test]
async fn listen_fds_meant_for_another_process_are_ignored() {
    let d = Daemon::start_with("", &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]);
    let c = d.client().await;
    let info = c.call("daemon.info", vec![]).await.unwrap();
    assert_eq!(field(&info, "socket").as_str(), Some(d.socket.to_str().unwrap()));
    assert!(d.logs().contains("ignoring LISTEN_FDS"), "{}", d.logs());
}

#[test]
fn service_install_writes_units_that_systemd_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| common::command(dir.path()).args(args).output().unwrap();
    let out = run(&["service", "install"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl --user daemon-reload && systemctl --user enable --now llm-sidecar.socket"),
        "{stdout}"
    );
    let unit_dir = dir.path().join("config/systemd/user");
    let service = std::fs::read_to_string(unit_dir.join("llm-sidecar.service")).unwrap();
    let real_bin = std::fs::canonicalize(BIN).unwrap();
    assert!(service.contains(&format!("ExecStart={} serve", real_bin.display())), "{service}");
    assert!(
        service.contains("Type=notify")
            && service.contains("NoNewPrivileges=yes")
            && service.contains("ProtectSystem=strict")
    );
    // `systemctl --user reload` sends SIGHUP, which re-reads the config.
    assert!(service.contains("ExecReload=/bin/kill -HUP $MAINPID"), "{service}");
    let socket = std::fs::read_to_string(unit_dir.join("llm-sidecar.socket")).unwrap();
    assert!(
        socket.contains("ListenStream=%t/llm-sidecar/sock")
            && socket.contains("SocketMode=0600")
            && socket.contains("DirectoryMode=0700")
    );

    let status = run(&["service", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("installed"));

    if have("systemd-analyze") {
        let rt = dir.path().join("rt");
        std::fs::create_dir(&rt).unwrap();
        std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--user"])
            .arg(unit_dir.join("llm-sidecar.socket"))
            .arg(unit_dir.join("llm-sidecar.service"))
            .env("XDG_RUNTIME_DIR", &rt)
            .output()
            .unwrap();
        let complaints = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    } else {
        eprintln!("systemd-analyze not installed: unit verification skipped");
    }

    let out = run(&["service", "uninstall"]);
    assert!(out.status.success());
    assert!(!unit_dir.join("llm-sidecar.service").exists() && !unit_dir.join("llm-sidecar.socket").exists());
}

#[tokio::test]
async fn tells_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut d = Daemon::prepare("", &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    d.spawn();
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success());
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
