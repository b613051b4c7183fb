//! Configuration: TOML in, a validated [`Config`] out.
//!
//! "Parse, don't validate": the raw serde structs (`Raw*`, all with
//! `deny_unknown_fields`) are private; the public types can only be built by
//! [`Config::parse`], which checks every cross-field rule and reports the file,
//! line, column and field of the first problem.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

mod dns;
mod xdp;
pub use dns::{canonical_name, DnsConfig, TcpLimits, TsigAlgorithm, TsigKey, ZoneConfig, ZoneSource};
pub use xdp::XdpConfig;
#[cfg_attr(not(feature = "xdp"), allow(unused_imports))]
pub use xdp::XdpMode;

/// The configuration compiled into the binary: used by `anyedge run` without
/// `-c` and by `anyedge demo`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../default.toml");
/// Name shown in errors for the embedded configuration.
pub const EMBEDDED_NAME: &str = "<embedded default config>";

/// A configuration error that points at the offending place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `service[0].backend[1].address`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )
    }
}

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
pub struct Config {
    pub source: String,
    pub pop_name: String,
    pub max_connections: NonZeroU32,
    pub shutdown_grace: Duration,
    pub workers: Option<NonZeroU32>,
    pub admin: Option<AdminConfig>,
    /// Per-source admission rules for every L4 listener.
    pub guard: anyedge_guard::GuardConfig,
    /// Hold connections the guard refuses open (silently) instead of
    /// closing them, so the attacker's connection slots stay busy.
    pub tarpit: Option<Tarpit>,
    pub bgp: Option<BgpConfig>,
    pub anycast: Vec<AnycastConfig>,
    pub services: Vec<ServiceConfig>,
    /// Authoritative DNS (absent: no DNS listeners).
    pub dns: Option<DnsConfig>,
    /// The XDP fast path (absent: userspace layer only).
    pub xdp: Option<XdpConfig>,
    /// Legal but probably not meant (e.g. a service whose backends all have
    /// weight 0): printed by `anyedge check`, logged at start and reload.
    pub warnings: Vec<String>,
}

/// The tarpit: a refused connection is kept open, unread, for `hold`; at
/// most `max_connections` at once (beyond that they are closed at once, so
/// the tarpit cannot exhaust file descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tarpit {
    pub hold: Duration,
    pub max_connections: u32,
}

/// BGP speaker settings (announce-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    pub asn: u32,
    pub router_id: std::net::Ipv4Addr,
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Draining (admin, maintenance file, SIGTERM) lasts until open
    /// connections are at most `drain_until_connections`, or this long.
    pub drain_timeout: Duration,
    pub drain_until_connections: u64,
    /// While this file exists the PoP drains (maintenance).
    pub maintenance_file: Option<std::path::PathBuf>,
    /// Half-life of the flap-damping penalty.
    pub flap_half_life: Duration,
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub asn: u32,
    pub local_address: Option<std::net::IpAddr>,
    pub next_hop: Option<std::net::Ipv4Addr>,
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    /// GTSM (RFC 5082): TTL 255 out, >= 254 in.
    pub ttl_security: bool,
    /// BFD (RFC 5880/5881 single hop): (interval, multiplier).
    pub bfd: Option<(Duration, u8)>,
}

/// One anycast prefix and what must be healthy for this PoP to announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnycastConfig {
    pub prefix: (std::net::IpAddr, u8),
    /// L4 services that must each have at least `min_healthy_backends`
    /// healthy, undrained backends.
    pub services: Vec<String>,
    pub min_healthy_backends: u32,
    pub communities: Vec<u32>,
    pub med: Option<u32>,
    /// While draining: extra prepends and communities (65535:0,
    /// GRACEFUL_SHUTDOWN, RFC 8326, is always added).
    pub drain_prepend: u8,
    pub drain_communities: Vec<u32>,
    /// Also requires the DNS server to serve every configured zone (an
    /// anycast name-server address).
    pub dns: bool,
}

/// The admin HTTP API. A non-loopback `listen` without a token cannot be
/// constructed: `Config::parse` refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token for every state-changing call; without one the API is
    /// read-only.
    pub token: Option<String>,
    /// Open admin connections at most (beyond: closed at once).
    pub max_connections: u32,
    /// Open admin connections per client address at most.
    pub max_connections_per_source: u32,
    /// A request head must arrive within this (from the connection's start,
    /// or from the previous response on a kept-alive connection).
    pub header_timeout: Duration,
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

// ---------------------------------------------------------------- raw serde

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pop: RawPop,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    guard: RawGuard,
    #[serde(default)]
    bgp: Option<RawBgp>,
    #[serde(default)]
    anycast: Vec<RawAnycast>,
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    #[serde(default)]
    dns: Option<dns::RawDns>,
    #[serde(default)]
    xdp: Option<xdp::RawXdp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgp {
    asn: Spanned<u32>,
    router_id: Spanned<String>,
    #[serde(default = "d_hold")]
    hold_time: Spanned<u16>,
    #[serde(default = "d_retry", with = "humantime_spanned")]
    connect_retry: Spanned<Duration>,
    #[serde(default = "d_drain_timeout", with = "humantime_spanned")]
    drain_timeout: Spanned<Duration>,
    #[serde(default)]
    drain_until_connections: u64,
    #[serde(default)]
    maintenance_file: Option<String>,
    #[serde(default = "d_half_life", with = "humantime_spanned")]
    flap_half_life: Spanned<Duration>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
}
fn d_hold() -> Spanned<u16> {
    Spanned::new(0..0, 90)
}
fn d_half_life() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(60))
}
fn d_drain_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(30))
}
fn d_retry() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(5))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default)]
    port: Option<u16>,
    asn: Spanned<u32>,
    #[serde(default)]
    local_address: Option<Spanned<String>>,
    #[serde(default)]
    next_hop: Option<Spanned<String>>,
    #[serde(default)]
    next_hop_v6: Option<Spanned<String>>,
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default)]
    ttl_security: bool,
    #[serde(default)]
    bfd: bool,
    #[serde(default = "d_bfd_interval", with = "humantime_spanned")]
    bfd_interval: Spanned<Duration>,
    #[serde(default = "d_bfd_mult")]
    bfd_multiplier: Spanned<u8>,
}
fn d_bfd_interval() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_millis(300))
}
fn d_bfd_mult() -> Spanned<u8> {
    Spanned::new(0..0, 3)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnycast {
    prefix: Spanned<String>,
    #[serde(default)]
    services: Vec<Spanned<String>>,
    #[serde(default = "d_min_healthy")]
    min_healthy_backends: u32,
    #[serde(default)]
    communities: Vec<Spanned<String>>,
    #[serde(default)]
    med: Option<u32>,
    #[serde(default)]
    drain_prepend: Option<Spanned<u8>>,
    #[serde(default)]
    drain_communities: Vec<Spanned<String>>,
    #[serde(default)]
    dns: Option<Spanned<bool>>,
}
fn d_min_healthy() -> u32 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    new_connections_per_address: Option<RawRate>,
    #[serde(default)]
    new_connections_per_prefix: Option<RawRate>,
    #[serde(default)]
    max_connections_per_address: Option<Spanned<u32>>,
    #[serde(default)]
    table_capacity: Option<Spanned<usize>>,
    #[serde(default)]
    dynamic_block: Option<RawDynamicBlock>,
    #[serde(default)]
    tarpit: Option<RawTarpit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarpit {
    #[serde(with = "humantime_spanned")]
    hold: Spanned<Duration>,
    #[serde(default = "d_tarpit_max")]
    max_connections: u32,
}
fn d_tarpit_max() -> u32 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDynamicBlock {
    threshold_per_second: Spanned<u32>,
    #[serde(default = "d_block_for", with = "humantime_spanned")]
    block_for: Spanned<Duration>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
}
fn d_block_for() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(60))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: Spanned<u32>,
    #[serde(default)]
    burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
    #[serde(default)]
    token: Option<Spanned<String>>,
    #[serde(default)]
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    max_connections: Option<Spanned<u32>>,
    #[serde(default)]
    max_connections_per_source: Option<Spanned<u32>>,
    #[serde(default = "d_header_timeout", with = "humantime_spanned")]
    header_timeout: Spanned<Duration>,
}
fn d_header_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(5))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPop {
    name: Spanned<String>,
    #[serde(default)]
    workers: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "d_global_max")]
    max_connections: Spanned<u32>,
    #[serde(default = "d_grace", with = "humantime_spanned")]
    shutdown_grace: Spanned<Duration>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: d_global_max(),
            shutdown_grace: d_grace(),
        }
    }
}

