//! A small blocking DNS client for tests: one exchange over UDP or TCP,
//! queries built by `anyedge_dnscompare::build_query`, a zone by AXFR as
//! text (`kdig`, Debian `knot-dnsutils`), and the helpers the DNSSEC tests
//! share (owner names, signature timestamps).
//!
//! ```ignore
//! let q = dns::query(1, "www.example.com.", Rtype::A, &dns::dnssec_ok(false));
//! let answer = dns::exchange(server, &q, false)?;
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyedge_dnscompare::{build_query, EdnsQuery, QueryOptions, Question};
use bytes::Bytes;
use domain::base::iana::Rtype;
use domain::base::Name;

/// How long one try of [`exchange`] waits for its answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The answer to `query` from `server` over UDP: up to 3 tries of `timeout`
/// each; datagrams that do not answer this query (another ID, no QR: a late
/// answer to an earlier query) are skipped.
pub fn exchange_udp(server: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    let id = &query[..2];
    for _attempt in 0..3 {
        sock.send(query)?;
        let mut buf = vec![0u8; 65535];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 12 && &buf[..2] == id && buf[2] & 0x80 != 0 => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Ok(_) => continue, // not ours (a late answer to another query)
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no UDP answer from {server} (3 tries)"),
    ))
}

/// The answer to `query` from `server` over TCP (RFC 1035 4.2.2 framing),
/// each step bounded by `timeout`.
pub fn exchange_tcp(server: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut msg = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query over 65535 octets"))?
        .to_be_bytes()
        .to_vec();
    msg.extend_from_slice(query);
    s.write_all(&msg)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// The answer to `query` over TCP or UDP ([`TIMEOUT`] a try); the error
/// names the transport and the server.
pub fn exchange(server: SocketAddr, query: &[u8], tcp: bool) -> Result<Vec<u8>, String> {
    let r = if tcp {
        exchange_tcp(server, query, TIMEOUT)
    } else {
        exchange_udp(server, query, TIMEOUT)
    };
    r.map_err(|e| format!("{} {server}: {e}", if tcp { "TCP" } else { "UDP" }))
}

/// EDNS with a 1232-octet UDP size and DO, RD as given.
pub fn dnssec_ok(rd: bool) -> QueryOptions {
    QueryOptions {
        rd,
        edns: Some(EdnsQuery {
            udp_size: 1232,
            dnssec_ok: true,
            ..EdnsQuery::default()
        }),
        ..QueryOptions::default()
    }
}

/// The query for `name` (absolute, e.g. `www.example.com.`) and `qtype`.
pub fn query(id: u16, name: &str, qtype: Rtype, opts: &QueryOptions) -> Vec<u8> {
    let name = Name::<Bytes>::from_str(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    build_query(id, &Question::new(name, qtype), opts).unwrap()
}

/// `label` under `apex` (`""`: the apex itself).
pub fn fqdn(label: &str, apex: &str) -> String {
    if label.is_empty() {
        apex.to_string()
    } else {
        format!("{label}.{apex}")
    }
}

/// The zone `apex` by AXFR from `server`, as zone-file text (`kdig`), one
/// record a line, without the closing SOA.
pub fn axfr_text(server: SocketAddr, apex: &str) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            apex,
            "AXFR",
            "+nostats",
            "+noheader",
            "+nocomments",
        ])
        .output()
        .expect("kdig (Debian knot-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .collect();
    lines.pop();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `secs` (Unix time) as `YYYYMMDDHHMMSS` in UTC, the form of RRSIG
/// times in zone files, `ldns-signzone -i/-e` and Unbound's
/// `val-override-date` (by `date -u`).
pub fn utc_stamp(secs: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y%m%d%H%M%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
