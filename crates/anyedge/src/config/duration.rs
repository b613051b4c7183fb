//! Durations: humantime values that keep their span, and the accepted
//! range of every duration field.

use std::time::Duration;

use toml::Spanned;

use super::{ConfigError, Ctx};

/// humantime durations ("1s", "250ms") that keep their span.
pub(super) mod humantime_spanned {
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
/// | `dns.tcp_io_timeout` | 1ms | 1min |
/// | `admin.header_timeout` | 1ms | 5min |
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
pub(super) fn duration_in(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{err_with, MIN};
    use crate::config::Config;

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
}
