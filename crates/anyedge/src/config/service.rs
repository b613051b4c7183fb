//! The `[[service]]` sections: L4 listeners, their backends, health
//! checks, timeouts and PROXY protocol options.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::duration::{duration_in, humantime_spanned, range};
use super::value::{check_name, int_in, nonzero, parse_net};
use super::{ConfigError, Ctx};

/// Which PROXY protocol header a backend receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    None,
    V1,
    V2,
}

/// Backend selection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Maglev consistent hashing of the client IP.
    Maglev,
    RoundRobin,
    LeastConn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub backlog: u32,
    pub balance: Balance,
    pub max_connections: Option<NonZeroU32>,
    /// Wait for the client's first bytes before connecting to a backend (for
    /// SNI and inbound-PROXY detection). Off for server-speaks-first protocols.
    pub inspect: bool,
    pub proxy: ProxyOptions,
    pub accept_proxy_from: Vec<IpNet>,
    pub timeouts: Timeouts,
    pub health: HealthCheck,
    pub backends: Vec<BackendConfig>,
    /// Proxied here, or forwarded by XDP to the backend nodes (`tunnel.rs`).
    pub forwarding: super::tunnel::Forwarding,
    /// One access-log line per connection (`[access_log] enabled`, or the
    /// service's own `access_log`).
    pub access_log: bool,
    /// The PROXY mode of discovered and runtime backends (the service's
    /// `proxy_protocol`).
    pub default_proxy: ProxyMode,
    /// Backends from DNS records, beside `backends`.
    pub discover: Option<Discover>,
    /// A watched file of backends (JSON or TOML), beside `backends`.
    pub backends_file: Option<PathBuf>,
    /// A backend's weight ramps up over this once it is up (zero: at once).
    pub slow_start: Duration,
    /// A removed backend keeps its open connections at most this long.
    pub drain_timeout: Duration,
}

/// Which records `discover` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RecordType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "SRV")]
    Srv,
}

/// `discover = { ... }`: backends from the DNS records of `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    /// Absolute name, with the trailing dot.
    pub name: String,
    pub rtype: RecordType,
    /// The backends' port (A/AAAA; SRV records carry their own).
    pub port: u16,
    pub resolvers: Vec<SocketAddr>,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    /// The weight of each A/AAAA backend (SRV records carry their own).
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    pub crc32c: bool,
    pub unique_id: bool,
    pub pop_tlv: bool,
    pub sni: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub idle: Duration,
    pub client_first_byte: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub passive_fall: u32,
    pub send_proxy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http {
        path: String,
        host: String,
        expect_status: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub proxy: ProxyMode,
    pub drain: bool,
    pub max_connections: Option<NonZeroU32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: Spanned<String>,
    pub(super) listen: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "d_backlog")]
    backlog: Spanned<u32>,
    #[serde(default = "d_balance")]
    balance: Balance,
    #[serde(default)]
    max_connections: Option<Spanned<u32>>,
    #[serde(default = "d_true")]
    inspect: bool,
    #[serde(default = "d_proxy")]
    proxy_protocol: ProxyMode,
    #[serde(default)]
    proxy_crc32c: bool,
    #[serde(default = "d_true")]
    proxy_unique_id: bool,
    #[serde(default = "d_true")]
    proxy_pop_tlv: bool,
    #[serde(default = "d_true")]
    proxy_sni: bool,
    #[serde(default)]
    accept_proxy_from: Vec<Spanned<String>>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    health: RawHealth,
    #[serde(rename = "backend", default = "d_no_backends")]
    pub(super) backends: Spanned<Vec<RawBackend>>,
    #[serde(default)]
    forwarding: super::tunnel::RawForwarding,
    #[serde(default)]
    encap: Option<Spanned<super::tunnel::RawEncap>>,
    #[serde(default)]
    gue_port: Option<Spanned<u32>>,
    #[serde(default)]
    underlay_mtu: Option<Spanned<u32>>,
    #[serde(default)]
    access_log: Option<bool>,
    #[serde(default)]
    discover: Option<Spanned<RawDiscover>>,
    #[serde(default)]
    backends_file: Option<Spanned<String>>,
    #[serde(default = "d_zero", with = "humantime_spanned")]
    slow_start: Spanned<Duration>,
    #[serde(default = "d_drain_timeout", with = "humantime_spanned")]
    drain_timeout: Spanned<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscover {
    name: Spanned<String>,
    #[serde(rename = "type")]
    rtype: RecordType,
    #[serde(default)]
    port: Option<Spanned<u16>>,
    resolvers: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "d_min_refresh", with = "humantime_spanned")]
    min_refresh: Spanned<Duration>,
    #[serde(default = "d_max_refresh", with = "humantime_spanned")]
    max_refresh: Spanned<Duration>,
    #[serde(default = "d_weight")]
    weight: Spanned<u32>,
}

