//! Configuration: TOML in, a validated [`Config`] out.
//!
//! "Parse, don't validate": the raw serde structs (`Raw*`, all with
//! `deny_unknown_fields`) are private; the public types can only be built by
//! [`Config::parse`], which checks every cross-field rule and reports the file,
//! line, column and field of the first problem.
//!
//! One module per section holds its public types, its raw mirror and its
//! parse function (`pop`, `admin`, `guard`, `bgp` with the anycast prefixes,
//! `service`, `dns`, `xdp`); `checks` looks across sections (listener
//! clashes, loops to our own listeners, warnings), `value` and `duration`
//! hold the checks the sections share. This module assembles the [`Config`].

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod access_log;
mod admin;
mod bgp;
mod checks;
mod dns;
mod dnstap;
mod duration;
mod guard;
mod pop;
mod service;
mod tunnel;
mod value;
mod xdp;
pub use access_log::{AccessLogConfig, AccessLogFormat, AccessLogTarget};
pub use admin::AdminConfig;
pub use bgp::{AnycastConfig, BgpConfig, PeerConfig};
pub use checks::listen_overlap;
pub use dns::{canonical_name, DnsConfig, SigningConfig, TcpLimits, TsigAlgorithm, TsigKey, ZoneConfig, ZoneSource};
pub use dnstap::DnstapConfig;
pub use guard::Tarpit;
pub use service::{
    BackendConfig, Balance, CheckKind, Discover, HealthCheck, ProxyMode, ProxyOptions, RecordType, ServiceConfig,
    Timeouts,
};
pub use tunnel::{Forwarding, TunnelEncap, TunnelOptions};
pub use xdp::XdpConfig;
#[cfg_attr(not(feature = "xdp"), allow(unused_imports))]
pub use xdp::XdpMode;

use admin::parse_admin;
use bgp::{parse_anycast, parse_bgp};
use checks::{check_clashes, Bound};
use guard::parse_guard;
use service::parse_service;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: String,
    pub pop_name: String,
    pub max_connections: NonZeroU32,
    pub shutdown_grace: Duration,
    pub workers: Option<NonZeroU32>,
    /// Where runtime changes (backends added, removed, reweighted, drained
    /// through the admin API) are kept across reloads and restarts.
    pub state_dir: Option<PathBuf>,
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
    /// The access log's writer (which services log: `ServiceConfig::access_log`).
    pub access_log: AccessLogConfig,
    /// Legal but probably not meant (e.g. a service whose backends all have
    /// weight 0): printed by `anyedge check`, logged at start and reload.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------- raw serde

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pop: pop::RawPop,
    #[serde(default)]
    limits: pop::RawLimits,
    #[serde(default)]
    admin: Option<admin::RawAdmin>,
    #[serde(default)]
    guard: guard::RawGuard,
    #[serde(default)]
    bgp: Option<bgp::RawBgp>,
    #[serde(default)]
    anycast: Vec<bgp::RawAnycast>,
    #[serde(default, rename = "service")]
    services: Vec<service::RawService>,
    #[serde(default)]
    dns: Option<dns::RawDns>,
    #[serde(default)]
    xdp: Option<xdp::RawXdp>,
    #[serde(default)]
    access_log: Option<access_log::RawAccessLog>,
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

/// `service[N]...` as the checks after parsing name it, `service "web"...`,
/// when the N-th `[[service]]` has a name (read from the untyped document;
/// a syntax error leaves the index).
fn service_by_name(src: &str, path: &str) -> String {
    let Some(rest) = path.strip_prefix("service[") else {
        return path.to_string();
    };
    let Some((n, tail)) = rest.split_once(']') else {
        return path.to_string();
    };
    let name = n.parse::<usize>().ok().and_then(|n| {
        let doc = src.parse::<toml::Table>().ok()?;
        let s = doc.get("service")?.as_array()?.get(n)?;
        s.get("name")?.as_str().map(str::to_string)
    });
    match name {
        Some(name) => format!("service {name:?}{tail}"),
        None => path.to_string(),
    }
}

