//! Built-in demo backends for `anyedge demo`: tiny HTTP servers that require
//! a PROXY header (v1 or v2, like nginx with `listen ... proxy_protocol`) and
//! answer with the client address they were handed, so
//! `curl http://127.0.0.1:8080/` shows the balancer working end to end.

use std::net::SocketAddr;

use anyedge_proxy::{tlv, Addresses, Decoded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

/// Binds and serves one demo backend until the process exits.
pub async fn serve(name: &'static str, addr: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("demo backend {name}: cannot listen on {addr}: {e}"))?;
    info!(backend = name, %addr, "demo backend listening (expects PROXY protocol)");
    tokio::spawn(async move {
        loop {
            if let Ok((s, peer)) = l.accept().await {
                tokio::spawn(async move {
                    if let Err(e) = conn(name, s).await {
                        debug!(backend = name, %peer, error = %e, "demo connection ended");
                    }
                });
            }
        }
    });
    Ok(())
}

async fn conn(name: &str, mut s: TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // PROXY header first.
    let (client, pop, uid, authority, hlen) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("closed before PROXY header");
        }
        buf.extend_from_slice(&chunk[..n]);
        match anyedge_proxy::decode(&buf, 4096) {
            Ok(Decoded::Incomplete { .. }) if buf.len() < 4096 => continue,
            Ok(Decoded::Complete { header, len }) => {
                let client = match header.addrs {
                    Addresses::Tcp { src, .. } => src.to_string(),
                    Addresses::Unspecified => "unknown (LOCAL)".to_string(),
                };
                let mut pop = String::new();
                for t in header.tlvs().flatten() {
                    if t.kind == tlv::ANYEDGE_POP {
                        pop = String::from_utf8_lossy(t.value).into_owned();
                    }
                }
                let uid = header.unique_id().map(|u| String::from_utf8_lossy(u).into_owned());
                let auth = header.authority().map(|u| String::from_utf8_lossy(u).into_owned());
                break (client, pop, uid, auth, len);
            }
            other => {
                s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 22\r\n\r\nPROXY header required\n")
                    .await?;
                anyhow::bail!("no valid PROXY header: {other:?}");
            }
        }
    };
    buf.drain(..hlen);
    // Then the request head.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 16 * 1024 {
            anyhow::bail!("request head too large");
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(()); // health check over TCP, or client gave up
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = format!(
        "hello from demo backend {name}\nclient address (from PROXY header): {client}\nPoP: {pop}\nunique id: {}\nTLS SNI: {}\n",
        uid.as_deref().unwrap_or("-"),
        authority.as_deref().unwrap_or("-"),
    );
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await?;
    Ok(())
}