fn d_global_max() -> Spanned<u32> {
    Spanned::new(0..0, 100_000)
}
fn d_grace() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_secs(30))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    listen: Spanned<Vec<Spanned<String>>>,
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
    #[serde(rename = "backend")]
    backends: Spanned<Vec<RawBackend>>,
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
struct RawBackend {
    name: Spanned<String>,
    address: Spanned<String>,
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

/// humantime durations ("1s", "250ms") that keep their span.
mod humantime_spanned {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    use toml::Spanned;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<Duration>, D::Error> {
        let s: Spanned<String> = Spanned::deserialize(d)?;
        let span = s.span();
        let dur = humantime::parse_duration(s.get_ref())
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {:?}: {e}", s.get_ref())))?;
        Ok(Spanned::new(span, dur))
    }
}

/// Accepted range of every duration field (inclusive), by field:
///
/// | field | min | max |
/// |---|---|---|
/// | `limits.shutdown_grace` | 0 | 24h |
/// | `bgp.connect_retry` | 100ms | 1h |
/// | `bgp.drain_timeout` | 0 | 24h |
/// | `bgp.flap_half_life` | 1s | 24h |
/// | `bgp.peer.bfd_interval` | 10ms | 10s |
/// | `guard.tarpit.hold` | 1ms | 1h |
/// | `guard.dynamic_block.block_for` | 1ms | 7 days |
/// | `service.timeouts.connect` | 1ms | 5min |
/// | `service.timeouts.idle` | 1ms | 7 days |
/// | `service.timeouts.client_first_byte` | 1ms | 5min |
/// | `service.health.interval` | 10ms | 1h |
/// | `service.health.timeout` | 1ms | the interval |
/// | `dns.tcp_idle_timeout` | 1ms | 1h |
///
/// Anything beyond is a typo, not a setting, and an absurd value (say
/// `18446744073709551615s`) would overflow `Instant + Duration` at run time.
pub(crate) mod range {
    use std::time::Duration;
    pub const MS: Duration = Duration::from_millis(1);
    pub const MIN: Duration = Duration::from_secs(60);
    pub const HOUR: Duration = Duration::from_secs(3600);
    pub const DAY: Duration = Duration::from_secs(86_400);
    pub const WEEK: Duration = Duration::from_secs(7 * 86_400);
}

/// The duration in `d` if it lies in `min..=max` (see [`range`]), else an
/// error naming the field and the range.
fn duration_in(
    cx: &Ctx<'_>,
    d: &Spanned<Duration>,
    field: impl Into<String>,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let v = *d.get_ref();
    if v < min || v > max {
        let show = |x: Duration| {
            if x.is_zero() {
                "0s".to_string()
            } else {
                humantime::format_duration(x).to_string()
            }
        };
        return Err(cx.err(
            d.span(),
            field,
            format!(
                "{} is out of range: must be between {} and {}",
                show(v),
                show(min),
                show(max)
            ),
        ));
    }
    Ok(v)
}

// ---------------------------------------------------------------- parsing

struct Ctx<'a> {
    file: &'a str,
    src: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: std::ops::Range<usize>, field: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.src, span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            field: field.into(),
            message: msg.into(),
        }
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// The dotted path of the key whose value (or key) starts at `offset`, for
/// errors from the TOML parser, which only give a span: `[[service]]` ...
/// `[[service.backend]]` ... `weight = x` gives `service[0].backend[0].weight`.
/// Tables are found by their headers; keys of inline tables and dotted keys
/// are named as written on the line.
fn key_path(src: &str, offset: usize) -> Option<String> {
    let offset = offset.min(src.len());
    let line_start = src.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = src.get(line_start..)?.lines().next().unwrap_or("");
    let col = offset - line_start;
    let before = line.get(..col).unwrap_or(line);
    let on_header = line.trim_start().starts_with('[') && !before.contains('=');
    // the table: replay the headers up to this line (this one too if the
    // span is a header: a missing field, a wrong table)
    let upto = if on_header { line_start + line.len() } else { line_start };
    let mut table: Vec<String> = Vec::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in src.get(..upto)?.lines() {
        let t = line.trim_start();
        let (inner, array) = if let Some(r) = t.strip_prefix("[[") {
            (r.split("]]").next().unwrap_or(""), true)
        } else if let Some(r) = t.strip_prefix('[') {
            (r.split(']').next().unwrap_or(""), false)
        } else {
            continue;
        };
        let names: Vec<&str> = inner.split('.').map(|n| n.trim().trim_matches('"')).collect();
        // parents resolve to the current element of each array of tables
        let mut path: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| match table.get(i) {
                Some(cur) if i + 1 < names.len() && cur.split('[').next() == Some(*n) => cur.clone(),
                _ => (*n).to_string(),
            })
            .collect();
        if array {
            let parent = path.get(..path.len().saturating_sub(1)).unwrap_or(&[]).join(".");
            if let Some(last) = path.last_mut() {
                let key = format!("{parent}.{last}");
                let n = counts.entry(key).or_insert(0);
                *last = format!("{last}[{n}]");
                *n += 1;
            }
        }
        table = path;
    }
    if on_header {
        return (!table.is_empty()).then(|| table.join("."));
    }
    let is_key = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '"';
    let key_before = |eq: usize| {
        let k = before.get(..eq).unwrap_or("").trim_end();
        let start = k.rfind(|c: char| !is_key(c)).map_or(0, |i| i + 1);
        k.get(start..).unwrap_or("").replace('"', "")
    };
    // an inline table (`rate = { per_second = x }`): its key first
    if let Some(eq) = before.find('=') {
        if before.get(eq..).is_some_and(|r| r.contains('{')) {
            table.push(key_before(eq));
        }
    }
    let key: String = match before.rfind('=') {
        // a value: the key before its `=`
        Some(eq) => key_before(eq),
        // a key (an unknown field)
        None => line
            .get(col..)
            .unwrap_or("")
            .chars()
            .take_while(|c| is_key(*c))
            .filter(|c| *c != '"')
            .collect(),
    };
    if !key.is_empty() {
        table.push(key);
    }
    (!table.is_empty()).then(|| table.join("."))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Config {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&src, &file)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
    }

    /// Parses TOML text; `file` is only used in error messages.
    pub fn parse(src: &str, file: &str) -> Result<Config, ConfigError> {
        let cx = Ctx { file, src };
        let raw: RawConfig = toml::from_str(src).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let field = key_path(src, span.start).unwrap_or_else(|| "-".into());
            cx.err(span, field, e.message().trim().to_string())
        })?;

        if !valid_name(raw.pop.name.get_ref()) {
            return Err(cx.err(
                raw.pop.name.span(),
                "pop.name",
                "must be 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        let workers = match raw.pop.workers {
            None => None,
            Some(w) => Some(
                NonZeroU32::new(*w.get_ref())
                    .filter(|n| n.get() <= 256)
                    .ok_or_else(|| cx.err(w.span(), "pop.workers", "must be between 1 and 256"))?,
            ),
        };
        let max_connections = NonZeroU32::new(*raw.limits.max_connections.get_ref()).ok_or_else(|| {
            cx.err(
                raw.limits.max_connections.span(),
                "limits.max_connections",
                "must be > 0",
            )
        })?;

        let shutdown_grace = duration_in(
            &cx,
            &raw.limits.shutdown_grace,
            "limits.shutdown_grace",
            Duration::ZERO,
            range::DAY,
        )?;

        let admin_span = raw.admin.as_ref().map(|a| a.listen.span());
        let admin = match raw.admin {
            None => None,
            Some(a) => Some(parse_admin(&cx, a)?),
        };

        let tarpit = match &raw.guard.tarpit {
            None => None,
            Some(t) => {
                let hold = duration_in(&cx, &t.hold, "guard.tarpit.hold", range::MS, range::HOUR)?;
                Some(Tarpit {
                    hold,
                    max_connections: t.max_connections,
                })
            }
        };
        let guard = parse_guard(&cx, raw.guard)?;
        let bgp = match raw.bgp {
            None => None,
            Some(b) => Some(parse_bgp(&cx, b)?),
        };

        let mut services = Vec::with_capacity(raw.services.len());
        let mut warnings = Vec::new();
        // every listening address with where it is written, for the clash
        // checks; and where each service's backends are written
        let mut bound: Vec<Bound> = Vec::new();
        let mut backend_spans: Vec<Vec<std::ops::Range<usize>>> = Vec::new();
        for (si, rs) in raw.services.into_iter().enumerate() {
            let sp = format!("service[{si}]");
            let name_span = rs.name.span();
            let listen_spans: Vec<_> = rs.listen.get_ref().iter().map(Spanned::span).collect();
            backend_spans.push(rs.backends.get_ref().iter().map(|b| b.address.span()).collect());
            let svc = parse_service(&cx, &sp, rs)?;
            if services.iter().any(|s: &ServiceConfig| s.name == svc.name) {
                return Err(cx.err(
                    name_span,
                    format!("{sp}.name"),
                    format!("duplicate service name {:?}", svc.name),
                ));
            }
            for (k, (addr, span)) in svc.listen.iter().zip(listen_spans).enumerate() {
                bound.push(Bound {
                    addr: *addr,
                    span,
                    field: format!("service {:?}.listen[{k}]", svc.name),
                });
            }
            if svc.backends.iter().all(|b| b.weight == 0) {
                let (line, _) = line_col(src, name_span.start);
                warnings.push(format!(
                    "{file}:{line}: service {:?}.backend: every backend has weight 0: the service serves nobody",
                    svc.name
                ));
            }
            services.push(svc);
        }
        let mut anycast = Vec::new();
        let mut anycast_dns_span = None;
        let first_anycast_span = raw.anycast.first().map(|a| a.prefix.span());
        for (i, a) in raw.anycast.into_iter().enumerate() {
            let prefix_span = a.prefix.span();
            if anycast_dns_span.is_none() && a.dns.as_ref().is_some_and(|d| *d.get_ref()) {
                anycast_dns_span = a.dns.as_ref().map(|d| (i, d.span()));
            }
            let ac = parse_anycast(&cx, i, a, &services)?;
            if anycast.iter().any(|x: &AnycastConfig| x.prefix == ac.prefix) {
                return Err(cx.err(prefix_span, format!("anycast[{i}].prefix"), "prefix listed twice"));
            }
            anycast.push(ac);
        }
        // zone files are relative to the config file's directory
        let base_dir = Path::new(file)
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && p.is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dns_spans = raw.dns.as_ref().map(dns::RawDns::listen_spans).unwrap_or_default();
        let dns = match raw.dns {
            None => None,
            Some(d) => Some(dns::parse_dns(&cx, d, &base_dir)?),
        };
        if let Some(d) = &dns {
            for (i, (addr, span)) in d.listen.iter().zip(dns_spans).enumerate() {
                bound.push(Bound {
                    addr: *addr,
                    span,
                    field: format!("dns.listen[{i}]"),
                });
            }
        }
        if let (Some(a), Some(span)) = (&admin, admin_span) {
            bound.push(Bound {
                addr: a.listen,
                span,
                field: "admin.listen".into(),
            });
        }
        check_clashes(&cx, bound.as_mut_slice())?;
        for (svc, spans) in services.iter().zip(backend_spans) {
            for (bi, (b, span)) in svc.backends.iter().zip(spans).enumerate() {
                if let Some(l) = bound.iter().find(|l| loops_back(b.address, l.addr)) {
                    let (line, _) = line_col(src, l.span.start);
                    return Err(cx.err(
                        span,
                        format!("service {:?}.backend[{bi}].address", svc.name),
                        format!(
                            "{} is our own listener {} {} (line {line}): the connection would loop back into anyedge",
                            b.address, l.field, l.addr
                        ),
                    ));
                }
            }
        }
        let xdp = match raw.xdp {
            None => None,
            Some(x) => Some(xdp::parse_xdp(&cx, x)?),
        };
        if dns.is_none() {
            if let Some((i, span)) = anycast_dns_span {
                return Err(cx.err(span, format!("anycast[{i}].dns"), "needs a [dns] section"));
            }
        }
        if let (Some(span), None) = (first_anycast_span, &bgp) {
            return Err(cx.err(span, "anycast", "anycast prefixes need a [bgp] section to be announced"));
        }
        Ok(Config {
            source: file.to_string(),
            pop_name: raw.pop.name.into_inner(),
            max_connections,
            shutdown_grace,
            workers,
            admin,
            guard,
            tarpit,
            bgp,
            anycast,
            services,
            dns,
            xdp,
            warnings,
        })
    }
}

