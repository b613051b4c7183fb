//! The `[pop]` and `[limits]` sections: the PoP's name, worker threads and
//! global limits.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::{duration_in, humantime_spanned, range};
use super::{valid_name, ConfigError, Ctx};

/// The checked `[pop]` and `[limits]` settings (fields of [`super::Config`]).
pub(super) struct Pop {
    pub(super) name: String,
    pub(super) workers: Option<NonZeroU32>,
    pub(super) max_connections: NonZeroU32,
    pub(super) shutdown_grace: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPop {
    name: Spanned<String>,
    #[serde(default)]
    workers: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
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

pub(super) fn parse_pop(cx: &Ctx<'_>, pop: RawPop, limits: RawLimits) -> Result<Pop, ConfigError> {
    if !valid_name(pop.name.get_ref()) {
        return Err(cx.err(pop.name.span(), "pop.name", "must be 1-64 characters of [A-Za-z0-9._-]"));
    }
    let workers = match pop.workers {
        None => None,
        Some(w) => Some(
            NonZeroU32::new(*w.get_ref())
                .filter(|n| n.get() <= 256)
                .ok_or_else(|| cx.err(w.span(), "pop.workers", "must be between 1 and 256"))?,
        ),
    };
    let max_connections = NonZeroU32::new(*limits.max_connections.get_ref())
        .ok_or_else(|| cx.err(limits.max_connections.span(), "limits.max_connections", "must be > 0"))?;
    let shutdown_grace = duration_in(
        cx,
        &limits.shutdown_grace,
        "limits.shutdown_grace",
        Duration::ZERO,
        range::DAY,
    )?;
    Ok(Pop {
        name: pop.name.into_inner(),
        workers,
        max_connections,
        shutdown_grace,
    })
}
