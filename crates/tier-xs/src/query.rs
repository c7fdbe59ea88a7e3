//! AWS's Query protocols on the SDK's runtime: EC2's (`crate::ec2`) and the `awsQuery` of IAM
//! (`crate::iam`) and RDS (tier-large's `rds`), without their generated SDK crates.
//!
//! Why: those crates compile every operation of their service (EC2 ~700, RDS ~160, IAM ~170)
//! for the dozen each that agentbus calls; together they were a third of a clean build of the
//! workspace (`docs/benchmarks/build.md`). What a generated client gives beyond the calls is
//! kept by running each call through the SDK's own runtime (`aws_smithy_runtime`'s
//! orchestrator, as a generated client does): the configuration's credential chain and
//! identity cache, SigV4 by `aws-runtime`, the standard retry strategy with the same
//! classifiers (`Throttling`, `RequestLimitExceeded`, 5xx), timeouts, clock-skew correction,
//! the user agent and the invocation-id and attempt headers, the call counter, and the HTTP
//! client. What is ours, per service: the request's form (`Action=…&Version=…&…`, as each API
//! reference's "Query requests" and the SDK's serializers write it), the endpoint rules
//! (checked against the SDK's own endpoint tests in each service's module), and reading the
//! XML answers and error documents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_runtime::auth::sigv4::{SCHEME_ID as SIGV4, SigV4AuthScheme};
use aws_runtime::auth::{SigV4OperationSigningConfig, SigningOptions};
use aws_runtime::invocation_id::InvocationIdInterceptor;
use aws_runtime::request_info::RequestInfoInterceptor;
use aws_runtime::retries::classifiers::AwsErrorCodeClassifier;
use aws_runtime::service_clock_skew::{ServiceClockSkewClassifier, ServiceClockSkewInterceptor};
use aws_runtime::user_agent::{ApiMetadata, UserAgentInterceptor};
use aws_smithy_runtime::client::identity::IdentityCache;
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime_api::client::auth::static_resolver::StaticAuthSchemeOptionResolver;
use aws_smithy_runtime_api::client::auth::{
    AuthSchemeOptionResolverParams, SharedAuthScheme, SharedAuthSchemeOptionResolver,
};
use aws_smithy_runtime_api::client::identity::SharedIdentityCache;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_runtime_api::client::runtime_plugin::StaticRuntimePlugin;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::Layer;
use aws_smithy_types::error::metadata::{ErrorMetadata, ProvideErrorMetadata};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SigningName;
use aws_types::region::SigningRegion;
use aws_types::service_config::ServiceConfigKey;

use crate::aws::{CallCounter, ClientParts};

/// One service's Query API: what differs between EC2, IAM and RDS.
#[derive(Debug)]
pub struct Api {
    /// The SDK's service id (`EC2`, `IAM`, `RDS`): the key of a service endpoint of its own
    /// (`AWS_ENDPOINT_URL_IAM`), and the name in messages.
    pub service_id: &'static str,
    /// SigV4's service name (`ec2`, `iam`, `rds`).
    pub signing_name: &'static str,
    /// The API version every request names (`Version=…`).
    pub version: &'static str,
    pub protocol: Protocol,
    /// AWS's own endpoint for a region, FIPS and dual-stack, by the service's endpoint rules.
    pub endpoint: fn(region: &str, fips: bool, dual_stack: bool) -> Endpoint,
}

/// The two Query protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's: the answer's fields are the root's children, lists are `item`s, errors are
    /// `<Response><Errors><Error>`.
    Ec2,
    /// `awsQuery`: the answer's fields are under `<{Action}Result>`, lists are `member`s,
    /// errors are `<ErrorResponse><Error>`.
    AwsQuery,
}

/// Where a service answers, and the region requests are signed for when it is not the
/// configured one (IAM's global endpoint: `us-east-1` in the `aws` partition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub signing_region: Option<&'static str>,
}

