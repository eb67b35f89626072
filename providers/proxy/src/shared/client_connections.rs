//! Client connections between requests: how long an idle keep-alive connection may stay
//! open, and which one makes room when `--max-connections` is reached.
//!
//! A connection is *waiting* from its accept (TLS handshake included) until a request head
//! is complete, and again from the end of each response until the next head is complete;
//! HTTP/2 and hyper-served HTTP/1.1 connections wait while no request is in flight. When
//! every connection permit is taken, the connection that has been waiting longest is closed
//! to admit the new client (as ingress-nginx's `reset_timedout_connection` and Envoy's
//! overload manager do for idle ones), so sockets that send nothing cannot lock clients out.
//!
//! The request path touches only its own connection's atomics; the table's lock is taken
//! when a connection opens or closes and when the table is full.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// One client connection's state as the table sees it.
#[derive(Debug)]
pub struct ConnSlot {
    /// Nanoseconds since the table's epoch, plus one, at which the connection started
    /// waiting; 0 while a request is in flight.
    waiting_since: AtomicU64,
    /// Requests in flight on a hyper-served connection (HTTP/2 streams).
    active: AtomicU32,
    /// Requests begun on the connection.
    requests: AtomicU32,
    /// Told to close: chosen to make room, or its request cap reached.
    close: Notify,
    epoch: Instant,
    max_requests: u32,
}

impl ConnSlot {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The connection waits for a request again.
    pub fn waiting(&self) {
        self.waiting_since.store(self.now(), Ordering::Relaxed);
    }

    /// A request head is complete: the connection is busy until its response has ended.
    pub fn busy(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// Counts a request the relay forwards; true when it is the last the connection may
    /// carry (`Connection: close` on its response).
    pub fn count_request(&self) -> bool {
        let n = self
            .requests
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.max_requests != 0 && n >= self.max_requests
    }

    /// Resolves when the connection is told to close.
    pub async fn told_to_close(&self) {
        self.close.notified().await
    }

    /// A request begins on a hyper-served connection; the guard ends it when dropped
    /// (with the response body).
    pub fn begin(self: &Arc<Self>) -> InFlightRequest {
        if self.active.fetch_add(1, Ordering::Relaxed) == 0 {
            self.busy();
        }
        if self.count_request() {
            // HTTP/2 has no `Connection: close`: the watchdog sends GOAWAY instead, which
            // lets the streams in flight finish.
            self.close.notify_one();
        }
        InFlightRequest { slot: self.clone() }
    }

    /// Resolves when a hyper-served connection should close: idle (no request in flight)
    /// for `idle`, or told to. It looks at the connection's state when its timer fires
    /// (at most once per `idle` while requests run), so requests only store atomics.
    pub async fn idle_or_told(&self, idle: Duration) {
        loop {
            let since = self.waiting_since.load(Ordering::Relaxed);
            let left = if since == 0 {
                idle
            } else {
                idle.saturating_sub(Duration::from_nanos(self.now().saturating_sub(since)))
            };
            tokio::select! {
                _ = tokio::time::sleep(left) => {
                    if since != 0 && self.waiting_since.load(Ordering::Relaxed) == since {
                        return;
                    }
                }
                _ = self.close.notified() => return,
            }
        }
    }
}

/// Holds a hyper-served connection busy while its request and response run.
#[derive(Debug)]
pub struct InFlightRequest {
    slot: Arc<ConnSlot>,
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        if self.slot.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.slot.waiting();
        }
    }
}

/// Every open client connection, by id.
#[derive(Debug)]
pub struct ConnectionTable {
    slots: Mutex<HashMap<u64, Arc<ConnSlot>>>,
    next_id: AtomicU64,
    epoch: Instant,
    max_requests: u32,
}

impl ConnectionTable {
    /// `max_requests`: requests a connection may carry before it is closed (0: no cap).
    pub fn new(max_requests: u32) -> Self {
        ConnectionTable {
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            max_requests,
        }
    }

    /// Registers a just-accepted connection (waiting for its first request); it leaves the
    /// table when the registration is dropped.
    pub fn open(self: &Arc<Self>) -> Registration {
        let slot = Arc::new(ConnSlot {
            waiting_since: AtomicU64::new(0),
            active: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            close: Notify::new(),
            epoch: self.epoch,
            max_requests: self.max_requests,
        });
        slot.waiting();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(id, slot.clone());
        }
        Registration {
            table: self.clone(),
            id,
            slot,
        }
    }

    /// Tells the connection that has waited longest to close; false when every connection
    /// has a request in flight. The choice is claimed (its wait cleared) so two new clients
    /// do not both pick it.
    pub fn close_longest_waiting(&self) -> bool {
        let Ok(slots) = self.slots.lock() else {
            return false;
        };
        let mut candidates: Vec<(u64, &Arc<ConnSlot>)> = slots
            .values()
            .map(|s| (s.waiting_since.load(Ordering::Relaxed), s))
            .filter(|(since, _)| *since != 0)
            .collect();
        candidates.sort_unstable_by_key(|(since, _)| *since);
        for (since, slot) in candidates {
            let claimed = slot
                .waiting_since
                .compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            if claimed {
                slot.close.notify_one();
                return true;
            }
        }
        false
    }
}

/// A connection's place in the table, for as long as the connection lives.
#[derive(Debug)]
pub struct Registration {
    table: Arc<ConnectionTable>,
    id: u64,
    pub slot: Arc<ConnSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.table.slots.lock() {
            slots.remove(&self.id);
        }
    }
}

pin_project_lite::pin_project! {
    /// A hyper-served response body that keeps its connection busy until it ends.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlightRequest>,
    }
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, guard: InFlightRequest) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B> hyper::body::Body for GuardedBody<B>
where
    B: hyper::body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
