//! Upstream targets at run time: in-flight counts, passive ejection, and the choice of a
//! target (power-of-two-choices least-request, or round robin).
//!
//! Target state lives in `Arc<TargetState>`s that survive configuration swaps: a target that
//! stays in the model keeps its counters and ejection; one that leaves is dropped when its
//! last in-flight request finishes (that is the drain).

pub mod affinity;
pub mod clients;
pub mod http1;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tollgate_contract::{ProtocolVersion, TargetAddress, TargetGroup};

/// How a target group spreads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancing {
    /// Power of two random choices, the one with fewer requests in flight.
    LeastRequest,
    RoundRobin,
}

type IdleSender = hyper::client::conn::http1::SendRequest<crate::shared::body::ProxyBody>;

/// A connection that can wait in a target's idle pool.
pub trait PooledConnection {
    /// Known to be closed, from state already at hand (no I/O).
    fn is_closed(&self) -> bool;
    /// Closed, asking the socket if need be (may cost a system call).
    fn probe_closed(&self) -> bool {
        self.is_closed()
    }
}

impl PooledConnection for IdleSender {
    fn is_closed(&self) -> bool {
        hyper::client::conn::http1::SendRequest::is_closed(self)
    }
}

impl PooledConnection for crate::upstream::http1::UpstreamStream {
    fn is_closed(&self) -> bool {
        false
    }
    fn probe_closed(&self) -> bool {
        crate::upstream::http1::UpstreamStream::probe_closed(self)
    }
}

/// Idle connections to one target, with the moment each was parked. Lock-free; memory
/// follows the number of idle connections (the queue grows in blocks of 31), and the queue
/// itself (256 bytes of cache-padded head and tail) is allocated on first use, so the
/// thousands of endpoints a cluster lists cost a few bytes each until the proxy talks to
/// them.
pub struct IdleConnections<C> {
    queue: std::sync::OnceLock<Box<IdleQueue<C>>>,
    len: AtomicUsize,
}

type IdleQueue<C> = crossbeam_queue::SegQueue<(C, std::time::Instant)>;