/// A failed call, as the SDK's clients report theirs: the service's answer (a [`ServiceError`]
/// with its code and message), or a failure before one (connection, timeout, credentials, a
/// malformed answer).
pub type QueryError = SdkError<ServiceError, HttpResponse>;

/// An error answer: its code (`NoSuchEntity`, `InvalidGroup.NotFound`, `Throttling`, …) and
/// message, through [`ProvideErrorMetadata`] like a generated client's errors. Each service's
/// module names the codes its model declares (`crate::iam::no_such_entity`, …), as the
/// generated clients' `is_…` accessors do.
#[derive(Debug)]
pub struct ServiceError {
    service: &'static str,
    meta: ErrorMetadata,
}

impl ServiceError {
    fn new(service: &'static str, code: Option<String>, message: Option<String>) -> Self {
        let mut b = ErrorMetadata::builder();
        if let Some(c) = code {
            b = b.code(c);
        }
        if let Some(m) = message {
            b = b.message(m);
        }
        ServiceError {
            service,
            meta: b.build(),
        }
    }

    /// Whether the answer's code is `code`.
    pub fn is(&self, code: &str) -> bool {
        self.meta.code() == Some(code)
    }
}

impl ProvideErrorMetadata for ServiceError {
    fn meta(&self) -> &ErrorMetadata {
        &self.meta
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.meta.code(), self.meta.message()) {
            (Some(c), Some(m)) => write!(f, "{c}: {m}"),
            (Some(c), None) => write!(f, "{c}"),
            (None, Some(m)) => write!(f, "{m}"),
            (None, None) => write!(f, "unhandled {} error", self.service),
        }
    }
}

impl std::error::Error for ServiceError {}

/// One service's client: one per [`crate::aws::AwsClients`], cheap to clone.
#[derive(Clone)]
pub struct QueryClient {
    api: &'static Api,
    inner: Arc<Inner>,
}

struct Inner {
    config: SdkConfig,
    /// Where requests go, or why the configuration names no endpoint.
    endpoint: Result<Endpoint, String>,
    region: String,
    identity_cache: SharedIdentityCache,
    counter: CallCounter,
    /// One operation per action, built on its first call.
    operations: Mutex<HashMap<&'static str, Operation<String, Node, ServiceError>>>,
}

impl QueryClient {
    /// The client of `api` for a registry's configuration (see [`crate::aws::AwsClients`]).
    pub fn new(api: &'static Api, parts: ClientParts<'_>) -> Self {
        let config = parts.config.clone();
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let endpoint = resolve(
            api,
            configured_endpoint(&config, api.service_id).as_deref(),
            (!region.is_empty()).then_some(region.as_str()),
            config.use_fips().unwrap_or(false),
            config.use_dual_stack().unwrap_or(false),
        );
        let identity_cache = config
            .identity_cache()
            .unwrap_or_else(|| IdentityCache::lazy().build());
        QueryClient {
            api,
            inner: Arc::new(Inner {
                config,
                endpoint,
                region,
                identity_cache,
                counter: parts.counter,
                operations: Mutex::default(),
            }),
        }
    }

    /// The operation of `action`, or why the configuration names no endpoint.
    fn operation(
        &self,
        action: &'static str,
    ) -> Result<Operation<String, Node, ServiceError>, String> {
        let mut ops = match self.inner.operations.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(op) = ops.get(action) {
            return Ok(op.clone());
        }
        let endpoint = self.inner.endpoint.as_ref().map_err(|e| e.to_string())?;
        let op = build_operation(self.api, &self.inner, endpoint, action);
        ops.insert(action, op.clone());
        Ok(op)
    }

    /// Sends one action with its parameters; the answer (EC2: the root element; `awsQuery`:
    /// its `{Action}Result`, empty for actions that answer nothing).
    pub async fn call(&self, action: &'static str, params: Params) -> Result<Node, QueryError> {
        let body = params.encode(action, self.api.version);
        self.operation(action)
            .map_err(SdkError::construction_failure)?
            .invoke(body)
            .await
    }

