//! ingress-nginx `proxy-send-timeout` (nginx's `proxy_send_timeout`: how long the target may
//! go without taking more of the request) on the general path, where request bodies stream.
//!
//! hyper asks the request body for its next frame only once the last one is written (or
//! buffered): a frame handed over and not followed by the next ask is the target not taking
//! the request. [`SendProgress`] records when that wait began; [`SendProgress::stalled`]
//! resolves once it has lasted the route's limit, and the exchange is answered 504 as nginx
//! answers "upstream timed out while sending request to upstream". Only routes with the
//! annotation carry one; a pause after the response began is not limited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the target began to keep the body waiting, if it does.
#[derive(Debug)]
pub(crate) struct SendProgress {
    start: Instant,
    /// Milliseconds since `start` + 1 when a frame was handed over and not yet followed by
    /// the next ask; 0 while hyper is asking (the client's side is what it waits on).
    handed_at: AtomicU64,
}

impl SendProgress {
    pub(crate) fn new() -> Self {
        SendProgress {
            start: Instant::now(),
            handed_at: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// hyper asks for more: what it was given has gone out.
    pub(crate) fn asked(&self) {
        self.handed_at.store(0, Ordering::Relaxed);
    }

    /// A frame went to hyper: until it asks again, the target is what the body waits on.
    pub(crate) fn handed(&self) {
        self.handed_at.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// Resolves once a handed frame has waited `limit` for the next ask.
    pub(crate) async fn stalled(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            let at = self.handed_at.load(Ordering::Relaxed);
            let wait = if at == 0 {
                limit_ms
            } else {
                let waited = self.now_ms().saturating_sub(at - 1);
                if waited >= limit_ms {
                    return;
                }
                limit_ms - waited
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}
