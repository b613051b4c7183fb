//! A UDP thread: a batch of datagrams in, each answered on the current
//! zones (NOTIFY and signed SOA queries go to the transfer module), response
//! rate limiting, the batch out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyedge_dns::answer::{self, Context, Kind};
use anyedge_guard::rrl::{ResponseClass, RrlVerdict};
use tracing::{debug, warn};

use super::{count_qtype, dnstap, udp, unix_now, xfr, Counters, Dns};

fn rrl_class(k: Kind, len: usize) -> ResponseClass {
    if len >= anyedge_guard::rrl::LARGE_RESPONSE {
        return ResponseClass::Large;
    }
    match k {
        Kind::Positive => ResponseClass::Positive,
        Kind::Wildcard => ResponseClass::Wildcard,
        Kind::NxDomain => ResponseClass::NxDomain,
        Kind::NoData => ResponseClass::NoData,
        Kind::Referral => ResponseClass::Referral,
        Kind::Error => ResponseClass::Error,
    }
}

impl Dns {
    pub(super) fn serve_udp(&self, sock: std::net::UdpSocket, addr: SocketAddr, c: &Counters) {
        let mut batch = udp::Batch::new();
        while !self.stop.load(Ordering::Relaxed) {
            match batch.recv(&sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    warn!(%addr, error = %e, "dns udp receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let zones = self.zones.load();
            let st = self.settings.load();
            let rrl = self.rrl.load();
            let tap = self.dnstap.load();
            let query_time = if tap.is_some() {
                dnstap::wall_now()
            } else {
                Duration::ZERO
            };
            let now = unix_now();
            let mono = self.epoch.elapsed();
            let n = batch.len();
            c.udp_queries.fetch_add(n as u64, Ordering::Relaxed);
            for i in 0..n {
                let Some((q, src, out)) = batch.slot(i) else { continue };
                count_qtype(c, q);
                let cx = Context {
                    src: src.ip(),
                    tcp: false,
                    now,
                };
                let a = answer::answer(&zones, &st, q, &cx, out);
                match a.special {
                    Some(answer::Special::Notify) => xfr::notify(self, q, src, out),
                    Some(_) => out.clear(),
                    None if a.rcode == u16::from(answer::RCODE_NOTAUTH) => {
                        xfr::signed_soa(self, q, src, out);
                    }
                    None => {}
                }
                // RRL (UDP only): a valid server cookie proves the source
                // address, so such clients are never limited.
                if let (Some(r), false) = (
                    &**rrl,
                    out.is_empty() || a.cookie == anyedge_dns::cookie::CookieState::Valid,
                ) {
                    let class = rrl_class(a.kind, out.len());
                    let d = r.check(src.ip(), class, a.rrl_name, mono);
                    if d.is_dry_run_limited() {
                        c.rrl_would_limit.fetch_add(1, Ordering::Relaxed);
                    }
                    if d.episode_start {
                        warn!(%src, class = class.as_str(), decided = d.decided.as_str(), dry_run = d.is_dry_run_limited(), "dns: response rate limit reached for this source prefix");
                    }
                    match d.verdict {
                        RrlVerdict::Send => {}
                        RrlVerdict::Slip => {
                            c.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                            if class != ResponseClass::Error {
                                answer::slip(out);
                            }
                        }
                        RrlVerdict::Drop => {
                            c.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                            out.clear();
                        }
                    }
                }
                self.count(c, &a, !out.is_empty());
                if let Some(t) = &**tap {
                    if t.sampled() {
                        t.log(false, src, Some(addr), query_time, q, out);
                    }
                }
            }
            batch.send(&sock);
        }
        debug!(%addr, "dns udp thread stopped");
    }
}