    /// Every entry of the list `list` on every page of a listing, each read by `each`: calls
    /// `action` again with the answer's page token (EC2's `nextToken` sent as `NextToken`,
    /// `awsQuery`'s `Marker`) until an answer has none (or repeats it).
    pub async fn collect<T>(
        &self,
        action: &'static str,
        params: Params,
        list: &str,
        mut each: impl FnMut(&Node) -> T,
    ) -> Result<Vec<T>, QueryError> {
        let (token_in, token_out) = match self.api.protocol {
            Protocol::Ec2 => ("NextToken", "nextToken"),
            Protocol::AwsQuery => ("Marker", "Marker"),
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut p = params.clone();
            if let Some(t) = &token {
                p.push(token_in, t);
            }
            let page = self.call(action, p).await?;
            out.extend(page.list(list).iter().map(&mut each));
            match page.text(token_out) {
                Some(t) if !t.is_empty() && token.as_deref() != Some(t) => {
                    token = Some(t.to_string())
                }
                _ => return Ok(out),
            }
        }
    }
}

/// The orchestrator's operation for one action: what a generated client's config and
/// operation runtime plugins set up, for a Query protocol.
fn build_operation(
    api: &'static Api,
    inner: &Inner,
    endpoint: &Endpoint,
    action: &'static str,
) -> Operation<String, Node, ServiceError> {
    let cfg = &inner.config;
    let region = endpoint
        .signing_region
        .map(str::to_string)
        .unwrap_or_else(|| inner.region.clone());
    let mut layer = Layer::new("agentbus-query");
    layer.store_put(AuthSchemeOptionResolverParams::new(()));
    layer.store_put(SigV4OperationSigningConfig {
        region: Some(SigningRegion::from(aws_types::region::Region::new(region))),
        name: Some(SigningName::from_static(api.signing_name)),
        signing_options: SigningOptions::default(),
        ..Default::default()
    });
    layer.store_put(ApiMetadata::new(api.signing_name, "agentbus"));
    if let Some(app) = cfg.app_name() {
        layer.store_put(app.clone());
    }
    let mut components = RuntimeComponentsBuilder::new("agentbus-query");
    components.set_auth_scheme_option_resolver(Some(SharedAuthSchemeOptionResolver::new(
        StaticAuthSchemeOptionResolver::new(vec![SIGV4]),
    )));
    components.push_auth_scheme(SharedAuthScheme::new(SigV4AuthScheme::new()));
    if let Some(credentials) = cfg.credentials_provider() {
        components.set_identity_resolver(SIGV4, credentials);
    }
    components.set_identity_cache(Some(inner.identity_cache.clone()));
    if let Some(time) = cfg.time_source() {
        components.set_time_source(Some(time));
    }
    let mut b = Operation::builder()
        .service_name(api.service_id)
        .operation_name(action)
        .endpoint_url(&endpoint.url)
        .standard_retry(
            &cfg.retry_config()
                .cloned()
                .unwrap_or_else(RetryConfig::standard),
        )
        .timeout_config(
            cfg.timeout_config()
                .cloned()
                .unwrap_or_else(TimeoutConfig::disabled),
        )
        .retry_classifier(AwsErrorCodeClassifier::<ServiceError>::new())
        .retry_classifier(TransientErrorClassifier::<ServiceError>::new())
        .retry_classifier(HttpStatusCodeClassifier::default())
        .retry_classifier(ServiceClockSkewClassifier::<ServiceError>::new())
        .interceptor(ServiceClockSkewInterceptor::new())
        .interceptor(UserAgentInterceptor::new())
        // amz-sdk-invocation-id and amz-sdk-request (attempt=N, max=M): one id per call
        // across its retries, as every SDK sends.
        .interceptor(InvocationIdInterceptor::new())
        .interceptor(RequestInfoInterceptor::new())
        .interceptor(inner.counter.clone())
        .with_connection_poisoning()
        .runtime_plugin(
            StaticRuntimePlugin::new()
                .with_config(layer.freeze())
                .with_runtime_components(components),
        );
    if let Some(client) = cfg.http_client() {
        b = b.http_client(client);
    }
    if let Some(sleep) = cfg.sleep_impl() {
        b = b.sleep_impl(sleep);
    }
    if let Some(bv) = cfg.behavior_version() {
        b = b.behavior_version(bv);
    }
    b.serializer(|body: String| {
        let mut req = HttpRequest::new(SdkBody::from(body));
        req.set_method("POST")?;
        req.set_uri("/")?;
        req.headers_mut()
            .insert("Content-Type", "application/x-www-form-urlencoded");
        Ok(req)
    })
    .deserializer(move |resp: &HttpResponse| {
        let body = resp.body().bytes().unwrap_or_default();
        if resp.status().is_success() {
            let root = parse(body).map_err(OrchestratorError::other)?;
            Ok(answer_of(api.protocol, action, root))
        } else {
            Err(OrchestratorError::operation(error_of(
                api.service_id,
                resp.status().as_u16(),
                body,
            )))
        }
    })
    .build()
}