/// One of our listening addresses and where the file sets it.
struct Bound {
    addr: SocketAddr,
    span: std::ops::Range<usize>,
    field: String,
}

/// Whether two listening addresses take (some of) the same connections:
/// same port and family, and the same IP or one of them the wildcard. Both
/// would bind (SO_REUSEPORT), and the kernel would split the connections
/// between them (or give the specific one all of its own).
pub fn listen_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    let (ia, ib) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port() && ia.is_ipv4() == ib.is_ipv4() && (ia == ib || ia.is_unspecified() || ib.is_unspecified())
}

/// Every TCP listener (services, DNS, admin) must be alone on its address
/// and port: the later one in the file is the error.
fn check_clashes(cx: &Ctx<'_>, bound: &mut [Bound]) -> Result<(), ConfigError> {
    bound.sort_by_key(|b| b.span.start);
    for (i, b) in bound.iter().enumerate() {
        if let Some(first) = bound[..i].iter().find(|f| listen_overlap(f.addr, b.addr)) {
            let (line, _) = line_col(cx.src, first.span.start);
            let what = if first.addr == b.addr {
                format!("{} is also {} (line {line})", b.addr, first.field)
            } else {
                format!("{} overlaps {} {} (line {line})", b.addr, first.field, first.addr)
            };
            return Err(cx.err(
                b.span.clone(),
                b.field.clone(),
                format!("{what}: two listeners on one port would split its connections between them"),
            ));
        }
    }
    Ok(())
}