impl<C> Default for IdleConnections<C> {
    fn default() -> Self {
        IdleConnections {
            queue: std::sync::OnceLock::new(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<C> std::fmt::Debug for IdleConnections<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdleConnections({})", self.len.load(Ordering::Relaxed))
    }
}

/// Most idle connections kept per target: enough for the requests of many busy HTTP/2
/// clients at once (each in flight holds its own HTTP/1.1 connection), so that a burst does
/// not close connections only to open them again.
const MAX_IDLE_PER_TARGET: usize = 4096;

impl<C: PooledConnection> IdleConnections<C> {
    fn pop(&self) -> Option<(C, std::time::Instant)> {
        let popped = self.queue.get()?.pop();
        if popped.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        popped
    }

    fn push(&self, c: C, parked: std::time::Instant) {
        // Over the cap the connection is dropped, which closes it.
        if self.len.fetch_add(1, Ordering::Relaxed) < MAX_IDLE_PER_TARGET {
            self.queue
                .get_or_init(|| Box::new(IdleQueue::new()))
                .push((c, parked));
        } else {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A connection idle for less than `max_idle` and not known to be closed, if any.
    pub fn take(&self, max_idle: std::time::Duration) -> Option<C> {
        // Right after a response ends a hyper connection may not be ready yet (its task has
        // not seen the end of the message); the caller awaits readiness. Closed and expired
        // ones are dropped, which closes them.
        while let Some((c, parked)) = self.pop() {
            if !c.is_closed() && parked.elapsed() < max_idle {
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection after its exchange finished.
    pub fn put(&self, c: C) {
        if !c.is_closed() {
            self.push(c, std::time::Instant::now());
        }
    }

    /// Closes connections idle for `max_idle` or longer and those the target closed;
    /// returns how many are left.
    pub fn sweep(&self, max_idle: std::time::Duration) -> usize {
        for _ in 0..self.len.load(Ordering::Relaxed) {
            match self.pop() {
                Some((c, parked)) if !c.probe_closed() && parked.elapsed() < max_idle => {
                    self.push(c, parked);
                }
                Some(_) => {}
                None => break,
            }
        }
        self.len.load(Ordering::Relaxed)
    }
}

/// Run-time state of one target.
#[derive(Debug)]
pub struct TargetState {
    pub addr: SocketAddr,
    /// The connections it pools are of this kind (see `pool_key`): the same address
    /// reached as plain HTTP, shared TLS or a group's own TLS is a target each.
    pub pool: u64,
    /// Keepalive connections of hyper's client (requests with bodies, upgrades); dropped
    /// (and closed) with the last reference to the target.
    pub idle: IdleConnections<IdleSender>,
    /// Keepalive connections of the HTTP/1.1 relay (`http1_relay`).
    pub relay_idle: IdleConnections<crate::upstream::http1::UpstreamStream>,
    in_flight: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the target is ejected.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

/// Longest ejection after repeated connect failures.
const MAX_EJECTION: Duration = Duration::from_secs(30);
/// First ejection.
const BASE_EJECTION: Duration = Duration::from_secs(1);

impl TargetState {
    fn new(addr: SocketAddr, pool: u64, epoch: Instant) -> Self {
        TargetState {
            addr,
            pool,
            idle: IdleConnections::default(),
            relay_idle: IdleConnections::default(),
            in_flight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether passive health currently keeps requests away.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// A connection to the target failed: eject it, for longer each time in a row.
    pub fn record_connect_failure(&self) {
        let n = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let backoff = BASE_EJECTION
            .saturating_mul(1 << n.min(5))
            .min(MAX_EJECTION);
        let until = self.now_ms() + u64::try_from(backoff.as_millis()).unwrap_or(30_000);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
    }

    /// The target answered: it is healthy again.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Requests currently in flight to this target.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request in flight for as long as it lives.
pub struct InFlight(Arc<TargetState>);

impl InFlight {
    pub fn new(t: Arc<TargetState>) -> Self {
        t.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(t)
    }

    pub fn target(&self) -> &Arc<TargetState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target group ready to serve.
#[derive(Debug)]
pub struct UpstreamGroup {
    pub id: String,
    pub service: String,
    pub http2: bool,
    pub tls: bool,
    /// ingress-nginx `proxy-ssl-*`: this group's own TLS to its targets; None: the shared
    /// unverified connector.
    pub target_tls: Option<Arc<tls::TargetTls>>,
    pub balancing: Balancing,
    /// Ready targets only.
    pub targets: Vec<Arc<TargetState>>,
    rr: AtomicUsize,
}

impl UpstreamGroup {
    /// Builds the run-time group, reusing target state from `previous` where the address
    /// stays.
    pub fn from_model(tg: &TargetGroup, previous: &TargetRegistry, epoch: Instant) -> Self {
        let tls = tg.protocol == tollgate_contract::BackendProtocol::Https;
        let (target_tls, usable) = match tg.upstream_tls.as_deref().filter(|_| tls) {
            None => (None, true),
            Some(t) => match tls::TargetTls::from_model(t) {
                Ok(c) => (Some(Arc::new(c)), true),
                Err(why) => {
                    // The builder checked the Secret; should this still fail, the group
                    // has no targets (503) rather than unverified ones.
                    tracing::error!(group = %tg.id, error = %why, "backend TLS unusable; the group is not served");
                    (None, false)
                }
            },
        };
        let pool = pool_key(tls, tg.upstream_tls.as_deref().filter(|_| tls));
        let targets = tg
            .targets
            .iter()
            .filter(|_| usable)
            .filter(|t| t.state.accepts_new_requests())
            .filter_map(|t| match &t.address {
                TargetAddress::Ip(ip) => Some(SocketAddr::new(*ip, t.port)),
                TargetAddress::Instance(_) => None,
            })
            .map(|addr| {
                previous
                    .get(addr, pool)
                    .unwrap_or_else(|| Arc::new(TargetState::new(addr, pool, epoch)))
            })
            .collect();
        let balancing = match tg
            .attributes
            .get("load_balancing.algorithm.type")
            .map(String::as_str)
        {
            Some("round_robin") => Balancing::RoundRobin,
            _ => Balancing::LeastRequest,
        };
        UpstreamGroup {
            id: tg.id.clone(),
            service: tg.service.to_string(),
            http2: matches!(
                tg.protocol_version,
                ProtocolVersion::Http2 | ProtocolVersion::Grpc
            ),
            tls,
            target_tls,
            balancing,
            targets,
            rr: AtomicUsize::new(0),
        }
    }

    /// The connector and server name of a TLS connection to a target at `ip`: the group's
    /// own, else `shared` (unverified, the address as name). None: plain TCP.
    pub fn tls_for<'a>(
        &'a self,
        shared: &'a tokio_rustls::TlsConnector,
        ip: std::net::IpAddr,
    ) -> Option<(
        &'a tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )> {
        if !self.tls {
            return None;
        }
        Some(match &self.target_tls {
            Some(t) => (&t.connector, t.server_name(ip)),
            None => (shared, rustls::pki_types::ServerName::IpAddress(ip.into())),
        })
    }

    /// Picks a target, avoiding `exclude` (already tried) and ejected targets. When every
    /// target is ejected, ejection is ignored: trying a maybe-dead target beats failing
    /// outright (Envoy's panic threshold).
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<Arc<TargetState>> {
        let n = self.targets.len();
        match n {
            0 => return None,
            1 => {
                return self
                    .targets
                    .first()
                    .filter(|t| !exclude.contains(&t.addr))
                    .cloned()
            }
            _ => {}
        }
        // The common case, no exclusion and nobody ejected, allocates nothing.
        let usable = |t: &Arc<TargetState>| !exclude.contains(&t.addr) && !t.is_ejected();
        match self.balancing {
            Balancing::RoundRobin => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = (0..n)
                    .map(|k| &self.targets[(start + k) % n])
                    .find(|t| usable(t))
                {
                    return Some(t.clone());
                }
            }
            Balancing::LeastRequest => {
                let mut rng = rand::rng();
                let ia = rng.random_range(0..n);
                let ib = (ia + rng.random_range(1..n)) % n; // a distinct second choice
                let (a, b) = (&self.targets[ia], &self.targets[ib]);
                let chosen = match (usable(a), usable(b)) {
                    (true, true) => Some(if b.in_flight() < a.in_flight() { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => None,
                };
                if let Some(t) = chosen {
                    return Some(t.clone());
                }
                // Both draws unusable: choose among all usable ones.
                let pool: Vec<&Arc<TargetState>> =
                    self.targets.iter().filter(|t| usable(t)).collect();
                if !pool.is_empty() {
                    return Some(pool[rng.random_range(0..pool.len())].clone());
                }
            }
        }
        // Every target is ejected (or tried): ignore ejection rather than fail outright.
        let rest: Vec<&Arc<TargetState>> = self
            .targets
            .iter()
            .filter(|t| !exclude.contains(&t.addr))
            .collect();
        match rest.len() {
            0 => None,
            len => Some(rest[rand::rng().random_range(0..len)].clone()),
        }
    }
}

impl UpstreamGroup {
    /// The same group narrowed to one target: a request that must go to it (session
    /// affinity, consistent hashing) is forwarded through this, with its state shared.
    pub fn only(&self, target: Arc<TargetState>) -> UpstreamGroup {
        UpstreamGroup {
            id: self.id.clone(),
            service: self.service.clone(),
            http2: self.http2,
            tls: self.tls,
            target_tls: self.target_tls.clone(),
            balancing: self.balancing,
            targets: vec![target],
            rr: AtomicUsize::new(0),
        }
    }
}

/// Every target's state by address, carried from one configuration to the next.
#[derive(Debug, Default)]
pub struct TargetRegistry {
    /// By address and connection pool ([`TargetState::pool`]).
    by_addr: HashMap<(SocketAddr, u64), Arc<TargetState>>,
}

/// Which connections to a target may be shared: plain, TLS with the shared connector, or
/// TLS with a group's own settings (a connection made with one client certificate or trust
/// must not serve a group configured otherwise).
fn pool_key(tls: bool, own: Option<&tollgate_contract::UpstreamTls>) -> u64 {
    use std::hash::{Hash, Hasher};
    match (tls, own) {
        (false, _) => 0,
        (true, None) => 1,
        (true, Some(t)) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.profile().hash(&mut h);
            h.finish() | 2
        }
    }
}

impl TargetRegistry {
    pub fn get(&self, addr: SocketAddr, pool: u64) -> Option<Arc<TargetState>> {
        self.by_addr.get(&(addr, pool)).cloned()
    }

    /// Every target.
    pub fn targets(&self) -> impl Iterator<Item = &Arc<TargetState>> {
        self.by_addr.values()
    }

    pub fn collect<'a>(groups: impl Iterator<Item = &'a UpstreamGroup>) -> Self {
        let mut by_addr = HashMap::new();
        for g in groups {
            for t in &g.targets {
                by_addr.insert((t.addr, t.pool), t.clone());
            }
        }
        TargetRegistry { by_addr }
    }
}

/// Weighted choice among target groups of a forward action.
pub fn pick_weighted<T>(choices: &[(T, u32)]) -> Option<&T> {
    let total: u64 = choices.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return choices.first().map(|(t, _)| t);
    }
    let mut r = rand::rng().random_range(0..total);
    for (t, w) in choices {
        let w = u64::from(*w);
        if r < w {
            return Some(t);
        }
        r -= w;
    }
    choices.last().map(|(t, _)| t)
}
