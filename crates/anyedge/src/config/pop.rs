//! The `[pop]` and `[limits]` sections: the PoP's name, worker threads and
//! global limits.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::{duration_in, humantime_spanned, range};
use super::value::{check_name, int_in, nonzero};
use super::{ConfigError, Ctx};

/// The checked `[pop]` and `[limits]` settings (fields of [`super::Config`]).
pub(super) struct Pop {
    pub(super) name: String,
    pub(super) workers: Option<NonZeroU32>,
    pub(super) max_connections: NonZeroU32,
    pub(super) shutdown_grace: Duration,
    pub(super) state_dir: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPop {
    name: Spanned<String>,
    #[serde(default)]
    workers: Option<Spanned<u32>>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
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
    check_name(cx, &pop.name, "pop.name")?;
    let workers = pop.workers.map(|w| int_in(cx, &w, "pop.workers", 1, 256)).transpose()?;
    let max_connections = nonzero(cx, &limits.max_connections, "limits.max_connections", "must be > 0")?;
    let shutdown_grace = duration_in(
        cx,
        &limits.shutdown_grace,
        "limits.shutdown_grace",
        Duration::ZERO,
        range::DAY,
    )?;
    let state_dir = match pop.state_dir {
        None => None,
        Some(d) => {
            let p = std::path::PathBuf::from(d.get_ref());
            if !p.is_absolute() {
                return Err(cx.err(d.span(), "pop.state_dir", "must be an absolute path"));
            }
            Some(p)
        }
    };
    Ok(Pop {
        state_dir,
        name: pop.name.into_inner(),
        workers,
        max_connections,
        shutdown_grace,
    })
}
