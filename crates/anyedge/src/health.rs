//! The I/O of one active health check (TCP or HTTP, with a PROXY header
//! where the backend needs one). The state machine (rise/fall, passive
//! ejection) lives in `anyedge_lb::health`; the load balancer schedules the
//! checks (`lb::run_checker`) and feeds the results in.

use std::net::SocketAddr;

use anyedge_lb::health::{CheckResult, FailReason};
use anyedge_proxy::Addresses;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::config::{CheckKind, HealthCheck, ProxyMode};

/// One check, bounded by the check timeout.
pub async fn check_once(addr: SocketAddr, hc: &HealthCheck, proxy: ProxyMode) -> CheckResult {
    let start = Instant::now();
    match timeout(hc.timeout, check_inner(addr, hc, proxy)).await {
        Ok(Ok(())) => CheckResult::Ok {
            latency: start.elapsed(),
        },
        Ok(Err(reason)) => CheckResult::Failed { reason },
        Err(_) => CheckResult::Failed {
            reason: FailReason::Timeout,
        },
    }
}

async fn check_inner(addr: SocketAddr, hc: &HealthCheck, proxy: ProxyMode) -> Result<(), FailReason> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            FailReason::ConnectRefused
        } else {
            FailReason::Io(e.to_string())
        }
    })?;
    let _ = s.set_nodelay(true);
    let mut out = Vec::with_capacity(256);
    if hc.send_proxy && proxy != ProxyMode::None {
        // The check's own addresses: a backend that requires PROXY (nginx
        // `listen ... proxy_protocol`) accepts it and logs the PoP as client.
        let src = s.local_addr().map_err(|e| FailReason::Io(e.to_string()))?;
        let addrs = Addresses::Tcp { src, dst: addr };
        match proxy {
            ProxyMode::V1 => anyedge_proxy::encode_v1(&mut out, &addrs),
            _ => anyedge_proxy::encode_v2(&mut out, &addrs, &[], false).map_err(|e| FailReason::Io(e.to_string()))?,
        }
    }
    match &hc.kind {
        CheckKind::Tcp => {
            if !out.is_empty() {
                s.write_all(&out).await.map_err(|e| FailReason::Io(e.to_string()))?;
            }
            let _ = s.shutdown().await;
            Ok(())
        }
        CheckKind::Http {
            path,
            host,
            expect_status,
        } => {
            out.extend_from_slice(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: anyedge-health\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            s.write_all(&out).await.map_err(|e| FailReason::Io(e.to_string()))?;
            // Read just the status line.
            let mut buf = [0u8; 512];
            let mut n = 0;
            loop {
                let m = s.read(&mut buf[n..]).await.map_err(|e| FailReason::Io(e.to_string()))?;
                if m == 0 {
                    break;
                }
                n += m;
                if buf[..n].contains(&b'\n') || n == buf.len() {
                    break;
                }
            }
            let status = parse_status(&buf[..n]).ok_or(FailReason::BadResponse)?;
            if status == *expect_status {
                Ok(())
            } else {
                Err(FailReason::BadStatus(status))
            }
        }
    }
}

/// `HTTP/1.x NNN ...` -> NNN
fn parse_status(b: &[u8]) -> Option<u16> {
    let line = b.split(|&c| c == b'\n').next()?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
        assert_eq!(parse_status(b"garbage"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2x0 OK"), None);
    }

    fn http(expect: u16) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Http {
                path: "/healthz".into(),
                host: "localhost".into(),
                expect_status: expect,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
            rise: 1,
            fall: 1,
            passive_fall: 0,
            send_proxy: true,
        }
    }

    #[tokio::test]
    async fn http_check_sends_proxy_then_request() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let srv = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                n += c.read(&mut buf[n..]).await.unwrap();
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            buf.truncate(n);
            buf
        });
        let r = check_once(addr, &http(200), ProxyMode::V2).await;
        assert!(matches!(r, CheckResult::Ok { .. }), "{r:?}");
        let got = srv.await.unwrap();
        match anyedge_proxy::decode(&got, 512).unwrap() {
            anyedge_proxy::Decoded::Complete { len, .. } => {
                assert!(got[len..].starts_with(b"GET /healthz HTTP/1.1\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn http_check_wrong_status_and_silence() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            // first: 503; second: accept and never answer
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).await;
            c.write_all(b"HTTP/1.1 503 Nope\r\n\r\n").await.unwrap();
            let (_c2, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let r = check_once(addr, &http(200), ProxyMode::None).await;
        assert_eq!(
            r,
            CheckResult::Failed {
                reason: FailReason::BadStatus(503)
            }
        );
        let r = check_once(addr, &http(200), ProxyMode::None).await;
        assert_eq!(
            r,
            CheckResult::Failed {
                reason: FailReason::Timeout
            }
        );
    }

    #[tokio::test]
    async fn tcp_check_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut hc = http(200);
        hc.kind = CheckKind::Tcp;
        let r = check_once(addr, &hc, ProxyMode::V2).await;
        assert_eq!(
            r,
            CheckResult::Failed {
                reason: FailReason::ConnectRefused
            }
        );
    }
}
