//! The admin listener of `tollgate aws`: `/healthz`, `/readyz` (ready once the source has
//! synced) and `/metrics` (AWS calls by operation and outcome, reconcile outcome). The proxy
//! has its own, richer admin listener in its crate.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_aws::aws_api::CallLog;

/// What the admin endpoints report, updated by the reconcile loop.
#[derive(Default)]
pub struct AwsAdminState {
    pub ready: AtomicBool,
    pub leader: AtomicBool,
    pub reconciles: AtomicU64,
    pub reconcile_failures: AtomicU64,
    pub last_plan_size: AtomicU64,
    pub last_apply_micros: AtomicU64,
}

fn render(state: &AwsAdminState, calls: &CallLog) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# TYPE tollgate_aws_calls_total counter");
    for (op, (ok, failed)) in calls.snapshot() {
        let _ = writeln!(
            s,
            "tollgate_aws_calls_total{{operation=\"{op}\",outcome=\"ok\"}} {ok}"
        );
        let _ = writeln!(
            s,
            "tollgate_aws_calls_total{{operation=\"{op}\",outcome=\"error\"}} {failed}"
        );
    }
    let g = |o: &AtomicU64| o.load(Ordering::Relaxed);
    let _ = writeln!(s, "# TYPE tollgate_reconciles_total counter");
    let _ = writeln!(s, "tollgate_reconciles_total {}", g(&state.reconciles));
    let _ = writeln!(s, "# TYPE tollgate_reconcile_failures_total counter");
    let _ = writeln!(
        s,
        "tollgate_reconcile_failures_total {}",
        g(&state.reconcile_failures)
    );
    let _ = writeln!(s, "# TYPE tollgate_plan_changes gauge");
    let _ = writeln!(s, "tollgate_plan_changes {}", g(&state.last_plan_size));
    let _ = writeln!(s, "# TYPE tollgate_apply_duration_seconds gauge");
    let _ = writeln!(
        s,
        "tollgate_apply_duration_seconds {}",
        g(&state.last_apply_micros) as f64 / 1e6
    );
    let _ = writeln!(s, "# TYPE tollgate_leader gauge");
    let _ = writeln!(
        s,
        "tollgate_leader {}",
        u8::from(state.leader.load(Ordering::Relaxed))
    );
    s
}

/// Serves the admin endpoints until `stop` turns true.
pub async fn serve_aws_admin(
    listener: TcpListener,
    state: Arc<AwsAdminState>,
    calls: Arc<tollgate_aws::aws_api::Aws>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = conn else { continue };
        let state = state.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let state = state.clone();
                let calls = calls.clone();
                async move {
                    let (code, body) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
                        "/readyz" if state.ready.load(Ordering::Relaxed) => {
                            (StatusCode::OK, "ok\n".to_string())
                        }
                        "/readyz" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not synced yet\n".to_string(),
                        ),
                        "/metrics" => (StatusCode::OK, render(&state, &calls.calls)),
                        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = code;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
