//! The CLI as an operator uses it: `demo`, `check`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn demo_shows_client_address_handed_over_by_proxy_v2() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .arg("demo")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let lb: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    wait_port(lb, Duration::from_secs(10));
    let read_log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let start = std::time::Instant::now();
    while read_log().matches("backend up").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (port, body) = get(lb).unwrap();
    // IPv6 listener, IPv6 client address in the PROXY v2 header
    let v6 = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("[::1]:8080").unwrap();
        let p6 = s.local_addr().unwrap().port();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        (p6, r)
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        body.contains(&format!("client address (from PROXY header): 127.0.0.1:{port}")),
        "{body}"
    );
    assert!(body.contains("PoP: demo-pop"), "{body}");
    assert!(
        v6.1.contains(&format!("client address (from PROXY header): [::1]:{}", v6.0)),
        "{}",
        v6.1
    );
    assert!(body.contains("unique id: demo-pop-"), "{body}");
}

#[test]
fn check_accepts_the_example_and_names_line_and_field_on_error() {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/anyedge.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["check", "-c", ex])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pop]\nname = \"x\"\n\n[[service]]\nname = \"web\"\nlisten = [\"127.0.0.1:1\"]\n[[service.backend]]\nname = \"a\"\naddress = \"nowhere:80\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:9:", bad.display())), "{err}");
    assert!(err.contains("backend[0].address"), "{err}");
}