/// For serde's ``unknown field `wieght`, expected one of `name`, `weight`,
/// ...``: the expected field nearest to the unknown one (edit distance with
/// transpositions), if it is near enough to be a typo of it.
fn nearest_expected(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected")?.1;
    let limit = 1 + unknown.chars().count() / 4;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (edit_distance(unknown, name), name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of two neighbours, each 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows i-2, i-1, i of the table
    let mut two: Vec<usize> = vec![0; b.len() + 1];
    let mut one: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (one[j] + 1).min(cur[j - 1] + 1).min(one[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(two[j - 2] + 1);
            }
            cur[j] = d;
        }
        two = std::mem::replace(&mut one, cur);
    }
    one[b.len()]
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
            let field = key_path(src, span.start).map_or_else(|| "-".into(), |p| service_by_name(src, &p));
            let mut message = e.message().trim().to_string();
            if let Some(near) = nearest_expected(&message) {
                message.push_str(&format!(" (did you mean {near:?}?)"));
            }
            cx.err(span, field, message)
        })?;

        let pop = pop::parse_pop(&cx, raw.pop, raw.limits)?;
        let admin_span = raw.admin.as_ref().map(|a| a.listen.span());
        let admin = match raw.admin {
            None => None,
            Some(a) => Some(parse_admin(&cx, a)?),
        };

        let (guard, tarpit) = parse_guard(&cx, raw.guard)?;
        let peer_spans = raw.bgp.as_ref().map(bgp::RawBgp::peer_spans).unwrap_or_default();
        let bgp = match raw.bgp {
            None => None,
            Some(b) => Some(parse_bgp(&cx, b)?),
        };

        let (access_log, log_services) = access_log::parse_access_log(&cx, raw.access_log)?;
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
            let svc = parse_service(&cx, &sp, rs, log_services)?;
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
            warnings.extend(checks::weight_warning(&cx, &svc, name_span));
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
        checks::check_loops(&cx, &services, backend_spans, &bound)?;
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
        if let Some(b) = &bgp {
            warnings.extend(checks::next_hop_warnings(&cx, &b.peers, &peer_spans, &anycast));
        }
        Ok(Config {
            source: file.to_string(),
            pop_name: pop.name,
            max_connections: pop.max_connections,
            shutdown_grace: pop.shutdown_grace,
            workers: pop.workers,
            state_dir: pop.state_dir,
            admin,
            guard,
            tarpit,
            bgp,
            anycast,
            services,
            dns,
            xdp,
            access_log,
            warnings,
        })
    }
}

