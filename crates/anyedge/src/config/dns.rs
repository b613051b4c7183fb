//! The `[dns]` section: authoritative DNS listeners, zones, transfers,
//! cookies and response rate limiting.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::duration::{duration_in, humantime_spanned, range};
use super::value::{int_in, nonzero, not_example_secret, parse_list, parse_net};
use super::{ConfigError, Ctx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP on each address.
    pub listen: Vec<SocketAddr>,
    /// Threads serving UDP (and TCP); default: one per core.
    pub workers: Option<NonZeroU32>,
    /// NSID (RFC 5001) payload; default: the PoP name.
    pub nsid: Option<String>,
    /// Largest UDP response we send (EDNS); 512..=4096.
    pub udp_payload: u16,
    /// TCP: how long a connection may wait between queries (RFC 7766
    /// idle timeout), and the connection table size.
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: NonZeroU32,
    /// TCP deadlines and per-source caps against hostile clients.
    pub tcp_limits: TcpLimits,
    pub cookies: Option<anyedge_dns::cookie::Secrets>,
    /// Response rate limiting (Knot-style; UDP only, valid server cookies
    /// exempt).
    pub rrl: Option<anyedge_guard::rrl::RrlConfig>,
    pub tsig_keys: Vec<TsigKey>,
    pub zones: Vec<ZoneConfig>,
    /// Where secondary zones are saved after each transfer (and loaded from
    /// at start, unless older than their SOA expire). None: not saved.
    pub state_dir: Option<PathBuf>,
    /// Query and response logging as dnstap (None: off).
    pub dnstap: Option<super::DnstapConfig>,
}

/// DNS over TCP against hostile clients (RFC 7766 section 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// A query must arrive whole (length prefix to last byte) within this
    /// of its first byte; a write of answers that makes no progress for
    /// this long closes the connection.
    pub io_timeout: Duration,
    /// Open connections per source address (0: no cap).
    pub max_per_address: u32,
    /// Open connections per IPv4 /24 or IPv6 /56 (0: no cap).
    pub max_per_prefix: u32,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            io_timeout: Duration::from_secs(2),
            max_per_address: 64,
            max_per_prefix: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Key name as a domain name (`xfr-key.` style, lowercase).
    pub name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneSource {
    /// An RFC 1035 zone file we serve as primary.
    File(PathBuf),
    /// Pulled by AXFR/IXFR from these primaries (secondary mode).
    Secondary { primaries: Vec<SocketAddr> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Absolute name with the trailing dot, lowercase.
    pub name: String,
    pub source: ZoneSource,
    /// TSIG key (by name) for transfers and NOTIFY of this zone, both ways.
    pub key: Option<String>,
    /// Secondaries to NOTIFY when this zone changes (primary mode).
    pub notify: Vec<SocketAddr>,
    /// Who may AXFR/IXFR this zone (and must sign with `key` if set).
    pub allow_transfer: Vec<IpNet>,
    /// Online signing of a file zone (None: served as the file has it,
    /// pre-signed or not).
    pub dnssec: Option<SigningConfig>,
}

/// `dnssec = { keys = [...], denial = ... }` of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    /// Key file stems (`.../K<zone>+<alg>+<tag>`; `.key` and `.private`
    /// are read at each load, so a missing or bad file fails that load).
    pub keys: Vec<PathBuf>,
    pub denial: anyedge_dns::sign::DenialMode,
    /// Lifetime of new signatures (re-signed with a third left).
    pub signature_validity: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    listen: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    workers: Option<Spanned<u32>>,
    #[serde(default)]
    nsid: Option<Spanned<String>>,
    #[serde(default = "d_udp_payload")]
    udp_payload: Spanned<u16>,
    #[serde(default = "d_tcp_idle", with = "humantime_spanned")]
    tcp_idle_timeout: Spanned<Duration>,
    #[serde(default = "d_tcp_max")]
    tcp_max_connections: Spanned<u32>,
    #[serde(default = "d_tcp_io", with = "humantime_spanned")]
    tcp_io_timeout: Spanned<Duration>,
    #[serde(default = "d_tcp_per_address")]
    tcp_max_per_address: u32,
    #[serde(default = "d_tcp_per_prefix")]
    tcp_max_per_prefix: u32,
    #[serde(default)]
    cookie_secret: Option<Spanned<String>>,
    #[serde(default)]
    cookie_secret_previous: Option<Spanned<String>>,
    #[serde(default)]
    rrl: Option<RawRrl>,
    #[serde(default, rename = "tsig_key")]
    tsig_keys: Vec<RawTsig>,
    #[serde(default, rename = "zone")]
    zones: Vec<RawZone>,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    dnstap: Option<super::dnstap::RawDnstap>,
}

