//! The `[pop]` and `[limits]` sections: the PoP's name, worker threads and
//! global limits.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::humantime_spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPop {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) workers: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "d_global_max")]
    pub(super) max_connections: Spanned<u32>,
    #[serde(default = "d_grace", with = "humantime_spanned")]
    pub(super) shutdown_grace: Spanned<Duration>,
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