/// Whether connecting to `backend` reaches our listener on `listen`.
fn loops_back(backend: SocketAddr, listen: SocketAddr) -> bool {
    let b = backend.ip().to_canonical();
    let l = listen.ip().to_canonical();
    if backend.port() != listen.port() || b.is_ipv4() != l.is_ipv4() {
        return false;
    }
    // connecting to the wildcard address reaches 127.0.0.1 (::1)
    let lo: std::net::IpAddr = if b.is_ipv4() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    let b = if b.is_unspecified() { lo } else { b };
    b == l || (l.is_unspecified() && (b.is_loopback() || crate::net::is_local(b)))
}

/// An address or CIDR (`192.0.2.1` = `/32`).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `{ per_second, burst }` (burst defaults to per_second).
fn parse_rate(cx: &Ctx<'_>, r: Option<RawRate>, field: &str) -> Result<Option<anyedge_guard::Rate>, ConfigError> {
    let Some(r) = r else { return Ok(None) };
    let ps = *r.per_second.get_ref();
    if ps == 0 {
        return Err(cx.err(
            r.per_second.span(),
            format!("{field}.per_second"),
            "must be > 0 (omit the limit to disable it)",
        ));
    }
    Ok(Some(anyedge_guard::Rate {
        per_second: ps,
        burst: r.burst.unwrap_or(ps).max(1),
    }))
}

fn parse_guard(cx: &Ctx<'_>, g: RawGuard) -> Result<anyedge_guard::GuardConfig, ConfigError> {
    use anyedge_guard::{prefix::Prefix, GuardConfig};
    let prefixes = |list: Vec<Spanned<String>>, field: &str| -> Result<Vec<Prefix>, ConfigError> {
        list.into_iter()
            .map(|p| {
                p.get_ref()
                    .parse::<Prefix>()
                    .map_err(|e| cx.err(p.span(), format!("guard.{field}"), e.to_string()))
            })
            .collect()
    };
    let rate = |r: Option<RawRate>, field: &str| parse_rate(cx, r, &format!("guard.{field}"));
    let mut cfg = GuardConfig {
        allow: prefixes(g.allow, "allow")?,
        deny: prefixes(g.deny, "deny")?,
        rate_per_address: rate(g.new_connections_per_address, "new_connections_per_address")?,
        rate_per_prefix: rate(g.new_connections_per_prefix, "new_connections_per_prefix")?,
        max_concurrent_per_address: None,
        ..GuardConfig::default()
    };
    if let Some(m) = g.max_connections_per_address {
        if *m.get_ref() == 0 {
            return Err(cx.err(
                m.span(),
                "guard.max_connections_per_address",
                "must be > 0 (omit to disable)",
            ));
        }
        cfg.max_concurrent_per_address = Some(m.into_inner());
    }
    if let Some(d) = g.dynamic_block {
        if *d.threshold_per_second.get_ref() == 0 {
            return Err(cx.err(
                d.threshold_per_second.span(),
                "guard.dynamic_block.threshold_per_second",
                "must be > 0",
            ));
        }
        let block_for = duration_in(
            cx,
            &d.block_for,
            "guard.dynamic_block.block_for",
            range::MS,
            range::WEEK,
        )?;
        cfg.dynamic_block = Some(anyedge_guard::DynamicBlock {
            threshold_per_second: d.threshold_per_second.into_inner(),
            block_for,
            exclude: prefixes(d.exclude, "dynamic_block.exclude")?,
        });
    }
    if let Some(c) = g.table_capacity {
        if !(64..=1 << 26).contains(c.get_ref()) {
            return Err(cx.err(c.span(), "guard.table_capacity", "must be between 64 and 67108864"));
        }
        cfg.table_capacity = c.into_inner();
    }
    Ok(cfg)
}

fn community(cx: &Ctx<'_>, c: &Spanned<String>, field: &str) -> Result<u32, ConfigError> {
    let bad = || {
        cx.err(
            c.span(),
            field,
            format!("{:?} is not a community ASN:VALUE (16-bit each)", c.get_ref()),
        )
    };
    let (a, v) = c.get_ref().split_once(':').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let v: u16 = v.trim().parse().map_err(|_| bad())?;
    Ok((u32::from(a) << 16) | u32::from(v))
}