/// The answer's fields: EC2's root, or `awsQuery`'s `<{Action}Result>` (absent when the
/// action answers only its request id).
fn answer_of(protocol: Protocol, action: &str, mut root: Node) -> Node {
    match protocol {
        Protocol::Ec2 => root,
        Protocol::AwsQuery => {
            let result = format!("{action}Result");
            match root.children.iter().position(|c| c.name == result) {
                Some(i) => root.children.swap_remove(i),
                None => Node::default(),
            }
        }
    }
}

/// The error document (`awsQuery`: `<ErrorResponse><Error><Code>…</Code><Message>…`; EC2:
/// `<Response><Errors><Error>…`), or the status alone when the body is not one (a proxy's
/// 503, say).
pub fn error_of(service: &'static str, status: u16, body: &[u8]) -> ServiceError {
    let error = parse(body).ok().and_then(|root| {
        root.child("Error")
            .or_else(|| root.child("Errors").and_then(|e| e.child("Error")))
            .cloned()
    });
    match error {
        Some(e) => ServiceError::new(
            service,
            e.text("Code").map(str::to_string),
            e.text("Message").map(str::to_string),
        ),
        None => ServiceError::new(
            service,
            None,
            Some(format!("HTTP {status} without an {service} error document")),
        ),
    }
}

/// The endpoint the configuration names for a service, read as a generated client reads it:
/// one set in code wins; else the service's own (`AWS_ENDPOINT_URL_IAM`, or `endpoint_url` in
/// the profile's `iam` section); else the global one (`AWS_ENDPOINT_URL`).
fn configured_endpoint(config: &SdkConfig, service_id: &str) -> Option<String> {
    if config.get_origin("endpoint_url").is_client_config() {
        return config.endpoint_url().map(str::to_string);
    }
    let key = ServiceConfigKey::builder()
        .service_id(service_id)
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok();
    config
        .service_config()
        .zip(key)
        .and_then(|(c, key)| c.load_config(key))
        .or_else(|| config.endpoint_url().map(str::to_string))
}

/// Where a service answers: a configured endpoint as it is (not with FIPS or dual-stack, as
/// every service's rules say), else the service's own rules for the region.
pub fn resolve(
    api: &Api,
    configured: Option<&str>,
    region: Option<&str>,
    fips: bool,
    dual_stack: bool,
) -> Result<Endpoint, String> {
    if let Some(url) = configured {
        if fips {
            return Err("Invalid Configuration: FIPS and custom endpoint are not supported".into());
        }
        if dual_stack {
            return Err(
                "Invalid Configuration: Dualstack and custom endpoint are not supported".into(),
            );
        }
        return Ok(Endpoint {
            url: url.to_string(),
            signing_region: None,
        });
    }
    let Some(region) = region else {
        return Err("Invalid Configuration: Missing Region".into());
    };
    Ok((api.endpoint)(region, fips, dual_stack))
}

