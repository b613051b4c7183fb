//! Backend discovery I/O: DNS records (A, AAAA, SRV) asked of explicit
//! resolvers and refreshed at their TTL, and a watched backends file. Each
//! good set replaces the source's previous one (`pool::install`); a failure
//! (resolver down, bad records, a bad file) keeps the last good set, is
//! logged (rate limited) and counted in `discovery_errors`.
//!
//! The DNS exchange is ours, the messages are NLnet Labs `domain`'s: its
//! stub resolver (feature `resolv`) sits on its unstable client transport
//! and would pull a second DNS stack in; what discovery needs is one query
//! to a given server with the answer's TTLs and a bound on its size, a
//! dozen lines of UDP with the TCP retry on truncation.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use anyedge_dnscompare::{EdnsQuery, QueryOptions, Question};
use anyedge_lb::pool::{self, Member, Origin};
use bytes::Bytes;
use domain::base::iana::{Rcode, Rtype};
use domain::base::name::Name;
use domain::base::{Message, ToName};
use domain::rdata::{Aaaa, Srv, A};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

use super::Service;
use crate::config::{Discover, RecordType};
use crate::logutil::LogLimiter;

static LOG_DNS: LogLimiter = LogLimiter::new(10);
static LOG_FILE: LogLimiter = LogLimiter::new(10);

/// One query's time limit per resolver (UDP), and for the TCP retry.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);
/// SRV targets missing from the additional section are asked for one by
/// one, at most this many.
const MAX_TARGET_LOOKUPS: usize = 32;
/// How often the watched file is looked at.
const FILE_POLL: Duration = Duration::from_millis(250);
/// The largest backends file read.
const MAX_FILE: u64 = 4 << 20;

/// Follows `d`'s records until the service is gone (or the task aborted).
pub(super) async fn run_dns(svc: Weak<Service>, d: Discover) {
    loop {
        let r = resolve(&d).await;
        let Some(s) = svc.upgrade() else { return };
        let wait = match r.and_then(|(m, ttl)| {
            pool::check_discovered(&m).map_err(|e| e.to_string())?;
            Ok((m, ttl))
        }) {
            Ok((members, ttl)) => {
                super::pool::install(&s, Origin::Dns, members);
                Duration::from_secs(u64::from(ttl)).clamp(d.min_refresh, d.max_refresh)
            }
            Err(e) => {
                s.stats.discovery_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(sup) = LOG_DNS.allow() {
                    warn!(service = %s.name, name = %d.name, error = %e, suppressed = sup,
                          "discovery: DNS lookup failed: keeping the last good backends");
                }
                d.min_refresh.max(Duration::from_millis(500)).min(d.max_refresh)
            }
        };
        drop(s);
        tokio::time::sleep(wait).await;
    }
}

/// The backends `d` names now and the smallest TTL of the records used.
async fn resolve(d: &Discover) -> Result<(Vec<Member>, u32), String> {
    let qtype = match d.rtype {
        RecordType::A => Rtype::A,
        RecordType::Aaaa => Rtype::AAAA,
        RecordType::Srv => Rtype::SRV,
    };
    let mut last = String::from("no resolver");
    for r in &d.resolvers {
        match query(*r, &d.name, qtype).await.and_then(|m| parse(&m, qtype)) {
            Ok(a) => return members(d, *r, a).await,
            Err(e) => last = format!("{r}: {e}"),
        }
    }
    Err(last)
}

/// Records of one answer.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    /// A/AAAA: (address, ttl).
    addrs: Vec<(IpAddr, u32)>,
    /// SRV: (priority, weight, port, target, ttl).
    srv: Vec<(u16, u16, u16, String, u32)>,
    /// Addresses of names in the additional section: (owner, address, ttl).
    glue: Vec<(String, IpAddr, u32)>,
}

