//! `anyedge dns compare`: ask two name servers the same questions about a
//! zone and print every difference between their answers. Before moving a
//! zone to anyedge, run it with the current server as `--server` and anyedge
//! as `--ours`.
//!
//! The questions come from the zone (`--file`, or an AXFR from `--ours`):
//! see `anyedge_dnscompare::ZoneIndex::questions`. Each is sent to both
//! servers with the same message (UDP, retried over TCP when either answer is
//! truncated; or TCP only with `--tcp`), a bounded number at a time, and the
//! answers are compared with `anyedge_dnscompare`.
//!
//! Exit status: 0 when every answer matched, 1 when some differ, 2 when a
//! server did not answer or the setup failed (`run` returning `Err`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyedge_dnscompare::{
    add_axfr_message, axfr_query, build_query, compare_with, Difference, EdnsQuery, Options, QueryOptions, Question,
    ZoneIndex,
};
use anyhow::{bail, Context};
use bytes::Bytes;
use domain::base::Name;

/// Compare two servers' answers for every question about a zone.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The zone's apex, e.g. `example.com.`.
    #[arg(long)]
    pub zone: String,
    /// The reference server (the one serving the zone today): ADDR[:PORT],
    /// port 53 when omitted (IPv6 with a port: `[2001:db8::1]:53`).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub server: String,
    /// The server under test (anyedge): ADDR[:PORT].
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub ours: String,
    /// Zone file to generate the questions from (`$INCLUDE` not supported).
    /// Without it the zone is transferred (AXFR over TCP) from `--axfr-from`.
    #[arg(long, value_name = "ZONEFILE")]
    pub file: Option<PathBuf>,
    /// Where to transfer the zone from when there is no `--file` (default:
    /// the `--ours` address).
    #[arg(long, value_name = "ADDR[:PORT]", conflicts_with = "file")]
    pub axfr_from: Option<String>,
    /// Ask over TCP only (default: UDP, and TCP again when truncated).
    #[arg(long)]
    pub tcp: bool,
    /// Set the DO bit (DNSSEC OK) in the queries.
    #[arg(long)]
    pub dnssec_ok: bool,
    /// Send queries without EDNS (no OPT record; 512-octet UDP answers).
    #[arg(long, conflicts_with = "dnssec_ok")]
    pub no_edns: bool,
    /// EDNS UDP payload size offered.
    #[arg(long, default_value_t = 1232, value_name = "OCTETS")]
    pub udp_size: u16,
    /// How long to wait for each answer (UDP is tried 3 times).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Questions in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Stop after this many unanswered questions (a server that is down
    /// would otherwise cost every question its timeouts); 0: never.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_errors: usize,
    /// Do not report TTL differences.
    #[arg(long)]
    pub ignore_ttl: bool,
    /// Seed of the random labels in the negative probes (same seed, same
    /// questions).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs the comparison and prints the differences on stdout. `Ok(code)` is
/// the exit status (0 same, 1 different, 2 some question unanswered); `Err`
/// is a setup failure (bad address or zone, unreadable file, failed AXFR),
/// meant to exit 2.
pub fn run(args: &CompareArgs) -> anyhow::Result<i32> {
    let apex = Name::<Bytes>::from_str(&args.zone).map_err(|e| anyhow::anyhow!("--zone {:?}: {e}", args.zone))?;
    let server = resolve(&args.server).context("--server")?;
    let ours = resolve(&args.ours).context("--ours")?;
    let index = match &args.file {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            ZoneIndex::from_zonefile(&text, &apex).with_context(|| format!("{}", path.display()))?
        }
        None => {
            let from = match &args.axfr_from {
                Some(a) => resolve(a).context("--axfr-from")?,
                None => ours,
            };
            transfer(from, &apex, args.timeout).with_context(|| format!("AXFR of {} from {from}", args.zone))?
        }
    };
    let questions = index.questions(args.seed);
    let opts = QueryOptions {
        rd: false,
        cd: false,
        edns: (!args.no_edns).then_some(EdnsQuery {
            udp_size: args.udp_size,
            dnssec_ok: args.dnssec_ok,
            ..EdnsQuery::default()
        }),
    };
    let compare_opts = Options {
        ttl: !args.ignore_ttl,
        ..Options::default()
    };
    let (results, queries) = ask_all(&questions, server, ours, &opts, args, &compare_opts);

    let mut differing = 0usize;
    let mut errors = 0usize;
    let mut not_asked = 0usize;
    let mut out = std::io::stdout().lock();
    for (q, r) in questions.iter().zip(&results) {
        match r {
            Outcome::Same => {}
            Outcome::Differ(found) => {
                differing += 1;
                let _ = writeln!(out, "{q}");
                for (how, d) in found {
                    let _ = writeln!(out, "  ({how}) {}", indent(&d.labelled("server", "ours")));
                }
            }
            Outcome::Error(e) => {
                errors += 1;
                let _ = writeln!(out, "{q}\n  error: {e}");
            }
            Outcome::NotAsked => not_asked += 1,
        }
    }
    if not_asked > 0 {
        let _ = writeln!(
            out,
            "gave up after {errors} unanswered questions: {not_asked} not asked (--max-errors)"
        );
    }
    let _ = writeln!(
        out,
        "{} questions ({queries} queries to each server): {} same, {differing} different, {errors} unanswered",
        questions.len(),
        questions.len() - differing - errors - not_asked
    );
    Ok(if errors > 0 || not_asked > 0 {
        2
    } else if differing > 0 {
        1
    } else {
        0
    })
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n  ")
}