/// The partition a region is in: its name, DNS suffix and dual-stack DNS suffix, as AWS's
/// partitions file (`partitions.json` of the SDKs' endpoint rules) gives them.
pub fn partition(region: &str) -> (&'static str, &'static str, &'static str) {
    [
        (
            "cn-",
            "aws-cn",
            "amazonaws.com.cn",
            "api.amazonwebservices.com.cn",
        ),
        ("us-gov-", "aws-us-gov", "amazonaws.com", "api.aws"),
        ("us-isob-", "aws-iso-b", "sc2s.sgov.gov", "sc2s.sgov.gov"),
        ("us-isof-", "aws-iso-f", "csp.hci.ic.gov", "csp.hci.ic.gov"),
        ("us-iso-", "aws-iso", "c2s.ic.gov", "c2s.ic.gov"),
        ("eu-isoe-", "aws-iso-e", "cloud.adc-e.uk", "cloud.adc-e.uk"),
        ("eusc-", "aws-eusc", "amazonaws.eu", "amazonaws.eu"),
    ]
    .iter()
    .find(|(prefix, ..)| region.starts_with(prefix))
    .map(|(_, name, s, d)| (*name, *s, *d))
    .unwrap_or(("aws", "amazonaws.com", "api.aws"))
}

/// The regional endpoint rules EC2 and RDS share: `{prefix}[-fips].{region}.{DNS suffix}`,
/// where GovCloud's regular endpoints are its FIPS endpoints already.
pub fn regional(prefix: &str, region: &str, fips: bool, dual_stack: bool) -> Endpoint {
    let (name, suffix, dual) = partition(region);
    let url = match (fips, dual_stack) {
        (true, true) => format!("https://{prefix}-fips.{region}.{dual}"),
        (true, false) if name == "aws-us-gov" => format!("https://{prefix}.{region}.{suffix}"),
        (true, false) => format!("https://{prefix}-fips.{region}.{suffix}"),
        (false, true) => format!("https://{prefix}.{region}.{dual}"),
        (false, false) => format!("https://{prefix}.{region}.{suffix}"),
    };
    Endpoint {
        url,
        signing_region: None,
    }
}

// --- the request's form ------------------------------------------------------------------

/// A Query request's parameters, in order.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new() -> Self {
        Params::default()
    }

    /// One parameter.
    pub fn push(&mut self, key: &str, value: &str) {
        self.0.push((key.to_string(), value.to_string()));
    }

    /// The same, chained: `Params::new().with("RoleName", name)`.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.push(key, value);
        self
    }

    /// A list: `{prefix}.N`, where the prefix names the list and, in `awsQuery`, its member
    /// (`TagKeys.member`, RDS's `SubnetIds.SubnetIdentifier`; EC2's lists have no member name:
    /// `GroupId`).
    pub fn list<'a>(&mut self, prefix: &str, values: impl IntoIterator<Item = &'a str>) {
        for (i, v) in values.into_iter().enumerate() {
            self.push(&format!("{prefix}.{}", i + 1), v);
        }
    }

    /// `{prefix}.N.Key` and, where given, `{prefix}.N.Value` (EC2's `Tag`, `awsQuery`'s
    /// `Tags.member`).
    pub fn tags<'a>(
        &mut self,
        prefix: &str,
        tags: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        for (i, (k, v)) in tags.enumerate() {
            let n = i + 1;
            self.push(&format!("{prefix}.{n}.Key"), k);
            if let Some(v) = v {
                self.push(&format!("{prefix}.{n}.Value"), v);
            }
        }
    }

    /// The form body: `Action=…&Version=…&…`, every key and value percent-encoded.
    pub fn encode(&self, action: &str, version: &str) -> String {
        let mut out = format!("Action={action}&Version={version}");
        for (k, v) in &self.0 {
            out.push('&');
            out.push_str(&urlencoding::encode(k));
            out.push('=');
            out.push_str(&urlencoding::encode(v));
        }
        out
    }
}

