//! Listening on anycast addresses the host does not have yet (IP_FREEBIND):
//! the daemon starts, says so once per address, and serves as soon as the
//! address is added to `lo` (as at boot, when the network comes up after
//! the daemon). In a network namespace, with 198.18.0.0/15 and 2001:db8::/32.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyedge_netns::Netns;
use common::*;

/// GET / over a fresh connection; the body.
fn http_get(to: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r)
}

#[test]
fn listeners_on_addresses_added_after_start() {
    let ns = Netns::unique("fb").unwrap();
    ns.enter(|| {
        let l = TcpListener::bind("127.0.0.1:8080").unwrap();
        serve_proxied(l, "from-backend\n".into(), |_| {});
    });
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("example.test.zone");
    std::fs::write(
        &zone,
        "$ORIGIN example.test.\n$TTL 300\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 198.18.77.1\nwww A 192.0.2.80\n",
    )
    .unwrap();
    let cfg = format!(
        r#"
[pop]
name = "fb"
[admin]
listen = "127.0.0.1:9180"
[[service]]
name = "web"
listen = ["198.18.77.1:80", "[2001:db8:77::1]:80"]
{}
[dns]
listen = ["198.18.77.1:53"]
[[dns.zone]]
name = "example.test"
file = "{}"
"#,
        health_and_backend("127.0.0.1:8080"),
        zone.display()
    );
    // nothing listens on the anycast addresses reachably yet: wait for the
    // admin API instead
    let e = Anyedge::start_in(&ns, &cfg, "127.0.0.1:9180".parse().unwrap());
    e.wait_log("backend up", 1, Duration::from_secs(5));
    e.wait_log("does not have (yet)", 3, Duration::from_secs(1));
    let log = e.log();
    for a in ["198.18.77.1:80", "[2001:db8:77::1]:80", "198.18.77.1:53"] {
        assert!(log.contains(&format!("addr={a}")), "warned about {a}: {log}");
    }
    assert!(
        ns.enter(|| http_get("198.18.77.1:80".parse().unwrap())).is_err(),
        "unreachable before the address exists"
    );

    ns.ip(&["addr", "add", "198.18.77.1/32", "dev", "lo"]).unwrap();
    ns.ip(&["addr", "add", "2001:db8:77::1/128", "dev", "lo", "nodad"])
        .unwrap();
    for to in ["198.18.77.1:80", "[2001:db8:77::1]:80"] {
        let to: SocketAddr = to.parse().unwrap();
        let r = ns.enter(move || http_get(to)).unwrap_or_else(|e| panic!("{to}: {e}"));
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("from-backend\n"),
            "{to}: {r}"
        );
    }
    let answer = ns.enter(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(&dns_query(0x4242, "www.example.test", 1, false, &[]), "198.18.77.1:53")
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    });
    let (a, from) = answer;
    assert_eq!(
        from,
        "198.18.77.1:53".parse().unwrap(),
        "answered from the anycast address"
    );
    assert_eq!(&a[..2], &[0x42, 0x42]);
    assert_eq!(a[3] & 0x0f, 0, "NOERROR");
    assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
    assert!(a.ends_with(&[192, 0, 2, 80]), "{a:?}");
    // one warning per address, and none after the addresses exist
    assert_eq!(e.log().matches("does not have (yet)").count(), 3, "{}", e.log());
}
