//! The RFC 2131 DHCPv4 client state machine, pure: no sockets, no clock.
//!
//! The caller feeds it [`Input`]s (checked server replies, timer expiry,
//! the result of the ARP probe) together with the current time, and carries
//! out the [`Action`]s it returns (send a message, configure or remove the
//! lease, probe the address). [`Client::deadline`] says when to call
//! [`Client::on_timer`] next. Randomness (transaction ids, retransmission
//! jitter) comes from a seeded generator, so tests are deterministic.
//!
//! States (RFC 2131 figure 5): INIT, SELECTING, REQUESTING, BOUND,
//! RENEWING, REBINDING, INIT-REBOOT/REBOOTING (when a previous address is
//! known), plus PROBING: after an ACK the address is bound at once and,
//! for [`PROBE_WAIT`], the caller checks with ARP that nobody else has it
//! (RFC 5227's conflict detection, run optimistically as RFC 4429 does for
//! IPv6: waiting before use would add the whole window to every boot); a
//! conflict removes the address, sends DECLINE and starts over after 10 s.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// First retransmission interval (RFC 2131 4.1: 4 s, doubling to 64 s).
pub const RETRANSMIT_START: Duration = Duration::from_secs(4);
pub const RETRANSMIT_MAX: Duration = Duration::from_secs(64);
/// REQUEST retransmissions (SELECTING->REQUESTING, REBOOTING) before
/// giving up and starting over.
pub const REQUEST_TRIES: u32 = 4;
/// How long the ARP probe waits for an answer. RFC 5227's full probe
/// sequence takes 1-7 s; on the links appliances live on an owner answers
/// an ARP request within milliseconds, so one probe with a short wait finds
/// a taken address without adding a second to every boot (measured by
/// `cargo xtask bench`).
pub const PROBE_WAIT: Duration = Duration::from_millis(200);
/// Wait after a DECLINE (RFC 2131 3.1.5: at least 10 s).
pub const DECLINE_WAIT: Duration = Duration::from_secs(10);
/// Shortest renew/rebind retransmission interval.
pub const RENEW_MIN: Duration = Duration::from_secs(4);
/// Leases shorter than this are treated as this long.
pub const LEASE_MIN: Duration = Duration::from_secs(8);

/// What a lease gives (the options cairn uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
    pub lease_time: Duration,
    pub t1: Option<Duration>,
    pub t2: Option<Duration>,
    pub routers: Vec<Ipv4Addr>,
    /// RFC 3442 classless static routes `(destination, prefix, gateway)`;
    /// when present they replace `routers`.
    pub classless_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    pub ntp: Vec<Ipv4Addr>,
    /// The reply carried the Rapid Commit option (RFC 4039): an ACK that
    /// answers a DISCOVER directly.
    pub rapid_commit: bool,
}

impl Default for LeaseInfo {
    fn default() -> Self {
        LeaseInfo {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            server: Ipv4Addr::UNSPECIFIED,
            lease_time: Duration::ZERO,
            t1: None,
            t2: None,
            routers: Vec::new(),
            classless_routes: Vec::new(),
            dns: Vec::new(),
            domain: None,
            search: Vec::new(),
            hostname: None,
            mtu: None,
            ntp: Vec::new(),
            rapid_commit: false,
        }
    }
}

impl LeaseInfo {
    /// T1 and T2: the server's, or 0.5 and 0.875 of the lease (RFC 2131
    /// 4.4.5), kept in order (T1 <= T2 <= lease).
    pub fn timers(&self) -> (Duration, Duration, Duration) {
        let lease = self.lease_time.max(LEASE_MIN);
        let mut t2 = self.t2.unwrap_or(lease * 7 / 8).min(lease);
        let t1 = self.t1.unwrap_or(lease / 2).min(t2);
        if t2 < t1 {
            t2 = t1;
        }
        (t1, t2, lease)
    }

    /// The routes to install: classless routes if any, else a default
    /// route through the first router.
    pub fn routes(&self) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
        if !self.classless_routes.is_empty() {
            return self.classless_routes.clone();
        }
        self.routers
            .first()
            .map(|r| vec![(Ipv4Addr::UNSPECIFIED, 0, *r)])
            .unwrap_or_default()
    }
}

/// A server reply that passed the packet checks (see `dhcp_packet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub xid: u32,
    pub info: LeaseInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// What the machine reacts to. (Inputs live for one call; boxing the
/// reply would only add an allocation per packet.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Reply(Reply),
    /// The ARP probe saw another host using the address.
    ArpConflict,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub kind: MessageKind,
    pub xid: u32,
    /// `ciaddr`: our address when renewing or rebinding.
    pub ciaddr: Ipv4Addr,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Where to: broadcast, or unicast to the server (renewing).
    pub unicast: Option<Ipv4Addr>,
    /// Seconds since the exchange began (`secs`).
    pub secs: u16,
    /// Option 80 (RFC 4039): a DISCOVER that accepts an immediate ACK.
    pub rapid_commit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Discover,
    Request,
    Decline,
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Outgoing),
    /// Check with ARP that nobody uses this address; answer with
    /// [`Input::ArpConflict`] before the probe deadline, or say nothing.
    Probe(Ipv4Addr),
    /// A new lease: add the address, routes, DNS.
    Bind(LeaseInfo),
    /// The same address, renewed: update lifetimes (and options).
    Renewed(LeaseInfo),
    /// Remove the lease's address and routes.
    Unbind {
        lease: LeaseInfo,
        why: &'static str,
    },
}

