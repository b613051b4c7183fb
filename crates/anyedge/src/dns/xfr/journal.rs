//! Zone changes (reload, transfer in): the journal of differences that
//! IXFR is served from, and the NOTIFY that follows.

use std::sync::{Arc, Weak};

use anyedge_dns::xfr::{self, Diff, Journal, XfrError};
use anyedge_dns::zone::{Zone, ZoneSet};
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::notify::send_notify;
use super::tsig::zone_key;
use super::{Change, Xfr};
use crate::config::{DnsConfig, ZoneSource};
use crate::dns::{domain_wire, Dns};

/// Journal bounds per zone (differences, records in them).
const JOURNAL_DIFFS: usize = 64;
const JOURNAL_RECORDS: usize = 250_000;

impl Xfr {
    pub(super) fn journal_push(&self, apex: &[u8], diffs: impl IntoIterator<Item = Arc<Diff>>) {
        if let Ok(mut j) = self.journals.lock() {
            let j = j
                .entry(apex.into())
                .or_insert_with(|| Journal::new(JOURNAL_DIFFS, JOURNAL_RECORDS));
            for d in diffs {
                if d.is_empty() && d.from_serial() == d.to_serial() {
                    continue;
                }
                j.push(d);
            }
        }
    }

    /// The difference from `old` to `new` (computed off the runtime) as the
    /// journal's next entry; the journal is cleared when there is none.
    /// `Err(Some(e))`: the difference could not be computed.
    pub(super) async fn journal_diff(
        &self,
        apex: &[u8],
        old: Arc<Zone>,
        new: Arc<Zone>,
    ) -> Result<(), Option<XfrError>> {
        match tokio::task::spawn_blocking(move || xfr::diff(&old, &new)).await {
            Ok(Ok(d)) => {
                self.journal_push(apex, [Arc::new(d)]);
                Ok(())
            }
            Ok(Err(e)) => {
                self.journal_clear(apex);
                Err(Some(e))
            }
            Err(_) => {
                self.journal_clear(apex);
                Err(None)
            }
        }
    }

    pub(super) fn journal_clear(&self, apex: &[u8]) {
        if let Ok(mut j) = self.journals.lock() {
            j.remove(apex);
        }
    }
}

pub(super) fn queue_changes(dns: &Dns, cfg: &DnsConfig, old: Option<&ZoneSet>) {
    let Some(tx) = dns.xfr.changes.get() else { return };
    let zones = dns.zones.load_full();
    for zc in &cfg.zones {
        if !matches!(zc.source, ZoneSource::File(_)) {
            continue;
        }
        let apex = domain_wire(&zc.name);
        let Some(new) = zones.get(&apex).cloned() else { continue };
        let prev = old.and_then(|o| o.get(&apex).cloned());
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, &new)) {
            continue;
        }
        // the journal serves IXFR to `allow_transfer`; NOTIFY goes to `notify`
        if zc.notify.is_empty() && (old.is_none() || zc.allow_transfer.is_empty()) {
            continue;
        }
        let key = match zone_key(cfg, zc) {
            Ok(k) => k,
            Err(e) => {
                error!(zone = %zc.name, error = %e, "dns: cannot sign NOTIFY");
                None
            }
        };
        let _ = tx.send(Change {
            name: zc.name.clone(),
            apex: apex.into(),
            old: prev,
            new,
            notify: zc.notify.clone(),
            key,
        });
    }
}

pub(super) async fn change_worker(weak: Weak<Dns>, mut rx: mpsc::UnboundedReceiver<Change>) {
    while let Some(c) = rx.recv().await {
        let Some(dns) = weak.upgrade() else { return };
        if let Some(old) = &c.old {
            match xfr::serial_cmp(c.new.serial, old.serial) {
                Some(std::cmp::Ordering::Greater) => {
                    if let Err(Some(e)) = dns.xfr.journal_diff(&c.apex, old.clone(), c.new.clone()).await {
                        warn!(zone = %c.name, error = %e, "dns: no IXFR journal entry for this change");
                    }
                }
                Some(std::cmp::Ordering::Equal) => {
                    let (o, n) = (old.clone(), c.new.clone());
                    let changed = tokio::task::spawn_blocking(move || xfr::diff(&o, &n).map(|d| !d.is_empty()))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(false);
                    if changed {
                        warn!(zone = %c.name, serial = c.new.serial, "zone content changed but its SOA serial did not: secondaries keep the old version (increase the serial)");
                    }
                    continue;
                }
                _ => {
                    warn!(zone = %c.name, old = old.serial, new = c.new.serial, "zone serial went backwards: secondaries will not transfer it");
                    dns.xfr.journal_clear(&c.apex);
                }
            }
        }
        let Some(soa) = xfr::zone_soa(&c.new) else { continue };
        for target in &c.notify {
            let (name, apex, soa, key, target) = (c.name.clone(), c.apex.clone(), soa.clone(), c.key.clone(), *target);
            dns.xfr
                .spawn(async move { send_notify(&name, &apex, &soa, target, key).await });
        }
    }
}
