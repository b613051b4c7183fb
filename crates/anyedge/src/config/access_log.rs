//! The `[access_log]` section: one line per L4 connection at close,
//! written off the data path (see `crate::accesslog`). Which services log
//! is `enabled` here, overridden per service by `access_log = true|false`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::value::int_in;
use super::{ConfigError, Ctx};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// `key=value` pairs separated by spaces (logfmt).
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    /// Appended to; reopened on SIGHUP (for logrotate).
    File(PathBuf),
}

/// The writer's settings (whether a service logs is
/// [`super::ServiceConfig::access_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    pub target: AccessLogTarget,
    /// Lines waiting for the writer at most; more are dropped and counted.
    pub queue: u32,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            format: AccessLogFormat::Text,
            target: AccessLogTarget::Stdout,
            queue: D_QUEUE,
        }
    }
}

const D_QUEUE: u32 = 16_384;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    #[serde(default = "d_true")]
    enabled: bool,
    #[serde(default = "d_format")]
    format: AccessLogFormat,
    #[serde(default = "d_path")]
    path: Spanned<String>,
    #[serde(default = "d_queue")]
    queue: Spanned<u32>,
}

fn d_true() -> bool {
    true
}
fn d_format() -> AccessLogFormat {
    AccessLogFormat::Text
}
fn d_path() -> Spanned<String> {
    Spanned::new(0..0, "-".to_string())
}
fn d_queue() -> Spanned<u32> {
    Spanned::new(0..0, D_QUEUE)
}

/// The writer's settings and whether services log unless they say
/// otherwise (no section: the defaults, and services do not log).
pub(super) fn parse_access_log(
    cx: &Ctx<'_>,
    raw: Option<RawAccessLog>,
) -> Result<(AccessLogConfig, bool), ConfigError> {
    let Some(raw) = raw else {
        return Ok((AccessLogConfig::default(), false));
    };
    let path = raw.path.get_ref();
    let target = match path.as_str() {
        "-" => AccessLogTarget::Stdout,
        "" => return Err(cx.err(raw.path.span(), "access_log.path", "must be \"-\" (stdout) or a file")),
        p if p.ends_with('/') => {
            return Err(cx.err(raw.path.span(), "access_log.path", "must be a file, not a directory"))
        }
        p => AccessLogTarget::File(PathBuf::from(p)),
    };
    let queue = int_in(cx, &raw.queue, "access_log.queue", 1, 1 << 20)?;
    Ok((
        AccessLogConfig {
            format: raw.format,
            target,
            queue,
        },
        raw.enabled,
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::MIN;
    use crate::config::{AccessLogFormat, AccessLogTarget, Config};

    fn with(section: &str, service_line: &str) -> Result<Config, crate::config::ConfigError> {
        let src = MIN.replace("name = \"web\"", &format!("name = \"web\"\n{service_line}"));
        Config::parse(&format!("{section}\n{src}"), "t.toml")
    }

    #[test]
    fn off_without_section_on_with_it_and_per_service_override() {
        let c = with("", "").unwrap();
        assert!(!c.services[0].access_log);
        let c = with("", "access_log = true").unwrap();
        assert!(c.services[0].access_log);
        assert_eq!(c.access_log.target, AccessLogTarget::Stdout);
        let c = with(
            "[access_log]\nformat = \"json\"\npath = \"/var/log/a.log\"\nqueue = 8",
            "",
        )
        .unwrap();
        assert!(c.services[0].access_log);
        assert_eq!(c.access_log.format, AccessLogFormat::Json);
        assert_eq!(c.access_log.target, AccessLogTarget::File("/var/log/a.log".into()));
        assert_eq!(c.access_log.queue, 8);
        let c = with("[access_log]", "access_log = false").unwrap();
        assert!(!c.services[0].access_log);
        let c = with("[access_log]\nenabled = false", "").unwrap();
        assert!(!c.services[0].access_log);
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = with("[access_log]\nqueue = 0", "").unwrap_err();
        assert_eq!(e.field, "access_log.queue");
        assert_eq!(e.line, 2);
        let e = with("[access_log]\npath = \"\"", "").unwrap_err();
        assert_eq!(e.field, "access_log.path");
        let e = with("[access_log]\nformat = \"xml\"", "").unwrap_err();
        assert_eq!(e.field, "access_log.format");
        let e = with("[access_log]\nqeueu = 1", "").unwrap_err();
        assert!(e.message.contains("did you mean \"queue\""), "{e}");
    }
}
