//! The `[dns.dnstap]` section: query and response logging as dnstap
//! (Frame Streams to a unix socket, as Knot, BIND, Unbound and dnsdist emit).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::value::int_in;
use super::{ConfigError, Ctx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnstapConfig {
    /// The collector's unix socket (absolute; relative paths are taken from
    /// the config file's directory).
    pub socket: PathBuf,
    /// Log AUTH_QUERY messages.
    pub log_queries: bool,
    /// Log AUTH_RESPONSE messages.
    pub log_responses: bool,
    /// Log one query (and its response) in `sample`; 1: every one.
    pub sample: NonZeroU32,
    /// Exchanges that may wait for the writer; past this they are dropped
    /// (counted), never waited for.
    pub queue: NonZeroU32,
    /// The `identity` field; None: the PoP name. Empty: not sent.
    pub identity: Option<String>,
    /// The `version` field; None: "anyedge VERSION". Empty: not sent.
    pub version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnstap {
    socket: Spanned<String>,
    #[serde(default = "d_true")]
    log_queries: bool,
    #[serde(default = "d_true")]
    log_responses: bool,
    #[serde(default = "d_sample")]
    sample: Spanned<u32>,
    #[serde(default = "d_queue")]
    queue: Spanned<u32>,
    #[serde(default)]
    identity: Option<Spanned<String>>,
    #[serde(default)]
    version: Option<Spanned<String>>,
}

fn d_true() -> bool {
    true
}
fn d_sample() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn d_queue() -> Spanned<u32> {
    Spanned::new(0..0, 16_384)
}

/// Longest path a unix socket address holds (`sun_path`, with its NUL).
const SUN_PATH_MAX: usize = 107;

pub(super) fn parse_dnstap(cx: &Ctx<'_>, d: RawDnstap, base_dir: &Path) -> Result<DnstapConfig, ConfigError> {
    let s = d.socket.get_ref();
    if s.is_empty() {
        return Err(cx.err(
            d.socket.span(),
            "dns.dnstap.socket",
            "must name the collector's unix socket",
        ));
    }
    let p = PathBuf::from(s);
    let socket = if p.is_absolute() { p } else { base_dir.join(p) };
    if socket.as_os_str().len() > SUN_PATH_MAX {
        return Err(cx.err(
            d.socket.span(),
            "dns.dnstap.socket",
            format!(
                "{} is longer than a unix socket path may be ({SUN_PATH_MAX} bytes)",
                socket.display()
            ),
        ));
    }
    if !d.log_queries && !d.log_responses {
        return Err(cx.err(
            d.socket.span(),
            "dns.dnstap",
            "log_queries and log_responses are both false: remove [dns.dnstap] to log nothing",
        ));
    }
    let sample = int_in(cx, &d.sample, "dns.dnstap.sample", 1, 1_000_000)?;
    let queue = int_in(cx, &d.queue, "dns.dnstap.queue", 1, 1 << 20)?;
    let text = |v: Option<Spanned<String>>, field: &str| -> Result<Option<String>, ConfigError> {
        match v {
            Some(t) if t.get_ref().len() > 255 => Err(cx.err(t.span(), field, "at most 255 bytes")),
            t => Ok(t.map(Spanned::into_inner)),
        }
    };
    Ok(DnstapConfig {
        socket,
        log_queries: d.log_queries,
        log_responses: d.log_responses,
        sample,
        queue,
        identity: text(d.identity, "dns.dnstap.identity")?,
        version: text(d.version, "dns.dnstap.version")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[pop]\nname = \"p\"\n[dns]\nlisten = [\"127.0.0.1:5353\"]\n[dns.dnstap]\n";

    #[test]
    fn dnstap_defaults_and_errors_name_line_and_field() {
        let c = Config::parse(
            &format!("{BASE}socket = \"/run/anyedge/dnstap.sock\"\n"),
            "/etc/a/t.toml",
        )
        .unwrap();
        let t = c.dns.unwrap().dnstap.unwrap();
        assert_eq!(t.socket, std::path::PathBuf::from("/run/anyedge/dnstap.sock"));
        assert!(t.log_queries && t.log_responses);
        assert_eq!((t.sample.get(), t.queue.get()), (1, 16_384));
        assert_eq!((t.identity, t.version), (None, None));
        let e = Config::parse(&format!("{BASE}socket = \"/s\"\nsample = 0\n"), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "dns.dnstap.sample"), "{e}");
        let e = Config::parse(&format!("{BASE}socket = \"/s\"\nqueue = 0\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "dns.dnstap.queue", "{e}");
        let e = Config::parse(
            &format!("{BASE}socket = \"/s\"\nlog_queries = false\nlog_responses = false\n"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.field, "dns.dnstap", "{e}");
        let long = "x".repeat(120);
        let e = Config::parse(&format!("{BASE}socket = \"/{long}\"\n"), "t.toml").unwrap_err();
        assert_eq!(e.field, "dns.dnstap.socket", "{e}");
        let e = Config::parse(&format!("{BASE}socket = \"/s\"\nsampel = 2\n"), "t.toml").unwrap_err();
        assert!(e.message.contains("sampel"), "{e}");
    }
}