// --- the answers -------------------------------------------------------------------------

/// An element of an answer: its local name, its text (for a leaf) and its child elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child of this name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child of this name.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The same, or empty.
    pub fn string(&self, name: &str) -> String {
        self.text(name).unwrap_or_default().to_string()
    }

    /// The entries of the list `name` (its children, `item`s or `member`s); none when absent.
    pub fn list(&self, name: &str) -> &[Node] {
        self.child(name)
            .map(|l| l.children.as_slice())
            .unwrap_or(&[])
    }

    /// `true` and `false` as the Query protocols write booleans.
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.text(name).map(|t| t == "true")
    }

    /// A number, when there is one.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.text(name).and_then(|t| t.parse().ok())
    }

    /// A list of `Key`/`Value` entries (`awsQuery`'s tags) as pairs.
    pub fn pairs(&self, name: &str) -> Vec<(String, String)> {
        self.list(name)
            .iter()
            .map(|t| (t.string("Key"), t.string("Value")))
            .collect()
    }
}

/// A document that is not the XML an answer is.
#[derive(Debug, thiserror::Error)]
#[error("malformed XML answer: {0}")]
pub struct XmlError(String);

/// The document's root element with every element under it. Elements with children keep
/// only those (the white space between them is dropped); a leaf keeps its text, entities
/// and character references resolved.
pub fn parse(body: &[u8]) -> Result<Node, XmlError> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let text = std::str::from_utf8(body).map_err(|e| XmlError(e.to_string()))?;
    // The document itself, then each open element.
    let mut open: Vec<Node> = vec![Node::default()];
    for token in Tokenizer::from(text) {
        match token.map_err(|e| XmlError(e.to_string()))? {
            Token::ElementStart { local, .. } => open.push(Node {
                name: local.as_str().to_string(),
                ..Node::default()
            }),
            Token::ElementEnd { end, .. } => {
                let closes = match end {
                    ElementEnd::Open => continue,
                    ElementEnd::Empty => None,
                    ElementEnd::Close(_, local) => Some(local.as_str()),
                };
                if open.len() < 2 {
                    return Err(XmlError("a close tag without its element".into()));
                }
                let mut node = open.pop().unwrap_or_default();
                if closes.is_some_and(|name| name != node.name) {
                    return Err(XmlError(format!("<{}> closed by another tag", node.name)));
                }
                if !node.children.is_empty() {
                    node.text.clear();
                }
                if let Some(parent) = open.last_mut() {
                    parent.children.push(node);
                }
            }
            Token::Text { text } if open.len() > 1 => {
                let t = unescape(text.as_str())?;
                if let Some(n) = open.last_mut() {
                    n.text.push_str(&t);
                }
            }
            Token::Cdata { text, .. } if open.len() > 1 => {
                if let Some(n) = open.last_mut() {
                    n.text.push_str(text.as_str());
                }
            }
            _ => {}
        }
    }
    match (open.pop(), open.is_empty()) {
        (Some(doc), true) => doc
            .children
            .into_iter()
            .next()
            .ok_or_else(|| XmlError("no root element".into())),
        _ => Err(XmlError("an element is not closed".into())),
    }
}

