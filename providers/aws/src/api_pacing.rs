//! Tollgate's own rate limit per AWS API family, under the SDK's retries.
//!
//! AWS throttles each API family of an account and region separately (ELBv2, EC2, ACM, the
//! tagging API), shared with every other tool in the account. Retrying after a throttle is
//! the SDK's job; not causing one is ours: every HTTP request of a family — retries
//! included — takes a token from that family's bucket first. The bucket sits in the HTTP
//! client the SDK is given, so no call site can forget it.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Requests per second and burst of one API family's token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for Pace {
    /// Below the documented ELBv2/EC2 steady-state limits, leaving room for other tools.
    fn default() -> Self {
        Pace {
            per_second: 10.0,
            burst: 20,
        }
    }
}

/// A token bucket.
#[derive(Debug)]
pub struct Bucket {
    pace: Pace,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A full bucket.
    pub fn new(pace: Pace) -> Arc<Self> {
        Arc::new(Bucket {
            pace,
            state: Mutex::new((f64::from(pace.burst), Instant::now())),
        })
    }

    /// Waits until a token is free, then takes it. Waiters queue on the mutex in order.
    pub async fn take(&self) {
        if self.pace.per_second.is_nan() || self.pace.per_second <= 0.0 {
            return; // unlimited
        }
        let mut s = self.state.lock().await;
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.pace.per_second;
        s.0 = (s.0 + refill).min(f64::from(self.pace.burst.max(1)));
        s.1 = now;
        if s.0 < 1.0 {
            // A rate so low the wait overflows a Duration waits an hour per request instead.
            let wait = Duration::try_from_secs_f64((1.0 - s.0) / self.pace.per_second)
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            tokio::time::sleep(wait).await;
            s.0 = 1.0;
            s.1 = Instant::now();
        }
        s.0 -= 1.0;
    }
}

/// An HTTP client that takes a token from `bucket` before each request `inner` sends.
#[derive(Debug, Clone)]
pub struct PacedClient {
    inner: SharedHttpClient,
    bucket: Arc<Bucket>,
}

impl PacedClient {
    /// Wraps `inner`.
    pub fn new(inner: SharedHttpClient, bucket: Arc<Bucket>) -> Self {
        PacedClient { inner, bucket }
    }
}

impl HttpClient for PacedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector {
            inner: self.inner.http_connector(settings, components),
            bucket: self.bucket.clone(),
        })
    }
}

#[derive(Debug)]
struct PacedConnector {
    inner: SharedHttpConnector,
    bucket: Arc<Bucket>,
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let bucket = self.bucket.clone();
        HttpConnectorFuture::new(async move {
            bucket.take().await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate() {
        let b = Bucket::new(Pace {
            per_second: 10.0,
            burst: 5,
        });
        let start = Instant::now();
        for _ in 0..5 {
            b.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            b.take().await;
        }
        let spent = start.elapsed().as_secs_f64();
        assert!(
            (0.99..1.01).contains(&spent),
            "10 more at 10/s take 1 s (virtual time): {spent}"
        );
    }
}