fn lower(n: &impl ToName) -> String {
    let s = n.to_name::<Vec<u8>>().to_string().to_ascii_lowercase();
    if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// Parses a response to a `qtype` query: NOERROR with at least one record
/// of the type (an empty answer is refused like a failure: the pool never
/// empties because the records vanished for a moment), at most
/// `MAX_DISCOVERED` of them.
fn parse(raw: &[u8], qtype: Rtype) -> Result<Answer, String> {
    let msg = Message::from_octets(raw).map_err(|e| format!("malformed answer: {e}"))?;
    let rcode = msg.header().rcode();
    if rcode != Rcode::NOERROR {
        return Err(format!("rcode {rcode}"));
    }
    let mut a = Answer::default();
    let section = msg.answer().map_err(|e| format!("malformed answer: {e}"))?;
    let n = section.count();
    if n > pool::MAX_DISCOVERED {
        return Err(format!("{n} records exceed the bound of {}", pool::MAX_DISCOVERED));
    }
    let section = msg.answer().map_err(|e| format!("malformed answer: {e}"))?;
    match qtype {
        Rtype::A => {
            for r in section.limit_to::<A>() {
                let r = r.map_err(|e| format!("malformed record: {e}"))?;
                a.addrs.push((IpAddr::V4(r.data().addr()), r.ttl().as_secs()));
            }
        }
        Rtype::AAAA => {
            for r in section.limit_to::<Aaaa>() {
                let r = r.map_err(|e| format!("malformed record: {e}"))?;
                a.addrs.push((IpAddr::V6(r.data().addr()), r.ttl().as_secs()));
            }
        }
        _ => {
            for r in section.limit_to::<Srv<_>>() {
                let r = r.map_err(|e| format!("malformed record: {e}"))?;
                let s = r.data();
                a.srv
                    .push((s.priority(), s.weight(), s.port(), lower(s.target()), r.ttl().as_secs()));
            }
            let add = msg.additional().map_err(|e| format!("malformed answer: {e}"))?;
            for r in add.limit_to::<A>().flatten() {
                a.glue
                    .push((lower(&r.owner()), IpAddr::V4(r.data().addr()), r.ttl().as_secs()));
            }
            let add = msg.additional().map_err(|e| format!("malformed answer: {e}"))?;
            for r in add.limit_to::<Aaaa>().flatten() {
                a.glue
                    .push((lower(&r.owner()), IpAddr::V6(r.data().addr()), r.ttl().as_secs()));
            }
        }
    }
    if a.addrs.is_empty() && a.srv.is_empty() {
        return Err("no records (keeping the last good set)".into());
    }
    Ok(a)
}

/// The pool members of an answer: A/AAAA records give `IP:port` with the
/// configured port and weight; SRV records of the lowest priority give
/// each target's addresses with the record's port and weight (targets not
/// in the additional section are asked of `resolver`).
async fn members(d: &Discover, resolver: SocketAddr, a: Answer) -> Result<(Vec<Member>, u32), String> {
    let mut ttl = u32::MAX;
    let mut out: Vec<Member> = Vec::new();
    let push = |ip: IpAddr, port: u16, weight: u32, out: &mut Vec<Member>| {
        let address = SocketAddr::new(ip, port);
        let name = pool::derived_name(address);
        match out.iter_mut().find(|m| m.name == name) {
            // the same address through two targets: one backend
            Some(m) => m.weight = m.weight.saturating_add(weight).min(pool::MAX_WEIGHT),
            None => out.push(Member {
                name,
                address,
                weight,
                origin: Origin::Dns,
            }),
        }
    };
    if d.rtype != RecordType::Srv {
        for (ip, t) in a.addrs {
            ttl = ttl.min(t);
            push(ip, d.port, d.weight, &mut out);
        }
        return Ok((out, ttl));
    }
    let Some(prio) = a.srv.iter().map(|s| s.0).min() else {
        return Err("no SRV records".into());
    };
    let mut lookups = 0;
    for (p, w, port, target, t) in &a.srv {
        if *p != prio {
            continue;
        }
        if *port == 0 {
            return Err(format!("SRV target {target} with port 0"));
        }
        ttl = ttl.min(*t);
        // RFC 2782: weight 0 is "very small chance"; a unit of 1 here
        let weight = u32::from(*w).max(1);
        let mut addrs: Vec<(IpAddr, u32)> = a.glue.iter().filter(|g| &g.0 == target).map(|g| (g.1, g.2)).collect();
        if addrs.is_empty() {
            lookups += 1;
            if lookups > MAX_TARGET_LOOKUPS {
                return Err(format!(
                    "more than {MAX_TARGET_LOOKUPS} SRV targets without addresses in the answer"
                ));
            }
            for qt in [Rtype::A, Rtype::AAAA] {
                if let Ok(ans) = query(resolver, target, qt).await.and_then(|m| parse(&m, qt)) {
                    addrs.extend(ans.addrs);
                }
            }
            if addrs.is_empty() {
                return Err(format!("SRV target {target} has no address"));
            }
        }
        for (ip, t) in addrs {
            ttl = ttl.min(t);
            push(ip, *port, weight, &mut out);
        }
        if out.len() > pool::MAX_DISCOVERED {
            return Err(format!("more than {} backends", pool::MAX_DISCOVERED));
        }
    }
    Ok((out, ttl))
}

/// The query: RD, EDNS with a 1232-octet UDP size (the query builder
/// `anyedge dns compare` and the tests use too).
fn build_query(id: u16, name: &str, qtype: Rtype) -> Result<Vec<u8>, String> {
    let qname: Name<Bytes> = name.parse().map_err(|e| format!("bad name {name:?}: {e:?}"))?;
    let opts = QueryOptions {
        rd: true,
        edns: Some(EdnsQuery::default()),
        ..QueryOptions::default()
    };
    anyedge_dnscompare::build_query(id, &Question::new(qname, qtype), &opts).map_err(|e| e.to_string())
}

/// Checks that `raw` answers query `id` about `name`/`qtype`.
fn answers(raw: &[u8], id: u16, name: &str, qtype: Rtype) -> bool {
    let Ok(m) = Message::from_octets(raw) else {
        return false;
    };
    m.header().qr()
        && m.header().id() == id
        && m.first_question()
            .is_some_and(|q| q.qtype() == qtype && lower(q.qname()) == name.to_ascii_lowercase())
}

/// One query to `server`: UDP, then TCP if the answer was truncated.
async fn query(server: SocketAddr, name: &str, qtype: Rtype) -> Result<Vec<u8>, String> {
    let name = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    // (RandomState is seeded from the OS's randomness per process)
    let id = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish() as u16
    };
    let q = build_query(id, &name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| e.to_string())?;
    sock.send(&q).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let udp = tokio::time::timeout(QUERY_TIMEOUT, async {
        loop {
            let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
            // (anything else is ignored: a stray or spoofed datagram)
            if answers(&buf[..n], id, &name, qtype) {
                return Ok::<_, String>(buf[..n].to_vec());
            }
        }
    })
    .await
    .map_err(|_| "timed out".to_string())??;
    let truncated = Message::from_octets(&udp[..]).is_ok_and(|m| m.header().tc());
    if !truncated {
        return Ok(udp);
    }
    tokio::time::timeout(QUERY_TIMEOUT, async {
        let mut s = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        let len = u16::try_from(q.len()).map_err(|e| e.to_string())?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).await.map_err(|e| format!("TCP: {e}"))?;
        let n = s.read_u16().await.map_err(|e| format!("TCP: {e}"))?;
        let mut m = vec![0u8; usize::from(n)];
        s.read_exact(&mut m).await.map_err(|e| format!("TCP: {e}"))?;
        if !answers(&m, id, &name, qtype) {
            return Err("TCP: not the answer to the query".to_string());
        }
        Ok(m)
    })
    .await
    .map_err(|_| "TCP: timed out".to_string())?
}

