//! The `[admin]` section: the admin HTTP API's listener, token and limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::humantime_spanned;
use super::value::{int_in, not_example_secret};
use super::{ConfigError, Ctx};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Spanned<String>,
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

pub(super) fn parse_admin(cx: &Ctx<'_>, a: RawAdmin) -> Result<AdminConfig, ConfigError> {
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
        (Some(t), None) => Some((t.span(), "admin.token", t.into_inner())),
        (None, Some(f)) => {
            // read at every load and reload; trailing newline trimmed
            let text = std::fs::read_to_string(f.get_ref()).map_err(|e| {
                cx.err(
                    f.span(),
                    "admin.token_file",
                    format!("cannot read {:?}: {e}", f.get_ref()),
                )
            })?;
            Some((f.span(), "admin.token_file", text.trim().to_string()))
        }
        (None, None) => None,
    };
    if let Some((span, field, t)) = &token {
        if t.len() < 16 || t.bytes().any(|b| !b.is_ascii_graphic()) {
            let what = if *field == "admin.token" {
                "must be"
            } else {
                "the token in it must be"
            };
            return Err(cx.err(
                span.clone(),
                *field,
                format!("{what} at least 16 printable ASCII characters"),
            ));
        }
        not_example_secret(cx, span.clone(), *field, t, "openssl rand -hex 32")?;
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
        Some(n) => int_in(cx, &n, field, 1, 100_000),
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
        token: token.map(|(_, _, t)| t),
        max_connections,
        max_connections_per_source,
        header_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::MIN;
    use crate::config::Config;

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
    fn token_file_is_read_trimmed_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let with = |admin: &str| format!("[admin]\nlisten = \"[::]:9180\"\n{admin}\n{MIN}");
        let file = format!("token_file = {:?}", path.display().to_string());
        // unreadable (missing): the field and the path
        let e = Config::parse(&with(&file), "t.toml").unwrap_err();
        assert_eq!((e.line, e.column, e.field.as_str()), (3, 14, "admin.token_file"), "{e}");
        assert!(
            e.message
                .starts_with(&format!("cannot read {:?}: ", path.display().to_string())),
            "{e}"
        );
        // as systemd-creds or `openssl rand -hex 32 >file` write it
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let a = Config::parse(&with(&file), "t.toml").unwrap().admin.unwrap();
        assert_eq!(a.token.as_deref(), Some("0123456789abcdef0123"));
        // read again at every parse (reload)
        std::fs::write(&path, "fedcba9876543210fedc").unwrap();
        let a = Config::parse(&with(&file), "t.toml").unwrap().admin.unwrap();
        assert_eq!(a.token.as_deref(), Some("fedcba9876543210fedc"));
        for (content, want) in [
            (
                "short\n",
                "the token in it must be at least 16 printable ASCII characters",
            ),
            (
                "change-me-to-a-long-random-string\n",
                "is the example value from the documentation",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = Config::parse(&with(&file), "t.toml").unwrap_err();
            assert_eq!(e.field, "admin.token_file", "{e}");
            assert!(e.message.starts_with(want), "{e}");
        }
        let e = Config::parse(&with(&format!("token = \"0123456789abcdef0123\"\n{file}")), "t.toml").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "admin.token_file"), "{e}");
        assert!(e.message.contains("not both"), "{e}");
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
}