fn parse_bgp(cx: &Ctx<'_>, b: RawBgp) -> Result<BgpConfig, ConfigError> {
    if *b.asn.get_ref() == 0 || *b.asn.get_ref() == 23456 {
        return Err(cx.err(b.asn.span(), "bgp.asn", "must be a valid ASN (not 0 or AS_TRANS 23456)"));
    }
    let router_id: std::net::Ipv4Addr = b
        .router_id
        .get_ref()
        .parse()
        .ok()
        .filter(|r: &std::net::Ipv4Addr| !r.is_unspecified())
        .ok_or_else(|| cx.err(b.router_id.span(), "bgp.router_id", "must be a non-zero IPv4 address"))?;
    let hold = *b.hold_time.get_ref();
    if hold != 0 && hold < 3 {
        return Err(cx.err(b.hold_time.span(), "bgp.hold_time", "must be 0 or at least 3 seconds"));
    }
    let connect_retry = duration_in(
        cx,
        &b.connect_retry,
        "bgp.connect_retry",
        Duration::from_millis(100),
        range::HOUR,
    )?;
    let drain_timeout = duration_in(cx, &b.drain_timeout, "bgp.drain_timeout", Duration::ZERO, range::DAY)?;
    let flap_half_life = duration_in(
        cx,
        &b.flap_half_life,
        "bgp.flap_half_life",
        Duration::from_secs(1),
        range::DAY,
    )?;
    let mut peers: Vec<PeerConfig> = Vec::new();
    for (i, p) in b.peers.into_iter().enumerate() {
        let f = |n: &str| format!("bgp.peer[{i}].{n}");
        if !valid_name(p.name.get_ref()) || peers.iter().any(|x| &x.name == p.name.get_ref()) {
            return Err(cx.err(p.name.span(), f("name"), "must be a unique name of [A-Za-z0-9._-]"));
        }
        let ip: std::net::IpAddr = p
            .address
            .get_ref()
            .parse()
            .map_err(|_| cx.err(p.address.span(), f("address"), "must be an IP address"))?;
        let parse_ip = |v: &Option<Spanned<String>>, n: &str| -> Result<Option<std::net::IpAddr>, ConfigError> {
            v.as_ref()
                .map(|s| {
                    s.get_ref()
                        .parse()
                        .map_err(|_| cx.err(s.span(), f(n), "must be an IP address"))
                })
                .transpose()
        };
        let local_address = parse_ip(&p.local_address, "local_address")?;
        let next_hop = match parse_ip(&p.next_hop, "next_hop")? {
            None => None,
            Some(std::net::IpAddr::V4(a)) => Some(a),
            Some(_) => {
                let at = p.next_hop.as_ref().map_or(0..0, Spanned::span);
                return Err(cx.err(at, f("next_hop"), "must be IPv4 (use next_hop_v6 for IPv6)"));
            }
        };
        let next_hop_v6 = match parse_ip(&p.next_hop_v6, "next_hop_v6")? {
            None => None,
            Some(std::net::IpAddr::V6(a)) => Some(a),
            Some(_) => {
                let at = p.next_hop_v6.as_ref().map_or(0..0, Spanned::span);
                return Err(cx.err(at, f("next_hop_v6"), "must be IPv6"));
            }
        };
        if let Some(pw) = &p.password {
            if pw.get_ref().is_empty() || pw.get_ref().len() > 80 {
                return Err(cx.err(pw.span(), f("password"), "TCP MD5 keys are 1-80 bytes"));
            }
        }
        // checked even with BFD off: it is still a typo
        duration_in(
            cx,
            &p.bfd_interval,
            f("bfd_interval"),
            Duration::from_millis(10),
            Duration::from_secs(10),
        )?;
        if p.bfd {
            if *p.bfd_multiplier.get_ref() == 0 {
                return Err(cx.err(p.bfd_multiplier.span(), f("bfd_multiplier"), "must be at least 1"));
            }
            if local_address.is_none() {
                return Err(cx.err(
                    p.name.span(),
                    f("bfd"),
                    "BFD needs local_address (the BFD packets' source)",
                ));
            }
        }
        peers.push(PeerConfig {
            bfd: p.bfd.then(|| (*p.bfd_interval.get_ref(), *p.bfd_multiplier.get_ref())),
            password: p.password.map(Spanned::into_inner),
            ttl_security: p.ttl_security,
            name: p.name.into_inner(),
            address: SocketAddr::new(ip, p.port.unwrap_or(179)),
            asn: p.asn.into_inner(),
            local_address,
            next_hop,
            next_hop_v6,
        });
    }
    Ok(BgpConfig {
        asn: b.asn.into_inner(),
        router_id,
        hold_time: hold,
        connect_retry,
        drain_timeout,
        drain_until_connections: b.drain_until_connections,
        maintenance_file: b.maintenance_file.map(std::path::PathBuf::from),
        flap_half_life,
        peers,
    })
}