enum Outcome {
    Same,
    /// (how it was asked: `udp`, `tcp`, `tcp after TC`), difference
    Differ(Vec<(&'static str, Difference)>),
    Error(String),
    /// Skipped: too many questions went unanswered before.
    NotAsked,
}

/// Asks every question of both servers, `args.concurrency` at a time.
/// Returns one outcome per question, in order, and the number of queries
/// sent to each server.
fn ask_all(
    questions: &[Question],
    server: SocketAddr,
    ours: SocketAddr,
    opts: &QueryOptions,
    args: &CompareArgs,
    compare_opts: &Options,
) -> (Vec<Outcome>, usize) {
    let next = AtomicUsize::new(0);
    let queries = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::with_capacity(questions.len()));
    let workers = usize::from(args.concurrency).min(questions.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if args.max_errors > 0 && errors.load(Ordering::Relaxed) >= args.max_errors {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(q) = questions.get(i) else { break };
                let outcome = ask_one(q, i as u16, server, ours, opts, args, compare_opts, &queries);
                if matches!(outcome, Outcome::Error(_)) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut r) = results.lock() {
                    r.push((i, outcome));
                }
            });
        }
    });
    let mut outcomes: Vec<Outcome> = (0..questions.len()).map(|_| Outcome::NotAsked).collect();
    for (i, o) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = o;
        }
    }
    (outcomes, queries.into_inner())
}

#[allow(clippy::too_many_arguments)]
fn ask_one(
    q: &Question,
    id: u16,
    server: SocketAddr,
    ours: SocketAddr,
    opts: &QueryOptions,
    args: &CompareArgs,
    compare_opts: &Options,
    queries: &AtomicUsize,
) -> Outcome {
    let query = match build_query(id, q, opts) {
        Ok(m) => m,
        Err(e) => return Outcome::Error(format!("building the query: {e}")),
    };
    let both = |tcp: bool| -> Result<(Vec<u8>, Vec<u8>), String> {
        queries.fetch_add(1, Ordering::Relaxed);
        let a = exchange(server, &query, tcp, args.timeout).map_err(|e| format!("server: {e:#}"))?;
        let b = exchange(ours, &query, tcp, args.timeout).map_err(|e| format!("ours: {e:#}"))?;
        Ok((a, b))
    };
    let mut found = Vec::new();
    let first = if args.tcp { "tcp" } else { "udp" };
    let (a, b) = match both(args.tcp) {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("{first}: {e}")),
    };
    found.extend(compare_with(&a, &b, compare_opts).into_iter().map(|d| (first, d)));
    if !args.tcp && (truncated(&a) || truncated(&b)) {
        let (a, b) = match both(true) {
            Ok(r) => r,
            Err(e) => return Outcome::Error(format!("tcp after TC: {e}")),
        };
        found.extend(
            compare_with(&a, &b, compare_opts)
                .into_iter()
                .map(|d| ("tcp after TC", d)),
        );
    }
    if found.is_empty() {
        Outcome::Same
    } else {
        Outcome::Differ(found)
    }
}

fn truncated(msg: &[u8]) -> bool {
    msg.len() > 2 && msg[2] & 0x02 != 0
}

/// ADDR[:PORT] (port 53 by default); a host name is looked up.
fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = SocketAddr::from_str(s) {
        return Ok(a);
    }
    if let Ok(ip) = IpAddr::from_str(s.trim_start_matches('[').trim_end_matches(']')) {
        return Ok(SocketAddr::new(ip, 53));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:53")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("{s:?} is not ADDR[:PORT]"))?
        .next()
        .with_context(|| format!("{s:?}: no address"))
}

