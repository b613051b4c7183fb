//! Announce-only BGP session FSM (RFC 4271 section 8), sans-IO.
//!
//! One [`Session`] drives one TCP connection at a time. The caller performs
//! the I/O the [`Action`]s ask for and feeds back [`Event`]s; time only moves
//! through the `now` arguments.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::codec::{
    self, cap_code, notif, AsSegment, Capability, DecodeError, GracefulRestart, Message, MpReach, Notification, Open,
    Origin, PathAttribute, Prefix, Update, AFI_IPV4, AFI_IPV6, MAX_MESSAGE_LEN, SAFI_UNICAST,
};

/// Hold timer used while waiting for the peer's OPEN (RFC 4271 8.2.2 suggests 4 minutes).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// LOCAL_PREF sent on iBGP sessions.
pub const IBGP_LOCAL_PREF: u32 = 100;

/// An address family the session can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// AFI 1 / SAFI 1.
    Ipv4Unicast,
    /// AFI 2 / SAFI 1.
    Ipv6Unicast,
}

impl Family {
    fn afi(self) -> u16 {
        match self {
            Family::Ipv4Unicast => AFI_IPV4,
            Family::Ipv6Unicast => AFI_IPV6,
        }
    }
    fn of(p: &Prefix) -> Family {
        if p.is_ipv4() {
            Family::Ipv4Unicast
        } else {
            Family::Ipv6Unicast
        }
    }
}

/// Session configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Local ASN.
    pub local_as: u32,
    /// Expected peer ASN.
    pub peer_as: u32,
    /// Local BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (0 disables; 1 and 2 are raised to 3).
    pub hold_time: u16,
    /// Initial connect-retry / restart delay.
    pub connect_retry: Duration,
    /// Cap for the exponential connect-retry backoff.
    pub connect_retry_max: Duration,
    /// Never initiate connections; wait for `TcpConnected` from an accepted socket.
    pub passive: bool,
    /// Families to negotiate (multiprotocol capability).
    pub families: Vec<Family>,
    /// Advertise the graceful restart capability with this restart time (seconds, 12 bits).
    pub graceful_restart: Option<u16>,
}

impl SessionConfig {
    /// Defaults: hold 90 s, retry 5 s doubling up to 120 s, active, IPv4+IPv6, no GR.
    pub fn new(local_as: u32, peer_as: u32, router_id: Ipv4Addr) -> Self {
        SessionConfig {
            local_as,
            peer_as,
            router_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
            passive: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            graceful_restart: None,
        }
    }
}

/// FSM states (RFC 4271 8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Idle.
    Idle,
    /// Connect (outgoing connection in progress).
    Connect,
    /// Active (waiting for a connection or the retry timer).
    Active,
    /// OpenSent.
    OpenSent,
    /// OpenConfirm.
    OpenConfirm,
    /// Established.
    Established,
}

/// Inputs to the FSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// ManualStart: begin connecting (or listening when passive), restart automatically after errors.
    Start,
    /// ManualStop: send Cease / Administrative Shutdown (with an RFC 9003 message) and stay Idle.
    Stop {
        /// Shutdown communication.
        reason: Option<String>,
    },
    /// The TCP connection is up (outgoing connect succeeded, or an accepted one).
    TcpConnected,
    /// The outgoing connection attempt failed.
    TcpFailed,
    /// The TCP connection was closed by the peer or failed.
    TcpClosed,
    /// Bytes received on the connection.
    Bytes(&'a [u8]),
    /// An already decoded message.
    Message(Message),
}

/// Why a session went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// Local `Stop`.
    Stopped,
    /// Hold timer expired (NOTIFICATION 4/0 sent).
    HoldTimerExpired,
    /// TCP connection closed.
    TcpClosed,
    /// We sent this NOTIFICATION because of a protocol error.
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
}

