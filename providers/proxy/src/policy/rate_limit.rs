//! ingress-nginx rate limits (`limit-rps`, `limit-rpm`, `limit-connections`), one policy
//! layer of a forwarding route, per client address and per replica as ingress-nginx's
//! (internal/ingress/annotations/ratelimit; nginx.tmpl renders `limit_req ... burst=N
//! nodelay` and `limit_conn`, both answering 503 by default). Every route of one Ingress
//! shares its zone, as every location of an Ingress shares its nginx zones.
//!
//! `limit_req` is nginx's leaky bucket with `nodelay`: a client's excess grows by one
//! request per request and drains at the rate; a request that would take it past the burst
//! (rate × `limit-burst-multiplier`) is refused and leaves it as it was. `limit_conn` counts
//! requests in progress (the response body included).
//!
//! State lives in fixed tables of atomics, so memory is bounded whatever the number of
//! client addresses (a flood of distinct addresses evicts entries — each new address starts
//! with a fresh bucket, as it would have anyway — and never grows anything), and the
//! request path takes no lock. Zones are kept by Ingress across configuration swaps
//! ([`Zones`]), so a reload does not hand every client a fresh burst.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// Slots per table: 32 KiB per bucket table, 16 KiB per connection table.
const SLOTS: usize = 4096;
/// Time is kept in units of 4 ms in 24 bits: about 18.6 hours before it wraps.
const TICK_MS: u64 = 4;
const EXCESS_BITS: u32 = 24;
const MASK24: u64 = (1 << 24) - 1;

/// One rate (`limit-rps` or `limit-rpm`) of a zone.
#[derive(Debug)]
struct Bucket {
    /// Milli-requests drained per tick.
    drain_per_tick: u64,
    /// Largest excess allowed, in milli-requests.
    burst: u64,
    /// Milli-requests per stored unit, so that the burst fits in 24 bits.
    scale: u64,
    /// Each slot: tag (16 bits) | last tick (24) | excess in units (24); 0 is empty.
    slots: Box<[AtomicU64]>,
}