fn parse_anycast(
    cx: &Ctx<'_>,
    i: usize,
    a: RawAnycast,
    services: &[ServiceConfig],
) -> Result<AnycastConfig, ConfigError> {
    let f = |n: &str| format!("anycast[{i}].{n}");
    let net: IpNet = a.prefix.get_ref().parse().map_err(|_| {
        cx.err(
            a.prefix.span(),
            f("prefix"),
            format!("{:?} is not a CIDR prefix", a.prefix.get_ref()),
        )
    })?;
    if net.trunc() != net {
        return Err(cx.err(
            a.prefix.span(),
            f("prefix"),
            format!("host bits set; did you mean {}?", net.trunc()),
        ));
    }
    let mut svcs = Vec::new();
    for s in &a.services {
        if !services.iter().any(|x| &x.name == s.get_ref()) {
            return Err(cx.err(s.span(), f("services"), format!("no service named {:?}", s.get_ref())));
        }
        svcs.push(s.get_ref().clone());
    }
    let communities = a
        .communities
        .iter()
        .map(|c| community(cx, c, &f("communities")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut drain_communities = a
        .drain_communities
        .iter()
        .map(|c| community(cx, c, &f("drain_communities")))
        .collect::<Result<Vec<_>, _>>()?;
    const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;
    if !drain_communities.contains(&GRACEFUL_SHUTDOWN) {
        drain_communities.push(GRACEFUL_SHUTDOWN);
    }
    let drain_prepend = a.drain_prepend.map_or(Ok(2), |p| {
        if *p.get_ref() > 16 {
            Err(cx.err(p.span(), f("drain_prepend"), "at most 16"))
        } else {
            Ok(p.into_inner())
        }
    })?;
    Ok(AnycastConfig {
        prefix: (net.addr(), net.prefix_len()),
        services: svcs,
        min_healthy_backends: a.min_healthy_backends,
        communities,
        med: a.med,
        drain_prepend,
        drain_communities,
        dns: a.dns.as_ref().is_some_and(|d| *d.get_ref()),
    })
}

fn parse_admin(cx: &Ctx<'_>, a: RawAdmin) -> Result<AdminConfig, ConfigError> {
    let listen: SocketAddr = a.listen.get_ref().parse().map_err(|_| {
        cx.err(
            a.listen.span(),
            "admin.listen",
            format!("{:?} is not ADDRESS:PORT", a.listen.get_ref()),
        )
    })?;
    if listen.port() == 0 {
        return Err(cx.err(a.listen.span(), "admin.listen", "port must not be 0"));
    }
    let token = match (a.token, a.token_file) {
        (Some(_), Some(f)) => {
            return Err(cx.err(f.span(), "admin.token_file", "set either token or token_file, not both"));
        }
        (Some(t), None) => Some((t.span(), t.into_inner())),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f.get_ref()).map_err(|e| {
                cx.err(
                    f.span(),
                    "admin.token_file",
                    format!("cannot read {:?}: {e}", f.get_ref()),
                )
            })?;
            Some((f.span(), text.trim().to_string()))
        }
        (None, None) => None,
    };
    if let Some((span, t)) = &token {
        if t.len() < 16 || t.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(cx.err(
                span.clone(),
                "admin.token",
                "must be at least 16 printable ASCII characters",
            ));
        }
    }
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(cx.err(
            a.listen.span(),
            "admin.listen",
            format!("refusing to expose the admin API on non-loopback {listen} without a token (set admin.token or admin.token_file)"),
        ));
    }
    let cap = |v: Option<Spanned<u32>>, field: &str, default: u32| match v {
        None => Ok(default),
        Some(n) if (1..=100_000).contains(n.get_ref()) => Ok(*n.get_ref()),
        Some(n) => Err(cx.err(n.span(), field, "must be between 1 and 100000")),
    };
    let max_connections = cap(a.max_connections, "admin.max_connections", 64)?;
    let max_connections_per_source = cap(a.max_connections_per_source, "admin.max_connections_per_source", 16)?;
    let header_timeout = *a.header_timeout.get_ref();
    if header_timeout.is_zero() || header_timeout > Duration::from_secs(300) {
        return Err(cx.err(
            a.header_timeout.span(),
            "admin.header_timeout",
            "must be between 1ms and 5m",
        ));
    }
    Ok(AdminConfig {
        listen,
        token: token.map(|(_, t)| t),
        max_connections,
        max_connections_per_source,
        header_timeout,
    })
}