fn d_no_backends() -> Spanned<Vec<RawBackend>> {
    Spanned::new(0..0, Vec::new())
}
fn d_zero() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::ZERO)
}
fn d_drain_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(300))
}
fn d_min_refresh() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(1))
}
fn d_max_refresh() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(300))
}

fn d_backlog() -> Spanned<u32> {
    Spanned::new(0..0, 4096)
}
fn d_balance() -> Balance {
    Balance::Maglev
}
fn d_true() -> bool {
    true
}
fn d_proxy() -> ProxyMode {
    ProxyMode::V2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    #[serde(default = "d_connect", with = "humantime_spanned")]
    connect: Spanned<Duration>,
    #[serde(default = "d_idle", with = "humantime_spanned")]
    idle: Spanned<Duration>,
    #[serde(default = "d_first_byte", with = "humantime_spanned")]
    client_first_byte: Spanned<Duration>,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            connect: d_connect(),
            idle: d_idle(),
            client_first_byte: d_first_byte(),
        }
    }
}
fn d_connect() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(3))
}
fn d_idle() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(300))
}
fn d_first_byte() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(10))
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawCheckKind {
    Tcp,
    Http,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default = "d_kind")]
    kind: RawCheckKind,
    #[serde(default = "d_interval", with = "humantime_spanned")]
    interval: Spanned<Duration>,
    #[serde(default = "d_check_timeout", with = "humantime_spanned")]
    timeout: Spanned<Duration>,
    #[serde(default = "d_rise")]
    rise: Spanned<u32>,
    #[serde(default = "d_fall")]
    fall: Spanned<u32>,
    #[serde(default = "d_passive_fall")]
    passive_fall: u32,
    #[serde(default)]
    send_proxy: Option<bool>,
    #[serde(default = "d_path")]
    path: Spanned<String>,
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default = "d_status")]
    expect_status: Spanned<u16>,
}

