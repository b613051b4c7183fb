//! A real TLS client (`openssl s_client`) through anyedge: the balancer never
//! decrypts anything, yet the backend receives the SNI as the PROXY v2
//! AUTHORITY TLV, plus UNIQUE_ID, the PoP TLV and a valid CRC32C.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

#[test]
fn sni_from_real_client_hello_reaches_backend_as_authority_tlv() {
    // Backend: record the PROXY header, then close (no TLS server here: the
    // handshake is not needed to see what the balancer forwarded).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Ok(anyedge_proxy::Decoded::Complete { len, .. }) = anyedge_proxy::decode(&buf, 4096) {
                        if buf.len() > len {
                            break; // header and the first client bytes
                        }
                    }
                }
                let _ = tx.send(buf);
            });
        }
    });
    let port = free_port();
    let lb = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = format!(
        r#"
[pop]
name = "fra1"
[[service]]
name = "tls"
listen = ["{lb}"]
proxy_crc32c = true
{health}
"#,
        health = health_and_backend(backend)
    );
    let e = Anyedge::start(&cfg, lb);
    e.wait_log("backend up", 1, Duration::from_secs(5));

    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &lb.to_string(),
            "-servername",
            "shop.example.test",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client (apt-get install openssl)");
    // skip the health checks' empty connections
    let got = loop {
        let b = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("backend got a connection");
        if !b.is_empty() {
            break b;
        }
    };
    let _ = client.kill();
    let _ = client.wait();

    let (header, len) = match anyedge_proxy::decode(&got, 4096).unwrap() {
        anyedge_proxy::Decoded::Complete { header, len } => (header, len),
        other => panic!("{other:?}"),
    };
    assert_eq!(header.authority(), Some(&b"shop.example.test"[..]));
    assert!(header.unique_id().unwrap().starts_with(b"fra1-"));
    let pop = header
        .tlvs()
        .flatten()
        .find(|t| t.kind == anyedge_proxy::tlv::ANYEDGE_POP)
        .unwrap();
    assert_eq!(pop.value, b"fra1");
    assert!(header.tlvs().flatten().any(|t| t.kind == anyedge_proxy::tlv::CRC32C));
    // the ClientHello follows the header unchanged (a TLS handshake record)
    assert_eq!(got[len], 0x16, "TLS handshake record after the header");
    assert_eq!(
        anyedge_proxy::sni::peek(&got[len..]),
        anyedge_proxy::sni::Peek::Sni("shop.example.test")
    );
}
