//! AWS's rules where the emulator is kinder (issue 13): a proxy in front of moto that answers
//! a call AWS would reject with the error AWS gives, and records it, so that a test whose
//! code makes such a call fails as it would against AWS. Every AWS test gets it through
//! [`super::moto::start_moto`]; [`super::moto::Moto`] fails the test on drop when anything
//! was recorded.
//!
//! What is checked (moto 5.2 accepts all of it; AWS documents each rejection):
//! - CreateLoadBalancer and SetSubnets: at least two Availability Zones, one subnet per zone
//!   (ELBv2 API reference, `Subnets`);
//! - load balancer and target group names: 1–32 alphanumerics or hyphens, no hyphen at
//!   either end, a load balancer's not starting with `internal-`;
//! - listener rules: at most 5 condition values per rule, not `Values` and `RegexValues` in
//!   one condition, priorities 1–50000, at most 100 rules per listener, at most 5 target
//!   groups per forward action (ELBv2 quotas);
//! - `authenticate-oidc` / `authenticate-cognito` only on HTTPS listeners;
//! - DeleteSecurityGroup of a group another group's rule names, or a load balancer uses:
//!   `DependencyViolation`.
//!
//! And where moto is harsher than AWS: CreateLoadBalancer and CreateTargetGroup with the
//! name of one that exists return that one, as AWS does (a retry after a lost answer must
//! not leave a second load balancer; moto makes one).
//!
//! The test seam for target health (moto cannot drive health states): a test sets the
//! state DescribeTargetHealth reports for a target ([`StrictAws::set_target_health`]).
//!
//! And what moto drops: a listener's `MutualAuthentication` (accepted by CreateListener and
//! ModifyListener, never stored) is kept here and given back in DescribeListeners, as AWS
//! does. Whether a trust store exists is not checked (moto has none).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A running strict proxy; stops when dropped.
pub struct StrictAws {
    pub endpoint: String,
    /// Calls AWS would have rejected: "Action: why".
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Target (ID, port) → the health state DescribeTargetHealth reports.
    health: Arc<Mutex<BTreeMap<(String, u16), String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StrictAws {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Shared {
    upstream: String,
    violations: Arc<Mutex<Vec<String>>>,
    health: Arc<Mutex<BTreeMap<(String, u16), String>>>,
    /// Listener ARN → its MutualAuthentication as XML elements.
    mutual_tls: Mutex<BTreeMap<String, String>>,
    client: HttpClient,
}

impl StrictAws {
    /// From now on, DescribeTargetHealth reports target `id`:`port` as `state` (`initial`,
    /// `healthy`, `unhealthy`...) in whatever target group holds it.
    pub fn set_target_health(&self, id: &str, port: u16, state: &str) {
        if let Ok(mut h) = self.health.lock() {
            h.insert((id.to_string(), port), state.to_string());
        }
    }
}

/// Starts the proxy to `upstream` on a thread of its own (usable from sync and async code).
pub fn start_strict(upstream: &str) -> StrictAws {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind strict proxy");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let health: Arc<Mutex<BTreeMap<(String, u16), String>>> = Arc::default();
    let shared = Arc::new(Shared {
        upstream: upstream.trim_end_matches('/').to_string(),
        violations: violations.clone(),
        health: health.clone(),
        mutual_tls: Mutex::default(),
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                handle(shared.clone(), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                }
            }
        });
    });
    StrictAws {
        endpoint: format!("http://{addr}"),
        violations,
        health,
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Query-protocol body as (key, value) pairs.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Every `<tag>…</tag>` text in an XML answer.
fn texts<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

impl Shared {
    /// A Query call to the emulator itself (not checked), its XML answer.
    async fn ask(&self, params: &[(&str, String)]) -> String {
        // moto routes by the credential scope's service.
        let service = match params.iter().find(|(k, _)| *k == "Version") {
            Some((_, v)) if v == "2016-11-15" => "ec2",
            _ => "elasticloadbalancing",
        };
        let body: String = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.replace('%', "%25")
                        .replace('&', "%26")
                        .replace('=', "%3D")
                        .replace('/', "%2F")
                        .replace(':', "%3A")
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let Ok(req) = Request::post(format!("{}/", self.upstream))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=x"),
            )
            .body(Full::new(Bytes::from(body)))
        else {
            return String::new();
        };
        match self.client.request(req).await {
            Ok(r) => r
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Availability Zone of each subnet.
    async fn zones(&self, subnets: &[String]) -> BTreeMap<String, String> {
        let mut params = vec![
            ("Action", "DescribeSubnets".to_string()),
            ("Version", "2016-11-15".to_string()),
        ];
        let keys: Vec<String> = (1..=subnets.len())
            .map(|i| format!("SubnetId.{i}"))
            .collect();
        for (k, s) in keys.iter().zip(subnets) {
            params.push((k.as_str(), s.clone()));
        }
        let xml = self.ask(&params).await;
        let mut out = BTreeMap::new();
        for item in xml.split("<item>").skip(1) {
            if let (Some(id), Some(zone)) = (
                texts(item, "subnetId").first(),
                texts(item, "availabilityZone").first(),
            ) {
                out.insert(id.to_string(), zone.to_string());
            }
        }
        out
    }

    /// Why AWS would reject this call, if it would.
    async fn rejection(&self, p: &BTreeMap<String, String>) -> Option<(String, String)> {
        let action = p.get("Action")?.as_str();
        let values = |prefix: &str| -> Vec<String> {
            p.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v.clone())
                .collect()
        };
        let bad_name = |name: &str, lb: bool| {
            name.is_empty()
                || name.len() > 32
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                || name.starts_with('-')
                || name.ends_with('-')
                || (lb && name.starts_with("internal-"))
        };
        match action {
            "CreateLoadBalancer" | "SetSubnets" => {
                if action == "CreateLoadBalancer" {
                    let name = p.get("Name").cloned().unwrap_or_default();
                    if bad_name(&name, true) {
                        return Some((
                            "ValidationError".into(),
                            format!("load balancer name {name:?} is not valid"),
                        ));
                    }
                }
                let mut subnets = values("Subnets.member.");
                subnets.extend(
                    p.iter()
                        .filter(|(k, _)| {
                            k.starts_with("SubnetMappings.member.") && k.ends_with(".SubnetId")
                        })
                        .map(|(_, v)| v.clone()),
                );
                let zones = self.zones(&subnets).await;
                let mut seen = BTreeSet::new();
                for s in &subnets {
                    let Some(z) = zones.get(s) else { continue };
                    if !seen.insert(z.clone()) {
                        return Some((
                            "InvalidConfigurationRequest".into(),
                            format!("a load balancer cannot be attached to multiple subnets in the same Availability Zone ({z})"),
                        ));
                    }
                }
                if seen.len() < 2 {
                    return Some((
                        "InvalidConfigurationRequest".into(),
                        format!("at least two subnets in two different Availability Zones must be specified (got {subnets:?})"),
                    ));
                }
                None
            }
            "CreateTargetGroup" => {
                let name = p.get("Name").cloned().unwrap_or_default();
                bad_name(&name, false).then(|| {
                    (
                        "ValidationError".into(),
                        format!("target group name {name:?} is not valid"),
                    )
                })
            }
            "CreateListener" | "ModifyListener" => {
                let http = p.get("Protocol").map(String::as_str) == Some("HTTP");
                let auth = values("DefaultActions.member.")
                    .iter()
                    .any(|v| v.starts_with("authenticate-"));
                (http && auth).then(|| {
                    (
                        "InvalidConfigurationRequest".into(),
                        "authenticate actions are only supported on HTTPS listeners".into(),
                    )
                })
            }
            "CreateRule" | "ModifyRule" => {
                // Condition values: each `…Values.member.N` (query strings: `.Key`/`.Value`
                // of one member count once).
                let mut counted = BTreeSet::new();
                let mut kinds: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
                for k in p.keys().filter(|k| k.starts_with("Conditions.member.")) {
                    let Some(i) = k.find("Values.member.") else {
                        continue;
                    };
                    let head = &k[..i];
                    let tail = &k[i + "Values.member.".len()..];
                    let n = tail.split('.').next().unwrap_or("");
                    counted.insert(format!("{head}{n}"));
                    let cond: String = k.split('.').take(3).collect::<Vec<_>>().join(".");
                    kinds
                        .entry(cond)
                        .or_default()
                        .insert(if head.ends_with("Regex") {
                            "regex"
                        } else {
                            "plain"
                        });
                }
                if counted.len() > 5 {
                    return Some((
                        "TooManyConditionValues".into(),
                        format!(
                            "a rule can have at most 5 condition values, not {}",
                            counted.len()
                        ),
                    ));
                }
                if kinds.values().any(|k| k.len() > 1) {
                    return Some((
                        "ValidationError".into(),
                        "a condition takes Values or RegexValues, not both".into(),
                    ));
                }
                if let Some(pr) = p.get("Priority") {
                    if pr
                        .parse::<u32>()
                        .map_or(true, |n| !(1..=50000).contains(&n))
                    {
                        return Some((
                            "ValidationError".into(),
                            format!("priority {pr} is not in 1-50000"),
                        ));
                    }
                }
                let forward_groups = p
                    .keys()
                    .filter(|k| {
                        k.contains("ForwardConfig.TargetGroups.member.")
                            && k.ends_with(".TargetGroupArn")
                    })
                    .count();
                if forward_groups > 5 {
                    return Some((
                        "TooManyTargetGroups".into(),
                        "a forward action takes at most 5 target groups".into(),
                    ));
                }
                let listener = p.get("ListenerArn").cloned();
                let auth = values("Actions.member.")
                    .iter()
                    .any(|v| v.starts_with("authenticate-"));
                if let (Some(l), "CreateRule") = (listener, action) {
                    let rules = self
                        .ask(&[
                            ("Action", "DescribeRules".to_string()),
                            ("Version", "2015-12-01".to_string()),
                            ("ListenerArn", l.clone()),
                        ])
                        .await;
                    let non_default = texts(&rules, "IsDefault")
                        .iter()
                        .filter(|v| **v == "false")
                        .count();
                    if non_default >= 100 {
                        return Some((
                            "TooManyRules".into(),
                            "a listener has at most 100 rules".into(),
                        ));
                    }
                    if auth {
                        let listeners = self
                            .ask(&[
                                ("Action", "DescribeListeners".to_string()),
                                ("Version", "2015-12-01".to_string()),
                                ("ListenerArns.member.1", l),
                            ])
                            .await;
                        if texts(&listeners, "Protocol").first() == Some(&"HTTP") {
                            return Some((
                                "InvalidConfigurationRequest".into(),
                                "authenticate actions are only supported on HTTPS listeners".into(),
                            ));
                        }
                    }
                }
                None
            }
            "DeleteSecurityGroup" => {
                let id = p.get("GroupId")?.clone();
                let named_by = self
                    .ask(&[
                        ("Action", "DescribeSecurityGroups".to_string()),
                        ("Version", "2016-11-15".to_string()),
                        ("Filter.1.Name", "ip-permission.group-id".to_string()),
                        ("Filter.1.Value.1", id.clone()),
                    ])
                    .await;
                let others: Vec<&str> = texts(&named_by, "groupId")
                    .into_iter()
                    .filter(|g| *g != id)
                    .collect();
                if !others.is_empty() {
                    return Some((
                        "DependencyViolation".into(),
                        format!("resource {id} has a dependent object (a rule of {others:?})"),
                    ));
                }
                let lbs = self
                    .ask(&[
                        ("Action", "DescribeLoadBalancers".to_string()),
                        ("Version", "2015-12-01".to_string()),
                    ])
                    .await;
                if texts(&lbs, "member").contains(&id.as_str()) {
                    return Some((
                        "DependencyViolation".into(),
                        format!("resource {id} has a dependent object (a load balancer)"),
                    ));
                }
                None
            }
            _ => None,
        }
    }
}

impl Shared {
    /// AWS's answer to creating a load balancer or target group whose name exists: the
    /// existing one (idempotent create), built from moto's describe answer.
    async fn existing(&self, p: &BTreeMap<String, String>) -> Option<Response<Full<Bytes>>> {
        let action = p.get("Action")?.as_str();
        let describe = match action {
            "CreateLoadBalancer" => "DescribeLoadBalancers",
            "CreateTargetGroup" => "DescribeTargetGroups",
            _ => return None,
        };
        let name = p.get("Name")?.clone();
        let xml = self
            .ask(&[
                ("Action", describe.to_string()),
                ("Version", "2015-12-01".to_string()),
                ("Names.member.1", name),
            ])
            .await;
        let arn_tag = if action == "CreateLoadBalancer" {
            "LoadBalancerArn"
        } else {
            "TargetGroupArn"
        };
        if texts(&xml, arn_tag).is_empty() || xml.contains("<ErrorResponse") {
            return None;
        }
        let body = xml.replace(describe, action);
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/xml"),
        );
        Some(r)
    }
}