/// (One client per interface holds one state: boxing the offer would only
/// add an allocation per exchange.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum State {
    Init,
    Selecting,
    Requesting {
        offer: LeaseInfo,
        tries: u32,
    },
    /// Bound (the lease is `Client::lease`) and probing it with ARP until
    /// `until`.
    Probing {
        until: Instant,
    },
    Bound,
    Renewing,
    Rebinding,
    /// INIT-REBOOT done, waiting for the ACK of a REQUEST for `addr`.
    Rebooting {
        addr: Ipv4Addr,
        tries: u32,
    },
    /// After a DECLINE or a NAK: start over at `until`.
    Backoff {
        until: Instant,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Selecting => "SELECTING",
            State::Requesting { .. } => "REQUESTING",
            State::Probing { .. } => "PROBING",
            State::Bound => "BOUND",
            State::Renewing => "RENEWING",
            State::Rebinding => "REBINDING",
            State::Rebooting { .. } => "REBOOTING",
            State::Backoff { .. } => "INIT (waiting)",
        }
    }
}

/// A lease in use and its deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub info: LeaseInfo,
    pub since: Instant,
    pub t1: Instant,
    pub t2: Instant,
    pub expiry: Instant,
}

/// The client state machine of one interface.
#[derive(Debug, Clone)]
pub struct Client {
    state: State,
    lease: Option<Bound>,
    xid: u32,
    /// When the current exchange began (for `secs`).
    started: Instant,
    /// Next retransmission or state timeout.
    timer: Option<Instant>,
    interval: Duration,
    rng: u64,
    rapid_commit: bool,
}

impl Client {
    /// A new client; `seed` feeds the transaction ids and jitter (use the
    /// MAC address and the clock). With `previous`, it starts in
    /// INIT-REBOOT and asks for that address again.
    pub fn new(seed: u64, previous: Option<Ipv4Addr>) -> Self {
        let mut c = Client {
            state: State::Init,
            lease: None,
            xid: 0,
            started: Instant::now(),
            timer: None,
            interval: RETRANSMIT_START,
            rng: seed | 1,
            rapid_commit: false,
        };
        if let Some(addr) = previous {
            c.state = State::Rebooting { addr, tries: 0 };
        }
        c
    }

    /// Asks for Rapid Commit (RFC 4039) in every DISCOVER and accepts an
    /// ACK that carries it as the answer.
    pub fn with_rapid_commit(mut self, on: bool) -> Self {
        self.rapid_commit = on;
        self
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn lease(&self) -> Option<&Bound> {
        self.lease.as_ref()
    }

    /// When [`Client::on_timer`] must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.timer
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `base` plus or minus up to one second (RFC 2131 4.1).
    fn jitter(&mut self, base: Duration) -> Duration {
        let ms = (self.random() % 2001) as i64 - 1000;
        let b = base.as_millis() as i64;
        Duration::from_millis((b + ms).max(500) as u64)
    }

    fn new_exchange(&mut self, now: Instant) {
        self.xid = self.random() as u32;
        self.started = now;
        self.interval = RETRANSMIT_START;
    }

    fn secs(&self, now: Instant) -> u16 {
        now.saturating_duration_since(self.started)
            .as_secs()
            .min(u64::from(u16::MAX)) as u16
    }

    fn msg(&self, now: Instant, kind: MessageKind) -> Outgoing {
        Outgoing {
            kind,
            xid: self.xid,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
            unicast: None,
            secs: self.secs(now),
            rapid_commit: false,
        }
    }

    /// Arms the exponential retransmission timer.
    fn arm_retransmit(&mut self, now: Instant) {
        let wait = self.jitter(self.interval);
        self.timer = Some(now + wait);
        self.interval = (self.interval * 2).min(RETRANSMIT_MAX);
    }

    /// Starts (or restarts) the client: sends DISCOVER, or in INIT-REBOOT
    /// the REQUEST for the previous address.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.new_exchange(now);
        match self.state.clone() {
            State::Rebooting { addr, .. } => {
                self.state = State::Rebooting { addr, tries: 0 };
                self.send_reboot_request(now, addr)
            }
            _ => self.discover(now),
        }
    }

    fn discover(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Selecting {
            self.new_exchange(now);
        }
        self.state = State::Selecting;
        let mut m = self.msg(now, MessageKind::Discover);
        // Ask for the address we had, if any (a hint only).
        m.requested = self.lease.as_ref().map(|b| b.info.addr);
        m.rapid_commit = self.rapid_commit;
        self.arm_retransmit(now);
        vec![Action::Send(m)]
    }

    fn send_reboot_request(&mut self, now: Instant, addr: Ipv4Addr) -> Vec<Action> {
        let mut m = self.msg(now, MessageKind::Request);
        m.requested = Some(addr);
        self.arm_retransmit(now);
        // A lease still held must not outlive its expiry while we wait.
        if let (Some(b), Some(t)) = (&self.lease, self.timer) {
            self.timer = Some(t.min(b.expiry));
        }
        vec![Action::Send(m)]
    }

    /// The link came back after losing its carrier: the client may now be
    /// on another network. A client holding an unexpired lease goes to
    /// INIT-REBOOT and broadcasts a REQUEST for its address with no server
    /// identifier (RFC 2131 3.2); the address stays in use until the
    /// answer: an ACK confirms it ([`Action::Renewed`]), a NAK drops it and
    /// starts over, silence keeps it until its own T1/T2/expiry. Without a
    /// lease nothing changes (discovery is already retransmitting).
    pub fn link_restored(&mut self, now: Instant) -> Vec<Action> {
        let Some(b) = self.lease.clone() else {
            return Vec::new();
        };
        if now >= b.expiry {
            return self.expire(now);
        }
        self.new_exchange(now);
        self.state = State::Rebooting {
            addr: b.info.addr,
            tries: 0,
        };
        self.send_reboot_request(now, b.info.addr)
    }