// ---------------------------------------------------------------- the file

/// Watches `path` until the service is gone: each version (by modification
/// time, inode and size; an atomic rename gives a new inode) is read, and a
/// good one replaces the file's backends. A file that is missing or bad
/// keeps the last good set.
pub(super) async fn run_file(svc: Weak<Service>, path: PathBuf) {
    let mut seen: Option<(std::time::SystemTime, u64, u64)> = None;
    let mut missing_said = false;
    loop {
        let Some(s) = svc.upgrade() else { return };
        match std::fs::metadata(&path) {
            Ok(md) => {
                use std::os::unix::fs::MetadataExt;
                missing_said = false;
                let id = (md.modified().unwrap_or(std::time::UNIX_EPOCH), md.ino(), md.len());
                if seen != Some(id) {
                    seen = Some(id);
                    let r = if md.len() > MAX_FILE {
                        Err(format!("larger than {MAX_FILE} bytes"))
                    } else {
                        std::fs::read_to_string(&path)
                            .map_err(|e| e.to_string())
                            .and_then(|t| parse_file(&t, &path))
                    };
                    match r {
                        Ok(m) => {
                            super::pool::install(&s, Origin::File, m);
                        }
                        Err(e) => {
                            s.stats.discovery_errors.fetch_add(1, Ordering::Relaxed);
                            if let Some(sup) = LOG_FILE.allow() {
                                warn!(service = %s.name, file = %path.display(), error = %e, suppressed = sup,
                                      "discovery: backends file refused: keeping the last good backends");
                            }
                        }
                    }
                }
            }
            Err(e) => {
                if !missing_said {
                    missing_said = true;
                    s.stats.discovery_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(service = %s.name, file = %path.display(), error = %e,
                          "discovery: cannot read the backends file: keeping the last good backends");
                }
            }
        }
        drop(s);
        tokio::time::sleep(FILE_POLL).await;
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    #[serde(default)]
    name: Option<String>,
    address: String,
    #[serde(default = "one")]
    weight: u32,
}
fn one() -> u32 {
    1
}
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    backend: Vec<FileBackend>,
}