/// Path helper for `check`/`run`.
pub fn source_name(path: Option<&PathBuf>) -> String {
    path.map_or_else(|| EMBEDDED_NAME.to_string(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MIN: &str = r#"
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

    const EXAMPLE: &str = include_str!("../../../../examples/anyedge.toml");

    /// `src` with every example secret replaced by one of the same form.
    pub(crate) fn with_own_secrets(src: &str) -> String {
        let own = [
            "0123456789abcdef0123456789abcdef",
            "own-md5-key",
            "00112233445566778899aabbccddeeff",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ];
        value::EXAMPLE_SECRETS
            .iter()
            .zip(own)
            .fold(src.to_string(), |s, (ex, own)| s.replace(ex, own))
    }

    #[test]
    fn example_secrets_are_refused_naming_the_field() {
        let fields = [
            "admin.token",
            "bgp.peer[0].password",
            "dns.cookie_secret",
            "dns.tsig_key[0].secret",
        ];
        for (i, (secret, field)) in value::EXAMPLE_SECRETS.iter().zip(fields).enumerate() {
            // only this one left as printed
            let own = with_own_secrets(EXAMPLE);
            let src = with_own_secrets(&EXAMPLE.replace(secret, "@SECRET@")).replace("@SECRET@", secret);
            assert_ne!(src, own, "{secret} is not in the example");
            let e = Config::parse(&src, "anyedge.toml").unwrap_err();
            let at = src.find(secret).unwrap();
            assert_eq!((e.line, e.column), line_col(&src, at - 1), "{i}: {e}");
            assert_eq!(e.field, field, "{e}");
            assert!(
                e.message.starts_with(
                    "is the example value from the documentation: generate your own, e.g. `openssl rand -"
                ),
                "{e}"
            );
        }
        // the first one is the first error of the example as printed
        let e = Config::parse(EXAMPLE, "anyedge.toml").unwrap_err();
        assert_eq!(e.field, "admin.token", "{e}");
        // the same secret under another case is the same secret
        let src =
            with_own_secrets(EXAMPLE).replace("00112233445566778899aabbccddeeff", "6F1C9B0E5D2A47E38B1F0C9D7A6E5B4C");
        assert_eq!(
            Config::parse(&src, "anyedge.toml").unwrap_err().field,
            "dns.cookie_secret"
        );
    }

    #[test]
    fn embedded_packaged_and_example_configs_parse() {
        Config::embedded().unwrap();
        let packaged = include_str!("../../../../packaging/anyedge.toml");
        let c = Config::parse(packaged, "packaging/anyedge.toml").unwrap();
        assert!(
            c.bgp.is_none() && c.anycast.is_empty() && c.dns.is_none(),
            "no peers, no secrets"
        );
        let a = c.admin.expect("the installed config has a read-only admin API");
        assert!(a.listen.ip().is_loopback() && a.token.is_none(), "{a:?}");
        let c = Config::parse(&with_own_secrets(EXAMPLE), "examples/anyedge.toml").unwrap();
        assert!(!c.services.is_empty());
        let d = c.dns.expect("the example documents [dns]");
        assert!(d.rrl.is_some() && d.cookies.is_some() && !d.tsig_keys.is_empty());
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let src = MIN.replace("name = \"b1\"", "name = \"b1\"\nwieght = 3");
        let e = Config::parse(&src, "t.toml").unwrap_err();
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("unknown field `wieght`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.toml:11:1: service \"web\".backend[0].wieght:"),
            "{e}"
        );
        assert!(e.message.ends_with(" (did you mean \"weight\"?)"), "{e}");
    }

    #[test]
    fn unknown_keys_suggest_the_nearest_valid_one() {
        for (src, want) in [
            (MIN.replace("listen", "lisen"), Some("listen")),
            (MIN.replace("listen", "listne"), Some("listen")),
            (
                format!("[admin]\nlisten = \"127.0.0.1:9\"\ntoken_fil = \"x\"\n{MIN}"),
                Some("token_file"),
            ),
            (format!("[limits]\nmax_conections = 5\n{MIN}"), Some("max_connections")),
            (format!("[pops]\n{MIN}"), Some("pop")),
            // nothing near: no guess
            (MIN.replace("name = \"b1\"", "name = \"b1\"\ncolour = 1"), None),
        ] {
            let e = Config::parse(&src, "t.toml").unwrap_err();
            assert!(e.message.starts_with("unknown field"), "{e}");
            match want {
                Some(w) => assert!(e.message.ends_with(&format!(" (did you mean {w:?}?)")), "{e}"),
                None => assert!(!e.message.contains("did you mean"), "{e}"),
            }
        }
        assert_eq!(edit_distance("wieght", "weight"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    /// `MIN` plus `extra`, and the error it gives.
    pub(super) fn err_with(extra: &str) -> ConfigError {
        Config::parse(&format!("{MIN}{extra}"), "t.toml").unwrap_err()
    }

    pub(super) const TWO: &str = r#"
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
        // services by name, as the checks after parsing name them
        let e = err_with("weight = 99999999999\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (12, "service \"web\".backend[0].weight"),
            "{e}"
        );
        let e = err_with("[[service.backend]]\nname = \"b2\"\naddress = \"127.0.0.1:9002\"\ndrain = \"n\"\n");
        assert_eq!(
            (e.line, e.field.as_str()),
            (15, "service \"web\".backend[1].drain"),
            "{e}"
        );
        let e = err_with("[[service]]\nname = \"b\"\nlisten = 9\n");
        assert_eq!((e.line, e.field.as_str()), (14, "service \"b\".listen"), "{e}");
        let e = Config::parse(&MIN.replace("name = \"web\"", "name = \"web\"\nbalance = 3"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "service \"web\".balance"), "{e}");
        // a service without a name: its index
        let e = err_with("[[service]]\nlisten = [\"127.0.0.1:1\"]\n");
        assert_eq!((e.line, e.field.as_str()), (12, "service[1]"), "{e}");
        let e = Config::parse(
            &format!("[guard]\nnew_connections_per_address = {{ per_second = \"x\" }}\n{MIN}"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.field, "guard.new_connections_per_address.per_second", "{e}");
        let e = err_with("[[service.backend]]\nname = \"b2\"\n");
        assert_eq!((e.line, e.field.as_str()), (12, "service \"web\".backend[1]"), "{e}");
        assert!(e.message.contains("missing field `address`"), "{e}");
    }
}