    fn send_selecting_request(&mut self, now: Instant, offer: &LeaseInfo) -> Vec<Action> {
        let mut m = self.msg(now, MessageKind::Request);
        m.requested = Some(offer.addr);
        m.server_id = Some(offer.server);
        self.arm_retransmit(now);
        vec![Action::Send(m)]
    }

    /// RENEWING/REBINDING retransmission: half the time left until `end`,
    /// at least [`RENEW_MIN`], never past `end` (RFC 2131 4.4.5).
    fn arm_until(&mut self, now: Instant, end: Instant) {
        let left = end.saturating_duration_since(now);
        let wait = (left / 2).max(RENEW_MIN).min(left);
        self.timer = Some(now + wait);
    }

    fn send_renew(&mut self, now: Instant, broadcast: bool) -> Vec<Action> {
        let Some(b) = &self.lease else {
            return self.discover(now);
        };
        let mut m = self.msg(now, MessageKind::Request);
        m.ciaddr = b.info.addr;
        if !broadcast {
            m.unicast = Some(b.info.server);
        }
        let end = if broadcast { b.expiry } else { b.t2 };
        self.arm_until(now, end);
        vec![Action::Send(m)]
    }

    /// The timer fired (call when `now >= deadline()`).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match self.timer {
            Some(t) if t <= now => {}
            _ => return Vec::new(),
        }
        self.timer = None;
        // Lease deadlines first: they apply in every state that has one.
        if let Some(b) = self.lease.clone() {
            if now >= b.expiry {
                return self.expire(now);
            }
        }
        match self.state.clone() {
            State::Init | State::Backoff { .. } => self.discover(now),
            State::Selecting => {
                let mut m = self.msg(now, MessageKind::Discover);
                m.requested = self.lease.as_ref().map(|b| b.info.addr);
                self.arm_retransmit(now);
                vec![Action::Send(m)]
            }
            State::Requesting { offer, tries } => {
                if tries + 1 >= REQUEST_TRIES {
                    self.discover(now)
                } else {
                    self.state = State::Requesting {
                        offer: offer.clone(),
                        tries: tries + 1,
                    };
                    self.send_selecting_request(now, &offer)
                }
            }
            State::Rebooting { addr, tries } => {
                if tries + 1 >= REQUEST_TRIES {
                    if self.lease.is_some() {
                        // Nobody answered: keep the lease we hold and
                        // go on with its own timers.
                        self.state = State::Bound;
                        self.timer = Some(now);
                        return self.on_timer(now);
                    }
                    self.discover(now)
                } else {
                    self.state = State::Rebooting {
                        addr,
                        tries: tries + 1,
                    };
                    self.send_reboot_request(now, addr)
                }
            }
            State::Probing { until } => {
                if now < until {
                    self.timer = Some(until);
                    return Vec::new();
                }
                // Nobody else answered for the address: keep it.
                self.state = State::Bound;
                self.timer = self.lease.as_ref().map(|b| b.t1);
                Vec::new()
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(b) = self.lease.clone() else {
                    return self.discover(now);
                };
                if now >= b.t2 {
                    if self.state != State::Rebinding {
                        self.state = State::Rebinding;
                        self.new_exchange(now);
                    }
                    self.send_renew(now, true)
                } else if now >= b.t1 {
                    if self.state != State::Renewing {
                        self.state = State::Renewing;
                        self.new_exchange(now);
                    }
                    self.send_renew(now, false)
                } else {
                    self.timer = Some(b.t1);
                    Vec::new()
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(b) = self.lease.take() {
            out.push(Action::Unbind {
                lease: b.info,
                why: "lease expired",
            });
        }
        self.state = State::Init;
        out.extend(self.discover(now));
        out
    }

    fn bind(&mut self, now: Instant, info: LeaseInfo) -> Vec<Action> {
        let (t1, t2, lease) = info.timers();
        let renewed = self
            .lease
            .as_ref()
            .is_some_and(|b| b.info.addr == info.addr);
        let mut out = Vec::new();
        if let Some(old) = self.lease.take() {
            if old.info.addr != info.addr {
                out.push(Action::Unbind {
                    lease: old.info,
                    why: "replaced by a new lease",
                });
            }
        }
        self.lease = Some(Bound {
            info: info.clone(),
            since: now,
            t1: now + t1,
            t2: now + t2,
            expiry: now + lease,
        });
        self.state = State::Bound;
        self.timer = Some(now + t1);
        out.push(if renewed {
            Action::Renewed(info)
        } else {
            Action::Bind(info)
        });
        out
    }

    /// Back to INIT after a NAK or a DECLINE, dropping any lease.
    fn restart_after(&mut self, now: Instant, wait: Duration, why: &'static str) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(b) = self.lease.take() {
            out.push(Action::Unbind { lease: b.info, why });
        }
        let until = now + wait;
        self.state = State::Backoff { until };
        self.timer = Some(until);
        out
    }

    /// Reacts to a reply or an ARP result.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        match input {
            Input::ArpConflict => match (&self.state, &self.lease) {
                (State::Probing { .. }, Some(b)) => {
                    let (addr, server) = (b.info.addr, b.info.server);
                    let mut m = self.msg(now, MessageKind::Decline);
                    m.requested = Some(addr);
                    m.server_id = Some(server);
                    let mut out = vec![Action::Send(m)];
                    out.extend(self.restart_after(now, DECLINE_WAIT, "address in use"));
                    out
                }
                _ => Vec::new(),
            },
            Input::Reply(r) => {
                if r.xid != self.xid {
                    return Vec::new();
                }
                self.reply(now, r)
            }
        }
    }

    fn reply(&mut self, now: Instant, r: Reply) -> Vec<Action> {
        match (self.state.clone(), r.kind) {
            (State::Selecting, ReplyKind::Offer) => {
                // The first acceptable offer wins.
                self.state = State::Requesting {
                    offer: r.info.clone(),
                    tries: 0,
                };
                self.interval = RETRANSMIT_START;
                self.send_selecting_request(now, &r.info)
            }
            // RFC 4039: an ACK with Rapid Commit answers our DISCOVER
            // directly; one without it is not for this exchange.
            (State::Selecting, ReplyKind::Ack) if self.rapid_commit && r.info.rapid_commit => {
                self.probe(now, r.info)
            }
            (State::Requesting { offer, .. }, ReplyKind::Ack) => {
                if r.info.addr != offer.addr {
                    return Vec::new();
                }
                self.probe(now, r.info)
            }
            (State::Rebooting { addr, .. }, ReplyKind::Ack) => {
                if r.info.addr != addr {
                    return Vec::new();
                }
                // The address is already ours (INIT-REBOOT after a link
                // change): confirmed, no probe needed.
                if self.lease.as_ref().is_some_and(|b| b.info.addr == addr) {
                    return self.bind(now, r.info);
                }
                self.probe(now, r.info)
            }
            (State::Renewing | State::Rebinding, ReplyKind::Ack) => {
                match &self.lease {
                    Some(b) if b.info.addr == r.info.addr => self.bind(now, r.info),
                    // A different address while renewing: start over.
                    _ => self.restart_after(now, Duration::ZERO, "server gave another address"),
                }
            }
            (
                State::Requesting { .. }
                | State::Rebooting { .. }
                | State::Renewing
                | State::Rebinding,
                ReplyKind::Nak,
            ) => self.restart_after(now, Duration::from_millis(500), "server sent NAK"),
            // Anything else (late offers, duplicate ACKs) is ignored.
            _ => Vec::new(),
        }
    }

    /// Binds the acknowledged address and probes it with ARP for
    /// [`PROBE_WAIT`]; a conflict in that window takes it back.
    fn probe(&mut self, now: Instant, lease: LeaseInfo) -> Vec<Action> {
        let until = now + PROBE_WAIT;
        let addr = lease.addr;
        let mut out = self.bind(now, lease);
        self.state = State::Probing { until };
        self.timer = Some(until);
        out.push(Action::Probe(addr));
        out
    }

    /// Gives the lease back (shutdown): a RELEASE if bound.
    pub fn release(&mut self, now: Instant) -> Vec<Action> {
        let Some(b) = self.lease.take() else {
            return Vec::new();
        };
        self.new_exchange(now);
        let mut m = self.msg(now, MessageKind::Release);
        m.ciaddr = b.info.addr;
        m.server_id = Some(b.info.server);
        m.unicast = Some(b.info.server);
        self.state = State::Init;
        self.timer = None;
        vec![
            Action::Send(m),
            Action::Unbind {
                lease: b.info,
                why: "released",
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn info(lease: u64) -> LeaseInfo {
        LeaseInfo {
            addr: ADDR,
            prefix_len: 24,
            server: SERVER,
            lease_time: Duration::from_secs(lease),
            routers: vec![SERVER],
            ..Default::default()
        }
    }

    fn reply(c: &Client, kind: ReplyKind, lease: u64) -> Input {
        Input::Reply(Reply {
            kind,
            xid: c.xid,
            info: info(lease),
        })
    }

    fn sent(actions: &[Action]) -> Vec<&Outgoing> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// A client that went INIT -> SELECTING -> REQUESTING -> PROBING ->
    /// BOUND at `t0` with a lease of `lease` seconds.
    /// Returns the client and the moment it bound.
    fn bound(t0: Instant, lease: u64) -> (Client, Instant) {
        let mut c = Client::new(42, None);
        let a = c.start(t0);
        assert_eq!(sent(&a)[0].kind, MessageKind::Discover);
        assert_eq!(c.state(), &State::Selecting);
        let a = c.handle(t0, reply(&c, ReplyKind::Offer, lease));
        let m = sent(&a)[0];
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!((m.requested, m.server_id), (Some(ADDR), Some(SERVER)));
        assert!(matches!(c.state(), State::Requesting { .. }));
        let a = c.handle(t0, reply(&c, ReplyKind::Ack, lease));
        // Bound at once, probed in the background.
        assert_eq!(a, vec![Action::Bind(info(lease)), Action::Probe(ADDR)]);
        assert!(matches!(c.state(), State::Probing { .. }));
        assert_eq!(c.deadline(), Some(t0 + PROBE_WAIT));
        let a = c.on_timer(t0 + PROBE_WAIT);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(c.state(), &State::Bound);
        (c, t0)
    }

    #[test]
    fn link_restored_with_a_lease_goes_to_init_reboot_and_ack_confirms() {
        let t0 = Instant::now();
        let (mut c, tb) = bound(t0, 3600);
        let now = tb + Duration::from_secs(100);
        let a = c.link_restored(now);
        let m = sent(&a);
        assert_eq!(m.len(), 1);
        // RFC 2131 3.2/4.3.2: requested address, no server id, no ciaddr,
        // broadcast.
        assert_eq!(m[0].kind, MessageKind::Request);
        assert_eq!(m[0].requested, Some(ADDR));
        assert_eq!(m[0].server_id, None);
        assert_eq!(m[0].ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(m[0].unicast, None);
        assert_eq!(
            c.state(),
            &State::Rebooting {
                addr: ADDR,
                tries: 0
            }
        );
        // The lease stays in use meanwhile.
        assert!(c.lease().is_some());
        let a = c.handle(now, reply(&c, ReplyKind::Ack, 3600));
        assert_eq!(a, vec![Action::Renewed(info(3600))]);
        assert_eq!(c.state(), &State::Bound);
        assert_eq!(c.lease().unwrap().since, now);
    }

    #[test]
    fn link_restored_nak_drops_the_lease() {
        let t0 = Instant::now();
        let (mut c, tb) = bound(t0, 3600);
        c.link_restored(tb);
        let a = c.handle(tb, reply(&c, ReplyKind::Nak, 0));
        assert!(
            matches!(
                &a[..],
                [Action::Unbind {
                    why: "server sent NAK",
                    ..
                }]
            ),
            "{a:?}"
        );
        assert!(c.lease().is_none());
        assert!(matches!(c.state(), State::Backoff { .. }));
    }

    #[test]
    fn link_restored_without_answer_keeps_the_lease() {
        let t0 = Instant::now();
        let (mut c, tb) = bound(t0, 3600);
        c.link_restored(tb);
        for _ in 0..REQUEST_TRIES {
            let now = c.deadline().unwrap();
            c.on_timer(now);
        }
        assert_eq!(c.state(), &State::Bound);
        assert!(c.lease().is_some());
        assert_eq!(c.deadline(), Some(c.lease().unwrap().t1));
    }

    #[test]
    fn link_restored_without_a_lease_changes_nothing() {
        let t0 = Instant::now();
        let mut c = Client::new(3, None);
        c.start(t0);
        let before = c.deadline();
        assert!(c.link_restored(t0).is_empty());
        assert_eq!(c.state(), &State::Selecting);
        assert_eq!(c.deadline(), before);
    }

    #[test]
    fn link_restored_after_expiry_unbinds() {
        let t0 = Instant::now();
        let (mut c, tb) = bound(t0, 60);
        let a = c.link_restored(tb + Duration::from_secs(61));
        assert!(
            matches!(
                &a[0],
                Action::Unbind {
                    why: "lease expired",
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(c.state(), &State::Selecting);
    }

    #[test]
    fn full_exchange_to_bound() {
        let t0 = Instant::now();
        let (c, _) = bound(t0, 3600);
        let b = c.lease().unwrap();
        assert_eq!(b.t1 - b.since, Duration::from_secs(1800));
        assert_eq!(b.t2 - b.since, Duration::from_secs(3150));
        assert_eq!(c.deadline(), Some(b.t1));
    }

    #[test]
    fn rapid_commit_ack_binds_straight_from_selecting() {
        let t0 = Instant::now();
        let rapid_ack = |c: &Client| {
            let mut i = info(3600);
            i.rapid_commit = true;
            Input::Reply(Reply {
                kind: ReplyKind::Ack,
                xid: c.xid,
                info: i,
            })
        };
        let mut c = Client::new(42, None).with_rapid_commit(true);
        let a = c.start(t0);
        assert!(sent(&a)[0].rapid_commit, "DISCOVER asks for rapid commit");
        // A plain ACK is not an answer to a DISCOVER.
        assert!(c.handle(t0, reply(&c, ReplyKind::Ack, 3600)).is_empty());
        assert_eq!(c.state(), &State::Selecting);
        let a = c.handle(t0, rapid_ack(&c));
        assert!(sent(&a).is_empty(), "no REQUEST after a rapid ACK");
        assert!(matches!(&a[0], Action::Bind(l) if l.addr == ADDR));
        assert!(matches!(a[1], Action::Probe(ADDR)));
        assert!(matches!(c.state(), State::Probing { .. }));
        // An OFFER still works the classic way (server without 4039).
        let mut c = Client::new(42, None).with_rapid_commit(true);
        c.start(t0);
        let a = c.handle(t0, reply(&c, ReplyKind::Offer, 3600));
        assert_eq!(sent(&a)[0].kind, MessageKind::Request);
        assert!(!sent(&a)[0].rapid_commit);
        // Without rapid commit turned on, the option is neither sent nor
        // honoured.
        let mut c = Client::new(42, None);
        assert!(!sent(&c.start(t0))[0].rapid_commit);
        assert!(c.handle(t0, rapid_ack(&c)).is_empty());
        assert_eq!(c.state(), &State::Selecting);
    }

    #[test]
    fn discover_retransmits_with_growing_jittered_intervals() {
        let t0 = Instant::now();
        let mut c = Client::new(7, None);
        c.start(t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let d = c.deadline().unwrap();
            waits.push(d - now);
            now = d;
            let a = c.on_timer(now);
            assert_eq!(sent(&a)[0].kind, MessageKind::Discover);
            assert_eq!(c.state(), &State::Selecting);
        }
        for (w, base) in waits.iter().zip([4u64, 8, 16, 32, 64, 64, 64]) {
            let base = Duration::from_secs(base);
            assert!(*w + Duration::from_secs(1) >= base && *w <= base + Duration::from_secs(1));
        }
        // Same xid within one exchange; `secs` grows.
        let a = c.on_timer(c.deadline().unwrap());
        assert!(sent(&a)[0].secs > 100);
    }

    #[test]
    fn wrong_xid_is_ignored() {
        let t0 = Instant::now();
        let mut c = Client::new(1, None);
        c.start(t0);
        let bad = Input::Reply(Reply {
            kind: ReplyKind::Offer,
            xid: c.xid.wrapping_add(1),
            info: info(60),
        });
        assert!(c.handle(t0, bad).is_empty());
        assert_eq!(c.state(), &State::Selecting);
    }

    #[test]
    fn requesting_gives_up_after_tries() {
        let t0 = Instant::now();
        let mut c = Client::new(3, None);
        c.start(t0);
        c.handle(t0, reply(&c, ReplyKind::Offer, 60));
        for _ in 1..REQUEST_TRIES {
            let a = c.on_timer(c.deadline().unwrap());
            assert_eq!(sent(&a)[0].kind, MessageKind::Request);
        }
        let a = c.on_timer(c.deadline().unwrap());
        assert_eq!(sent(&a)[0].kind, MessageKind::Discover);
        assert_eq!(c.state(), &State::Selecting);
    }

    #[test]
    fn nak_in_requesting_restarts() {
        let t0 = Instant::now();
        let mut c = Client::new(3, None);
        c.start(t0);
        c.handle(t0, reply(&c, ReplyKind::Offer, 60));
        let a = c.handle(t0, reply(&c, ReplyKind::Nak, 60));
        assert!(a.is_empty(), "nothing bound, nothing to remove");
        assert!(matches!(c.state(), State::Backoff { .. }));
        let a = c.on_timer(c.deadline().unwrap());
        assert_eq!(sent(&a)[0].kind, MessageKind::Discover);
    }

    #[test]
    fn arp_conflict_declines_and_waits() {
        let t0 = Instant::now();
        let mut c = Client::new(5, None);
        c.start(t0);
        c.handle(t0, reply(&c, ReplyKind::Offer, 60));
        c.handle(t0, reply(&c, ReplyKind::Ack, 60));
        let t = t0 + PROBE_WAIT / 2;
        let a = c.handle(t, Input::ArpConflict);
        let m = sent(&a)[0];
        assert_eq!(m.kind, MessageKind::Decline);
        assert_eq!(m.requested, Some(ADDR));
        assert!(a.contains(&Action::Unbind {
            lease: info(60),
            why: "address in use"
        }));
        assert_eq!(c.deadline(), Some(t + DECLINE_WAIT));
        assert!(c.lease().is_none());
        // A conflict reported after the window is over changes nothing.
        let (mut c, tb) = bound(t0, 60);
        assert!(c.handle(tb + PROBE_WAIT, Input::ArpConflict).is_empty());
        assert!(c.lease().is_some());
    }

    #[test]
    fn renew_at_t1_unicast_then_ack() {
        let t0 = Instant::now();
        let (mut c, t0) = bound(t0, 100);
        let t1 = t0 + Duration::from_secs(50);
        assert!(
            c.on_timer(t1 - Duration::from_secs(1)).is_empty(),
            "too early"
        );
        let a = c.on_timer(t1);
        let m = sent(&a)[0];
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!(m.ciaddr, ADDR);
        assert_eq!(m.unicast, Some(SERVER));
        assert_eq!(m.requested, None, "no option 50 when renewing");
        assert_eq!(c.state(), &State::Renewing);
        let a = c.handle(t1, reply(&c, ReplyKind::Ack, 100));
        assert_eq!(a, vec![Action::Renewed(info(100))]);
        assert_eq!(c.state(), &State::Bound);
        assert_eq!(c.lease().unwrap().expiry, t1 + Duration::from_secs(100));
    }

    #[test]
    fn rebind_at_t2_broadcast_then_expiry_removes_address() {
        let t0 = Instant::now();
        let (mut c, t0) = bound(t0, 100);
        c.on_timer(t0 + Duration::from_secs(50));
        // No answer: retransmits in RENEWING until T2 (87.5 s).
        let mut now = t0 + Duration::from_secs(50);
        while c.state() == &State::Renewing {
            now = c.deadline().unwrap();
            let a = c.on_timer(now);
            if c.state() == &State::Renewing {
                assert_eq!(sent(&a)[0].unicast, Some(SERVER));
            } else {
                assert_eq!(c.state(), &State::Rebinding);
                assert_eq!(now, t0 + Duration::from_millis(87_500));
                let m = sent(&a)[0];
                assert_eq!((m.unicast, m.ciaddr), (None, ADDR), "broadcast");
            }
        }
        // Still no answer: the lease runs out.
        let mut last = Vec::new();
        while c.state() == &State::Rebinding {
            now = c.deadline().unwrap();
            assert!(now <= t0 + Duration::from_secs(100));
            last = c.on_timer(now);
        }
        assert_eq!(now, t0 + Duration::from_secs(100));
        assert!(matches!(
            &last[0],
            Action::Unbind { lease, why: "lease expired" } if lease.addr == ADDR
        ));
        assert_eq!(sent(&last)[0].kind, MessageKind::Discover);
        assert_eq!(c.state(), &State::Selecting);
        assert!(c.lease().is_none());
    }

    #[test]
    fn rebind_ack_from_another_server_keeps_address() {
        let t0 = Instant::now();
        let (mut c, t0) = bound(t0, 100);
        c.on_timer(t0 + Duration::from_secs(50));
        while c.state() != &State::Rebinding {
            c.on_timer(c.deadline().unwrap());
        }
        let mut i = info(100);
        i.server = Ipv4Addr::new(10, 0, 0, 2);
        let xid = c.xid;
        let a = c.handle(
            t0 + Duration::from_secs(90),
            Input::Reply(Reply {
                kind: ReplyKind::Ack,
                xid,
                info: i.clone(),
            }),
        );
        assert_eq!(a, vec![Action::Renewed(i)]);
        // The next renewal goes to the new server.
        let a = c.on_timer(c.deadline().unwrap());
        assert_eq!(sent(&a)[0].unicast, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn nak_while_renewing_removes_address() {
        let t0 = Instant::now();
        let (mut c, t0) = bound(t0, 100);
        let t1 = t0 + Duration::from_secs(50);
        c.on_timer(t1);
        let a = c.handle(t1, reply(&c, ReplyKind::Nak, 0));
        assert!(matches!(
            &a[0],
            Action::Unbind {
                why: "server sent NAK",
                ..
            }
        ));
        assert!(c.lease().is_none());
        let a = c.on_timer(c.deadline().unwrap());
        assert_eq!(sent(&a)[0].kind, MessageKind::Discover);
        assert_eq!(sent(&a)[0].requested, None);
    }

    #[test]
    fn init_reboot_requests_previous_address() {
        let t0 = Instant::now();
        let mut c = Client::new(9, Some(ADDR));
        let a = c.start(t0);
        let m = sent(&a)[0];
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!(
            (m.requested, m.server_id, m.ciaddr),
            (Some(ADDR), None, Ipv4Addr::UNSPECIFIED)
        );
        assert!(matches!(c.state(), State::Rebooting { .. }));
        let a = c.handle(t0, reply(&c, ReplyKind::Ack, 60));
        assert_eq!(a, vec![Action::Bind(info(60)), Action::Probe(ADDR)]);
        assert!(c.on_timer(t0 + PROBE_WAIT).is_empty());
        assert_eq!(c.state(), &State::Bound);
    }

    #[test]
    fn init_reboot_nak_and_silence_fall_back_to_discover() {
        let t0 = Instant::now();
        let mut c = Client::new(9, Some(ADDR));
        c.start(t0);
        c.handle(t0, reply(&c, ReplyKind::Nak, 0));
        let a = c.on_timer(c.deadline().unwrap());
        assert_eq!(sent(&a)[0].kind, MessageKind::Discover);

        let mut c = Client::new(9, Some(ADDR));
        c.start(t0);
        for _ in 1..REQUEST_TRIES {
            c.on_timer(c.deadline().unwrap());
        }
        let a = c.on_timer(c.deadline().unwrap());
        assert_eq!(sent(&a)[0].kind, MessageKind::Discover);
    }

    #[test]
    fn late_offer_and_stray_ack_are_ignored() {
        let t0 = Instant::now();
        let (mut c, t0) = bound(t0, 100);
        assert!(c.handle(t0, reply(&c, ReplyKind::Offer, 100)).is_empty());
        assert!(c.handle(t0, reply(&c, ReplyKind::Ack, 100)).is_empty());
        assert_eq!(c.state(), &State::Bound);
    }

    #[test]
    fn timers_follow_server_values_and_stay_ordered() {
        let mut i = info(100);
        i.t1 = Some(Duration::from_secs(90));
        i.t2 = Some(Duration::from_secs(30));
        let (t1, t2, l) = i.timers();
        assert!(t1 <= t2 && t2 <= l);
        i.lease_time = Duration::from_secs(1);
        assert_eq!(i.timers().2, LEASE_MIN);
    }

    #[test]
    fn classless_routes_replace_router() {
        let mut i = info(100);
        assert_eq!(i.routes(), vec![(Ipv4Addr::UNSPECIFIED, 0, SERVER)]);
        i.classless_routes = vec![(Ipv4Addr::new(10, 9, 0, 0), 16, SERVER)];
        assert_eq!(i.routes(), i.classless_routes);
    }

    #[test]
    fn release_sends_and_unbinds() {
        let t0 = Instant::now();
        let (mut c, t0) = bound(t0, 100);
        let a = c.release(t0);
        assert_eq!(sent(&a)[0].kind, MessageKind::Release);
        assert!(matches!(
            a[1],
            Action::Unbind {
                why: "released",
                ..
            }
        ));
        assert_eq!(c.deadline(), None);
    }

    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 77);

    /// An ACK of the current exchange for [`OTHER`] instead of [`ADDR`].
    fn ack_for_other(c: &Client, lease: u64) -> Input {
        let mut i = info(lease);
        i.addr = OTHER;
        Input::Reply(Reply {
            kind: ReplyKind::Ack,
            xid: c.xid,
            info: i,
        })
    }

    /// A client bound at `t0` with a 100 s lease and driven, with no
    /// answer, through RENEWING into REBINDING; returns it and the moment
    /// it started rebinding.
    fn rebinding(t0: Instant) -> (Client, Instant) {
        let (mut c, tb) = bound(t0, 100);
        let mut now = tb + Duration::from_secs(50);
        c.on_timer(now);
        assert_eq!(c.state(), &State::Renewing);
        while c.state() != &State::Rebinding {
            now = c.deadline().unwrap();
            c.on_timer(now);
        }
        (c, now)
    }

    #[test]
    fn nak_while_rebinding_removes_address_and_rediscovers() {
        let t0 = Instant::now();
        let (mut c, now) = rebinding(t0);
        let expiry = c.lease().unwrap().expiry;
        let a = c.handle(now, reply(&c, ReplyKind::Nak, 0));
        assert_eq!(
            a,
            vec![Action::Unbind {
                lease: info(100),
                why: "server sent NAK"
            }]
        );
        assert!(c.lease().is_none());
        assert!(matches!(c.state(), State::Backoff { .. }));
        let d = c.deadline().unwrap();
        assert!(d > now, "a pause before starting over");
        assert!(c.on_timer(now).is_empty(), "nothing before the pause ends");
        let a = c.on_timer(d);
        let m = sent(&a);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(m[0].kind, MessageKind::Discover);
        assert_eq!(m[0].requested, None, "the refused address is not asked for");
        assert_eq!(m[0].ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(c.state(), &State::Selecting);
        // The dropped lease's expiry does not unbind it a second time.
        let mut now = d;
        while now <= expiry + Duration::from_secs(60) {
            now = c.deadline().unwrap();
            let a = c.on_timer(now);
            assert!(
                a.iter()
                    .all(|x| matches!(x, Action::Send(m) if m.kind == MessageKind::Discover)),
                "{a:?}"
            );
        }
    }

    /// Drives a RENEWING or REBINDING client that receives an ACK for
    /// another address: the held lease is dropped (not silently replaced
    /// and not kept), the other address is not bound, and a new DISCOVER
    /// goes out at once.
    fn other_address_starts_over(mut c: Client, now: Instant) {
        let a = c.handle(now, ack_for_other(&c, 100));
        assert_eq!(
            a,
            vec![Action::Unbind {
                lease: info(100),
                why: "server gave another address"
            }]
        );
        assert!(c.lease().is_none());
        assert_eq!(c.deadline(), Some(now), "starts over at once");
        let a = c.on_timer(now);
        let m = sent(&a);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(m[0].kind, MessageKind::Discover);
        assert_eq!(m[0].requested, None);
        assert_eq!(c.state(), &State::Selecting);
    }

    #[test]
    fn ack_for_another_address_while_renewing_starts_over() {
        let t0 = Instant::now();
        let (mut c, tb) = bound(t0, 100);
        let t1 = tb + Duration::from_secs(50);
        c.on_timer(t1);
        assert_eq!(c.state(), &State::Renewing);
        other_address_starts_over(c, t1);
    }

    #[test]
    fn ack_for_another_address_while_rebinding_starts_over() {
        let (c, now) = rebinding(Instant::now());
        other_address_starts_over(c, now);
    }

    #[test]
    fn ack_for_a_wrong_address_is_ignored_in_requesting() {
        let t0 = Instant::now();
        let mut c = Client::new(11, None);
        c.start(t0);
        c.handle(t0, reply(&c, ReplyKind::Offer, 60));
        let (state, deadline) = (c.state().clone(), c.deadline());
        assert!(c.handle(t0, ack_for_other(&c, 60)).is_empty());
        assert_eq!((c.state(), c.deadline()), (&state, deadline));
        assert!(c.lease().is_none());
        // The REQUEST for the offered address goes on; its ACK binds.
        let now = c.deadline().unwrap();
        let a = c.on_timer(now);
        let m = sent(&a);
        assert_eq!(m[0].kind, MessageKind::Request);
        assert_eq!(m[0].requested, Some(ADDR));
        let a = c.handle(now, reply(&c, ReplyKind::Ack, 60));
        assert_eq!(a, vec![Action::Bind(info(60)), Action::Probe(ADDR)]);
    }

    #[test]
    fn ack_for_a_wrong_address_is_ignored_in_rebooting() {
        let t0 = Instant::now();
        // INIT-REBOOT at start (a previous address known, no lease).
        let mut c = Client::new(9, Some(ADDR));
        c.start(t0);
        let (state, deadline) = (c.state().clone(), c.deadline());
        assert!(c.handle(t0, ack_for_other(&c, 60)).is_empty());
        assert_eq!((c.state(), c.deadline()), (&state, deadline));
        assert!(c.lease().is_none());
        let a = c.handle(t0, reply(&c, ReplyKind::Ack, 60));
        assert_eq!(a, vec![Action::Bind(info(60)), Action::Probe(ADDR)]);

        // INIT-REBOOT after a carrier loss, holding a lease: it is kept.
        let (mut c, tb) = bound(t0, 3600);
        c.link_restored(tb);
        let (state, deadline) = (c.state().clone(), c.deadline());
        assert!(c.handle(tb, ack_for_other(&c, 3600)).is_empty());
        assert_eq!((c.state(), c.deadline()), (&state, deadline));
        assert_eq!(c.lease().unwrap().info, info(3600));
        let a = c.handle(tb, reply(&c, ReplyKind::Ack, 3600));
        assert_eq!(a, vec![Action::Renewed(info(3600))]);
    }

    #[test]
    fn decline_wait_ends_in_a_new_discover() {
        let t0 = Instant::now();
        let mut c = Client::new(5, None);
        c.start(t0);
        c.handle(t0, reply(&c, ReplyKind::Offer, 60));
        c.handle(t0, reply(&c, ReplyKind::Ack, 60));
        let declined_xid = c.xid;
        let t = t0 + PROBE_WAIT / 2;
        let a = c.handle(t, Input::ArpConflict);
        assert_eq!(sent(&a)[0].kind, MessageKind::Decline);
        let until = t + DECLINE_WAIT;
        assert_eq!(c.state(), &State::Backoff { until });
        // Quiet for the whole wait, even when polled early, and a late
        // duplicate ACK of the declined exchange binds nothing.
        assert!(c.on_timer(until - Duration::from_millis(1)).is_empty());
        assert!(c
            .handle(t + Duration::from_secs(1), reply(&c, ReplyKind::Ack, 60))
            .is_empty());
        assert!(c.lease().is_none());
        let a = c.on_timer(until);
        assert_eq!(a.len(), 1, "{a:?}");
        let m = sent(&a)[0];
        assert_eq!(m.kind, MessageKind::Discover);
        assert_eq!(m.requested, None, "the declined address is not asked for");
        assert_ne!(m.xid, declined_xid, "a new exchange");
        assert_eq!(m.secs, 0);
        assert_eq!(c.state(), &State::Selecting);
        // The new exchange runs to a lease as usual.
        let a = c.handle(until, reply(&c, ReplyKind::Offer, 60));
        assert_eq!(sent(&a)[0].kind, MessageKind::Request);
        let a = c.handle(until, reply(&c, ReplyKind::Ack, 60));
        assert_eq!(a, vec![Action::Bind(info(60)), Action::Probe(ADDR)]);
    }
}