fn error(ec2: bool, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = if ec2 {
        format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>strict</RequestID></Response>")
    } else {
        format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>strict</RequestId></ErrorResponse>")
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = parts.headers.contains_key("x-amz-target");
    if !json {
        let p = form(&body);
        if let Some((code, message)) = shared.rejection(&p).await {
            let action = p.get("Action").cloned().unwrap_or_default();
            if let Ok(mut v) = shared.violations.lock() {
                v.push(format!("{action}: {code}: {message}"));
            }
            let ec2 = p.get("Version").map(String::as_str) == Some("2016-11-15");
            return Ok(error(ec2, &code, &message));
        }
        if let Some(existing) = shared.existing(&p).await {
            return Ok(existing);
        }
    }
    // AWS's AssociateWebACL replaces a resource's association (the AWS Load Balancer
    // Controller associates another ACL without disassociating first); moto keeps the
    // first. Emulated by removing the old one just before.
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target == "AWSWAF_20190729.AssociateWebACL" {
        let resource = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("ResourceArn")?.as_str().map(str::to_string));
        if let (Some(arn), Ok(req)) = (resource, Request::post(parts.uri.clone()).body(())) {
            let (mut first, ()) = req.into_parts();
            first.headers = parts.headers.clone();
            first.headers.insert(
                "x-amz-target",
                http::HeaderValue::from_static("AWSWAF_20190729.DisassociateWebACL"),
            );
            first.headers.remove("content-length");
            let body = Bytes::from(serde_json::json!({ "ResourceArn": arn }).to_string());
            let _ = super::fault_proxy::relay(&shared.client, &shared.upstream, &first, body).await;
        }
    }
    let p = if json { BTreeMap::new() } else { form(&body) };
    let action = p.get("Action").cloned().unwrap_or_default();
    let describes_health = action == "DescribeTargetHealth";
    let answer = super::fault_proxy::relay(&shared.client, &shared.upstream, &parts, body).await;
    let answer = match answer {
        Some(a)
            if matches!(
                action.as_str(),
                "CreateListener" | "ModifyListener" | "DescribeListeners"
            ) =>
        {
            Some(mutual_tls(&shared, &action, &p, a).await)
        }
        other => other,
    };
    if describes_health {
        if let Some(a) = answer {
            let set = shared.health.lock().map(|h| h.clone()).unwrap_or_default();
            return Ok(reported_health(a, &set).await);
        }
    }
    if target == "AWSShield_20160616.DescribeSubscription" {
        if let Some(a) = answer {
            return Ok(epoch_timestamps(a).await);
        }
    }
    Ok(answer.unwrap_or_else(|| {
        error(
            false,
            "InternalFailure",
            "strict proxy: emulator unreachable",
        )
    }))
}

