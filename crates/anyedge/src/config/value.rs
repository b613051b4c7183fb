//! Checks of one value, shared by the sections: names, numbers in a
//! range, non-zero counts, lists of addresses. Each error points at the
//! value and names the field.

use std::fmt::Display;
use std::num::NonZeroU32;

use ipnet::IpNet;
use toml::Spanned;

use super::{ConfigError, Ctx};

/// Whether `s` is a name of 1-64 characters of `[A-Za-z0-9._-]`.
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `s` must be a [`valid_name`].
pub(super) fn check_name(cx: &Ctx<'_>, s: &Spanned<String>, field: impl Into<String>) -> Result<(), ConfigError> {
    if valid_name(s.get_ref()) {
        Ok(())
    } else {
        Err(cx.err(s.span(), field, "must be 1-64 characters of [A-Za-z0-9._-]"))
    }
}

/// The number in `v` if it lies in `min..=max`, converted to `U` (a
/// `NonZero*` when `min` is 1), else `must be between {min} and {max}`.
pub(super) fn int_in<T, U>(
    cx: &Ctx<'_>,
    v: &Spanned<T>,
    field: impl Into<String>,
    min: T,
    max: T,
) -> Result<U, ConfigError>
where
    T: Copy + PartialOrd + Display,
    U: TryFrom<T>,
{
    let n = *v.get_ref();
    match U::try_from(n) {
        Ok(u) if (min..=max).contains(&n) => Ok(u),
        _ => Err(cx.err(v.span(), field, format!("must be between {min} and {max}"))),
    }
}

/// The count in `v` if it is not 0, else the error `message` (`must be >
/// 0`, with what 0 would have meant).
pub(super) fn nonzero(
    cx: &Ctx<'_>,
    v: &Spanned<u32>,
    field: impl Into<String>,
    message: &str,
) -> Result<NonZeroU32, ConfigError> {
    NonZeroU32::new(*v.get_ref()).ok_or_else(|| cx.err(v.span(), field, message))
}

/// An address or CIDR (`192.0.2.1` = `/32`).
pub(super) fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Every item of a list parsed by `parse`; the first that does not parse is
/// the error `field[i]: "item" is not {what}`.
pub(super) fn parse_list<T>(
    cx: &Ctx<'_>,
    items: &[Spanned<String>],
    field: &str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            parse(s.get_ref()).ok_or_else(|| {
                cx.err(
                    s.span(),
                    format!("{field}[{i}]"),
                    format!("{:?} is not {what}", s.get_ref()),
                )
            })
        })
        .collect()
}

/// The secret values printed in `examples/anyedge.toml` and the docs
/// (admin token, BGP MD5 key, DNS cookie secret, TSIG secret): anyone can
/// read them, so a config that uses one is refused ([`not_example_secret`]).
/// A test reads the example and the docs for every secret they show and
/// requires it to be here.
pub(super) const EXAMPLE_SECRETS: &[&str] = &[
    "change-me-to-a-long-random-string",
    "md5-shared-secret",
    "6f1c9b0e5d2a47e38b1f0c9d7a6e5b4c",
    "bWlncmF0aW9uLWtleS1leGFtcGxlLTAxMjM0NTY3OA==",
];