/// Outputs of the FSM, drained with [`Session::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer (port 179).
    Connect,
    /// Write these bytes (one encoded BGP message).
    Send(Vec<u8>),
    /// Close the TCP connection (or abort the pending connect).
    CloseTcp,
    /// The session reached Established; routes follow in `Send` actions.
    Established,
    /// A session that had reached OpenSent was torn down.
    Down {
        /// Why.
        reason: DownReason,
    },
}

/// A route to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Network and prefix length (host bits are ignored).
    pub prefix: (IpAddr, u8),
    /// Next hop; must be of the prefix's family.
    pub next_hop: IpAddr,
    /// Extra copies of the local AS to prepend.
    pub as_path_prepend: u8,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// Errors from [`Session::set_routes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Prefix length out of range.
    #[error("invalid prefix {0}/{1}")]
    InvalidPrefix(IpAddr, u8),
    /// Next hop family differs from the prefix family, or is not usable.
    #[error("bad next hop {next_hop} for {prefix}")]
    BadNextHop {
        /// Prefix.
        prefix: Prefix,
        /// Next hop.
        next_hop: IpAddr,
    },
    /// The route's attributes do not fit in one UPDATE message.
    #[error("attributes of {0} do not fit in a 4096-byte UPDATE")]
    TooLarge(Prefix),
}

/// Which connection to keep on a collision (RFC 4271 6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep the connection we initiated, close the one the peer initiated.
    LocallyInitiated,
    /// Keep the connection the peer initiated, close ours.
    RemotelyInitiated,
}

/// RFC 4271 6.8: the connection initiated by the speaker with the higher
/// BGP identifier survives.
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Keep {
    if u32::from(local_id) > u32::from(remote_id) {
        Keep::LocallyInitiated
    } else {
        Keep::RemotelyInitiated
    }
}

/// The BGP session FSM.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    auto_start: bool,
    actions: VecDeque<Action>,
    rx: Vec<u8>,
    retry_interval: Duration,
    retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    hold_time: u16,
    peer_open: Option<Open>,
    families: Vec<Family>,
    desired: BTreeMap<Prefix, Route>,
    advertised: BTreeMap<Prefix, Route>,
}