/// XML's five entities and its character references (`&#38;`, `&#x26;`).
fn unescape(s: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or_else(|| XmlError("an unterminated entity".into()))?;
        let entity = &rest[at + 1..at + end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(|n| n.ok())
                .and_then(char::from_u32)
                .ok_or_else(|| XmlError(format!("an unknown entity &{entity};")))?,
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_read_whole_with_entities_resolved_and_white_space_between_elements_dropped() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<GetRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetRoleResult>
    <Role>
      <Path>/</Path>
      <AssumeRolePolicyDocument>%7B%22a%22%3A1%7D</AssumeRolePolicyDocument>
      <Description>a &amp; b &lt;c&gt; &#233;&#xe9;<![CDATA[ <raw> ]]></Description>
      <Tags><member><Key>k</Key><Value>v</Value></member><member><Key>e</Key><Value/></member></Tags>
      <Empty/>
    </Role>
  </GetRoleResult>
  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>
</GetRoleResponse>"#;
        let root = parse(xml).expect("parses");
        assert_eq!(root.name, "GetRoleResponse");
        assert_eq!(root.text, "");
        let answer = answer_of(Protocol::AwsQuery, "GetRole", root.clone());
        let role = answer.child("Role").expect("the role");
        assert_eq!(role.text("Path"), Some("/"));
        assert_eq!(role.text("Description"), Some("a & b <c> éé <raw> "));
        assert_eq!(
            role.pairs("Tags"),
            vec![("k".into(), "v".into()), ("e".into(), String::new())]
        );
        assert_eq!(role.text("Empty"), Some(""));
        assert_eq!(role.list("Missing"), &[] as &[Node]);
        assert_eq!(
            answer_of(Protocol::AwsQuery, "DeleteRole", root),
            Node::default()
        );
    }

    #[test]
    fn a_document_that_is_not_well_formed_is_an_error() {
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"</a>",
            b"<a>&bogus;</a>",
            b"<a>&amp</a>",
            b"",
            b"\xff",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_error_answer_of_either_protocol_gives_its_code_and_message_and_a_bare_status_says_so() {
        let query = br#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The role with name x cannot be found.</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#;
        let e = error_of("IAM", 404, query);
        assert!(e.is("NoSuchEntity"));
        assert_eq!(e.message(), Some("The role with name x cannot be found."));
        let ec2 = br#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidGroup.NotFound</Code><Message>The security group 'sg-1' does not exist</Message></Error></Errors><RequestID>r-1</RequestID></Response>"#;
        let e = error_of("EC2", 400, ec2);
        assert_eq!(e.code(), Some("InvalidGroup.NotFound"));
        assert_eq!(
            e.to_string(),
            "InvalidGroup.NotFound: The security group 'sg-1' does not exist"
        );
        let e = error_of("RDS", 503, b"");
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "HTTP 503 without an RDS error document");
    }

    #[test]
    fn a_request_is_written_as_a_query_form() {
        let mut p = Params::new().with("RoleName", "agentbus-dev-task");
        p.list("TagKeys.member", ["a b", "c/d"]);
        p.tags("Tags.member", [("k", Some("v&w")), ("x", None)].into_iter());
        assert_eq!(
            p.encode("UntagRole", "2010-05-08"),
            "Action=UntagRole&Version=2010-05-08&RoleName=agentbus-dev-task\
             &TagKeys.member.1=a%20b&TagKeys.member.2=c%2Fd\
             &Tags.member.1.Key=k&Tags.member.1.Value=v%26w&Tags.member.2.Key=x"
        );
    }

    #[test]
    fn a_service_endpoint_of_its_own_comes_before_the_global_one() {
        use aws_types::service_config::LoadServiceConfig;
        #[derive(Debug)]
        struct IamEndpoint;
        impl LoadServiceConfig for IamEndpoint {
            fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
                (key.service_id() == "IAM" && key.env() == "AWS_ENDPOINT_URL")
                    .then(|| "http://127.0.0.1:4566".to_string())
            }
        }
        let region = aws_types::region::Region::new("us-east-1");
        let cfg = SdkConfig::builder()
            .region(region.clone())
            .service_config(IamEndpoint)
            .build();
        assert_eq!(
            configured_endpoint(&cfg, "IAM").as_deref(),
            Some("http://127.0.0.1:4566")
        );
        assert_eq!(configured_endpoint(&cfg, "EC2"), None);
        let cfg = SdkConfig::builder().region(region).build();
        assert_eq!(configured_endpoint(&cfg, "IAM"), None);
    }
}