fn d_udp_payload() -> Spanned<u16> {
    Spanned::new(0..0, 1232)
}
fn d_tcp_idle() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(10))
}
fn d_tcp_max() -> Spanned<u32> {
    Spanned::new(0..0, 1024)
}
fn d_tcp_io() -> Spanned<Duration> {
    Spanned::new(0..0, TcpLimits::default().io_timeout)
}
fn d_tcp_per_address() -> u32 {
    TcpLimits::default().max_per_address
}
fn d_tcp_per_prefix() -> u32 {
    TcpLimits::default().max_per_prefix
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    rate: Spanned<u32>,
    #[serde(default = "d_burst")]
    burst: Spanned<u32>,
    #[serde(default = "d_slip")]
    slip: Spanned<u8>,
    #[serde(default = "d_v4")]
    ipv4_prefix: Spanned<u8>,
    #[serde(default = "d_v6")]
    ipv6_prefix: Spanned<u8>,
    #[serde(default = "d_table")]
    table_size: Spanned<usize>,
    #[serde(default)]
    whitelist: Vec<Spanned<String>>,
    #[serde(default)]
    dry_run: bool,
}
fn d_slip() -> Spanned<u8> {
    Spanned::new(0..0, 1)
}
fn d_burst() -> Spanned<u32> {
    Spanned::new(0..0, 50)
}
fn d_v4() -> Spanned<u8> {
    Spanned::new(0..0, 24)
}
fn d_v6() -> Spanned<u8> {
    Spanned::new(0..0, 56)
}
fn d_table() -> Spanned<usize> {
    Spanned::new(0..0, 393_241)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsig {
    name: Spanned<String>,
    #[serde(default = "d_alg")]
    algorithm: Spanned<String>,
    secret: Spanned<String>,
}
fn d_alg() -> Spanned<String> {
    Spanned::new(0..0, "hmac-sha256".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: Spanned<String>,
    #[serde(default)]
    file: Option<Spanned<String>>,
    #[serde(default)]
    primary: Vec<Spanned<String>>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    allow_transfer: Vec<Spanned<String>>,
    #[serde(default)]
    dnssec: Option<Spanned<RawSigning>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    keys: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "d_denial")]
    denial: Spanned<String>,
    #[serde(default = "d_validity", with = "humantime_spanned")]
    signature_validity: Spanned<Duration>,
}
fn d_denial() -> Spanned<String> {
    Spanned::new(0..0, "nsec3".into())
}
fn d_validity() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(14 * 86400))
}

impl RawDns {
    /// Where each `dns.listen` address is written.
    pub(super) fn listen_spans(&self) -> Vec<std::ops::Range<usize>> {
        self.listen.get_ref().iter().map(Spanned::span).collect()
    }
}

/// Lowercase absolute name with the trailing dot, or `None` if invalid.
pub fn canonical_name(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let abs = if s.ends_with('.') { s } else { format!("{s}.") };
    let n: Result<domain::base::Name<Vec<u8>>, _> = abs.parse();
    n.ok().map(|_| abs)
}

fn hex16(cx: &Ctx<'_>, s: &Spanned<String>, field: &str) -> Result<[u8; 16], ConfigError> {
    let t = s.get_ref().trim();
    let bad = || {
        cx.err(
            s.span(),
            field,
            "must be 32 hexadecimal digits (16 bytes, e.g. from `openssl rand -hex 16`)",
        )
    };
    if t.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(t.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    not_example_secret(cx, s.span(), field, t, "openssl rand -hex 16")?;
    Ok(out)
}

fn addr_with_default_port(s: &str, port: u16) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)))
}

