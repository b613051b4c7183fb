//! The `[guard]` section: per-source admission rules for every L4
//! listener, the dynamic block list and the tarpit.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::{duration_in, humantime_spanned, range};
use super::value::{int_in, nonzero};
use super::{ConfigError, Ctx};

/// The tarpit: a refused connection is kept open, unread, for `hold`; at
/// most `max_connections` at once (beyond that they are closed at once, so
/// the tarpit cannot exhaust file descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tarpit {
    pub hold: Duration,
    pub max_connections: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
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
pub(super) struct RawRate {
    per_second: Spanned<u32>,
    #[serde(default)]
    burst: Option<u32>,
}

/// `{ per_second, burst }` (burst defaults to per_second).
pub(super) fn parse_rate(
    cx: &Ctx<'_>,
    r: Option<RawRate>,
    field: &str,
) -> Result<Option<anyedge_guard::Rate>, ConfigError> {
    let Some(r) = r else { return Ok(None) };
    let ps = nonzero(
        cx,
        &r.per_second,
        format!("{field}.per_second"),
        "must be > 0 (omit the limit to disable it)",
    )?
    .get();
    Ok(Some(anyedge_guard::Rate {
        per_second: ps,
        burst: r.burst.unwrap_or(ps).max(1),
    }))
}

/// The guard's rules and the tarpit (checked first).
pub(super) fn parse_guard(
    cx: &Ctx<'_>,
    g: RawGuard,
) -> Result<(anyedge_guard::GuardConfig, Option<Tarpit>), ConfigError> {
    use anyedge_guard::{prefix::Prefix, GuardConfig};
    let tarpit = match &g.tarpit {
        None => None,
        Some(t) => {
            let hold = duration_in(cx, &t.hold, "guard.tarpit.hold", range::MS, range::HOUR)?;
            Some(Tarpit {
                hold,
                max_connections: t.max_connections,
            })
        }
    };
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
        let m = nonzero(
            cx,
            &m,
            "guard.max_connections_per_address",
            "must be > 0 (omit to disable)",
        )?;
        cfg.max_concurrent_per_address = Some(m.get());
    }
    if let Some(d) = g.dynamic_block {
        let threshold_per_second = nonzero(
            cx,
            &d.threshold_per_second,
            "guard.dynamic_block.threshold_per_second",
            "must be > 0",
        )?;
        let block_for = duration_in(
            cx,
            &d.block_for,
            "guard.dynamic_block.block_for",
            range::MS,
            range::WEEK,
        )?;
        cfg.dynamic_block = Some(anyedge_guard::DynamicBlock {
            threshold_per_second: threshold_per_second.get(),
            block_for,
            exclude: prefixes(d.exclude, "dynamic_block.exclude")?,
        });
    }
    if let Some(c) = g.table_capacity {
        cfg.table_capacity = int_in(cx, &c, "guard.table_capacity", 64, 1 << 26)?;
    }
    Ok((cfg, tarpit))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::MIN;
    use crate::config::Config;

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
}
