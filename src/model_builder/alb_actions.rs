//! The AWS Load Balancer Controller's `actions.<name>` and `conditions.<name>` annotations.
//!
//! A path whose backend is `service: {name: <name>, port: {name: use-annotation}}` takes its
//! action from `alb.ingress.kubernetes.io/actions.<name>` (fixed response, redirect, or a
//! weighted forward to several Services); `alb.ingress.kubernetes.io/conditions.<name>`
//! adds conditions (HTTP header, query string, method, source IP) to every path whose
//! backend is named `<name>`, be it an action or a real Service. Both are JSON, as the AWS
//! controller documents them, so Ingresses move over unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{IngressBackend, IngressServiceBackend, ServiceBackendPort};
use serde::Deserialize;
use serde_json::Value;
use tollgate_contract::{Conditions, FixedResponse, HeaderMatch, QueryMatch, QueryPair, Redirect};

/// The port name that makes a backend refer to an action annotation.
pub const USE_ANNOTATION: &str = "use-annotation";

/// A Service port as an action's target group names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePortRef {
    Number(i32),
    Name(String),
}

/// One weighted Service of a forward action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedService {
    pub service: String,
    pub port: ServicePortRef,
    pub weight: u32,
}

/// A target group made outside Kubernetes that a forward names (the AWS Load Balancer
/// Controller's `targetGroupARN` or `targetGroupName`, "typically a targetGroup for a legacy
/// application"): used as it is, never created, changed or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedArn {
    /// The ARN, or [`tollgate_contract::TARGET_GROUP_NAME`] and the name (looked up by the
    /// AWS provider).
    pub arn: String,
    pub weight: u32,
}

