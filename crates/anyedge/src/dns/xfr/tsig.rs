//! TSIG keys: the configured keys as `domain` keys, the key of a zone, and
//! checking a request's signature.

use std::collections::HashMap;
use std::sync::Arc;

use anyedge_dns::xfr::{self, Signed};
use domain::base::Message;
use domain::tsig::{Algorithm, Key, KeyName, ServerSequence};
use tracing::warn;

use super::time48;
use crate::config::{DnsConfig, TsigAlgorithm, TsigKey, ZoneConfig};

pub(super) type KeyStore = HashMap<(KeyName, Algorithm), Arc<Key>>;
/// The TSIG state for signing our response(s) to a signed request.
pub(super) type ServerSeq = Box<ServerSequence<Arc<Key>>>;

/// The `domain` TSIG key for a configured key.
pub(super) fn make_key(k: &TsigKey) -> Result<Key, String> {
    let alg = match k.algorithm {
        TsigAlgorithm::HmacSha256 => Algorithm::Sha256,
        TsigAlgorithm::HmacSha384 => Algorithm::Sha384,
        TsigAlgorithm::HmacSha512 => Algorithm::Sha512,
    };
    let name: KeyName = k.name.parse().map_err(|e| format!("TSIG key name {:?}: {e}", k.name))?;
    Key::new(alg, &k.secret, name, None, None).map_err(|e| format!("TSIG key {}: {e}", k.name))
}

pub(super) fn key_config<'c>(cfg: &'c DnsConfig, zc: &ZoneConfig) -> Option<&'c TsigKey> {
    let name = zc.key.as_ref()?;
    cfg.tsig_keys.iter().find(|k| &k.name == name)
}

/// The zone's key (`Ok(None)`: the zone has none).
pub(super) fn zone_key(cfg: &DnsConfig, zc: &ZoneConfig) -> Result<Option<Arc<Key>>, String> {
    match (&zc.key, key_config(cfg, zc)) {
        (None, _) => Ok(None),
        (Some(n), None) => Err(format!("no TSIG key {n}")),
        (Some(_), Some(k)) => make_key(k).map(|k| Some(Arc::new(k))),
    }
}

/// The keys a request about `zc` may be signed with: the zone's key if it
/// has one, else any configured key (a signed request gets a signed answer).
pub(super) fn key_store(cfg: &DnsConfig, zc: Option<&ZoneConfig>) -> KeyStore {
    let mut s = KeyStore::new();
    let wanted = zc.and_then(|z| z.key.as_ref());
    for k in &cfg.tsig_keys {
        if wanted.is_some_and(|w| w != &k.name) {
            continue;
        }
        match make_key(k) {
            Ok(key) => {
                s.insert((key.name().clone(), key.algorithm()), Arc::new(key));
            }
            Err(e) => warn!(error = %e, "dns: unusable TSIG key"),
        }
    }
    s
}

/// The request's TSIG checked with the keys of `zc`: the sequence to sign
/// the response(s) with when validly signed, `None` when unsigned, or the
/// error response and the reason for the log.
pub(super) fn check_tsig(
    msg: &mut Message<Vec<u8>>,
    cfg: &DnsConfig,
    zc: Option<&ZoneConfig>,
) -> Result<Option<ServerSeq>, (Vec<u8>, String)> {
    match xfr::verify_request(msg, &key_store(cfg, zc), time48()) {
        Signed::Valid(s) => Ok(Some(s)),
        Signed::Unsigned => Ok(None),
        Signed::Invalid(resp, why) => Err((resp, why)),
    }
}