/// A backends file: JSON (`[{"name": "n1", "address": "192.0.2.1:443",
/// "weight": 2}, ...]`, or `{"backends": [...]}`) or TOML
/// (`[[backend]]` tables with the same keys); `name` defaults to the
/// address. Checked like DNS answers (addresses, duplicates, weights,
/// size).
pub(super) fn parse_file(text: &str, path: &std::path::Path) -> Result<Vec<Member>, String> {
    // by the extension; otherwise by the first characters (TOML's `[[`)
    let t = text.trim_start();
    let is_json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("toml") => false,
        _ => t.starts_with('{') || (t.starts_with('[') && !t.starts_with("[[")),
    };
    let list: Vec<FileBackend> = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum J {
            List(Vec<FileBackend>),
            Obj { backends: Vec<FileBackend> },
        }
        match serde_json::from_str::<J>(text).map_err(|e| format!("JSON: {e}"))? {
            J::List(l) | J::Obj { backends: l } => l,
        }
    } else {
        toml::from_str::<FileToml>(text)
            .map_err(|e| format!("TOML: {e}"))?
            .backend
    };
    if list.len() > pool::MAX_DISCOVERED {
        return Err(format!(
            "{} backends exceed the bound of {}",
            list.len(),
            pool::MAX_DISCOVERED
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, b) in list.into_iter().enumerate() {
        let address: SocketAddr = b
            .address
            .parse()
            .map_err(|_| format!("backend {i}: {:?} is not IP:PORT", b.address))?;
        let name = b.name.unwrap_or_else(|| pool::derived_name(address));
        super::pool::check_runtime_name(&name).map_err(|e| format!("backend {i}: {e}"))?;
        out.push(Member {
            name,
            address,
            weight: b.weight,
            origin: Origin::File,
        });
    }
    pool::check_discovered(&out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::base::{MessageBuilder, Ttl};

    #[test]
    fn the_query_asks_with_rd_and_a_1232_octet_edns_size() {
        let mut want = vec![0, 7, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        want.extend_from_slice(b"\x05nodes\x07example\x00");
        want.extend_from_slice(&[0, 33, 0, 1]);
        // OPT: root owner, UDP size 1232, version 0, DO clear, no options
        want.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(build_query(7, "nodes.example.", Rtype::SRV).unwrap(), want);
        assert!(build_query(7, "a..b.", Rtype::A).is_err());
    }

    fn response(qtype: Rtype, f: impl FnOnce(&mut domain::base::message_builder::AnswerBuilder<Vec<u8>>)) -> Vec<u8> {
        let q = build_query(7, "nodes.example.", qtype).unwrap();
        let req = Message::from_octets(q).unwrap();
        let mut ab = MessageBuilder::new_vec().start_answer(&req, Rcode::NOERROR).unwrap();
        f(&mut ab);
        ab.finish()
    }

    #[test]
    fn a_answer_gives_addresses_and_ttls() {
        let name: Name<Vec<u8>> = "nodes.example.".parse().unwrap();
        let raw = response(Rtype::A, |ab| {
            ab.push((&name, Ttl::from_secs(30), A::from_octets(192, 0, 2, 1)))
                .unwrap();
            ab.push((&name, Ttl::from_secs(5), A::from_octets(192, 0, 2, 2)))
                .unwrap();
        });
        assert!(answers(&raw, 7, "nodes.example.", Rtype::A));
        assert!(!answers(&raw, 8, "nodes.example.", Rtype::A));
        assert!(!answers(&raw, 7, "other.example.", Rtype::A));
        let a = parse(&raw, Rtype::A).unwrap();
        assert_eq!(
            a.addrs,
            [("192.0.2.1".parse().unwrap(), 30), ("192.0.2.2".parse().unwrap(), 5)]
        );
        // an empty answer is not an empty pool
        let raw = response(Rtype::A, |_| {});
        assert!(parse(&raw, Rtype::A).unwrap_err().contains("no records"));
    }

    #[test]
    fn too_many_records_are_refused() {
        let name: Name<Vec<u8>> = "nodes.example.".parse().unwrap();
        let raw = response(Rtype::A, |ab| {
            for i in 0..(pool::MAX_DISCOVERED as u32 + 1) {
                let [_, _, x, y] = i.to_be_bytes();
                ab.push((&name, Ttl::from_secs(30), A::from_octets(198, 18, x, y)))
                    .unwrap();
            }
        });
        assert!(parse(&raw, Rtype::A).unwrap_err().contains("exceed the bound"));
    }

    #[tokio::test]
    async fn srv_answer_lowest_priority_with_glue() {
        let name: Name<Vec<u8>> = "nodes.example.".parse().unwrap();
        let t1: Name<Vec<u8>> = "n1.example.".parse().unwrap();
        let t2: Name<Vec<u8>> = "n2.example.".parse().unwrap();
        let raw = {
            let q = build_query(7, "nodes.example.", Rtype::SRV).unwrap();
            let req = Message::from_octets(q).unwrap();
            let mut ab = MessageBuilder::new_vec().start_answer(&req, Rcode::NOERROR).unwrap();
            ab.push((&name, Ttl::from_secs(20), Srv::new(10, 3, 8443, t1.clone())))
                .unwrap();
            ab.push((&name, Ttl::from_secs(20), Srv::new(20, 1, 9443, t2.clone())))
                .unwrap();
            let mut add = ab.additional();
            add.push((&t1, Ttl::from_secs(10), A::from_octets(192, 0, 2, 11)))
                .unwrap();
            add.push((&t2, Ttl::from_secs(10), A::from_octets(192, 0, 2, 12)))
                .unwrap();
            add.finish()
        };
        let a = parse(&raw, Rtype::SRV).unwrap();
        let d = Discover {
            name: "nodes.example.".into(),
            rtype: RecordType::Srv,
            port: 0,
            resolvers: vec!["192.0.2.53:53".parse().unwrap()],
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(60),
            weight: 1,
        };
        let (m, ttl) = members(&d, d.resolvers[0], a).await.unwrap();
        assert_eq!(ttl, 10);
        assert_eq!(m.len(), 1, "only the lowest priority: {m:?}");
        assert_eq!(m[0].name, "192.0.2.11:8443");
        assert_eq!(m[0].weight, 3);
    }

    #[test]
    fn files_json_and_toml() {
        let p = std::path::Path::new("/x/backends.json");
        let m = parse_file(
            r#"[{"name":"n1","address":"192.0.2.1:443","weight":2},{"address":"192.0.2.2:443"}]"#,
            p,
        )
        .unwrap();
        assert_eq!(m[1].name, "192.0.2.2:443");
        assert_eq!(m[0].weight, 2);
        let m2 = parse_file(
            "[[backend]]\nname = \"n1\"\naddress = \"192.0.2.1:443\"\nweight = 2\n[[backend]]\naddress = \"192.0.2.2:443\"\n",
            std::path::Path::new("/x/b.toml"),
        )
        .unwrap();
        assert_eq!(m, m2);
        for bad in [
            r#"[{"name":"n1","address":"192.0.2.1:443"},{"name":"n1","address":"192.0.2.2:443"}]"#,
            r#"[{"address":"192.0.2.1:443","weight":10001}]"#,
            r#"[{"address":"192.0.2.1:443","weight":-1}]"#,
            r#"[{"address":"127.0.0.1:443"}]"#,
            r#"[{"address":"nodes:443"}]"#,
            r#"[{"address":"192.0.2.1:443","wieght":1}]"#,
            r#"[{"address":"192.0.2.1:443""#,
        ] {
            assert!(parse_file(bad, p).is_err(), "{bad}");
        }
    }
}