/// What `actions.<name>` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotatedAction {
    FixedResponse(FixedResponse),
    Redirect(Redirect),
    Forward {
        services: Vec<WeightedService>,
        /// Target groups by ARN (AWS only).
        arns: Vec<WeightedArn>,
        stickiness_seconds: Option<u32>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionJson {
    #[serde(rename = "type")]
    kind: String,
    fixed_response_config: Option<FixedJson>,
    redirect_config: Option<RedirectJson>,
    forward_config: Option<ForwardJson>,
    #[serde(alias = "targetGroupARN")]
    target_group_arn: Option<String>,
    target_group_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixedJson {
    content_type: Option<String>,
    status_code: Value,
    message_body: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedirectJson {
    protocol: Option<String>,
    port: Option<Value>,
    host: Option<String>,
    path: Option<String>,
    query: Option<String>,
    status_code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ForwardJson {
    #[serde(default)]
    target_groups: Vec<TargetGroupJson>,
    target_group_stickiness_config: Option<StickinessJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetGroupJson {
    service_name: Option<String>,
    service_port: Option<Value>,
    weight: Option<u32>,
    #[serde(alias = "targetGroupARN")]
    target_group_arn: Option<String>,
    target_group_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StickinessJson {
    enabled: Option<bool>,
    duration_seconds: Option<u32>,
}

/// A JSON number or a string holding one (the AWS controller's examples use both).
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `#{host}`-style placeholders mean "keep the request's value", which is what an absent
/// field says in the model.
fn unless_placeholder(v: Option<String>, placeholder: &str) -> Option<String> {
    v.filter(|s| !s.is_empty() && s != placeholder)
}

/// The AWS controller reads these annotations with Go's case-insensitive JSON matching, so
/// the widely copied `{"Type": "redirect", "RedirectConfig": {...}}` works there: accept
/// PascalCase keys by lower-casing each key's first letter.
fn camel_case_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let mut chars = k.chars();
                    let key = match chars.next() {
                        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                        None => k,
                    };
                    (key, camel_case_keys(v))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(camel_case_keys).collect()),
        other => other,
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: &str, what: &str) -> Result<T, String> {
    let value: Value = serde_json::from_str(v).map_err(|e| format!("not {what}: {e}"))?;
    serde_json::from_value(camel_case_keys(value)).map_err(|e| format!("not {what}: {e}"))
}

/// The action name of a `use-annotation` backend.
pub fn annotated_action_name(backend: &IngressBackend) -> Option<&str> {
    let s = backend.service.as_ref()?;
    (s.port.as_ref()?.name.as_deref() == Some(USE_ANNOTATION)).then_some(s.name.as_str())
}

/// A forward action's Service as an Ingress backend, so it resolves like any other.
pub fn service_backend(s: &WeightedService) -> IngressBackend {
    IngressBackend {
        resource: None,
        service: Some(IngressServiceBackend {
            name: s.service.clone(),
            port: Some(match &s.port {
                ServicePortRef::Number(n) => ServiceBackendPort {
                    number: Some(*n),
                    name: None,
                },
                ServicePortRef::Name(n) => ServiceBackendPort {
                    number: None,
                    name: Some(n.clone()),
                },
            }),
        }),
    }
}

/// Parses an `actions.<name>` value.
pub fn parse_action(v: &str) -> Result<AnnotatedAction, String> {
    let mut a: ActionJson = from_json(v, "an action")?;
    // The simplified form: one target group, by ARN or name (normalizeSimplifiedSchemaForwardAction).
    if a.target_group_arn.is_some() || a.target_group_name.is_some() {
        if a.forward_config.is_some() {
            return Err(
                "either forwardConfig or targetGroupARN/targetGroupName can be specified".into(),
            );
        }
        a.forward_config = Some(ForwardJson {
            target_groups: vec![TargetGroupJson {
                service_name: None,
                service_port: None,
                weight: None,
                target_group_arn: a.target_group_arn.take(),
                target_group_name: a.target_group_name.take(),
            }],
            target_group_stickiness_config: None,
        });
    }
    match a.kind.as_str() {
        "fixed-response" => {
            let f = a
                .fixed_response_config
                .ok_or("fixed-response needs fixedResponseConfig")?;
            let status_code = number(&f.status_code)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (200..=599).contains(n))
                .ok_or("fixedResponseConfig.statusCode must be 2XX, 4XX or 5XX")?;
            let body = f.message_body.unwrap_or_default();
            if body.len() > 1024 {
                return Err("fixedResponseConfig.messageBody is longer than 1024 bytes".into());
            }
            Ok(AnnotatedAction::FixedResponse(FixedResponse {
                status_code,
                content_type: f.content_type.unwrap_or_else(|| "text/plain".into()),
                body,
            }))
        }
        "redirect" => {
            let r = a.redirect_config.ok_or("redirect needs redirectConfig")?;
            let status_code = match r.status_code.as_str() {
                "HTTP_301" => 301,
                "HTTP_302" => 302,
                other => {
                    return Err(format!(
                        "redirectConfig.statusCode {other:?} is not HTTP_301 or HTTP_302"
                    ))
                }
            };
            let port = match r.port {
                None => None,
                Some(Value::String(s)) if s == "#{port}" => None,
                Some(p) => Some(
                    number(&p)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n > 0)
                        .ok_or("redirectConfig.port must be a port number or #{port}")?,
                ),
            };
            let protocol = unless_placeholder(r.protocol, "#{protocol}");
            if let Some(p) = &protocol {
                if !p.eq_ignore_ascii_case("HTTP") && !p.eq_ignore_ascii_case("HTTPS") {
                    return Err(format!(
                        "redirectConfig.protocol {p:?} is not HTTP or HTTPS"
                    ));
                }
            }
            Ok(AnnotatedAction::Redirect(Redirect {
                protocol: protocol.map(|p| p.to_ascii_uppercase()),
                host: unless_placeholder(r.host, "#{host}"),
                port,
                path: unless_placeholder(r.path, "/#{path}"),
                query: unless_placeholder(r.query, "#{query}"),
                status_code,
                strip_trailing_slash: false,
            }))
        }
        "forward" => {
            let f = a.forward_config.ok_or("forward needs forwardConfig")?;
            if f.target_groups.is_empty() {
                return Err("forwardConfig.targetGroups is empty".into());
            }
            let mut services = Vec::new();
            let mut arns = Vec::new();
            let several = f.target_groups.len() > 1;
            for (i, t) in f.target_groups.into_iter().enumerate() {
                if t.weight.is_none() && several {
                    return Err(format!(
                        "targetGroups[{i}]: weight must be set when routing to several target groups"
                    ));
                }
                if let Some(arn) = t.target_group_arn.filter(|a| !a.is_empty()) {
                    if t.service_name.is_some() {
                        return Err(format!("targetGroups[{i}]: either serviceName or targetGroupARN can be specified"));
                    }
                    if !arn.starts_with("arn:") || !arn.contains(":targetgroup/") {
                        return Err(format!("targetGroups[{i}]: targetGroupARN {arn:?} is not a target group ARN (arn:...:targetgroup/...)"));
                    }
                    let weight = t.weight.unwrap_or(1);
                    if weight > 999 {
                        return Err(format!("targetGroups[{i}].weight is above 999"));
                    }
                    arns.push(WeightedArn { arn, weight });
                    continue;
                }
                if let Some(name) = t.target_group_name.filter(|n| !n.is_empty()) {
                    if t.service_name.is_some() {
                        return Err(format!("targetGroups[{i}]: either serviceName or targetGroupName can be specified"));
                    }
                    // ELBv2's target group names: 1-32 alphanumerics or hyphens.
                    if name.len() > 32
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        || name.starts_with('-')
                        || name.ends_with('-')
                    {
                        return Err(format!("targetGroups[{i}]: targetGroupName {name:?} is not a target group name"));
                    }
                    let weight = t.weight.unwrap_or(1);
                    if weight > 999 {
                        return Err(format!("targetGroups[{i}].weight is above 999"));
                    }
                    arns.push(WeightedArn {
                        arn: format!("{}{name}", tollgate_contract::TARGET_GROUP_NAME),
                        weight,
                    });
                    continue;
                }
                let service = t
                    .service_name
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| format!("targetGroups[{i}] has no serviceName"))?;
                let port = match t.service_port {
                    Some(Value::String(s)) if s.trim().parse::<i32>().is_err() => {
                        ServicePortRef::Name(s)
                    }
                    Some(p) => ServicePortRef::Number(
                        number(&p)
                            .and_then(|n| i32::try_from(n).ok())
                            .filter(|n| (1..=65535).contains(n))
                            .ok_or_else(|| {
                                format!("targetGroups[{i}].servicePort is not a port")
                            })?,
                    ),
                    None => return Err(format!("targetGroups[{i}] has no servicePort")),
                };
                let weight = t.weight.unwrap_or(1);
                if weight > 999 {
                    return Err(format!("targetGroups[{i}].weight is above 999"));
                }
                services.push(WeightedService {
                    service,
                    port,
                    weight,
                });
            }
            let stickiness_seconds = f
                .target_group_stickiness_config
                .filter(|s| s.enabled == Some(true))
                .map(|s| s.duration_seconds.unwrap_or(3600))
                .map(|d| d.clamp(1, 604_800));
            Ok(AnnotatedAction::Forward {
                services,
                arns,
                stickiness_seconds,
            })
        }
        other => Err(format!(
            "type {other:?} is not fixed-response, redirect or forward"
        )),
    }
}

/// What `conditions.<name>` adds to the paths of backend `<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotatedConditions {
    /// Header, query, method and source-IP conditions.
    pub extra: Conditions,
    /// `host-header` values: added to the rule's own host (either matches).
    pub hosts: Vec<String>,
    /// `path-pattern` values: exact paths, or ALB path patterns with `*`/`?`, added to the
    /// rule's own path.
    pub paths: Vec<String>,
    /// `path-pattern` `regexValues`, added to the rule's own path the same way.
    pub path_regexes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConditionJson {
    field: String,
    host_header_config: Option<ValuesJson>,
    path_pattern_config: Option<ValuesJson>,
    http_header_config: Option<HeaderJson>,
    http_request_method_config: Option<ValuesJson>,
    query_string_config: Option<QueryJson>,
    source_ip_config: Option<ValuesJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderJson {
    http_header_name: String,
    #[serde(default)]
    values: Vec<String>,
    /// Regular expressions instead of values (ALB `RegexValues`).
    #[serde(default)]
    regex_values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValuesJson {
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    regex_values: Vec<String>,
}

/// The AWS Load Balancer Controller's rule: a condition config holds `values` or
/// `regexValues`, exactly one (pkg/ingress/config_types.go). Expressions are checked with
/// Rust's regex, which the proxy evaluates them with; look-around and back-references are
/// refused rather than matched differently.
fn one_kind(i: usize, values: &[String], regex: &[String]) -> Result<bool, String> {
    match (values.is_empty(), regex.is_empty()) {
        (false, true) => Ok(false),
        (true, false) => {
            for r in regex {
                regex::Regex::new(r).map_err(|e| {
                    format!("conditions[{i}]: regexValues {r:?} is not a regular expression Tollgate can evaluate: {e}")
                })?;
            }
            Ok(true)
        }
        _ => Err(format!(
            "conditions[{i}]: exactly one of values and regexValues must be given"
        )),
    }
}

#[derive(Deserialize)]
struct QueryJson {
    values: Vec<QueryPairJson>,
}

#[derive(Deserialize)]
struct QueryPairJson {
    key: Option<String>,
    value: String,
}

/// Parses a `conditions.<name>` value.
pub fn parse_conditions(v: &str) -> Result<AnnotatedConditions, String> {
    let list: Vec<ConditionJson> = from_json(v, "a list of conditions")?;
    let mut out = AnnotatedConditions::default();
    let c = &mut out.extra;
    for (i, cond) in list.into_iter().enumerate() {
        let missing = |what: &str| format!("conditions[{i}] ({}) has no {what}", cond.field);
        match cond.field.as_str() {
            "http-header" => {
                let h = cond
                    .http_header_config
                    .as_ref()
                    .ok_or_else(|| missing("httpHeaderConfig"))?;
                if h.http_header_name.is_empty() {
                    return Err(missing("header name"));
                }
                let regex = one_kind(i, &h.values, &h.regex_values)?;
                c.headers.push(HeaderMatch {
                    name: h.http_header_name.to_ascii_lowercase(),
                    values: if regex {
                        h.regex_values.clone()
                    } else {
                        h.values.clone()
                    },
                    regex,
                });
            }
            "http-request-method" => {
                let m = cond
                    .http_request_method_config
                    .as_ref()
                    .ok_or_else(|| missing("httpRequestMethodConfig"))?;
                if m.values.is_empty() {
                    return Err(missing("values"));
                }
                c.methods
                    .extend(m.values.iter().map(|v| v.to_ascii_uppercase()));
            }
            "query-string" => {
                let q = cond
                    .query_string_config
                    .as_ref()
                    .ok_or_else(|| missing("queryStringConfig"))?;
                if q.values.is_empty() {
                    return Err(missing("values"));
                }
                c.query.push(QueryMatch {
                    pairs: q
                        .values
                        .iter()
                        .map(|p| QueryPair {
                            key: p.key.clone().filter(|k| !k.is_empty()),
                            value: p.value.clone(),
                        })
                        .collect(),
                });
            }
            "source-ip" => {
                let s = cond
                    .source_ip_config
                    .as_ref()
                    .ok_or_else(|| missing("sourceIpConfig"))?;
                for cidr in &s.values {
                    if !is_cidr(cidr) {
                        return Err(format!("conditions[{i}]: {cidr:?} is not a CIDR"));
                    }
                }
                c.source_ips.extend(s.values.iter().cloned());
            }
            "host-header" => {
                let h = cond
                    .host_header_config
                    .as_ref()
                    .ok_or_else(|| missing("hostHeaderConfig"))?;
                if one_kind(i, &h.values, &h.regex_values)? {
                    c.host_regexes.extend(h.regex_values.iter().cloned());
                    continue;
                }
                out.hosts
                    .extend(h.values.iter().map(|v| v.to_ascii_lowercase()));
            }
            "path-pattern" => {
                let p = cond
                    .path_pattern_config
                    .as_ref()
                    .ok_or_else(|| missing("pathPatternConfig"))?;
                if one_kind(i, &p.values, &p.regex_values)? {
                    out.path_regexes.extend(p.regex_values.iter().cloned());
                    continue;
                }
                for v in &p.values {
                    // Exact paths, or ALB path patterns (`*`, `?`), which both providers
                    // match the same way (`PathKind::Glob`).
                    let kind = if v.contains(['*', '?']) {
                        "ImplementationSpecific"
                    } else {
                        "Exact"
                    };
                    super::ingress_member::parse_path(Some(v), kind, false)
                        .map_err(|why| format!("conditions[{i}]: path-pattern: {why}"))?;
                }
                out.paths.extend(p.values.iter().cloned());
            }
            other => return Err(format!("conditions[{i}]: field {other:?} is unknown")),
        }
    }
    Ok(out)
}

/// Whether `v` is an IPv4 or IPv6 CIDR.
pub fn is_cidr(v: &str) -> bool {
    let Some((ip, len)) = v.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// Every `<prefix><name>` annotation, parsed; errors name the annotation.
pub fn named_annotations<T>(
    annotations: &BTreeMap<String, String>,
    prefix: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    errors: &mut Vec<(String, String, String)>,
) -> BTreeMap<String, T> {
    super::annotations::note_read(prefix);
    let mut out = BTreeMap::new();
    for (k, v) in annotations.range(prefix.to_string()..) {
        let Some(name) = k.strip_prefix(prefix) else {
            break;
        };
        match parse(v) {
            Ok(t) => {
                out.insert(name.to_string(), t);
            }
            Err(problem) => errors.push((k.clone(), v.clone(), problem)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_values_follow_the_controllers_rules() {
        let c = parse_conditions(r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"User-Agent","regexValues":[".+Chrome.+"]}},{"field":"path-pattern","pathPatternConfig":{"regexValues":["^/api/?(.*)$"]}}]"#).unwrap();
        assert_eq!(c.extra.headers.len(), 1);
        assert!(c.extra.headers[0].regex);
        assert_eq!(c.extra.headers[0].values, [".+Chrome.+"]);
        assert_eq!(c.path_regexes, ["^/api/?(.*)$"]);
        let h = parse_conditions(r#"[{"field":"host-header","hostHeaderConfig":{"regexValues":["^(.+)\\.example\\.com"]}}]"#).unwrap();
        assert_eq!(h.extra.host_regexes, [r"^(.+)\.example\.com"]);
        // Exactly one of values and regexValues; expressions Tollgate can evaluate.
        for bad in [
            r#"[{"field":"path-pattern","pathPatternConfig":{"values":["/a"],"regexValues":["^/a"]}}]"#,
            r#"[{"field":"path-pattern","pathPatternConfig":{}}]"#,
            r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X","regexValues":["(?<=a)b"]}}]"#,
        ] {
            assert!(parse_conditions(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_the_aws_controllers_documented_examples() {
        let fixed = parse_action(r#"{"type":"fixed-response","fixedResponseConfig":{"contentType":"text/plain","statusCode":"503","messageBody":"503 error text"}}"#).unwrap();
        assert!(matches!(
            fixed,
            AnnotatedAction::FixedResponse(FixedResponse {
                status_code: 503,
                ..
            })
        ));
        let classic = parse_action(r#"{"Type": "redirect", "RedirectConfig": { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}"#).unwrap();
        let redirect = parse_action(r#"{"type":"redirect","redirectConfig":{"protocol":"HTTPS","port":"443","statusCode":"HTTP_301"}}"#).unwrap();
        assert_eq!(classic, redirect);
        assert_eq!(
            redirect,
            AnnotatedAction::Redirect(Redirect {
                protocol: Some("HTTPS".into()),
                host: None,
                port: Some(443),
                path: None,
                query: None,
                status_code: 301,
                strip_trailing_slash: false,
            })
        );
        let forward = parse_action(r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"blue","servicePort":"80","weight":20},{"serviceName":"green","servicePort":"http","weight":80}],"targetGroupStickinessConfig":{"enabled":true,"durationSeconds":200}}}"#).unwrap();
        assert_eq!(
            forward,
            AnnotatedAction::Forward {
                services: vec![
                    WeightedService {
                        service: "blue".into(),
                        port: ServicePortRef::Number(80),
                        weight: 20
                    },
                    WeightedService {
                        service: "green".into(),
                        port: ServicePortRef::Name("http".into()),
                        weight: 80
                    },
                ],
                arns: vec![],
                stickiness_seconds: Some(200)
            }
        );
        // The simplified form and a mixed split, by ARN; a name is refused with the reason.
        let arn = "arn:aws:elasticloadbalancing:us-west-2:111122223333:targetgroup/legacy/0123456789abcdef";
        let AnnotatedAction::Forward { arns, services, .. } =
            parse_action(&format!(r#"{{"type":"forward","targetGroupARN":"{arn}"}}"#)).unwrap()
        else {
            panic!("a forward");
        };
        assert_eq!((arns.len(), services.len()), (1, 0));
        assert_eq!(arns[0].arn, arn);
        let AnnotatedAction::Forward { arns, .. } =
            parse_action(r#"{"type":"forward","targetGroupName":"legacy"}"#).unwrap()
        else {
            panic!("a forward");
        };
        assert_eq!(arns[0].arn, "aws-target-group-name:legacy");
        assert!(parse_action(r#"{"type":"forward","targetGroupName":"not_a name"}"#).is_err());
        assert!(parse_action(r#"{"type":"forward","targetGroupARN":"legacy-tg-arn"}"#).is_err());
        assert!(parse_action(r#"{"type":"forward","forwardConfig":{"targetGroups":[{"serviceName":"a","servicePort":80},{"serviceName":"b","servicePort":80}]}}"#).is_err(), "weights are required with several target groups");
        let c = parse_conditions(r#"[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"X-Canary","values":["yes"]}},{"field":"query-string","queryStringConfig":{"values":[{"key":"v","value":"2"}]}},{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.0/8"]}},{"field":"http-request-method","httpRequestMethodConfig":{"values":["get"]}}]"#).unwrap().extra;
        // The AWS controller's documented host and path examples.
        let hp = parse_conditions(r#"[{"field":"host-header","hostHeaderConfig":{"values":["anno.example.com"]}},{"field":"path-pattern","pathPatternConfig":{"values":["/path2"]}}]"#).unwrap();
        assert_eq!(
            (hp.hosts, hp.paths),
            (
                vec!["anno.example.com".to_string()],
                vec!["/path2".to_string()]
            )
        );
        assert_eq!(c.headers[0].name, "x-canary");
        assert_eq!(c.query[0].pairs[0].key.as_deref(), Some("v"));
        assert_eq!(c.source_ips, ["10.0.0.0/8"]);
        assert_eq!(c.methods, ["GET"]);
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        for bad in [
            r#"{"type":"forward","targetGroupARN":"arn:aws:elasticloadbalancing:x"}"#,
            r#"{"type":"fixed-response","fixedResponseConfig":{"statusCode":"700"}}"#,
            r#"{"type":"redirect","redirectConfig":{"statusCode":"HTTP_308"}}"#,
            r#"{"type":"forward","forwardConfig":{"targetGroups":[]}}"#,
            r#"{"type":"authenticate-oidc"}"#,
            "not json",
        ] {
            assert!(parse_action(bad).is_err(), "{bad}");
        }
        for bad in [
            r#"[{"field":"source-ip","sourceIpConfig":{"values":["10.0.0.1"]}}]"#,
            r#"[{"field":"path-pattern","pathPatternConfig":{"values":["api/*"]}}]"#,
            r#"[{"field":"path-pattern","pathPatternConfig":{"values":["/a b/*"]}}]"#,
            r#"[{"field":"host-header","hostHeaderConfig":{"values":[]}}]"#,
            r#"[{"field":"http-header"}]"#,
            r#"{"field":"http-header"}"#,
        ] {
            assert!(parse_conditions(bad).is_err(), "{bad}");
        }
    }
}
