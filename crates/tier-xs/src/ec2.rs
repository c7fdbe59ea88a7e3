//! EC2 through its Query API, for the eleven calls agentbus makes (the default VPC and its
//! subnets, security groups and their rules and tags, a task's network interface).
//!
//! Why not `aws-sdk-ec2`: that crate compiles every one of EC2's ~700 operations, a quarter of
//! a clean build of the workspace (`docs/benchmarks/build.md`), for these eleven. What it would
//! give beyond them is kept by running each call through the SDK's own runtime
//! (`aws_smithy_runtime`'s orchestrator, as a generated client does): the configuration's
//! credential chain and identity cache, SigV4 by `aws-runtime`, the standard retry strategy
//! with the same classifiers (EC2's `RequestLimitExceeded` is throttling), timeouts, clock-skew
//! correction, the user agent and the invocation-id and attempt headers, the call counter,
//! and the HTTP client. What is ours: the request's form (`Action=…&Version=2016-11-15&
//! Filter.1.Name=…`, as the EC2 API Reference's "Query requests" describes it and the SDK's
//! serializers write it), the endpoint (EC2's endpoint rules, checked against the SDK's own
//! endpoint tests below), and reading the XML answers and EC2's error document
//! (`<Response><Errors><Error><Code>`).

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
use aws_smithy_xml::decode::{Document, ScopedDecoder, XmlDecodeError, try_data};
use aws_types::SigningName;
use aws_types::region::SigningRegion;
use aws_types::service_config::ServiceConfigKey;

use crate::aws::{CallCounter, ClientParts};

/// The EC2 API version every request names.
const VERSION: &str = "2016-11-15";

/// A failed EC2 call, as the SDK's clients report theirs: the service's answer (a
/// [`Ec2Error`] with EC2's code and message), or a failure before one (connection, timeout,
/// credentials, a malformed answer).
pub type Ec2SdkError = SdkError<Ec2Error, HttpResponse>;

/// An error answer of EC2: its code (`InvalidGroup.NotFound`, `RequestLimitExceeded`, …) and
/// message, through [`ProvideErrorMetadata`] like a generated client's errors (EC2 models no
/// error types: every one of its errors is a code).
#[derive(Debug)]
pub struct Ec2Error {
    meta: ErrorMetadata,
}

impl Ec2Error {
    fn new(code: Option<String>, message: Option<String>) -> Self {
        let mut b = ErrorMetadata::builder();
        if let Some(c) = code {
            b = b.code(c);
        }
        if let Some(m) = message {
            b = b.message(m);
        }
        Ec2Error { meta: b.build() }
    }
}

impl ProvideErrorMetadata for Ec2Error {
    fn meta(&self) -> &ErrorMetadata {
        &self.meta
    }
}

impl std::fmt::Display for Ec2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.meta.code(), self.meta.message()) {
            (Some(c), Some(m)) => write!(f, "{c}: {m}"),
            (Some(c), None) => write!(f, "{c}"),
            (None, Some(m)) => write!(f, "{m}"),
            (None, None) => write!(f, "unhandled EC2 error"),
        }
    }
}

impl std::error::Error for Ec2Error {}

/// A filter of a Describe call: a name (`group-name`, `vpc-id`, …) and its values.
#[derive(Clone, Debug)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(name: &str, value: &str) -> Self {
        Filter {
            name: name.to_string(),
            values: vec![value.to_string()],
        }
    }
}

/// One source of a rule: a CIDR block (`cidr_ip` / `cidr_ipv6`) or a security group's id, with
/// its description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSource {
    pub value: String,
    pub description: Option<String>,
}

impl RuleSource {
    pub fn new(value: &str, description: Option<&str>) -> Self {
        RuleSource {
            value: value.to_string(),
            description: description.map(str::to_string),
        }
    }
}

/// A security group rule: a protocol (`tcp`, `-1` for all), a port range and its sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpPermission {
    pub ip_protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub ip_ranges: Vec<RuleSource>,
    pub ipv6_ranges: Vec<RuleSource>,
    /// Source security groups, by id.
    pub groups: Vec<RuleSource>,
}