impl Bucket {
    /// `per_second_milli`: the rate in milli-requests per second.
    fn new(per_second_milli: u64, burst_requests: u64) -> Bucket {
        let burst = burst_requests.saturating_mul(1000);
        Bucket {
            drain_per_tick: (per_second_milli * TICK_MS / 1000).max(1),
            burst,
            scale: burst.div_ceil(MASK24).max(1),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one request of the client hashed to `h` at `tick`; false when it is over.
    fn admit(&self, h: u64, tick: u64) -> bool {
        let slot = &self.slots[(h as usize) % SLOTS];
        let tag = (h >> 48) | 1; // never 0, so 0 stays "empty"
        let now = tick & MASK24;
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            let (t, last, units) = (cur >> 48, (cur >> EXCESS_BITS) & MASK24, cur & MASK24);
            // nginx's ngx_http_limit_req_lookup: a new client's first request leaves the
            // excess at 0; later ones add a request and drain the time since.
            let excess = if cur != 0 && t == tag {
                let elapsed = now.wrapping_sub(last) & MASK24;
                // A moment "back in time" is another thread's newer tick: nothing drained.
                let elapsed = if elapsed > MASK24 - 250 { 0 } else { elapsed };
                (units * self.scale + 1000)
                    .saturating_sub(elapsed.saturating_mul(self.drain_per_tick))
            } else {
                0
            };
            if excess > self.burst {
                return false;
            }
            let stored = (excess / self.scale).min(MASK24);
            let new = (tag << 48) | (now << EXCESS_BITS) | stored;
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Requests in progress per client (`limit-connections`). Clients whose addresses share a
/// slot share its count: stricter than nginx for them, never looser, and bounded.
#[derive(Debug)]
struct InProgress {
    limit: u32,
    slots: Box<[AtomicU32]>,
}

/// The zone of one Ingress: its buckets and connection counts.
#[derive(Debug)]
pub struct Zone {
    rps: Option<Bucket>,
    rpm: Option<Bucket>,
    connections: Option<InProgress>,
    /// Keyed per zone, so that addresses cannot be chosen to collide.
    hasher: std::collections::hash_map::RandomState,
    epoch: Instant,
}

/// The parameters a zone was made for; other parameters make a new zone.
type ZoneKey = (String, Option<u32>, Option<u32>, u32, Option<u32>);

/// The zones of the current configuration, by Ingress, kept while a compiled route holds
/// them.
#[derive(Debug, Default)]
pub struct Zones(HashMap<ZoneKey, Weak<Zone>>);

impl Zones {
    fn zone(&mut self, spec: &tollgate_contract::RateLimit) -> Arc<Zone> {
        let key = (
            spec.zone.clone(),
            spec.rps,
            spec.rpm,
            spec.burst_multiplier,
            spec.connections,
        );
        if let Some(z) = self.0.get(&key).and_then(Weak::upgrade) {
            return z;
        }
        let mult = u64::from(spec.burst_multiplier.max(1));
        let zone = Arc::new(Zone {
            rps: spec
                .rps
                .map(|r| Bucket::new(u64::from(r) * 1000, u64::from(r) * mult)),
            rpm: spec
                .rpm
                .map(|r| Bucket::new(u64::from(r) * 1000 / 60, u64::from(r) * mult)),
            connections: spec.connections.map(|limit| InProgress {
                limit,
                slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            }),
            hasher: Default::default(),
            epoch: Instant::now(),
        });
        self.0.insert(key, Arc::downgrade(&zone));
        zone
    }

    /// Forgets zones no compiled route holds any more.
    pub fn prune(&mut self) {
        self.0.retain(|_, z| z.strong_count() > 0);
    }
}

/// A route's rate limits, ready to check.
#[derive(Debug)]
pub struct CompiledRateLimit {
    zone: Arc<Zone>,
    /// Clients never limited (`limit-allowlist`), as (network, prefix length).
    allow: Vec<(IpAddr, u8)>,
}

/// Held while a request counted by `limit-connections` is in progress.
#[derive(Debug)]
pub struct InProgressGuard {
    zone: Arc<Zone>,
    slot: usize,
}

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.zone.connections {
            c.slots[self.slot].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl CompiledRateLimit {
    pub fn compile(spec: &tollgate_contract::RateLimit, zones: &mut Zones) -> Arc<Self> {
        let allow = spec
            .allowlist
            .iter()
            .filter_map(|c| crate::shared::cidr::parse(c))
            .collect();
        Arc::new(CompiledRateLimit {
            zone: zones.zone(spec),
            allow,
        })
    }

    /// Counts a request from `client`: `Err(())` when it is over a limit (answer 503),
    /// else the guard to hold until its response ends (if connections are limited).
    #[allow(clippy::result_unit_err)]
    pub fn admit(&self, client: IpAddr) -> Result<Option<InProgressGuard>, ()> {
        if self
            .allow
            .iter()
            .any(|n| crate::shared::cidr::contains(*n, client))
        {
            return Ok(None);
        }
        let z = &self.zone;
        let h = z.hasher.hash_one(client);
        let tick = z.epoch.elapsed().as_millis() as u64 / TICK_MS;
        // nginx checks every limit_req and stops at the first that refuses.
        for b in [&z.rps, &z.rpm].into_iter().flatten() {
            if !b.admit(h, tick) {
                return Err(());
            }
        }
        let Some(c) = &z.connections else {
            return Ok(None);
        };
        let slot = ((h >> 16) as usize) % SLOTS;
        if c.slots[slot].fetch_add(1, Ordering::AcqRel) >= c.limit {
            c.slots[slot].fetch_sub(1, Ordering::AcqRel);
            return Err(());
        }
        Ok(Some(InProgressGuard {
            zone: z.clone(),
            slot,
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's place in `limit-connections` until it ends.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        guard: Option<InProgressGuard>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, guard: InProgressGuard) -> Self {
        Counted {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: hyper::body::Body> hyper::body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let std::task::Poll::Ready(None) = r {
            *this.guard = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        rps: Option<u32>,
        rpm: Option<u32>,
        conns: Option<u32>,
    ) -> tollgate_contract::RateLimit {
        tollgate_contract::RateLimit {
            zone: "ns/ing".into(),
            rps,
            rpm,
            burst_multiplier: 5,
            connections: conns,
            allowlist: vec!["10.0.0.0/8".into()],
        }
    }

    #[test]
    fn a_fresh_client_gets_rate_times_multiplier_plus_one_then_the_rate() {
        let mut zones = Zones::default();
        let l = CompiledRateLimit::compile(&spec(Some(2), None, None), &mut zones);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        // Burst 10: eleven at once (nginx's burst + 1), the twelfth refused.
        let b = l.zone.rps.as_ref().unwrap();
        let h = 12345u64 << 20;
        for i in 0..11 {
            assert!(b.admit(h, 1000), "request {i}");
        }
        assert!(!b.admit(h, 1000));
        // A refused request changes nothing; half a second (2 r/s) drains one request.
        assert!(!b.admit(h, 1000 + 124));
        assert!(b.admit(h, 1000 + 125));
        assert!(!b.admit(h, 1000 + 125));
        // Another client is unaffected; an allow-listed one is never limited.
        assert!(b.admit(h ^ (1 << 60), 1000));
        for _ in 0..100 {
            assert!(l.admit("10.1.2.3".parse().unwrap()).is_ok());
        }
        assert!(l.admit(client).is_ok());
    }

    #[test]
    fn per_minute_rates_and_large_bursts_fit() {
        let b = Bucket::new(60_000 / 60, 300);
        let h = 99u64 << 20;
        for i in 0..301 {
            assert!(b.admit(h, 0), "request {i}");
        }
        assert!(!b.admit(h, 0));
        assert!(b.admit(h, 250), "one second drains one request at 60 r/m");
        let big = Bucket::new(100_000 * 1000, 500_000);
        for _ in 0..1000 {
            assert!(big.admit(h, 0));
        }
    }

    #[test]
    fn connections_are_counted_until_the_guard_goes_and_zones_survive_recompiles() {
        let mut zones = Zones::default();
        let a = CompiledRateLimit::compile(&spec(None, None, Some(2)), &mut zones);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let g1 = a.admit(client).unwrap();
        let g2 = a.admit(client).unwrap();
        assert!(a.admit(client).is_err());
        // The next generation's route shares the zone while the old one holds it.
        let b = CompiledRateLimit::compile(&spec(None, None, Some(2)), &mut zones);
        assert!(Arc::ptr_eq(&a.zone, &b.zone));
        assert!(b.admit(client).is_err());
        drop(g1);
        let g3 = b.admit(client).unwrap();
        drop((g2, g3));
        drop((a, b));
        zones.prune();
        assert!(zones.0.is_empty());
    }
}