impl Default for RawHealth {
    fn default() -> Self {
        Self {
            kind: d_kind(),
            interval: d_interval(),
            timeout: d_check_timeout(),
            rise: d_rise(),
            fall: d_fall(),
            passive_fall: d_passive_fall(),
            send_proxy: None,
            path: d_path(),
            host: None,
            expect_status: d_status(),
        }
    }
}
fn d_kind() -> RawCheckKind {
    RawCheckKind::Tcp
}
fn d_interval() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(2))
}
fn d_check_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(1))
}
fn d_rise() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn d_fall() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn d_passive_fall() -> u32 {
    3
}
fn d_path() -> Spanned<String> {
    Spanned::new(0..0, "/".to_string())
}
fn d_status() -> Spanned<u16> {
    Spanned::new(0..0, 200)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    name: Spanned<String>,
    pub(super) address: Spanned<String>,
    #[serde(default = "d_weight")]
    weight: Spanned<u32>,
    #[serde(default)]
    proxy_protocol: Option<ProxyMode>,
    #[serde(default)]
    drain: bool,
    #[serde(default)]
    max_connections: Option<Spanned<u32>>,
}
fn d_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// `access_log`: whether the service logs unless it says (`[access_log] enabled`).
pub(super) fn parse_service(
    cx: &Ctx<'_>,
    sp: &str,
    rs: RawService,
    access_log: bool,
) -> Result<ServiceConfig, ConfigError> {
    check_name(cx, &rs.name, format!("{sp}.name"))?;
    let name_span = rs.name.span();
    let sp = format!("service {:?}", rs.name.get_ref());
    let listen_span = rs.listen.span();
    let mut listen = Vec::new();
    for l in rs.listen.into_inner() {
        let a: SocketAddr = l.get_ref().parse().map_err(|_| {
            cx.err(
                l.span(),
                format!("{sp}.listen"),
                format!("{:?} is not ADDRESS:PORT (IPv6 as [::1]:80)", l.get_ref()),
            )
        })?;
        if listen.contains(&a) {
            return Err(cx.err(l.span(), format!("{sp}.listen"), format!("{a} listed twice")));
        }
        if a.port() == 0 {
            return Err(cx.err(l.span(), format!("{sp}.listen"), "port must not be 0"));
        }
        listen.push(a);
    }
    if listen.is_empty() {
        return Err(cx.err(listen_span, format!("{sp}.listen"), "needs at least one address"));
    }
    let backlog: u32 = int_in(cx, &rs.backlog, format!("{sp}.backlog"), 1, 1 << 20)?;
    let max_connections = rs
        .max_connections
        .map(|m| nonzero(cx, &m, format!("{sp}.max_connections"), "must be > 0 (omit for no cap)"))
        .transpose()?;
    let mut accept_proxy_from = Vec::new();
    for c in rs.accept_proxy_from {
        let net = parse_net(c.get_ref()).ok_or_else(|| {
            cx.err(
                c.span(),
                format!("{sp}.accept_proxy_from"),
                format!("{:?} is not a CIDR", c.get_ref()),
            )
        })?;
        accept_proxy_from.push(net.trunc());
    }

    let t = rs.timeouts;
    let timeouts = Timeouts {
        connect: duration_in(
            cx,
            &t.connect,
            format!("{sp}.timeouts.connect"),
            range::MS,
            5 * range::MIN,
        )?,
        idle: duration_in(cx, &t.idle, format!("{sp}.timeouts.idle"), range::MS, range::WEEK)?,
        client_first_byte: duration_in(
            cx,
            &t.client_first_byte,
            format!("{sp}.timeouts.client_first_byte"),
            range::MS,
            5 * range::MIN,
        )?,
    };

    let h = rs.health;
    duration_in(
        cx,
        &h.interval,
        format!("{sp}.health.interval"),
        Duration::from_millis(10),
        range::HOUR,
    )?;
    if h.timeout.get_ref().is_zero() || h.timeout.get_ref() > h.interval.get_ref() {
        // a default timeout has no place in the file: point at the interval
        let at = if h.timeout.span().is_empty() {
            h.interval.span()
        } else {
            h.timeout.span()
        };
        return Err(cx.err(
            at,
            format!("{sp}.health.timeout"),
            format!(
                "is {:?}: must be > 0 and <= interval ({:?}){}",
                h.timeout.get_ref(),
                h.interval.get_ref(),
                if h.timeout.span().is_empty() {
                    "; the default timeout applies, set one"
                } else {
                    ""
                }
            ),
        ));
    }
    for (name, v) in [("rise", &h.rise), ("fall", &h.fall)] {
        int_in::<u32, u32>(cx, v, format!("{sp}.health.{name}"), 1, 100)?;
    }
    let kind = match h.kind {
        RawCheckKind::Tcp => CheckKind::Tcp,
        RawCheckKind::Http => {
            let path = h.path.get_ref();
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(cx.err(
                    h.path.span(),
                    format!("{sp}.health.path"),
                    "must start with / and contain no spaces or control characters",
                ));
            }
            if !(100..=599).contains(h.expect_status.get_ref()) {
                return Err(cx.err(
                    h.expect_status.span(),
                    format!("{sp}.health.expect_status"),
                    "must be an HTTP status 100-599",
                ));
            }
            let host_span = h.host.as_ref().map_or(0..0, Spanned::span);
            let host = h.host.clone().map_or_else(|| "localhost".into(), Spanned::into_inner);
            if host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(cx.err(
                    host_span,
                    format!("{sp}.health.host"),
                    "must contain no spaces or control characters",
                ));
            }
            CheckKind::Http {
                path: h.path.into_inner(),
                host,
                expect_status: h.expect_status.into_inner(),
            }
        }
    };

    let backends_span = rs.backends.span();
    let mut backends: Vec<BackendConfig> = Vec::new();
    for (bi, rb) in rs.backends.into_inner().into_iter().enumerate() {
        let bp = format!("{sp}.backend[{bi}]");
        check_name(cx, &rb.name, format!("{bp}.name"))?;
        if backends.iter().any(|b| &b.name == rb.name.get_ref()) {
            return Err(cx.err(
                rb.name.span(),
                format!("{bp}.name"),
                format!("duplicate backend name {:?}", rb.name.get_ref()),
            ));
        }
        let address: SocketAddr = rb.address.get_ref().parse().map_err(|_| {
            cx.err(
                rb.address.span(),
                format!("{bp}.address"),
                format!("{:?} is not IP:PORT (IPv6 as [2001:db8::1]:80)", rb.address.get_ref()),
            )
        })?;
        if address.port() == 0 {
            return Err(cx.err(rb.address.span(), format!("{bp}.address"), "port must not be 0"));
        }
        let weight = int_in(cx, &rb.weight, format!("{bp}.weight"), 0, 10_000)?;
        let max_connections = rb
            .max_connections
            .map(|m| nonzero(cx, &m, format!("{bp}.max_connections"), "must be > 0 (omit for no cap)"))
            .transpose()?;
        backends.push(BackendConfig {
            name: rb.name.into_inner(),
            address,
            weight,
            proxy: rb.proxy_protocol.unwrap_or(rs.proxy_protocol),
            drain: rb.drain,
            max_connections,
        });
    }
    let discover = rs.discover.map(|d| parse_discover(cx, &sp, d)).transpose()?;
    let backends_file = match rs.backends_file {
        None => None,
        Some(f) => {
            let p = PathBuf::from(f.get_ref());
            if !p.is_absolute() {
                return Err(cx.err(f.span(), format!("{sp}.backends_file"), "must be an absolute path"));
            }
            Some(p)
        }
    };
    if backends.is_empty() && discover.is_none() && backends_file.is_none() {
        return Err(cx.err(
            // (no `backend` key at all: point at the service)
            if backends_span.is_empty() {
                name_span
            } else {
                backends_span
            },
            format!("{sp}.backend"),
            "needs at least one backend (or discover, or backends_file)",
        ));
    }
    let slow_start = duration_in(
        cx,
        &rs.slow_start,
        format!("{sp}.slow_start"),
        Duration::ZERO,
        range::HOUR,
    )?;
    let drain_timeout = duration_in(
        cx,
        &rs.drain_timeout,
        format!("{sp}.drain_timeout"),
        Duration::ZERO,
        range::DAY,
    )?;
    let any_proxy = backends.iter().any(|b| b.proxy != ProxyMode::None);
    let forwarding = super::tunnel::parse_forwarding(cx, &sp, rs.forwarding, rs.encap, rs.gue_port, rs.underlay_mtu)?;
    Ok(ServiceConfig {
        name: rs.name.into_inner(),
        listen,
        backlog,
        balance: rs.balance,
        max_connections,
        inspect: rs.inspect,
        proxy: ProxyOptions {
            crc32c: rs.proxy_crc32c,
            unique_id: rs.proxy_unique_id,
            pop_tlv: rs.proxy_pop_tlv,
            sni: rs.proxy_sni && rs.inspect,
        },
        accept_proxy_from,
        timeouts,
        health: HealthCheck {
            kind,
            interval: h.interval.into_inner(),
            timeout: h.timeout.into_inner(),
            rise: h.rise.into_inner(),
            fall: h.fall.into_inner(),
            passive_fall: h.passive_fall,
            // (only discovered backends: they get the service's PROXY mode)
            send_proxy: h.send_proxy.unwrap_or(if backends.is_empty() {
                rs.proxy_protocol != ProxyMode::None
            } else {
                any_proxy
            }),
        },
        backends,
        forwarding,
        access_log: rs.access_log.unwrap_or(access_log),
        default_proxy: rs.proxy_protocol,
        discover,
        backends_file,
        slow_start,
        drain_timeout,
    })
}