/// Refuses a secret that is one of the [`EXAMPLE_SECRETS`] (ignoring
/// surrounding whitespace and ASCII case), telling how to `generate` one.
pub(super) fn not_example_secret(
    cx: &Ctx<'_>,
    span: std::ops::Range<usize>,
    field: impl Into<String>,
    value: &str,
    generate: &str,
) -> Result<(), ConfigError> {
    let v = value.trim();
    if EXAMPLE_SECRETS.iter().any(|e| e.eq_ignore_ascii_case(v)) {
        return Err(cx.err(
            span,
            field,
            format!("is the example value from the documentation: generate your own, e.g. `{generate}`"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EXAMPLE_SECRETS;
    use crate::config::tests::MIN;
    use crate::config::Config;

    /// Every `KEY = "VALUE"` (or `KEY=VALUE`) in the example config, the
    /// docs and the packaging whose key ends in token, secret or password,
    /// commented or not; placeholders (`...`, `$TOKEN`) left out.
    fn secrets_in_docs() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
        for dir in ["examples", "packaging", "docs", "crates"] {
            let mut stack = vec![root.join(dir)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let p = e.path();
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
                    if p.is_dir() && name != "target" && name != "src" && name != "tests" {
                        stack.push(p);
                    } else if name.ends_with(".md") || (dir != "crates" && !name.ends_with(".zone")) {
                        files.push(p);
                    }
                }
            }
        }
        let mut found = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let key = key
                    .trim_end()
                    .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                let key = key.to_ascii_lowercase();
                if !["token", "secret", "password"].iter().any(|k| key.ends_with(k)) {
                    continue;
                }
                let value = value.trim_start();
                let value = match value.strip_prefix('"') {
                    Some(v) => v.split('"').next().unwrap_or(""),
                    None => value.split_whitespace().next().unwrap_or(""),
                };
                if value.contains('$') || !value.chars().any(|c| c.is_ascii_alphanumeric()) {
                    continue;
                }
                found.push((format!("{}: {line}", f.display()), value.to_string()));
            }
        }
        found
    }

    /// The list of refused secrets is exactly what the docs print.
    #[test]
    fn example_secrets_are_the_ones_in_the_docs() {
        let found = secrets_in_docs();
        for (at, v) in &found {
            assert!(
                EXAMPLE_SECRETS.contains(&v.as_str()),
                "{at}: add {v:?} to config::value::EXAMPLE_SECRETS (or use a placeholder)"
            );
        }
        for s in EXAMPLE_SECRETS {
            assert!(
                found.iter().any(|(_, v)| v == s),
                "{s:?} is in EXAMPLE_SECRETS but no longer in the docs: {found:?}"
            );
        }
    }

    /// The exact messages of the checks every section shares.
    #[test]
    fn shared_checks_keep_their_messages() {
        let min = MIN;
        let bgp = "[bgp]\nasn = 65001\nrouter_id = \"192.0.2.1\"\n";
        let dns = "[dns]\nlisten = [\"127.0.0.1:5353\"]\n";
        let cases: Vec<(String, &str)> = vec![
            (
                min.replace("fra1", "bad name"),
                "g.toml:3:8: pop.name: must be 1-64 characters of [A-Za-z0-9._-]",
            ),
            (
                "[pop]\nname = \"p\"\nworkers = 0\n".to_string(),
                "g.toml:3:11: pop.workers: must be between 1 and 256",
            ),
            (
                "[pop]\nname = \"p\"\nworkers = 257\n".to_string(),
                "g.toml:3:11: pop.workers: must be between 1 and 256",
            ),
            (
                format!("[limits]\nmax_connections = 0\n{min}"),
                "g.toml:2:19: limits.max_connections: must be > 0",
            ),
            (
                min.replace("name = \"web\"", "name = \"we b\""),
                "g.toml:6:8: service[0].name: must be 1-64 characters of [A-Za-z0-9._-]",
            ),
            (
                min.replace("name = \"b1\"", "name = \"b 1\""),
                "g.toml:10:8: service \"web\".backend[0].name: must be 1-64 characters of [A-Za-z0-9._-]",
            ),
            (
                min.replace("name = \"b1\"", "name = \"b1\"\nweight = 10001"),
                "g.toml:11:10: service \"web\".backend[0].weight: must be between 0 and 10000",
            ),
            (
                min.replace("name = \"b1\"", "name = \"b1\"\nmax_connections = 0"),
                "g.toml:11:19: service \"web\".backend[0].max_connections: must be > 0 (omit for no cap)",
            ),
            (
                min.replace("name = \"web\"", "name = \"web\"\nmax_connections = 0"),
                "g.toml:7:19: service \"web\".max_connections: must be > 0 (omit for no cap)",
            ),
            (
                min.replace("name = \"web\"", "name = \"web\"\nbacklog = 0"),
                "g.toml:7:11: service \"web\".backlog: must be between 1 and 1048576",
            ),
            (
                min.replace("name = \"web\"", "name = \"web\"\nbacklog = 1048577"),
                "g.toml:7:11: service \"web\".backlog: must be between 1 and 1048576",
            ),
            (
                min.replace("name = \"web\"", "name = \"web\"\naccept_proxy_from = [\"x\"]"),
                "g.toml:7:22: service \"web\".accept_proxy_from: \"x\" is not a CIDR",
            ),
            (
                format!("{min}[service.health]\nrise = 101\n"),
                "g.toml:13:8: service \"web\".health.rise: must be between 1 and 100",
            ),
            (
                format!("{min}[service.health]\nfall = 0\n"),
                "g.toml:13:8: service \"web\".health.fall: must be between 1 and 100",
            ),
            (
                format!("[admin]\nlisten = \"127.0.0.1:9\"\nmax_connections = 0\n{min}"),
                "g.toml:3:19: admin.max_connections: must be between 1 and 100000",
            ),
            (
                format!("[admin]\nlisten = \"127.0.0.1:9\"\nmax_connections_per_source = 100001\n{min}"),
                "g.toml:3:30: admin.max_connections_per_source: must be between 1 and 100000",
            ),
            (
                format!("[guard]\ntable_capacity = 63\n{min}"),
                "g.toml:2:18: guard.table_capacity: must be between 64 and 67108864",
            ),
            (
                format!("[guard]\nmax_connections_per_address = 0\n{min}"),
                "g.toml:2:31: guard.max_connections_per_address: must be > 0 (omit to disable)",
            ),
            (
                format!("[guard]\nnew_connections_per_prefix = {{ per_second = 0 }}\n{min}"),
                "g.toml:2:45: guard.new_connections_per_prefix.per_second: must be > 0 (omit the limit to disable it)",
            ),
            (
                format!("[guard]\ndynamic_block = {{ threshold_per_second = 0 }}\n{min}"),
                "g.toml:2:42: guard.dynamic_block.threshold_per_second: must be > 0",
            ),
            (
                format!("{min}{dns}workers = 0\n"),
                "g.toml:14:11: dns.workers: must be between 1 and 256",
            ),
            (
                format!("{min}{dns}tcp_max_connections = 0\n"),
                "g.toml:14:23: dns.tcp_max_connections: must be > 0",
            ),
            (
                format!("{min}{dns}[dns.rrl]\nrate = 0\n"),
                "g.toml:15:8: dns.rrl.rate: must be > 0 responses per second",
            ),
            (
                format!("{min}{dns}[dns.rrl]\nrate = 5\nburst = 0\n"),
                "g.toml:16:9: dns.rrl.burst: must be > 0",
            ),
            (
                format!("{min}{dns}[dns.rrl]\nrate = 5\ntable_size = 0\n"),
                "g.toml:16:14: dns.rrl.table_size: must be between 1 and 67108864",
            ),
            (
                format!("{min}{dns}[dns.rrl]\nrate = 5\ntable_size = 67108865\n"),
                "g.toml:16:14: dns.rrl.table_size: must be between 1 and 67108864",
            ),
            (
                format!("{min}{dns}[dns.rrl]\nrate = 5\nwhitelist = [\"192.0.2.0/24\", \"nope\"]\n"),
                "g.toml:16:30: dns.rrl.whitelist[1]: \"nope\" is not an address or CIDR",
            ),
            (
                format!("{min}{dns}[[dns.zone]]\nname = \"a.\"\nprimary = [\"192.0.2.1\", \"x\"]\n"),
                "g.toml:16:25: dns.zone[0].primary[1]: \"x\" is not ADDRESS[:PORT]",
            ),
            (
                format!("{min}{dns}[[dns.zone]]\nname = \"a.\"\nfile = \"z\"\nnotify = [\"x\"]\n"),
                "g.toml:17:11: dns.zone[0].notify[0]: \"x\" is not ADDRESS[:PORT]",
            ),
            (
                format!(
                    "{min}{dns}[[dns.zone]]\nname = \"a.\"\nfile = \"z\"\nallow_transfer = [\"10.0.0.0/8\", \"x\"]\n"
                ),
                "g.toml:17:33: dns.zone[0].allow_transfer[1]: \"x\" is not an address or CIDR",
            ),
            (
                "[pop]\nname = \"p\"\n[xdp]\ninterfaces = [\"eth0\"]\ndestinations = [\"192.0.2.1\", \"x\"]\n"
                    .to_string(),
                "g.toml:5:30: xdp.destinations[1]: \"x\" is not an address",
            ),
            (
                "[pop]\nname = \"p\"\n[xdp]\ninterfaces = [\"eth0\"]\ndns_queries_per_address = { per_second = 0 }\n"
                    .to_string(),
                "g.toml:5:42: xdp.dns_queries_per_address.per_second: must be > 0 (omit the limit to disable it)",
            ),
            (
                format!("{bgp}[[bgp.peer]]\nname = \"r 1\"\naddress = \"192.0.2.2\"\nasn = 65000\n{min}"),
                "g.toml:5:8: bgp.peer[0].name: must be a unique name of [A-Za-z0-9._-]",
            ),
            (
                format!("[guard]\ntarpit = {{ hold = \"2h\" }}\n{min}"),
                "g.toml:2:19: guard.tarpit.hold: 2h is out of range: must be between 1ms and 1h",
            ),
            (
                format!("[guard]\ntarpit = {{ hold = \"2h\" }}\ntable_capacity = 1\n{min}"),
                "g.toml:2:19: guard.tarpit.hold: 2h is out of range: must be between 1ms and 1h",
            ),
            (
                "[pop]\nname = \"p\"\nworkers = 0\n[limits]\nmax_connections = 0\n".to_string(),
                "g.toml:3:11: pop.workers: must be between 1 and 256",
            ),
        ];
        for (src, want) in cases {
            let e = Config::parse(&src, "g.toml").unwrap_err();
            assert_eq!(e.to_string(), want, "{src}");
        }
    }
}