fn parse_service(cx: &Ctx<'_>, sp: &str, rs: RawService) -> Result<ServiceConfig, ConfigError> {
    if !valid_name(rs.name.get_ref()) {
        return Err(cx.err(
            rs.name.span(),
            format!("{sp}.name"),
            "must be 1-64 characters of [A-Za-z0-9._-]",
        ));
    }
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
    let backlog = *rs.backlog.get_ref();
    if backlog == 0 || backlog > 1 << 20 {
        return Err(cx.err(
            rs.backlog.span(),
            format!("{sp}.backlog"),
            "must be between 1 and 1048576",
        ));
    }
    let max_connections = match rs.max_connections {
        None => None,
        Some(m) => Some(NonZeroU32::new(*m.get_ref()).ok_or_else(|| {
            cx.err(
                m.span(),
                format!("{sp}.max_connections"),
                "must be > 0 (omit for no cap)",
            )
        })?),
    };
    let mut accept_proxy_from = Vec::new();
    for c in rs.accept_proxy_from {
        let net: IpNet = c
            .get_ref()
            .parse()
            .or_else(|_| c.get_ref().parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
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
        if *v.get_ref() == 0 || *v.get_ref() > 100 {
            return Err(cx.err(v.span(), format!("{sp}.health.{name}"), "must be between 1 and 100"));
        }
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
        if !valid_name(rb.name.get_ref()) {
            return Err(cx.err(
                rb.name.span(),
                format!("{bp}.name"),
                "must be 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
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
        if *rb.weight.get_ref() > 10_000 {
            return Err(cx.err(rb.weight.span(), format!("{bp}.weight"), "must be between 0 and 10000"));
        }
        let max_connections = match rb.max_connections {
            None => None,
            Some(m) => Some(NonZeroU32::new(*m.get_ref()).ok_or_else(|| {
                cx.err(
                    m.span(),
                    format!("{bp}.max_connections"),
                    "must be > 0 (omit for no cap)",
                )
            })?),
        };
        backends.push(BackendConfig {
            name: rb.name.into_inner(),
            address,
            weight: rb.weight.into_inner(),
            proxy: rb.proxy_protocol.unwrap_or(rs.proxy_protocol),
            drain: rb.drain,
            max_connections,
        });
    }
    if backends.is_empty() {
        return Err(cx.err(backends_span, format!("{sp}.backend"), "needs at least one backend"));
    }
    let any_proxy = backends.iter().any(|b| b.proxy != ProxyMode::None);
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
            send_proxy: h.send_proxy.unwrap_or(any_proxy),
        },
        backends,
    })
}

/// Path helper for `check`/`run`.
pub fn source_name(path: Option<&PathBuf>) -> String {
    path.map_or_else(|| EMBEDDED_NAME.to_string(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[pop]
name = "fra1"

[[service]]
name = "web"
listen = ["127.0.0.1:8080", "[::1]:8080"]

[[service.backend]]
name = "b1"
address = "127.0.0.1:9001"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MIN, "t.toml").unwrap();
        assert_eq!(c.pop_name, "fra1");
        let s = &c.services[0];
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.balance, Balance::Maglev);
        assert_eq!(s.backends[0].proxy, ProxyMode::V2);
        assert!(s.health.send_proxy);
        assert_eq!(s.timeouts.connect, Duration::from_secs(3));
    }

    #[test]
    fn embedded_and_example_configs_parse() {
        Config::embedded().unwrap();
        let ex = include_str!("../../../../examples/anyedge.toml");
        let c = Config::parse(ex, "examples/anyedge.toml").unwrap();
        assert!(!c.services.is_empty());
        let d = c.dns.expect("the example documents [dns]");
        assert!(d.rrl.is_some() && d.cookies.is_some() && !d.tsig_keys.is_empty());
    }

    #[test]
    fn xdp_section_parses_and_checks() {
        let base = "[pop]\nname = \"p\"\n[xdp]\n";
        let c = Config::parse(
            &format!(
                "{base}interfaces = [\"eth0\"]\nmode = \"generic\"\ndns_queries_per_address = {{ per_second = 5 }}\n"
            ),
            "t.toml",
        )
        .unwrap();
        let x = c.xdp.unwrap();
        assert_eq!(x.mode, XdpMode::Generic);
        assert_eq!(x.dns_per_address.map(|r| (r.per_second, r.burst)), Some((5, 5)));
        let e = Config::parse(&format!("{base}interfaces = []\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "xdp.interfaces");
        let e = Config::parse(
            &format!("{base}interfaces = [\"eth0\"]\ndestinations = [\"nope\"]\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "xdp.destinations[0]"));
    }

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
    fn unknown_field_names_file_line_and_field() {
        let src = MIN.replace("name = \"b1\"", "name = \"b1\"\nwieght = 3");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("unknown field `wieght`"), "{e}");
        assert!(
            e.to_string().starts_with("t.toml:11:1: service[0].backend[0].wieght:"),
            "{e}"
        );
    }

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
    fn admin_needs_token_beyond_loopback() {
        let with = |admin: &str| format!("[admin]\n{admin}\n{MIN}");
        let c = Config::parse(&with("listen = \"127.0.0.1:9180\""), "t.toml").unwrap();
        assert_eq!(c.admin.unwrap().token, None);
        let e = Config::parse(&with("listen = \"0.0.0.0:9180\""), "t.toml").unwrap_err();
        assert!(e.message.contains("refusing to expose"), "{e}");
        assert_eq!((e.line, e.field.as_str()), (2, "admin.listen"));
        let c = Config::parse(
            &with("listen = \"[::]:9180\"\ntoken = \"0123456789abcdef0123\""),
            "t.toml",
        )
        .unwrap();
        assert!(c.admin.unwrap().token.is_some());
        let e = Config::parse(&with("listen = \"[::]:9180\"\ntoken = \"short\""), "t.toml").unwrap_err();
        assert!(e.field == "admin.token", "{e}");
    }

    #[test]
    fn admin_connection_limits() {
        let with = |extra: &str| format!("[admin]\nlisten = \"127.0.0.1:9180\"\n{extra}\n{MIN}");
        let a = Config::parse(&with(""), "t.toml").unwrap().admin.unwrap();
        assert_eq!(
            (a.max_connections, a.max_connections_per_source, a.header_timeout),
            (64, 16, Duration::from_secs(5))
        );
        let a = Config::parse(
            &with("max_connections = 8\nmax_connections_per_source = 2\nheader_timeout = \"2s\""),
            "t.toml",
        )
        .unwrap()
        .admin
        .unwrap();
        assert_eq!(
            (a.max_connections, a.max_connections_per_source, a.header_timeout),
            (8, 2, Duration::from_secs(2))
        );
        for (bad, field) in [
            ("max_connections = 0", "admin.max_connections"),
            ("max_connections_per_source = 0", "admin.max_connections_per_source"),
            ("header_timeout = \"0s\"", "admin.header_timeout"),
            ("header_timeout = \"1h\"", "admin.header_timeout"),
        ] {
            let e = Config::parse(&with(bad), "t.toml").unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (3, field), "{bad}: {e}");
        }
    }

    #[test]
    fn guard_section() {
        let src = format!(
            "[guard]\nallow = [\"192.0.2.0/24\"]\ndeny = [\"198.51.100.7\", \"2001:db8::/32\"]\nnew_connections_per_address = {{ per_second = 20 }}\nmax_connections_per_address = 50\n{MIN}"
        );
        let c = Config::parse(&src, "t.toml").unwrap();
        assert_eq!(c.guard.deny.len(), 2);
        assert_eq!(c.guard.rate_per_address.unwrap().burst, 20);
        assert_eq!(c.guard.max_concurrent_per_address, Some(50));
        let bad = format!("[guard]\ndeny = [\"198.51.100.0/33\"]\n{MIN}");
        let e = Config::parse(&bad, "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "guard.deny"), "{e}");
    }

    /// `MIN` plus `extra`, and the error it gives.
    fn err_with(extra: &str) -> ConfigError {
        Config::parse(&format!("{MIN}{extra}"), "t.toml").unwrap_err()
    }

    #[test]
    fn durations_are_bounded() {
        // before: accepted, and every proxied connection panicked on
        // `Instant + Duration` overflow
        let e = err_with("[service.timeouts]\nidle = \"18446744073709551615s\"\n");
        assert_eq!((e.line, e.field.as_str()), (13, "service \"web\".timeouts.idle"), "{e}");
        assert!(e.message.contains("between 1ms and 7days"), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.toml:13:8: service \"web\".timeouts.idle: "),
            "{e}"
        );
        let e = err_with("[service.timeouts]\nconnect = \"18446744073709551615s\"\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (13, "service \"web\".timeouts.connect"),
            "{e}"
        );
        let e = err_with("[service.timeouts]\nclient_first_byte = \"1h\"\n");
        assert_eq!(e.field, "service \"web\".timeouts.client_first_byte", "{e}");
        let e = err_with("[service.health]\ninterval = \"2h\"\ntimeout = \"1s\"\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (13, "service \"web\".health.interval"),
            "{e}"
        );
        let e = Config::parse(&format!("[limits]\nshutdown_grace = \"400days\"\n{MIN}"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "limits.shutdown_grace"), "{e}");
        let e = Config::parse(
            &format!("[guard]\ndynamic_block = {{ threshold_per_second = 5, block_for = \"30days\" }}\n{MIN}"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "guard.dynamic_block.block_for"), "{e}");
        let bgp = "[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n";
        for (k, v) in [
            ("connect_retry", "2h"),
            ("drain_timeout", "9999999999999s"),
            ("flap_half_life", "0s"),
        ] {
            let e = Config::parse(&format!("{bgp}{k} = \"{v}\"\n{MIN}"), "t.toml").unwrap_err();
            assert_eq!((e.line, e.field.clone()), (4, format!("bgp.{k}")), "{e}");
        }
        let e = Config::parse(
            &format!(
                "{bgp}[[bgp.peer]]\nname = \"r\"\naddress = \"192.0.2.2\"\nasn = 65000\nbfd_interval = \"1d\"\n{MIN}"
            ),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (8, "bgp.peer[0].bfd_interval"), "{e}");
        let e = err_with("[dns]\nlisten = [\"127.0.0.1:5353\"]\ntcp_idle_timeout = \"2h\"\n");
        assert_eq!((e.line, e.field.as_str()), (14, "dns.tcp_idle_timeout"), "{e}");
        // the maxima themselves are fine
        let c = Config::parse(
            &format!("{MIN}[service.timeouts]\nidle = \"7days\"\nconnect = \"5min\"\n"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.services[0].timeouts.idle, range::WEEK);
    }

    const TWO: &str = r#"
[pop]
name = "fra1"

[[service]]
name = "web"
listen = ["127.0.0.1:8080"]
[[service.backend]]
name = "b1"
address = "127.0.0.1:9001"

[[service]]
name = "api"
listen = ["LISTEN"]
[[service.backend]]
name = "b1"
address = "127.0.0.1:9002"
"#;

    #[test]
    fn listeners_on_one_port_rejected_at_the_second() {
        let two = |listen: &str| Config::parse(&TWO.replace("LISTEN", listen), "t.toml");
        for clash in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let e = two(clash).unwrap_err();
            assert_eq!(
                (e.line, e.column, e.field.as_str()),
                (14, 11, "service \"api\".listen[0]"),
                "{e}"
            );
            assert!(
                e.message.contains("service \"web\".listen[0]") && e.message.contains("(line 7)"),
                "{e}"
            );
        }
        // other port, other address, other family: fine
        for ok in ["127.0.0.1:8081", "127.0.0.2:8080", "[::]:8080"] {
            two(ok).unwrap();
        }
        let e = Config::parse(&MIN.replace("\"[::1]:8080\"", "\"0.0.0.0:8080\""), "t.toml").unwrap_err();
        // (in one service, too: the specific one is redundant)
        assert!(e.message.contains("overlaps"), "{e}");
        let e = Config::parse(&format!("[admin]\nlisten = \"127.0.0.1:8080\"\n{MIN}"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (9, "service \"web\".listen[0]"), "{e}");
        assert!(e.message.contains("admin.listen (line 2)"), "{e}");
        let e = Config::parse(&format!("{MIN}[admin]\nlisten = \"[::1]:8080\"\n"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (13, "admin.listen"), "{e}");
        let e = err_with("[dns]\nlisten = [\"127.0.0.1:53\", \"0.0.0.0:8080\"]\n");
        assert_eq!((e.line, e.column, e.field.as_str()), (13, 27, "dns.listen[1]"), "{e}");
        let e = Config::parse(
            &format!("[admin]\nlisten = \"127.0.0.1:53\"\n{MIN}[dns]\nlisten = [\"127.0.0.1\"]\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (15, "dns.listen[0]"), "{e}");
    }

    #[test]
    fn port_zero_rejected() {
        let e = Config::parse(&MIN.replace("127.0.0.1:8080", "127.0.0.1:0"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "service \"web\".listen"), "{e}");
        let e = err_with("[dns]\nlisten = [\"127.0.0.1:0\"]\n");
        assert_eq!((e.line, e.field.as_str()), (13, "dns.listen[0]"), "{e}");
        let e = Config::parse(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{MIN}"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "admin.listen"), "{e}");
    }

    #[test]
    fn backend_on_our_own_listener_rejected() {
        for (listen, backend) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "0.0.0.0:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "[::1]:8080"),
        ] {
            let src = MIN
                .replace("\"127.0.0.1:8080\", \"[::1]:8080\"", &format!("\"{listen}\""))
                .replace("127.0.0.1:9001", backend);
            let e = Config::parse(&src, "t.toml").unwrap_err();
            assert_eq!(
                (e.line, e.field.as_str()),
                (11, "service \"web\".backend[0].address"),
                "{listen} {backend}: {e}"
            );
            assert!(e.message.contains("loop"), "{e}");
        }
        // another service's listener, the admin API
        let e = Config::parse(
            &TWO.replace("LISTEN", "127.0.0.1:8081").replace("9002", "8080"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (17, "service \"api\".backend[0].address"),
            "{e}"
        );
        let e = Config::parse(
            &format!("[admin]\nlisten = \"127.0.0.1:9180\"\n{}", MIN.replace("9001", "9180")),
            "t.toml",
        )
        .unwrap_err();
        assert!(e.message.contains("admin.listen"), "{e}");
        // a remote backend on the port of a wildcard listener is normal
        let src = MIN
            .replace("\"127.0.0.1:8080\", \"[::1]:8080\"", "\"0.0.0.0:8080\"")
            .replace("127.0.0.1:9001", "192.0.2.10:8080");
        Config::parse(&src, "t.toml").unwrap();
    }

    #[test]
    fn all_weights_zero_warns() {
        let c = Config::parse(&MIN.replace("name = \"b1\"", "name = \"b1\"\nweight = 0"), "t.toml").unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("t.toml:6: "), "{:?}", c.warnings);
        assert!(c.warnings[0].contains("weight 0"), "{:?}", c.warnings);
        assert!(Config::parse(MIN, "t.toml").unwrap().warnings.is_empty());
    }

    #[test]
    fn cross_check_errors_name_the_line() {
        let e = Config::parse(
            &TWO.replace("\"api\"", "\"web\"").replace("LISTEN", "127.0.0.1:8081"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (13, "service[1].name"), "{e}");
        let e = err_with("[[anycast]]\nprefix = \"192.0.2.0/24\"\n");
        assert_eq!((e.line, e.field.as_str()), (13, "anycast"), "{e}");
        let bgp = "[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n";
        let e = err_with(&format!("{bgp}[[anycast]]\nprefix = \"192.0.2.0/24\"\ndns = true\n"));
        assert_eq!((e.line, e.field.as_str()), (17, "anycast[0].dns"), "{e}");
        let e = err_with(&format!(
            "{bgp}[[anycast]]\nprefix = \"192.0.2.0/24\"\n[[anycast]]\nprefix = \"192.0.2.0/24\"\n"
        ));
        assert_eq!((e.line, e.field.as_str()), (18, "anycast[1].prefix"), "{e}");
        let e = Config::parse(&MIN.replace("listen = [", "backlog = 0\nlisten = ["), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "service \"web\".backlog"), "{e}");
    }

    #[test]
    fn toml_errors_name_the_field_not_the_value() {
        // before: `t.toml:11:10: 99999999999: ...` and `...: "n": ...`
        let e = err_with("weight = 99999999999\n");
        assert_eq!((e.line, e.field.as_str()), (12, "service[0].backend[0].weight"), "{e}");
        let e = err_with("[[service.backend]]\nname = \"b2\"\naddress = \"127.0.0.1:9002\"\ndrain = \"n\"\n");
        assert_eq!((e.line, e.field.as_str()), (15, "service[0].backend[1].drain"), "{e}");
        let e = err_with("[[service]]\nname = \"b\"\nlisten = 9\n");
        assert_eq!((e.line, e.field.as_str()), (14, "service[1].listen"), "{e}");
        let e = Config::parse(
            &format!("[guard]\nnew_connections_per_address = {{ per_second = \"x\" }}\n{MIN}"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.field, "guard.new_connections_per_address.per_second", "{e}");
        let e = err_with("[[service.backend]]\nname = \"b2\"\n");
        assert_eq!((e.line, e.field.as_str()), (12, "service[0].backend[1]"), "{e}");
        assert!(e.message.contains("missing field `address`"), "{e}");
    }

    #[test]
    fn no_backends_rejected() {
        let src = "[pop]\nname = \"x\"\n[[service]]\nname = \"a\"\nlisten = [\"127.0.0.1:1\"]\nbackend = []\n";
        let e = Config::parse(src, "t.toml").unwrap_err();
        assert!(e.message.contains("at least one backend"), "{e}");
    }
}