fn parse_discover(cx: &Ctx<'_>, sp: &str, d: Spanned<RawDiscover>) -> Result<Discover, ConfigError> {
    let span = d.span();
    let d = d.into_inner();
    let f = format!("{sp}.discover");
    let name = d.name.get_ref().trim().to_ascii_lowercase();
    let name = if name.ends_with('.') { name } else { format!("{name}.") };
    if name.len() > 254
        || name == "."
        || name.trim_end_matches('.').split('.').any(|l| {
            l.is_empty() || l.len() > 63 || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(cx.err(
            d.name.span(),
            format!("{f}.name"),
            format!("{:?} is not a DNS name", d.name.get_ref()),
        ));
    }
    let port = match (d.rtype, &d.port) {
        (RecordType::Srv, Some(p)) => {
            return Err(cx.err(p.span(), format!("{f}.port"), "SRV records carry the port: omit it"));
        }
        (RecordType::Srv, None) => 0,
        (_, None) => return Err(cx.err(span, format!("{f}.port"), "A/AAAA discovery needs the backends' port")),
        (_, Some(p)) if *p.get_ref() == 0 => return Err(cx.err(p.span(), format!("{f}.port"), "port must not be 0")),
        (_, Some(p)) => *p.get_ref(),
    };
    let mut resolvers = Vec::new();
    for r in d.resolvers.get_ref() {
        let a: SocketAddr = r
            .get_ref()
            .parse()
            .or_else(|_| {
                r.get_ref()
                    .parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                cx.err(
                    r.span(),
                    format!("{f}.resolvers"),
                    format!("{:?} is not IP or IP:PORT (IPv6 as [2001:db8::53]:53)", r.get_ref()),
                )
            })?;
        if a.port() == 0 {
            return Err(cx.err(r.span(), format!("{f}.resolvers"), "port must not be 0"));
        }
        resolvers.push(a);
    }
    if resolvers.is_empty() || resolvers.len() > 8 {
        return Err(cx.err(d.resolvers.span(), format!("{f}.resolvers"), "needs 1 to 8 resolvers"));
    }
    let min_refresh = duration_in(
        cx,
        &d.min_refresh,
        format!("{f}.min_refresh"),
        Duration::from_millis(100),
        range::HOUR,
    )?;
    let max_refresh = duration_in(
        cx,
        &d.max_refresh,
        format!("{f}.max_refresh"),
        Duration::from_millis(100),
        range::DAY,
    )?;
    if max_refresh < min_refresh {
        return Err(cx.err(
            d.max_refresh.span(),
            format!("{f}.max_refresh"),
            "must be >= min_refresh",
        ));
    }
    let weight = int_in(cx, &d.weight, format!("{f}.weight"), 0, 10_000)?;
    Ok(Discover {
        name,
        rtype: d.rtype,
        port,
        resolvers,
        min_refresh,
        max_refresh,
        weight,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::MIN;
    use crate::config::Config;

    #[test]
    fn bad_backend_address_points_at_value() {
        let src = MIN.replace("127.0.0.1:9001", "localhost:9001");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert_eq!(e.line, 11);
        assert!(e.field.ends_with("backend[0].address"), "{e}");
    }

    #[test]
    fn bad_duration_and_thresholds() {
        let src = format!("{MIN}\n[service.health]\ninterval = \"soon\"\n");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert!(e.message.contains("invalid duration"), "{e}");
        let src = format!("{MIN}\n[service.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert!(e.field.ends_with("health.timeout"), "{e}");
        assert_eq!(e.line, 15);
        let src = format!("{MIN}\n[service.health]\nfall = 0\n");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert!(e.field.ends_with("health.fall"), "{e}");
    }

    #[test]
    fn duplicates_rejected() {
        let src = format!("{MIN}\n[[service.backend]]\nname = \"b1\"\naddress = \"127.0.0.1:9002\"\n");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert!(e.message.contains("duplicate backend"), "{e}");
        let src = MIN.replace(
            "[\"127.0.0.1:8080\", \"[::1]:8080\"]",
            "[\"127.0.0.1:8080\", \"127.0.0.1:8080\"]",
        );
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
    }

    #[test]
    fn trusted_cidrs_and_plain_ips() {
        let src = MIN.replace(
            "listen = [",
            "accept_proxy_from = [\"192.0.2.0/24\", \"2001:db8::1\"]\nlisten = [",
        );
        let c = Config::parse(&src, "t.toml").unwrap();
        assert_eq!(c.services[0].accept_proxy_from.len(), 2);
        let bad = MIN.replace("listen = [", "accept_proxy_from = [\"everyone\"]\nlisten = [");
        assert!(Config::parse(&bad, "t.toml").is_err());
    }

    #[test]
    fn discovery_settings() {
        let svc = "[pop]\nname = \"x\"\nstate_dir = \"/var/lib/anyedge\"\n[[service]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\n";
        let ok = format!(
            "{svc}slow_start = \"10s\"\ndrain_timeout = \"1m\"\ndiscover = {{ name = \"Nodes.Example\", type = \"A\", port = 30443, resolvers = [\"192.0.2.53\", \"[2001:db8::53]:5353\"] }}\nbackends_file = \"/etc/anyedge/b.json\"\n"
        );
        let c = Config::parse(&ok, "t.toml").unwrap();
        let s = &c.services[0];
        let d = s.discover.as_ref().unwrap();
        assert_eq!(d.name, "nodes.example.");
        assert_eq!(d.resolvers[0], "192.0.2.53:53".parse().unwrap());
        assert_eq!(d.resolvers[1], "[2001:db8::53]:5353".parse().unwrap());
        assert_eq!(
            (d.min_refresh, d.max_refresh),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
        assert_eq!(s.slow_start, Duration::from_secs(10));
        assert!(s.backends.is_empty() && s.backends_file.is_some());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.state_dir.as_deref(), Some(std::path::Path::new("/var/lib/anyedge")));
        for (bad, field, what) in [
            ("discover = { name = \"n.\", type = \"SRV\", port = 1, resolvers = [\"192.0.2.53\"] }", "discover.port", "SRV records carry"),
            ("discover = { name = \"n.\", type = \"A\", resolvers = [\"192.0.2.53\"] }", "discover.port", "needs the backends' port"),
            ("discover = { name = \"n.\", type = \"A\", port = 1, resolvers = [\"ns1\"] }", "discover.resolvers", "is not IP"),
            ("discover = { name = \"n.\", type = \"A\", port = 1, resolvers = [] }", "discover.resolvers", "1 to 8"),
            ("discover = { name = \"a..b\", type = \"A\", port = 1, resolvers = [\"192.0.2.53\"] }", "discover.name", "not a DNS name"),
            ("discover = { name = \"n.\", type = \"A\", port = 1, resolvers = [\"192.0.2.53\"], min_refresh = \"1m\", max_refresh = \"1s\" }", "discover.max_refresh", ">= min_refresh"),
            ("discover = { name = \"n.\", type = \"MX\", port = 1, resolvers = [\"192.0.2.53\"] }", "discover", "unknown variant"),
            ("backends_file = \"b.json\"", "backends_file", "absolute"),
            ("backends_file = \"/b.json\"\nslow_start = \"2h\"", "slow_start", ""),
            ("", "backend", "or discover, or backends_file"),
        ] {
            let e = Config::parse(&format!("{svc}{bad}\n"), "t.toml").unwrap_err();
            assert!(e.field.contains(field) && e.message.contains(what), "{bad}: {e}");
        }
        let e = Config::parse(&ok.replace("/var/lib/anyedge", "var/lib"), "t.toml").unwrap_err();
        assert_eq!(e.field, "pop.state_dir", "{e}");
    }

    #[test]
    fn no_backends_rejected() {
        let src = "[pop]\nname = \"x\"\n[[service]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nbackend = []\n";
        let e = Config::parse(src, "t.toml").unwrap_err();
        assert!(e.message.contains("at least one backend"), "{e}");
    }
}