impl Session {
    /// Creates an Idle session. Nothing happens until [`Event::Start`].
    pub fn new(mut cfg: SessionConfig, _now: Instant) -> Self {
        if cfg.hold_time == 1 || cfg.hold_time == 2 {
            cfg.hold_time = 3;
        }
        if cfg.connect_retry.is_zero() {
            cfg.connect_retry = Duration::from_secs(1);
        }
        cfg.connect_retry_max = cfg.connect_retry_max.max(cfg.connect_retry);
        let retry_interval = cfg.connect_retry;
        Session {
            cfg,
            state: State::Idle,
            auto_start: false,
            actions: VecDeque::new(),
            rx: Vec::new(),
            retry_interval,
            retry_at: None,
            hold_at: None,
            keepalive_at: None,
            hold_time: 0,
            peer_open: None,
            families: Vec::new(),
            desired: BTreeMap::new(),
            advertised: BTreeMap::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Negotiated hold time (seconds) once OpenConfirm is reached.
    pub fn negotiated_hold_time(&self) -> u16 {
        self.hold_time
    }

    /// Families both sides negotiated (valid from OpenConfirm).
    pub fn negotiated_families(&self) -> &[Family] {
        &self.families
    }

    /// The peer's OPEN, once received.
    pub fn peer_open(&self) -> Option<&Open> {
        self.peer_open.as_ref()
    }

    /// Next output, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest instant at which [`Session::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retry_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Replaces the set of routes to announce. In Established, UPDATEs for
    /// added/changed routes and withdrawals for removed ones are queued at once.
    pub fn set_routes(&mut self, routes: Vec<Route>) -> Result<(), RouteError> {
        let mut desired = BTreeMap::new();
        for r in routes {
            let prefix =
                Prefix::new(r.prefix.0, r.prefix.1).map_err(|_| RouteError::InvalidPrefix(r.prefix.0, r.prefix.1))?;
            let nh_ok = match (prefix.addr(), r.next_hop) {
                (IpAddr::V4(_), IpAddr::V4(nh)) => !(nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast()),
                (IpAddr::V6(_), IpAddr::V6(nh)) => !(nh.is_unspecified() || nh.is_multicast()),
                _ => false,
            };
            if !nh_ok {
                return Err(RouteError::BadNextHop {
                    prefix,
                    next_hop: r.next_hop,
                });
            }
            let probe = self.announce_update(&r, vec![prefix]);
            if codec::encode_to_vec(&Message::Update(probe)).is_err() {
                return Err(RouteError::TooLarge(prefix));
            }
            desired.insert(prefix, r);
        }
        self.desired = desired;
        if self.state == State::Established {
            self.sync_routes();
        }
        Ok(())
    }

    /// Feeds one input.
    pub fn handle_event(&mut self, event: Event<'_>, now: Instant) {
        match event {
            Event::Start => {
                self.auto_start = true;
                if self.state == State::Idle {
                    self.retry_interval = self.cfg.connect_retry;
                    self.start_connecting(now);
                }
            }
            Event::Stop { reason } => {
                self.auto_start = false;
                match self.state {
                    State::Idle => {}
                    State::Connect | State::Active => {
                        if self.state == State::Connect {
                            self.actions.push_back(Action::CloseTcp);
                        }
                        self.go_idle();
                    }
                    State::OpenSent | State::OpenConfirm | State::Established => {
                        let n = Notification::admin_shutdown(reason.as_deref());
                        self.teardown(now, DownReason::Stopped, Some(n));
                    }
                }
            }
            Event::TcpConnected => match self.state {
                State::Connect | State::Active => {
                    self.retry_at = None;
                    self.rx.clear();
                    let open = self.local_open();
                    self.send(&Message::Open(open));
                    self.hold_at = Some(now + OPEN_HOLD_TIME);
                    self.state = State::OpenSent;
                }
                State::Idle => self.actions.push_back(Action::CloseTcp),
                _ => {}
            },
            Event::TcpFailed | Event::TcpClosed => match self.state {
                State::Connect => {
                    self.state = State::Active;
                    self.arm_retry(now);
                }
                State::OpenSent | State::OpenConfirm | State::Established => {
                    self.teardown(now, DownReason::TcpClosed, None);
                }
                State::Idle | State::Active => {}
            },
            Event::Bytes(bytes) => {
                if self.state < State::OpenSent {
                    return;
                }
                self.rx.extend_from_slice(bytes);
                loop {
                    match codec::decode(&self.rx) {
                        Ok(None) => break,
                        Ok(Some((msg, used))) => {
                            self.rx.drain(..used);
                            self.handle_message(msg, now);
                            if self.state < State::OpenSent {
                                break;
                            }
                        }
                        Err(e) => {
                            self.protocol_error(now, &e);
                            break;
                        }
                    }
                }
            }
            Event::Message(msg) => {
                if self.state >= State::OpenSent {
                    self.handle_message(msg, now);
                }
            }
        }
    }

    /// Processes expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hold_at.is_some_and(|t| t <= now) {
            let n = Notification {
                code: notif::HOLD_TIMER_EXPIRED,
                subcode: 0,
                data: vec![],
            };
            self.teardown(now, DownReason::HoldTimerExpired, Some(n));
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.send(&Message::Keepalive);
            self.keepalive_at = Some(now + self.keepalive_interval());
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            match self.state {
                State::Idle if self.auto_start => self.start_connecting(now),
                State::Connect => {
                    self.actions.push_back(Action::CloseTcp);
                    self.grow_retry();
                    self.enter_connect(now);
                }
                State::Active => self.enter_connect(now),
                _ => {}
            }
        }
    }

    // ------------------------------------------------------------ internals

    fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.hold_time)) / 3
    }

    fn grow_retry(&mut self) {
        self.retry_interval = (self.retry_interval * 2).min(self.cfg.connect_retry_max);
    }

    /// Arms the retry timer with the current interval, then doubles it.
    fn arm_retry(&mut self, now: Instant) {
        self.retry_at = Some(now + self.retry_interval);
        self.grow_retry();
    }

    fn start_connecting(&mut self, now: Instant) {
        if self.cfg.passive {
            self.state = State::Active;
            self.retry_at = None;
        } else {
            self.enter_connect(now);
        }
    }

    fn enter_connect(&mut self, now: Instant) {
        self.state = State::Connect;
        self.actions.push_back(Action::Connect);
        self.retry_at = Some(now + self.retry_interval);
    }

    fn go_idle(&mut self) {
        self.state = State::Idle;
        self.retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.rx.clear();
        self.advertised.clear();
        self.peer_open = None;
        self.families.clear();
        self.hold_time = 0;
    }

    fn teardown(&mut self, now: Instant, reason: DownReason, notification: Option<Notification>) {
        let was_connected = self.state >= State::OpenSent;
        if let Some(n) = notification {
            self.send(&Message::Notification(n));
        }
        self.actions.push_back(Action::CloseTcp);
        if was_connected {
            self.actions.push_back(Action::Down { reason });
        }
        self.go_idle();
        if self.auto_start {
            self.arm_retry(now);
        }
    }

    fn protocol_error(&mut self, now: Instant, e: &DecodeError) {
        let n = e.to_notification();
        self.teardown(now, DownReason::NotificationSent(n.clone()), Some(n));
    }

    fn fsm_error(&mut self, now: Instant) {
        // RFC 6608 subcodes: 1 = OpenSent, 2 = OpenConfirm, 3 = Established.
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        let n = Notification {
            code: notif::FSM_ERROR,
            subcode,
            data: vec![],
        };
        self.teardown(now, DownReason::NotificationSent(n.clone()), Some(n));
    }

    fn send(&mut self, msg: &Message) {
        let mut buf = Vec::new();
        if codec::encode(msg, &mut buf).is_ok() {
            self.actions.push_back(Action::Send(buf));
        }
    }

    fn local_open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .cfg
            .families
            .iter()
            .map(|f| Capability::Multiprotocol {
                afi: f.afi(),
                safi: SAFI_UNICAST,
            })
            .collect();
        caps.push(Capability::RouteRefresh);
        if let Some(t) = self.cfg.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                flags: 0,
                restart_time: t & 0x0fff,
                families: vec![],
            }));
        }
        Open::new(self.cfg.local_as, self.cfg.hold_time, self.cfg.router_id, caps)
    }

    fn validate_open(&self, open: &Open) -> Result<(), DecodeError> {
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime(open.hold_time));
        }
        if open.bgp_id.is_unspecified() || open.bgp_id == self.cfg.router_id {
            return Err(DecodeError::BadBgpIdentifier(open.bgp_id));
        }
        let Some(asn) = open.four_octet_as() else {
            // We only speak 4-octet AS_PATHs: require the capability (RFC 5492 2/7).
            let mut data = vec![cap_code::FOUR_OCTET_AS, 4];
            data.extend_from_slice(&self.cfg.local_as.to_be_bytes());
            return Err(DecodeError::UnsupportedCapability(data));
        };
        let my_as_ok = u32::from(open.my_as) == asn || (asn > 65535 && open.my_as == codec::AS_TRANS);
        if asn != self.cfg.peer_as || !my_as_ok {
            return Err(DecodeError::BadPeerAs {
                expected: self.cfg.peer_as,
                got: asn,
            });
        }
        Ok(())
    }

    fn handle_message(&mut self, msg: Message, now: Instant) {
        if let Message::Notification(n) = msg {
            self.teardown(now, DownReason::NotificationReceived(n), None);
            return;
        }
        match self.state {
            State::OpenSent => match msg {
                Message::Open(open) => {
                    if let Err(e) = self.validate_open(&open) {
                        self.protocol_error(now, &e);
                        return;
                    }
                    let mut peer_fams: Vec<Family> = open
                        .capabilities
                        .iter()
                        .filter_map(|c| match c {
                            Capability::Multiprotocol {
                                afi: AFI_IPV4,
                                safi: SAFI_UNICAST,
                            } => Some(Family::Ipv4Unicast),
                            Capability::Multiprotocol {
                                afi: AFI_IPV6,
                                safi: SAFI_UNICAST,
                            } => Some(Family::Ipv6Unicast),
                            _ => None,
                        })
                        .collect();
                    let any_mp = open
                        .capabilities
                        .iter()
                        .any(|c| matches!(c, Capability::Multiprotocol { .. }));
                    if !any_mp {
                        peer_fams.push(Family::Ipv4Unicast); // RFC 4760: IPv4 unicast is implied
                    }
                    let mut fams: Vec<Family> = self
                        .cfg
                        .families
                        .iter()
                        .copied()
                        .filter(|f| peer_fams.contains(f))
                        .collect();
                    fams.sort();
                    fams.dedup();
                    self.families = fams;
                    self.hold_time = self.cfg.hold_time.min(open.hold_time);
                    self.peer_open = Some(open);
                    self.send(&Message::Keepalive);
                    self.restart_hold(now);
                    self.keepalive_at = if self.hold_time == 0 {
                        None
                    } else {
                        Some(now + self.keepalive_interval())
                    };
                    self.state = State::OpenConfirm;
                }
                _ => self.fsm_error(now),
            },
            State::OpenConfirm => match msg {
                Message::Keepalive => {
                    self.restart_hold(now);
                    self.state = State::Established;
                    self.retry_interval = self.cfg.connect_retry;
                    self.actions.push_back(Action::Established);
                    self.advertised.clear();
                    self.sync_routes();
                    let fams = self.families.clone();
                    for f in fams {
                        let eor = match f {
                            Family::Ipv4Unicast => Update::default(),
                            Family::Ipv6Unicast => Update {
                                attributes: vec![PathAttribute::MpUnreach(vec![])],
                                ..Update::default()
                            },
                        };
                        self.send(&Message::Update(eor));
                    }
                }
                _ => self.fsm_error(now),
            },
            State::Established => match msg {
                Message::Keepalive | Message::Update(_) => self.restart_hold(now),
                Message::RouteRefresh(rr) => {
                    self.restart_hold(now);
                    let fam = match (rr.afi, rr.safi) {
                        (AFI_IPV4, SAFI_UNICAST) => Some(Family::Ipv4Unicast),
                        (AFI_IPV6, SAFI_UNICAST) => Some(Family::Ipv6Unicast),
                        _ => None,
                    };
                    if let Some(f) = fam {
                        // Re-announce everything of that family.
                        self.advertised.retain(|p, _| Family::of(p) != f);
                        self.sync_routes();
                    }
                }
                _ => self.fsm_error(now),
            },
            _ => {}
        }
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_at = if self.hold_time == 0 {
            None
        } else {
            Some(now + Duration::from_secs(u64::from(self.hold_time)))
        };
    }

    fn is_ibgp(&self) -> bool {
        self.cfg.local_as == self.cfg.peer_as
    }

    /// UPDATE announcing `prefixes` (all of `route`'s family) with `route`'s attributes.
    fn announce_update(&self, route: &Route, prefixes: Vec<Prefix>) -> Update {
        let mut attrs = vec![PathAttribute::Origin(Origin::Igp)];
        let n = usize::from(route.as_path_prepend) + usize::from(!self.is_ibgp());
        let asns = vec![self.cfg.local_as; n];
        let segs = asns.chunks(255).map(|c| AsSegment::Sequence(c.to_vec())).collect();
        attrs.push(PathAttribute::AsPath(segs));
        if let IpAddr::V4(nh) = route.next_hop {
            attrs.push(PathAttribute::NextHop(nh));
        }
        if let Some(med) = route.med {
            attrs.push(PathAttribute::MultiExitDisc(med));
        }
        if self.is_ibgp() {
            attrs.push(PathAttribute::LocalPref(IBGP_LOCAL_PREF));
        }
        if !route.communities.is_empty() {
            attrs.push(PathAttribute::Communities(route.communities.clone()));
        }
        match route.next_hop {
            IpAddr::V4(_) => {
                if !route.large_communities.is_empty() {
                    attrs.push(PathAttribute::LargeCommunities(route.large_communities.clone()));
                }
                Update {
                    withdrawn: vec![],
                    attributes: attrs,
                    nlri: prefixes,
                }
            }
            IpAddr::V6(nh) => {
                attrs.push(PathAttribute::MpReach(MpReach {
                    next_hop: nh,
                    link_local: None,
                    nlri: prefixes,
                }));
                if !route.large_communities.is_empty() {
                    attrs.push(PathAttribute::LargeCommunities(route.large_communities.clone()));
                }
                Update {
                    withdrawn: vec![],
                    attributes: attrs,
                    nlri: vec![],
                }
            }
        }
    }

    /// Queues UPDATEs bringing the peer from `advertised` to `desired`.
    fn sync_routes(&mut self) {
        let fams = self.families.clone();
        let wanted: BTreeMap<Prefix, Route> = self
            .desired
            .iter()
            .filter(|(p, _)| fams.contains(&Family::of(p)))
            .map(|(p, r)| (*p, r.clone()))
            .collect();

        // Withdrawals.
        let gone: Vec<Prefix> = self
            .advertised
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        let (gone4, gone6): (Vec<Prefix>, Vec<Prefix>) = gone.into_iter().partition(|p| p.is_ipv4());
        // Header 19 + withdrawn len 2 + attr len 2.
        for chunk in chunk_prefixes(&gone4, MAX_MESSAGE_LEN - 23) {
            self.send(&Message::Update(Update {
                withdrawn: chunk,
                ..Update::default()
            }));
        }
        // Plus MP_UNREACH header: flags, type, 2-byte length, AFI, SAFI.
        for chunk in chunk_prefixes(&gone6, MAX_MESSAGE_LEN - 23 - 7) {
            let u = Update {
                attributes: vec![PathAttribute::MpUnreach(chunk)],
                ..Update::default()
            };
            self.send(&Message::Update(u));
        }

        // Announcements, grouped by identical attributes.
        let mut groups: BTreeMap<GroupKey, (Route, Vec<Prefix>)> = BTreeMap::new();
        for (p, r) in &wanted {
            if self.advertised.get(p) == Some(r) {
                continue;
            }
            let key = GroupKey {
                next_hop: r.next_hop,
                prepend: r.as_path_prepend,
                med: r.med,
                communities: r.communities.clone(),
                large: r.large_communities.clone(),
            };
            groups.entry(key).or_insert_with(|| (r.clone(), Vec::new())).1.push(*p);
        }
        for (_, (route, prefixes)) in groups {
            let base = self.announce_update(&route, vec![]);
            let Ok(base_bytes) = codec::encode_to_vec(&Message::Update(base)) else {
                continue;
            };
            // One spare byte: MP_REACH may switch to an extended length.
            let budget = MAX_MESSAGE_LEN.saturating_sub(base_bytes.len() + 1);
            for chunk in chunk_prefixes(&prefixes, budget) {
                let u = self.announce_update(&route, chunk);
                self.send(&Message::Update(u));
            }
        }
        self.advertised = wanted;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    next_hop: IpAddr,
    prepend: u8,
    med: Option<u32>,
    communities: Vec<u32>,
    large: Vec<(u32, u32, u32)>,
}

fn chunk_prefixes(prefixes: &[Prefix], budget: usize) -> Vec<Vec<Prefix>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for p in prefixes {
        let l = p.encoded_len();
        if used + l > budget && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += l;
        cur.push(*p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