impl IpPermission {
    /// The same protocol and ports without sources.
    pub fn without_sources(&self) -> Self {
        IpPermission {
            ip_protocol: self.ip_protocol.clone(),
            from_port: self.from_port,
            to_port: self.to_port,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityGroup {
    pub group_id: String,
    pub group_name: String,
    pub description: String,
    pub vpc_id: String,
    pub ip_permissions: Vec<IpPermission>,
    pub ip_permissions_egress: Vec<IpPermission>,
    pub tags: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vpc {
    pub vpc_id: String,
    pub is_default: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subnet {
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub default_for_az: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkInterface {
    pub network_interface_id: String,
    pub private_ip_address: String,
    /// The public address associated with it, if any.
    pub public_ip: Option<String>,
}

/// A change to a security group's rules, by its EC2 action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleChange {
    AuthorizeIngress,
    AuthorizeEgress,
    RevokeIngress,
}

impl RuleChange {
    /// The EC2 action (also the name errors carry).
    pub fn action(self) -> &'static str {
        match self {
            RuleChange::AuthorizeIngress => "AuthorizeSecurityGroupIngress",
            RuleChange::AuthorizeEgress => "AuthorizeSecurityGroupEgress",
            RuleChange::RevokeIngress => "RevokeSecurityGroupIngress",
        }
    }
}

/// Which security groups DescribeSecurityGroups reads.
#[derive(Clone, Debug)]
pub enum GroupQuery<'a> {
    Ids(&'a [&'a str]),
    Filters(&'a [Filter]),
}

/// EC2's client: one per [`crate::aws::AwsClients`] (`aws.ec2()`), cheap to clone.
#[derive(Clone)]
pub struct Ec2 {
    inner: Arc<Inner>,
}

struct Inner {
    config: SdkConfig,
    /// Where requests go, or why the configuration names no endpoint.
    endpoint: Result<String, String>,
    region: String,
    identity_cache: SharedIdentityCache,
    counter: CallCounter,
    /// One operation per action, built on its first call.
    operations: Mutex<HashMap<&'static str, Operation<String, Node, Ec2Error>>>,
}

impl Ec2 {
    /// The client of a registry's configuration (see [`crate::aws::AwsClients::ec2`]).
    pub fn new(parts: ClientParts<'_>) -> Self {
        let config = parts.config.clone();
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let endpoint = endpoint(
            configured_endpoint(&config).as_deref(),
            (!region.is_empty()).then_some(region.as_str()),
            config.use_fips().unwrap_or(false),
            config.use_dual_stack().unwrap_or(false),
        );
        let identity_cache = config
            .identity_cache()
            .unwrap_or_else(|| IdentityCache::lazy().build());
        Ec2 {
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
    fn operation(&self, action: &'static str) -> Result<Operation<String, Node, Ec2Error>, String> {
        let mut ops = match self.inner.operations.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(op) = ops.get(action) {
            return Ok(op.clone());
        }
        let endpoint = self.inner.endpoint.as_deref().map_err(|e| e.to_string())?;
        let op = build_operation(&self.inner, endpoint, action);
        ops.insert(action, op.clone());
        Ok(op)
    }

    /// Sends one action with its parameters; the answer's root element.
    async fn call(&self, action: &'static str, params: Params) -> Result<Node, Ec2SdkError> {
        let body = params.encode(action);
        self.operation(action)
            .map_err(SdkError::construction_failure)?
            .invoke(body)
            .await
    }

    /// Every page of a Describe action (`nextToken` followed): the items of each page's `set`.
    async fn describe<T: FromItem>(
        &self,
        action: &'static str,
        params: Params,
        set: &str,
    ) -> Result<Vec<T>, Ec2SdkError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut p = params.clone();
            if let Some(t) = &token {
                p.push("NextToken", t);
            }
            let page = self.call(action, p).await?;
            if let Some(s) = page.child(set) {
                items.extend(s.children.iter().map(T::from_item));
            }
            match page.text("nextToken") {
                Some(t) if !t.is_empty() && token.as_deref() != Some(t) => {
                    token = Some(t.to_string())
                }
                _ => return Ok(items),
            }
        }
    }

    pub async fn describe_vpcs(&self, filters: &[Filter]) -> Result<Vec<Vpc>, Ec2SdkError> {
        let p = Params::query("VpcId", &[], filters);
        self.describe("DescribeVpcs", p, "vpcSet").await
    }

    pub async fn describe_subnets(&self, filters: &[Filter]) -> Result<Vec<Subnet>, Ec2SdkError> {
        let p = Params::query("SubnetId", &[], filters);
        self.describe("DescribeSubnets", p, "subnetSet").await
    }

    pub async fn describe_security_groups(
        &self,
        query: GroupQuery<'_>,
    ) -> Result<Vec<SecurityGroup>, Ec2SdkError> {
        let p = match query {
            GroupQuery::Ids(ids) => Params::query("GroupId", ids, &[]),
            GroupQuery::Filters(f) => Params::query("GroupId", &[], f),
        };
        self.describe("DescribeSecurityGroups", p, "securityGroupInfo")
            .await
    }

    /// Creates a security group with its tags; its id.
    pub async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: &str,
        tags: &[(String, String)],
    ) -> Result<String, Ec2SdkError> {
        let mut p = Params::default();
        p.push("GroupName", name);
        p.push("GroupDescription", description);
        p.push("VpcId", vpc_id);
        if !tags.is_empty() {
            p.push("TagSpecification.1.ResourceType", "security-group");
            p.tags(
                "TagSpecification.1.Tag",
                tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
            );
        }
        Ok(self.call("CreateSecurityGroup", p).await?.string("groupId"))
    }

    pub async fn delete_security_group(&self, group_id: &str) -> Result<(), Ec2SdkError> {
        let mut p = Params::default();
        p.push("GroupId", group_id);
        self.call("DeleteSecurityGroup", p).await.map(drop)
    }

    /// Adds or removes a security group's rules.
    pub async fn change_rules(
        &self,
        change: RuleChange,
        group_id: &str,
        permissions: &[IpPermission],
    ) -> Result<(), Ec2SdkError> {
        let mut p = Params::default();
        p.push("GroupId", group_id);
        p.permissions(permissions);
        self.call(change.action(), p).await.map(drop)
    }

    pub async fn create_tags(
        &self,
        resource_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), Ec2SdkError> {
        let mut p = Params::default();
        p.push("ResourceId.1", resource_id);
        p.tags(
            "Tag",
            tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        );
        self.call("CreateTags", p).await.map(drop)
    }

    /// Removes tags by key, whatever their values.
    pub async fn delete_tags(&self, resource_id: &str, keys: &[String]) -> Result<(), Ec2SdkError> {
        let mut p = Params::default();
        p.push("ResourceId.1", resource_id);
        p.tags("Tag", keys.iter().map(|k| (k.as_str(), None)));
        self.call("DeleteTags", p).await.map(drop)
    }

    /// Network interfaces by id, or by filters.
    pub async fn describe_network_interfaces(
        &self,
        ids: &[&str],
        filters: &[Filter],
    ) -> Result<Vec<NetworkInterface>, Ec2SdkError> {
        let p = Params::query("NetworkInterfaceId", ids, filters);
        self.describe("DescribeNetworkInterfaces", p, "networkInterfaceSet")
            .await
    }
}

/// The orchestrator's operation for one action: what a generated client's config and
/// operation runtime plugins set up, for EC2's Query protocol.
fn build_operation(
    inner: &Inner,
    endpoint: &str,
    action: &'static str,
) -> Operation<String, Node, Ec2Error> {
    let cfg = &inner.config;
    let mut layer = Layer::new("agentbus-ec2");
    layer.store_put(AuthSchemeOptionResolverParams::new(()));
    layer.store_put(SigV4OperationSigningConfig {
        region: Some(SigningRegion::from(aws_types::region::Region::new(
            inner.region.clone(),
        ))),
        name: Some(SigningName::from_static("ec2")),
        signing_options: SigningOptions::default(),
        ..Default::default()
    });
    layer.store_put(ApiMetadata::new("ec2", "agentbus"));
    if let Some(app) = cfg.app_name() {
        layer.store_put(app.clone());
    }
    let mut components = RuntimeComponentsBuilder::new("agentbus-ec2");
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
        .service_name("EC2")
        .operation_name(action)
        .endpoint_url(endpoint)
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
        .retry_classifier(AwsErrorCodeClassifier::<Ec2Error>::new())
        .retry_classifier(TransientErrorClassifier::<Ec2Error>::new())
        .retry_classifier(HttpStatusCodeClassifier::default())
        .retry_classifier(ServiceClockSkewClassifier::<Ec2Error>::new())
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
    .deserializer(|resp: &HttpResponse| {
        let body = resp.body().bytes().unwrap_or_default();
        if resp.status().is_success() {
            parse(body).map_err(OrchestratorError::other)
        } else {
            Err(OrchestratorError::operation(error_of(
                resp.status().as_u16(),
                body,
            )))
        }
    })
    .build()
}

/// EC2's error document (`<Response><Errors><Error><Code>…</Code><Message>…</Message>`), or
/// the status alone when the body is not one (a proxy's 503, say).
fn error_of(status: u16, body: &[u8]) -> Ec2Error {
    let error = parse(body)
        .ok()
        .and_then(|root| root.child("Errors").and_then(|e| e.child("Error")).cloned());
    match error {
        Some(e) => Ec2Error::new(
            e.text("Code").map(str::to_string),
            e.text("Message").map(str::to_string),
        ),
        None => Ec2Error::new(
            None,
            Some(format!("HTTP {status} without an EC2 error document")),
        ),
    }
}

/// The endpoint the configuration names for EC2, read as a generated client reads it: one set
/// in code wins; else the service's own (`AWS_ENDPOINT_URL_EC2`, or `endpoint_url` in the
/// profile's `ec2` section); else the global one (`AWS_ENDPOINT_URL`).
fn configured_endpoint(config: &SdkConfig) -> Option<String> {
    if config.get_origin("endpoint_url").is_client_config() {
        return config.endpoint_url().map(str::to_string);
    }
    let key = ServiceConfigKey::builder()
        .service_id("EC2")
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

/// Where EC2 answers, by its endpoint rules: a configured endpoint as it is (not with FIPS or
/// dual-stack), else `ec2[-fips].{region}.{the partition's DNS suffix}`.
pub fn endpoint(
    configured: Option<&str>,
    region: Option<&str>,
    fips: bool,
    dual_stack: bool,
) -> Result<String, String> {
    if let Some(url) = configured {
        if fips {
            return Err("Invalid Configuration: FIPS and custom endpoint are not supported".into());
        }
        if dual_stack {
            return Err(
                "Invalid Configuration: Dualstack and custom endpoint are not supported".into(),
            );
        }
        return Ok(url.to_string());
    }
    let Some(region) = region else {
        return Err("Invalid Configuration: Missing Region".into());
    };
    // (prefix, DNS suffix, dual-stack DNS suffix) of the partitions AWS documents.
    let (suffix, dual) = [
        ("cn-", "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
        ("us-gov-", "amazonaws.com", "api.aws"),
        ("us-isob-", "sc2s.sgov.gov", "sc2s.sgov.gov"),
        ("us-isof-", "csp.hci.ic.gov", "csp.hci.ic.gov"),
        ("us-iso-", "c2s.ic.gov", "c2s.ic.gov"),
        ("eu-isoe-", "cloud.adc-e.uk", "cloud.adc-e.uk"),
        ("eusc-", "amazonaws.eu", "amazonaws.eu"),
    ]
    .iter()
    .find(|(prefix, _, _)| region.starts_with(prefix))
    .map(|(_, s, d)| (*s, *d))
    .unwrap_or(("amazonaws.com", "api.aws"));
    Ok(match (fips, dual_stack) {
        (true, true) => format!("https://ec2-fips.{region}.{dual}"),
        // GovCloud's regular endpoints are FIPS endpoints already.
        (true, false) if region.starts_with("us-gov-") => format!("https://ec2.{region}.{suffix}"),
        (true, false) => format!("https://ec2-fips.{region}.{suffix}"),
        (false, true) => format!("https://ec2.{region}.{dual}"),
        (false, false) => format!("https://ec2.{region}.{suffix}"),
    })
}

// --- the request's form ------------------------------------------------------------------

/// A Query request's parameters, in order.
#[derive(Clone, Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    /// A Describe action's: the ids asked for (`{id}.N`) and the filters.
    fn query(id: &str, ids: &[&str], filters: &[Filter]) -> Self {
        let mut p = Params::default();
        for (i, v) in ids.iter().enumerate() {
            p.push(&format!("{id}.{}", i + 1), v);
        }
        p.filters(filters);
        p
    }

    fn push(&mut self, key: &str, value: &str) {
        self.0.push((key.to_string(), value.to_string()));
    }

    /// `Filter.N.Name`, `Filter.N.Value.M`.
    fn filters(&mut self, filters: &[Filter]) {
        for (i, f) in filters.iter().enumerate() {
            let n = i + 1;
            self.push(&format!("Filter.{n}.Name"), &f.name);
            for (j, v) in f.values.iter().enumerate() {
                self.push(&format!("Filter.{n}.Value.{}", j + 1), v);
            }
        }
    }

    /// `{prefix}.N.Key` and, where given, `{prefix}.N.Value`.
    fn tags<'a>(&mut self, prefix: &str, tags: impl Iterator<Item = (&'a str, Option<&'a str>)>) {
        for (i, (k, v)) in tags.enumerate() {
            let n = i + 1;
            self.push(&format!("{prefix}.{n}.Key"), k);
            if let Some(v) = v {
                self.push(&format!("{prefix}.{n}.Value"), v);
            }
        }
    }

    /// `IpPermissions.N.IpProtocol`, `.FromPort`, `.ToPort`, `.IpRanges.M.CidrIp`,
    /// `.Ipv6Ranges.M.CidrIpv6`, `.Groups.M.GroupId`, each source with its `Description`.
    fn permissions(&mut self, permissions: &[IpPermission]) {
        for (i, p) in permissions.iter().enumerate() {
            let pre = format!("IpPermissions.{}", i + 1);
            self.push(&format!("{pre}.IpProtocol"), &p.ip_protocol);
            if let Some(f) = p.from_port {
                self.push(&format!("{pre}.FromPort"), &f.to_string());
            }
            if let Some(t) = p.to_port {
                self.push(&format!("{pre}.ToPort"), &t.to_string());
            }
            for (list, field, sources) in [
                ("Groups", "GroupId", &p.groups),
                ("IpRanges", "CidrIp", &p.ip_ranges),
                ("Ipv6Ranges", "CidrIpv6", &p.ipv6_ranges),
            ] {
                for (j, s) in sources.iter().enumerate() {
                    let at = format!("{pre}.{list}.{}", j + 1);
                    if let Some(d) = &s.description {
                        self.push(&format!("{at}.Description"), d);
                    }
                    self.push(&format!("{at}.{field}"), &s.value);
                }
            }
        }
    }

    /// The form body: `Action=…&Version=…&…`, every key and value percent-encoded.
    fn encode(&self, action: &str) -> String {
        let mut out = format!("Action={action}&Version={VERSION}");
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
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    fn string(&self, name: &str) -> String {
        self.text(name).unwrap_or_default().to_string()
    }
}

/// Elements read for their children. Everything else is either a leaf of [`LEAVES`] or skipped
/// with whatever it holds (EC2 adds fields; a reader must ignore those it does not know).
const CONTAINERS: &[&str] = &[
    "item",
    "vpcSet",
    "subnetSet",
    "securityGroupInfo",
    "ipPermissions",
    "ipPermissionsEgress",
    "groups",
    "ipRanges",
    "ipv6Ranges",
    "tagSet",
    "networkInterfaceSet",
    "association",
    "Errors",
    "Error",
];

/// Elements read for their text.
const LEAVES: &[&str] = &[
    "nextToken",
    "vpcId",
    "isDefault",
    "subnetId",
    "availabilityZone",
    "defaultForAz",
    "groupId",
    "groupName",
    "groupDescription",
    "ipProtocol",
    "fromPort",
    "toPort",
    "cidrIp",
    "cidrIpv6",
    "description",
    "key",
    "value",
    "networkInterfaceId",
    "privateIpAddress",
    "publicIp",
    "Code",
    "Message",
];

fn parse(body: &[u8]) -> Result<Node, XmlDecodeError> {
    let mut doc = Document::try_from(body)?;
    let mut root = doc.root_element()?;
    let name = root.start_el().local().to_string();
    Ok(Node {
        name,
        text: String::new(),
        children: children(&mut root)?,
    })
}

fn children(dec: &mut ScopedDecoder<'_, '_>) -> Result<Vec<Node>, XmlDecodeError> {
    let mut out = Vec::new();
    while let Some(mut tag) = dec.next_tag() {
        let name = tag.start_el().local().to_string();
        if CONTAINERS.contains(&name.as_str()) {
            let children = children(&mut tag)?;
            out.push(Node {
                name,
                text: String::new(),
                children,
            });
        } else if LEAVES.contains(&name.as_str()) {
            let text = try_data(&mut tag)?.into_owned();
            out.push(Node {
                name,
                text,
                children: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// A Describe answer's item as its type.
trait FromItem {
    fn from_item(n: &Node) -> Self;
}

impl FromItem for Vpc {
    fn from_item(v: &Node) -> Self {
        Vpc {
            vpc_id: v.string("vpcId"),
            is_default: v.text("isDefault") == Some("true"),
        }
    }
}

impl FromItem for Subnet {
    fn from_item(s: &Node) -> Self {
        Subnet {
            subnet_id: s.string("subnetId"),
            vpc_id: s.string("vpcId"),
            availability_zone: s.string("availabilityZone"),
            default_for_az: s.text("defaultForAz") == Some("true"),
        }
    }
}

impl FromItem for SecurityGroup {
    fn from_item(g: &Node) -> Self {
        SecurityGroup {
            group_id: g.string("groupId"),
            group_name: g.string("groupName"),
            description: g.string("groupDescription"),
            vpc_id: g.string("vpcId"),
            ip_permissions: permissions_of(g.child("ipPermissions")),
            ip_permissions_egress: permissions_of(g.child("ipPermissionsEgress")),
            tags: tags_of(g),
        }
    }
}

impl FromItem for NetworkInterface {
    fn from_item(n: &Node) -> Self {
        NetworkInterface {
            network_interface_id: n.string("networkInterfaceId"),
            private_ip_address: n.string("privateIpAddress"),
            public_ip: n
                .child("association")
                .and_then(|a| a.text("publicIp"))
                .map(str::to_string),
        }
    }
}

fn permissions_of(list: Option<&Node>) -> Vec<IpPermission> {
    let sources = |p: &Node, list: &str, field: &str| -> Vec<RuleSource> {
        p.child(list)
            .map(|l| {
                l.children
                    .iter()
                    .map(|s| RuleSource {
                        value: s.string(field),
                        description: s.text("description").map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    list.map(|l| {
        l.children
            .iter()
            .map(|p| IpPermission {
                ip_protocol: p.string("ipProtocol"),
                from_port: p.text("fromPort").and_then(|v| v.parse().ok()),
                to_port: p.text("toPort").and_then(|v| v.parse().ok()),
                ip_ranges: sources(p, "ipRanges", "cidrIp"),
                ipv6_ranges: sources(p, "ipv6Ranges", "cidrIpv6"),
                groups: sources(p, "groups", "groupId"),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn tags_of(n: &Node) -> Vec<(String, String)> {
    n.child("tagSet")
        .map(|t| {
            t.children
                .iter()
                .map(|i| (i.string("key"), i.string("value")))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_follows_ec2_s_endpoint_rules() {
        // Cases from the endpoint tests of EC2's rules (as aws-sdk-ec2 1.274 ships them).
        let cases = [
            (
                "us-east-1",
                false,
                false,
                "https://ec2.us-east-1.amazonaws.com",
            ),
            (
                "af-south-1",
                false,
                false,
                "https://ec2.af-south-1.amazonaws.com",
            ),
            (
                "ca-central-1",
                true,
                false,
                "https://ec2-fips.ca-central-1.amazonaws.com",
            ),
            ("us-east-1", false, true, "https://ec2.us-east-1.api.aws"),
            (
                "us-east-1",
                true,
                true,
                "https://ec2-fips.us-east-1.api.aws",
            ),
            (
                "cn-north-1",
                false,
                false,
                "https://ec2.cn-north-1.amazonaws.com.cn",
            ),
            (
                "cn-north-1",
                true,
                true,
                "https://ec2-fips.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "cn-north-1",
                true,
                false,
                "https://ec2-fips.cn-north-1.amazonaws.com.cn",
            ),
            (
                "cn-north-1",
                false,
                true,
                "https://ec2.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "us-gov-west-1",
                false,
                false,
                "https://ec2.us-gov-west-1.amazonaws.com",
            ),
            (
                "us-gov-east-1",
                true,
                true,
                "https://ec2-fips.us-gov-east-1.api.aws",
            ),
            (
                "us-gov-east-1",
                true,
                false,
                "https://ec2.us-gov-east-1.amazonaws.com",
            ),
            (
                "us-gov-east-1",
                false,
                true,
                "https://ec2.us-gov-east-1.api.aws",
            ),
            (
                "us-iso-east-1",
                false,
                false,
                "https://ec2.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "us-iso-east-1",
                true,
                false,
                "https://ec2-fips.us-iso-east-1.c2s.ic.gov",
            ),
            (
                "us-isob-east-1",
                false,
                false,
                "https://ec2.us-isob-east-1.sc2s.sgov.gov",
            ),
            (
                "us-isob-east-1",
                true,
                false,
                "https://ec2-fips.us-isob-east-1.sc2s.sgov.gov",
            ),
        ];
        for (region, fips, dual, url) in cases {
            assert_eq!(
                endpoint(None, Some(region), fips, dual).as_deref(),
                Ok(url),
                "{region} fips={fips} dual-stack={dual}"
            );
        }
        let custom = Some("https://example.com");
        assert_eq!(
            endpoint(custom, Some("us-east-1"), false, false).as_deref(),
            Ok("https://example.com")
        );
        assert_eq!(
            endpoint(custom, None, false, false).as_deref(),
            Ok("https://example.com")
        );
        assert!(endpoint(custom, Some("us-east-1"), true, false).is_err());
        assert!(endpoint(custom, Some("us-east-1"), false, true).is_err());
        assert!(endpoint(None, None, false, false).is_err());
    }

    #[test]
    fn an_ec2_endpoint_of_its_own_comes_before_the_global_one() {
        use aws_types::service_config::LoadServiceConfig;
        #[derive(Debug)]
        struct Ec2Endpoint;
        impl LoadServiceConfig for Ec2Endpoint {
            fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
                (key.service_id() == "EC2" && key.env() == "AWS_ENDPOINT_URL")
                    .then(|| "http://127.0.0.1:4566".to_string())
            }
        }
        let region = aws_types::region::Region::new("us-east-1");
        let cfg = SdkConfig::builder()
            .region(region.clone())
            .service_config(Ec2Endpoint)
            .build();
        assert_eq!(
            configured_endpoint(&cfg).as_deref(),
            Some("http://127.0.0.1:4566")
        );
        let cfg = SdkConfig::builder().region(region).build();
        assert_eq!(configured_endpoint(&cfg), None);
    }

    #[test]
    fn a_request_is_written_as_ec2_s_query_form() {
        let mut p = Params::default();
        p.push("GroupId", "sg-1");
        p.permissions(&[IpPermission {
            ip_protocol: "tcp".into(),
            from_port: Some(443),
            to_port: Some(443),
            ip_ranges: vec![RuleSource::new("10.0.0.0/8", Some("agentbus --allow-cidr"))],
            ipv6_ranges: vec![RuleSource::new("2001:db8::/32", None)],
            groups: vec![RuleSource::new("sg-2", None)],
        }]);
        assert_eq!(
            p.encode("AuthorizeSecurityGroupIngress"),
            "Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId=sg-1\
             &IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=443&IpPermissions.1.ToPort=443\
             &IpPermissions.1.Groups.1.GroupId=sg-2\
             &IpPermissions.1.IpRanges.1.Description=agentbus%20--allow-cidr\
             &IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0%2F8\
             &IpPermissions.1.Ipv6Ranges.1.CidrIpv6=2001%3Adb8%3A%3A%2F32"
        );
        let mut p = Params::default();
        p.filters(&[Filter::new("group-name", "agentbus-dev-dash")]);
        p.tags("Tag", [("a", Some("b c")), ("d", None)].into_iter());
        assert_eq!(
            p.encode("X"),
            "Action=X&Version=2016-11-15&Filter.1.Name=group-name&Filter.1.Value.1=agentbus-dev-dash\
             &Tag.1.Key=a&Tag.1.Value=b%20c&Tag.2.Key=d"
        );
    }

    #[test]
    fn a_security_group_answer_is_read_with_its_rules_and_tags_and_unknown_fields_skipped() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSecurityGroupsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <securityGroupInfo>
    <item>
      <ownerId>123456789012</ownerId>
      <groupId>sg-1</groupId>
      <groupName>agentbus-dev-dash</groupName>
      <groupDescription>the dashboard &amp; MCP</groupDescription>
      <vpcId>vpc-1</vpcId>
      <securityGroupArn>arn:aws:ec2:us-east-1:123456789012:security-group/sg-1</securityGroupArn>
      <ipPermissions>
        <item>
          <ipProtocol>tcp</ipProtocol><fromPort>8080</fromPort><toPort>8080</toPort>
          <groups><item><userId>123456789012</userId><groupId>sg-2</groupId></item></groups>
          <ipRanges><item><cidrIp>203.0.113.0/24</cidrIp><description>agentbus --allow-cidr</description></item></ipRanges>
          <ipv6Ranges/>
          <prefixListIds><item><prefixListId>pl-1</prefixListId></item></prefixListIds>
        </item>
      </ipPermissions>
      <ipPermissionsEgress>
        <item><ipProtocol>-1</ipProtocol><groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item>
      </ipPermissionsEgress>
      <tagSet><item><key>agentbus:workspace</key><value>dev</value></item></tagSet>
    </item>
  </securityGroupInfo>
</DescribeSecurityGroupsResponse>"#;
        let root = parse(xml).expect("parses");
        let groups: Vec<SecurityGroup> = root
            .child("securityGroupInfo")
            .map(|s| s.children.iter().map(SecurityGroup::from_item).collect())
            .unwrap_or_default();
        assert_eq!(
            groups,
            vec![SecurityGroup {
                group_id: "sg-1".into(),
                group_name: "agentbus-dev-dash".into(),
                description: "the dashboard & MCP".into(),
                vpc_id: "vpc-1".into(),
                ip_permissions: vec![IpPermission {
                    ip_protocol: "tcp".into(),
                    from_port: Some(8080),
                    to_port: Some(8080),
                    ip_ranges: vec![RuleSource::new(
                        "203.0.113.0/24",
                        Some("agentbus --allow-cidr")
                    )],
                    ipv6_ranges: vec![],
                    groups: vec![RuleSource::new("sg-2", None)],
                }],
                ip_permissions_egress: vec![IpPermission {
                    ip_protocol: "-1".into(),
                    ip_ranges: vec![RuleSource::new("0.0.0.0/0", None)],
                    ..Default::default()
                }],
                tags: vec![("agentbus:workspace".into(), "dev".into())],
            }]
        );
    }

    #[test]
    fn an_error_answer_gives_its_code_and_message_and_a_bare_status_says_so() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidGroup.NotFound</Code><Message>The security group 'sg-1' does not exist</Message></Error></Errors><RequestID>r-1</RequestID></Response>"#;
        let e = error_of(400, xml);
        assert_eq!(e.code(), Some("InvalidGroup.NotFound"));
        assert_eq!(
            e.message(),
            Some("The security group 'sg-1' does not exist")
        );
        assert_eq!(
            e.to_string(),
            "InvalidGroup.NotFound: The security group 'sg-1' does not exist"
        );
        let e = error_of(503, b"");
        assert_eq!(e.code(), None);
        assert_eq!(e.to_string(), "HTTP 503 without an EC2 error document");
    }
}