fn exchange(server: SocketAddr, query: &[u8], tcp: bool, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    if tcp {
        let mut s = TcpStream::connect_timeout(&server, timeout).with_context(|| format!("TCP connect {server}"))?;
        let r = tcp_send(&mut s, query, timeout).and_then(|()| tcp_recv(&mut s, timeout));
        r.with_context(|| format!("TCP {server}"))
    } else {
        udp_exchange(server, query, timeout).with_context(|| format!("UDP {server}"))
    }
}

/// One UDP question, tried 3 times; answers with another ID (late answers
/// to earlier tries) are skipped.
fn udp_exchange(server: SocketAddr, query: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(server)?;
    let mut buf = vec![0u8; 65535];
    for _ in 0..3 {
        sock.send(query)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 => return Ok(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!("no answer in 3 tries of {timeout:?}")
}

fn tcp_send(s: &mut TcpStream, msg: &[u8], timeout: Duration) -> anyhow::Result<()> {
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let len = u16::try_from(msg.len()).context("message longer than 65535")?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed)?;
    Ok(())
}

fn tcp_recv(s: &mut TcpStream, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    s.set_read_timeout(Some(timeout))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// The zone's names and types by AXFR (RFC 5936) over TCP: messages until
/// the closing SOA.
fn transfer(from: SocketAddr, apex: &Name<Bytes>, timeout: Duration) -> anyhow::Result<ZoneIndex> {
    const MAX_MESSAGES: usize = 1_000_000;
    let mut s = TcpStream::connect_timeout(&from, timeout).with_context(|| format!("TCP connect {from}"))?;
    let query = axfr_query(0xa8f4, apex)?;
    tcp_send(&mut s, &query, timeout)?;
    let mut index = ZoneIndex::new(apex);
    let mut soas = 0usize;
    for _ in 0..MAX_MESSAGES {
        let msg = tcp_recv(&mut s, timeout)?;
        if msg.len() < 12 || msg[..2] != query[..2] {
            bail!("answer with a wrong ID");
        }
        soas += add_axfr_message(&mut index, &msg)?;
        if soas >= 2 {
            index.check()?;
            return Ok(index);
        }
    }
    bail!("no closing SOA after {MAX_MESSAGES} messages")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(resolve("192.0.2.1").unwrap(), "192.0.2.1:53".parse().unwrap());
        assert_eq!(resolve("192.0.2.1:5353").unwrap(), "192.0.2.1:5353".parse().unwrap());
        assert_eq!(resolve("2001:db8::1").unwrap(), "[2001:db8::1]:53".parse().unwrap());
        assert_eq!(resolve("[2001:db8::1]").unwrap(), "[2001:db8::1]:53".parse().unwrap());
        assert_eq!(
            resolve("[2001:db8::1]:54").unwrap(),
            "[2001:db8::1]:54".parse().unwrap()
        );
        assert_eq!(resolve("localhost:5300").unwrap().port(), 5300);
        assert!(resolve("not an address").is_err());
    }

    #[test]
    fn args_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: CompareArgs,
        }
        let c = Cli::try_parse_from([
            "x",
            "--zone",
            "example.com.",
            "--server",
            "192.0.2.1",
            "--ours",
            "127.0.0.1:5353",
            "--tcp",
            "--dnssec-ok",
            "--timeout",
            "500ms",
        ])
        .unwrap();
        assert_eq!(c.args.timeout, Duration::from_millis(500));
        assert!(c.args.tcp && c.args.dnssec_ok);
        assert_eq!(c.args.udp_size, 1232);
        assert!(Cli::try_parse_from([
            "x",
            "--zone",
            "z",
            "--server",
            "a",
            "--ours",
            "b",
            "--no-edns",
            "--dnssec-ok"
        ])
        .is_err());
    }

    #[test]
    fn unanswered_questions_exit_2() {
        // A bound UDP socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("z.zone");
        std::fs::write(&zone, "@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n").unwrap();
        let args = CompareArgs {
            zone: "example.com.".into(),
            server: addr.to_string(),
            ours: addr.to_string(),
            file: Some(zone),
            axfr_from: None,
            tcp: false,
            dnssec_ok: false,
            no_edns: false,
            udp_size: 1232,
            timeout: Duration::from_millis(20),
            concurrency: 16,
            max_errors: 0,
            ignore_ttl: false,
            seed: 1,
        };
        assert_eq!(run(&args).unwrap(), 2);
        // Giving up early: still 2.
        let start = Instant::now();
        let quick = CompareArgs {
            max_errors: 1,
            concurrency: 1,
            ..args.clone()
        };
        assert_eq!(run(&quick).unwrap(), 2);
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        // No such file: a setup error.
        let args = CompareArgs {
            file: Some(dir.path().join("missing")),
            ..args
        };
        assert!(run(&args).is_err());
    }
}