pub(super) fn parse_dns(cx: &Ctx<'_>, d: RawDns, base_dir: &Path) -> Result<DnsConfig, ConfigError> {
    let mut listen = Vec::new();
    for (i, l) in d.listen.get_ref().iter().enumerate() {
        let a = addr_with_default_port(l.get_ref(), 53).ok_or_else(|| {
            cx.err(
                l.span(),
                format!("dns.listen[{i}]"),
                format!("{:?} is not ADDRESS[:PORT]", l.get_ref()),
            )
        })?;
        if listen.contains(&a) {
            return Err(cx.err(l.span(), format!("dns.listen[{i}]"), "listed twice"));
        }
        if a.port() == 0 {
            return Err(cx.err(l.span(), format!("dns.listen[{i}]"), "port must not be 0"));
        }
        listen.push(a);
    }
    if listen.is_empty() {
        return Err(cx.err(d.listen.span(), "dns.listen", "needs at least one address"));
    }
    let workers = d.workers.map(|w| int_in(cx, &w, "dns.workers", 1, 256)).transpose()?;
    let nsid = match d.nsid {
        None => None,
        Some(n) => {
            if n.get_ref().len() > 32 || !n.get_ref().bytes().all(|b| b.is_ascii_graphic()) {
                return Err(cx.err(n.span(), "dns.nsid", "must be at most 32 printable ASCII characters"));
            }
            Some(n.into_inner())
        }
    };
    let udp_payload = *d.udp_payload.get_ref();
    if !(512..=4096).contains(&udp_payload) {
        return Err(cx.err(
            d.udp_payload.span(),
            "dns.udp_payload",
            "must be between 512 and 4096 (1232 avoids fragmentation)",
        ));
    }
    let tcp_max_connections = nonzero(cx, &d.tcp_max_connections, "dns.tcp_max_connections", "must be > 0")?;
    let io_timeout = duration_in(cx, &d.tcp_io_timeout, "dns.tcp_io_timeout", range::MS, range::MIN)?;
    let tcp_limits = TcpLimits {
        io_timeout,
        max_per_address: d.tcp_max_per_address,
        max_per_prefix: d.tcp_max_per_prefix,
    };
    let cookies = match (&d.cookie_secret, &d.cookie_secret_previous) {
        (None, None) => None,
        (None, Some(p)) => {
            return Err(cx.err(p.span(), "dns.cookie_secret_previous", "needs dns.cookie_secret"));
        }
        (Some(c), p) => Some(anyedge_dns::cookie::Secrets {
            current: hex16(cx, c, "dns.cookie_secret")?,
            previous: match p {
                Some(p) => Some(hex16(cx, p, "dns.cookie_secret_previous")?),
                None => None,
            },
        }),
    };
    let rrl = match d.rrl {
        None => None,
        Some(r) => {
            let rate = nonzero(cx, &r.rate, "dns.rrl.rate", "must be > 0 responses per second")?;
            if *r.ipv4_prefix.get_ref() > 32 || *r.ipv4_prefix.get_ref() == 0 {
                return Err(cx.err(r.ipv4_prefix.span(), "dns.rrl.ipv4_prefix", "must be 1..=32"));
            }
            if *r.ipv6_prefix.get_ref() > 128 || *r.ipv6_prefix.get_ref() == 0 {
                return Err(cx.err(r.ipv6_prefix.span(), "dns.rrl.ipv6_prefix", "must be 1..=128"));
            }
            let table_size = int_in(cx, &r.table_size, "dns.rrl.table_size", 1, 1 << 26)?;
            let whitelist = parse_list(cx, &r.whitelist, "dns.rrl.whitelist", "an address or CIDR", |s| {
                parse_net(s).map(|n| anyedge_guard::prefix::Prefix::of(n.addr(), n.prefix_len()))
            })?;
            let burst = nonzero(cx, &r.burst, "dns.rrl.burst", "must be > 0")?;
            Some(anyedge_guard::rrl::RrlConfig {
                rate,
                burst,
                slip: *r.slip.get_ref(),
                ipv4_prefix: *r.ipv4_prefix.get_ref(),
                ipv6_prefix: *r.ipv6_prefix.get_ref(),
                table_size,
                whitelist,
                dry_run: r.dry_run,
            })
        }
    };
    let mut tsig_keys: Vec<TsigKey> = Vec::new();
    for (i, k) in d.tsig_keys.into_iter().enumerate() {
        let f = format!("dns.tsig_key[{i}]");
        let name = canonical_name(k.name.get_ref())
            .ok_or_else(|| cx.err(k.name.span(), format!("{f}.name"), "not a valid domain name"))?;
        if tsig_keys.iter().any(|x| x.name == name) {
            return Err(cx.err(k.name.span(), format!("{f}.name"), "key defined twice"));
        }
        let algorithm = match k.algorithm.get_ref().to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(cx.err(
                    k.algorithm.span(),
                    format!("{f}.algorithm"),
                    format!("{other:?}: use hmac-sha256, hmac-sha384 or hmac-sha512"),
                ))
            }
        };
        not_example_secret(
            cx,
            k.secret.span(),
            format!("{f}.secret"),
            k.secret.get_ref(),
            "openssl rand -base64 32",
        )?;
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(k.secret.get_ref().trim())
            .map_err(|e| cx.err(k.secret.span(), format!("{f}.secret"), format!("not base64: {e}")))?;
        if secret.len() < 16 {
            return Err(cx.err(
                k.secret.span(),
                format!("{f}.secret"),
                "at least 16 bytes of key material",
            ));
        }
        tsig_keys.push(TsigKey {
            name,
            algorithm,
            secret,
        });
    }
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for (i, z) in d.zones.into_iter().enumerate() {
        let f = format!("dns.zone[{i}]");
        let name = canonical_name(z.name.get_ref())
            .ok_or_else(|| cx.err(z.name.span(), format!("{f}.name"), "not a valid domain name"))?;
        if zones.iter().any(|x| x.name == name) {
            return Err(cx.err(z.name.span(), format!("{f}.name"), format!("zone {name} listed twice")));
        }
        let source = match (z.file, z.primary.is_empty()) {
            (Some(file), true) => {
                let p = PathBuf::from(file.get_ref());
                ZoneSource::File(if p.is_absolute() { p } else { base_dir.join(p) })
            }
            (None, false) => {
                let primaries = parse_list(cx, &z.primary, &format!("{f}.primary"), "ADDRESS[:PORT]", |s| {
                    addr_with_default_port(s, 53)
                })?;
                ZoneSource::Secondary { primaries }
            }
            (Some(file), false) => {
                return Err(cx.err(
                    file.span(),
                    format!("{f}.file"),
                    "a zone has either a file (primary) or primary servers (secondary), not both",
                ));
            }
            (None, true) => {
                return Err(cx.err(
                    z.name.span(),
                    f.clone(),
                    "needs `file` (we are primary) or `primary` (we are secondary)",
                ));
            }
        };
        let key = match z.key {
            None => None,
            Some(k) => {
                let n = canonical_name(k.get_ref()).unwrap_or_default();
                if !tsig_keys.iter().any(|t| t.name == n) {
                    return Err(cx.err(
                        k.span(),
                        format!("{f}.key"),
                        format!("no [[dns.tsig_key]] named {:?}", k.get_ref()),
                    ));
                }
                Some(n)
            }
        };
        let notify = parse_list(cx, &z.notify, &format!("{f}.notify"), "ADDRESS[:PORT]", |s| {
            addr_with_default_port(s, 53)
        })?;
        let allow_transfer = parse_list(
            cx,
            &z.allow_transfer,
            &format!("{f}.allow_transfer"),
            "an address or CIDR",
            parse_net,
        )?;
        let dnssec = match z.dnssec {
            None => None,
            Some(d) => {
                if !matches!(source, ZoneSource::File(_)) {
                    return Err(cx.err(
                        d.span(),
                        format!("{f}.dnssec"),
                        "online signing is for zones served from a file (a secondary serves what its primary signed)",
                    ));
                }
                let d = d.into_inner();
                if d.keys.get_ref().is_empty() {
                    return Err(cx.err(
                        d.keys.span(),
                        format!("{f}.dnssec.keys"),
                        "needs at least one key (`anyedge dns keygen`)",
                    ));
                }
                let keys = d
                    .keys
                    .get_ref()
                    .iter()
                    .map(|k| {
                        let t = k.get_ref();
                        let t = t
                            .strip_suffix(".key")
                            .or_else(|| t.strip_suffix(".private"))
                            .unwrap_or(t);
                        let p = PathBuf::from(t);
                        if p.is_absolute() {
                            p
                        } else {
                            base_dir.join(p)
                        }
                    })
                    .collect();
                use anyedge_dns::sign::DenialMode;
                let denial = match d.denial.get_ref().as_str() {
                    "nsec" => DenialMode::Nsec,
                    "nsec3" => DenialMode::Nsec3,
                    "compact" => DenialMode::Compact,
                    other => {
                        return Err(cx.err(
                            d.denial.span(),
                            format!("{f}.dnssec.denial"),
                            format!("{other:?}: use \"nsec\", \"nsec3\" or \"compact\""),
                        ))
                    }
                };
                let signature_validity = duration_in(
                    cx,
                    &d.signature_validity,
                    format!("{f}.dnssec.signature_validity"),
                    Duration::from_secs(3 * 3600),
                    Duration::from_secs(90 * 86400),
                )?;
                Some(SigningConfig {
                    keys,
                    denial,
                    signature_validity,
                })
            }
        };
        zones.push(ZoneConfig {
            name,
            source,
            key,
            notify,
            allow_transfer,
            dnssec,
        });
    }
    let dnstap = d
        .dnstap
        .map(|t| super::dnstap::parse_dnstap(cx, t, base_dir))
        .transpose()?;
    Ok(DnsConfig {
        dnstap,
        listen,
        workers,
        nsid,
        udp_payload,
        tcp_idle_timeout: duration_in(cx, &d.tcp_idle_timeout, "dns.tcp_idle_timeout", range::MS, range::HOUR)?,
        tcp_max_connections,
        tcp_limits,
        cookies,
        rrl,
        tsig_keys,
        zones,
        state_dir: d.state_dir.map(|p| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base_dir.join(p)
            }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn dns_errors_name_line_and_field() {
        let base = "[pop]\nname = \"p\"\n[dns]\nlisten = [\"127.0.0.1:5353\"]\n";
        let e = Config::parse(&format!("{base}cookie_secret = \"abc\"\n"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "dns.cookie_secret"), "{e}");
        let e = Config::parse(
            &format!("{base}[[dns.zone]]\nname = \"example.com\"\nkey = \"nope\"\nfile = \"z\"\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "dns.zone[0].key"), "{e}");
        let e = Config::parse(&format!("{base}[[dns.zone]]\nname = \"example.com\"\n"), "t.toml").unwrap_err();
        assert!(e.message.contains("needs `file`"), "{e}");
        let e = Config::parse(&format!("{base}[dns.rrl]\nrate = 0\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "dns.rrl.rate");
        let e = Config::parse(&format!("{base}udp_payload = 100\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "dns.udp_payload");
        let e = Config::parse(&format!("{base}tcp_io_timeout = \"0s\"\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "dns.tcp_io_timeout");
        let e = Config::parse(&format!("{base}tcp_io_timeout = \"18446744073709551615s\"\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "dns.tcp_io_timeout");
        assert!(e.message.contains("between 1ms and 1m"), "{e}");
        let tcp = Config::parse(
            &format!("{base}tcp_io_timeout = \"500ms\"\ntcp_max_per_address = 0\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            tcp.dns.unwrap().tcp_limits,
            TcpLimits {
                io_timeout: Duration::from_millis(500),
                max_per_address: 0,
                max_per_prefix: 256,
            }
        );
        let ok = Config::parse(
            &format!("{base}[[dns.zone]]\nname = \"Example.COM\"\nprimary = [\"192.0.2.1\"]\n"),
            "t.toml",
        )
        .unwrap();
        let z = &ok.dns.unwrap().zones[0];
        assert_eq!(z.name, "example.com.");
        assert_eq!(
            z.source,
            ZoneSource::Secondary {
                primaries: vec!["192.0.2.1:53".parse().unwrap()]
            }
        );
    }

    #[test]
    fn dnssec_section_parses_and_errors_name_the_field() {
        let base = "[pop]\nname = \"p\"\n[dns]\nlisten = [\"127.0.0.1:5353\"]\n[[dns.zone]]\nname = \"example.com\"\n";
        let ok = Config::parse(
            &format!("{base}file = \"z\"\ndnssec = {{ keys = [\"/k/Kexample.com.+013+00001.key\", \"k2\"], denial = \"compact\", signature_validity = \"7d\" }}\n"),
            "/etc/anyedge/t.toml",
        )
        .unwrap();
        let d = ok.dns.unwrap().zones[0].dnssec.clone().unwrap();
        assert_eq!(
            d.keys,
            vec![
                PathBuf::from("/k/Kexample.com.+013+00001"),
                PathBuf::from("/etc/anyedge/k2")
            ]
        );
        assert_eq!(d.denial, anyedge_dns::sign::DenialMode::Compact);
        assert_eq!(d.signature_validity, Duration::from_secs(7 * 86400));
        let err = |extra: &str| Config::parse(&format!("{base}{extra}"), "t.toml").unwrap_err();
        let e = err("file = \"z\"\ndnssec = { keys = [\"k\"], denial = \"nsec5\" }\n");
        assert_eq!((e.line, e.field.as_str()), (8, "dns.zone[0].dnssec.denial"), "{e}");
        let e = err("file = \"z\"\ndnssec = { keys = [] }\n");
        assert_eq!(e.field, "dns.zone[0].dnssec.keys", "{e}");
        let e = err("file = \"z\"\ndnssec = { keys = [\"k\"], signature_validity = \"1m\" }\n");
        assert_eq!(e.field, "dns.zone[0].dnssec.signature_validity", "{e}");
        let e = err("primary = [\"192.0.2.1\"]\ndnssec = { keys = [\"k\"] }\n");
        assert_eq!(e.field, "dns.zone[0].dnssec", "{e}");
        let e = err("file = \"z\"\ndnssec = { keys = [\"k\"], nsec3_salt = \"ab\" }\n");
        assert!(e.message.contains("nsec3_salt"), "{e}");
    }
}
