//! Signature expiry of signed zones, pre-signed ones above all: the
//! earliest RRSIG expiration of each version is computed when the version
//! is built (load, transfer, IXFR applied; never a scan), exposed as
//! `signatures_expire_in_seconds` (status, metrics), and logged once per
//! change of state (fresh, expiring, expired).
//!
//! Expired signatures keep being served, as Knot and NSD do: validators
//! then answer SERVFAIL for the zone, and withdrawing the zone would do the
//! same to every resolver, validating or not. The fix is upstream (the
//! signer or the primary): the log, the metric and the alert
//! `AnyedgeZoneSignaturesExpiring` are there to have it made in time.

use std::collections::HashMap;
use std::sync::Mutex;

use anyedge_dns::zone::Zone;
use tracing::{error, info, warn};

/// Pre-signed zones are "expiring" with less than this left: a day before
/// validators fail, and below what Knot leaves when it refreshes
/// signatures by default (a tenth of 14 days plus propagation delay).
pub(crate) const EXPIRING_SECONDS: u64 = 86_400;

/// Seconds from `now` to the earliest RRSIG expiration of `z` (negative:
/// expired); None for an unsigned zone.
pub(crate) fn expire_in(z: &Zone, now: u64) -> Option<f64> {
    let at = z.dnssec.as_ref()?.earliest_expiration()?;
    Some(at as f64 - now as f64)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Fresh,
    Expiring,
    Expired,
}

/// The last state logged, per zone name.
static LOGGED: Mutex<Option<HashMap<String, State>>> = Mutex::new(None);

/// Logs when zone `name`'s signatures change state. `validity`: the
/// signature lifetime of a zone signed here (the re-signer renews a third
/// before the end; expiring below a quarter), None for a pre-signed zone.
pub(crate) fn observe(name: &str, z: &Zone, validity: Option<u32>, now: u64) {
    let Some(left) = expire_in(z, now) else { return };
    let threshold = validity.map_or(EXPIRING_SECONDS, |v| (u64::from(v) / 4).min(EXPIRING_SECONDS));
    let state = if left <= 0.0 {
        State::Expired
    } else if left < threshold as f64 {
        State::Expiring
    } else {
        State::Fresh
    };
    let Ok(mut g) = LOGGED.lock() else { return };
    let m = g.get_or_insert_with(HashMap::new);
    let before = m.insert(name.to_string(), state).unwrap_or(State::Fresh);
    if before == state {
        return;
    }
    let left = left as i64;
    match state {
        State::Expired => error!(
            zone = %name,
            serial = z.serial,
            expired_seconds_ago = -left,
            "zone signatures have EXPIRED: still served, but validating resolvers answer SERVFAIL for the zone; re-sign it (or have the primary re-sign and transfer it)"
        ),
        State::Expiring => warn!(
            zone = %name,
            serial = z.serial,
            expire_in_seconds = left,
            "zone signatures expire soon: re-sign the zone (or have the primary re-sign and transfer it) before validators fail"
        ),
        State::Fresh => {
            info!(zone = %name, serial = z.serial, expire_in_seconds = left, "zone signatures are fresh again")
        }
    }
}
