//! A port someone else already listens on with SO_REUSEPORT: our listeners
//! use it too (one socket per worker, and the upgrade binds next to the old
//! process), so the bind used to succeed and the kernel split the traffic
//! between anyedge and the other program (65 of 100 admin requests were
//! answered by nginx). The daemon must refuse to start instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use socket2::{Domain, Socket, Type};

/// A socket of "another program" on `addr` with SO_REUSEPORT (TCP: listening).
fn squat(addr: SocketAddr, udp: bool) -> Socket {
    let s = Socket::new(
        Domain::for_address(addr),
        if udp { Type::DGRAM } else { Type::STREAM },
        None,
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&addr.into()).unwrap();
    if !udp {
        s.listen(16).unwrap();
    }
    s
}

fn config(lb: u16, backend: u16, extra: &str) -> String {
    format!(
        "[pop]\nname = \"clash\"\n{extra}\n[[service]]\nname = \"web\"\nlisten = [\"127.0.0.1:{lb}\"]\n\
         [[service.backend]]\nname = \"a\"\naddress = \"127.0.0.1:{backend}\"\n"
    )
}

/// Starts anyedge and expects it to exit with failure; returns its log.
fn refused(config: &str) -> String {
    let mut a = Anyedge::spawn(std::process::Command::new(env!("CARGO_BIN_EXE_anyedge")), config);
    let st = a.wait_exit(Duration::from_secs(20));
    let log = a.log();
    assert!(
        st.is_some_and(|s| !s.success()),
        "anyedge did not refuse to start ({st:?}):\n{log}"
    );
    log
}

#[test]
fn refuses_a_service_port_another_socket_holds_with_reuseport() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let _other = squat(addr, false);
    let log = refused(&config(port, free_port(), ""));
    assert!(
        log.contains(&format!(
            "service \"web\": cannot listen on {addr}: tcp {addr} is already in use by another process"
        )),
        "{log}"
    );
}

#[test]
fn refuses_a_service_port_nginx_holds_with_reuseport() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\nhttp {{\n access_log off;\n client_body_temp_path {d}/tmp/body;\n\
             proxy_temp_path {d}/tmp/proxy;\n fastcgi_temp_path {d}/tmp/fastcgi;\n uwsgi_temp_path {d}/tmp/uwsgi;\n\
             scgi_temp_path {d}/tmp/scgi;\n server {{ listen 127.0.0.1:{port} reuseport; return 200 \"nginx\\n\"; }}\n}}\n"
        ),
    )
    .unwrap();
    let mut nginx = Command::new(nginx_bin())
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    wait_port(addr, Duration::from_secs(10));
    let log = refused(&config(port, free_port(), ""));
    let _ = nginx.kill();
    let _ = nginx.wait();
    assert!(log.contains("is already in use by another process"), "{log}");
}

#[test]
fn refuses_admin_and_dns_ports_another_socket_holds() {
    let (lb, admin) = (free_port(), free_port());
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    let other = squat(admin_addr, false);
    let log = refused(&config(
        lb,
        free_port(),
        &format!("[admin]\nlisten = \"{admin_addr}\"\n"),
    ));
    assert!(
        log.contains(&format!(
            "admin API: cannot listen on {admin_addr}: tcp {admin_addr} is already in use"
        )),
        "{log}"
    );
    drop(other);

    // DNS: someone else's UDP socket on the port (nothing on TCP)
    let dns_port = free_port();
    let dns_addr: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    let _udp = squat(dns_addr, true);
    let log = refused(&format!(
        "{}[dns]\nlisten = [\"{dns_addr}\"]\n",
        config(lb, free_port(), "")
    ));
    assert!(
        log.contains(&format!(
            "dns: cannot bind {dns_addr}: udp {dns_addr} is already in use"
        )),
        "{log}"
    );
}

#[test]
fn reload_refuses_a_new_address_another_socket_holds_and_keeps_serving() {
    let (lb, taken) = (free_port(), free_port());
    let lb_addr: SocketAddr = ([127, 0, 0, 1], lb).into();
    let taken_addr: SocketAddr = ([127, 0, 0, 1], taken).into();
    let backend = free_port();
    let e = Anyedge::start(&config(lb, backend, ""), lb_addr);
    let _other = squat(taken_addr, false);
    e.rewrite_config(&config(lb, backend, "").replace(
        &format!("listen = [\"{lb_addr}\"]"),
        &format!("listen = [\"{lb_addr}\", \"{taken_addr}\"]"),
    ));
    e.signal(nix::sys::signal::Signal::SIGHUP);
    e.wait_log("reload rejected", 1, Duration::from_secs(10));
    assert!(
        e.log()
            .contains(&format!("tcp {taken_addr} is already in use by another process")),
        "{}",
        e.log()
    );
    // the running configuration stays: still listening where it was
    std::net::TcpStream::connect_timeout(&lb_addr, Duration::from_secs(2)).unwrap();
}

/// Ours is not "another process": the new process of a binary upgrade binds
/// the admin address next to the old one's socket, and takes over the
/// service listeners; both keep working.
#[test]
fn binary_upgrade_with_an_admin_api_still_binds_next_to_the_old_process() {
    let (lb, admin) = (free_port(), free_port());
    let lb_addr: SocketAddr = ([127, 0, 0, 1], lb).into();
    let admin_addr: SocketAddr = ([127, 0, 0, 1], admin).into();
    // a backend that passes TCP checks, so the upgrade need not wait for it
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let mut e = Anyedge::start(
        &config(lb, backend_port, &format!("[admin]\nlisten = \"{admin_addr}\"\n")),
        admin_addr,
    );
    e.signal(nix::sys::signal::Signal::SIGUSR2);
    e.wait_log("upgrade: new process ready", 1, Duration::from_secs(60));
    let new = e.new_pid(1);
    let old_exit = e.wait_exit(Duration::from_secs(60));
    let (status, _) = http(admin_addr, "GET", "/api/v1/status", None);
    let lb_open = std::net::TcpStream::connect_timeout(&lb_addr, Duration::from_secs(2)).is_ok();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), nix::sys::signal::Signal::SIGKILL);
    assert!(old_exit.is_some_and(|s| s.success()), "{old_exit:?}\n{}", e.log());
    assert_eq!(status, 200, "{}", e.log());
    assert!(lb_open, "{}", e.log());
    assert!(!e.log().contains("already in use"), "{}", e.log());
}