/// Keeps the MutualAuthentication a listener was given, and puts it back into
/// DescribeListeners answers (moto drops it).
async fn mutual_tls(
    shared: &Shared,
    action: &str,
    p: &BTreeMap<String, String>,
    answer: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    let (mut parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !parts.status.is_success() {
        return Response::from_parts(parts, Full::new(bytes));
    }
    let xml = String::from_utf8_lossy(&bytes).into_owned();
    if action != "DescribeListeners" {
        let Some(mode) = p.get("MutualAuthentication.Mode") else {
            return Response::from_parts(parts, Full::new(bytes));
        };
        let arn = match action {
            "CreateListener" => texts(&xml, "ListenerArn").first().map(|s| s.to_string()),
            _ => p.get("ListenerArn").cloned(),
        };
        let mut elements = format!("<Mode>{mode}</Mode>");
        for (param, tag) in [
            ("MutualAuthentication.TrustStoreArn", "TrustStoreArn"),
            (
                "MutualAuthentication.IgnoreClientCertificateExpiry",
                "IgnoreClientCertificateExpiry",
            ),
            (
                "MutualAuthentication.AdvertiseTrustStoreCaNames",
                "AdvertiseTrustStoreCaNames",
            ),
        ] {
            if let Some(v) = p.get(param) {
                elements.push_str(&format!("<{tag}>{v}</{tag}>"));
            }
        }
        if let (Some(arn), Ok(mut m)) = (arn, shared.mutual_tls.lock()) {
            m.insert(arn, elements);
        }
        return Response::from_parts(parts, Full::new(bytes));
    }
    let kept = shared
        .mutual_tls
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut out = xml;
    for (arn, elements) in kept {
        let tag = format!("<ListenerArn>{arn}</ListenerArn>");
        out = out.replace(
            &tag,
            &format!("{tag}<MutualAuthentication>{elements}</MutualAuthentication>"),
        );
    }
    parts.headers.remove("content-length");
    Response::from_parts(parts, Full::new(Bytes::from(out)))
}

/// A DescribeTargetHealth answer with the states a test set put in.
async fn reported_health(
    answer: Response<Full<Bytes>>,
    set: &BTreeMap<(String, u16), String>,
) -> Response<Full<Bytes>> {
    let (mut parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let xml = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(xml.len());
    let mut pieces = xml.split("<member>");
    out.push_str(pieces.next().unwrap_or_default());
    for m in pieces {
        out.push_str("<member>");
        let id = texts(m, "Id").first().map(|s| s.to_string());
        let port = texts(m, "Port").first().and_then(|p| p.parse::<u16>().ok());
        let wanted = id.zip(port).and_then(|k| set.get(&k));
        match (wanted, m.find("<State>"), m.find("</State>")) {
            (Some(state), Some(a), Some(b)) if a < b => {
                out.push_str(&m[..a]);
                out.push_str(&format!("<State>{state}</State>"));
                out.push_str(&m[b + "</State>".len()..]);
            }
            _ => out.push_str(m),
        }
    }
    parts.headers.remove("content-length");
    Response::from_parts(parts, Full::new(Bytes::from(out)))
}

/// moto writes Shield's subscription times as `dd/mm/yyyy, HH:MM:SS`; AWS's JSON protocol
/// (and so the SDK) has them as epoch seconds. Rewritten, so the SDK can read the answer.
async fn epoch_timestamps(answer: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Full::new(bytes));
    };
    if let Some(sub) = v.get_mut("Subscription").and_then(|s| s.as_object_mut()) {
        for key in ["StartTime", "EndTime"] {
            let epoch = sub
                .get(key)
                .and_then(|t| t.as_str())
                .and_then(parse_moto_time);
            if let Some(e) = epoch {
                sub.insert(key.to_string(), serde_json::json!(e));
            }
        }
    }
    let out = Bytes::from(v.to_string());
    parts.headers.remove("content-length");
    Response::from_parts(parts, Full::new(out))
}

fn parse_moto_time(t: &str) -> Option<i64> {
    let (date, time) = t.split_once(", ")?;
    let d: Vec<i64> = date
        .split('/')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let h: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (&[day, month, year], &[hh, mm, ss]) = (d.as_slice(), h.as_slice()) else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}
