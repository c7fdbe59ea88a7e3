//! An S3 bucket as a resource: versioning, default encryption, all four public-access
//! blocks, lifecycle rules, a TLS-only bucket policy and the workspace's tags. A bucket holds
//! data: only `--destroy-data` deletes it (every object version first), and in `prod` it is
//! kept even then.

use crate::aws::SmallAws;
use async_trait::async_trait;
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::operation::delete_bucket::DeleteBucketError;
use aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionError;
use aws_sdk_s3::operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationError;
use aws_sdk_s3::operation::get_bucket_policy::GetBucketPolicyError;
use aws_sdk_s3::operation::get_bucket_tagging::GetBucketTaggingError;
use aws_sdk_s3::operation::get_public_access_block::GetPublicAccessBlockError;
use aws_sdk_s3::operation::head_bucket::HeadBucketError;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, Transition,
    TransitionStorageClass, VersioningConfiguration,
};
use serde_json::{Value, json};
use tier_xs::aws::AwsClients;
use tier_xs::cost::{CostContext, CostError, CostLine};
use tier_xs::engine::permissions::Permissions;
use tier_xs::engine::{
    Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, codes, found, gone,
    made, unmodeled,
};
use tier_xs::workspace::Workspace;
use tier_xs::workspace::partition_of;

/// Moving objects to a cheaper storage class after `days`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tiering {
    pub days: i32,
    pub class: TransitionStorageClass,
}

/// The lifecycle of a bucket's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifecycle {
    /// Old versions (overwritten or deleted objects) go after this many days.
    pub noncurrent_expire_days: i32,
    /// Unfinished multipart uploads are aborted after this many days.
    pub abort_multipart_days: i32,
    pub transitions: Vec<Tiering>,
}

/// Which part of the usage profile a bucket's storage and requests come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketUsage {
    Artifacts,
    Timeline,
}

pub struct Bucket {
    pub meta: Meta,
    pub region: String,
    pub lifecycle: Lifecycle,
    /// Deny every request not made over TLS. Off only against a plain-HTTP endpoint, where
    /// the policy would lock every client out.
    pub tls_only: bool,
    /// `prod`: kept even with `--destroy-data`.
    pub retain: bool,
    pub usage: BucketUsage,
}

const LIFECYCLE_RULE_ID: &str = "agentbus";

/// What the plan says when it turns a bucket's versioning on.
pub const VERSIONING_SETTLES: &str = "versioning takes up to 15 minutes to settle: until then S3 may answer 404 for objects written meanwhile (artifacts and timeline entries just written may read as missing)";

fn build<T, E: std::fmt::Display>(r: Result<T, E>, name: &str) -> Result<T, EngineError> {
    r.map_err(|e| EngineError::Invalid(format!("{name}: {e}")))
}

/// Every tag of a bucket; none when it has no tag set.
async fn bucket_tags(aws: &AwsClients, meta: &Meta) -> Result<Vec<(String, String)>, EngineError> {
    let out = found(
        aws.s3()
            .get_bucket_tagging()
            .bucket(&meta.name)
            .send()
            .await,
        unmodeled::<GetBucketTaggingError>(codes::NO_TAGS),
        meta,
        "GetBucketTagging",
    )?;
    Ok(out
        .map(|t| {
            t.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default())
}

/// Replaces a bucket's whole tag set with `set`.
async fn put_bucket_tags(
    aws: &AwsClients,
    meta: &Meta,
    set: &[(String, String)],
) -> Result<(), EngineError> {
    let tags = set
        .iter()
        .map(|(k, v)| build(Tag::builder().key(k).value(v).build(), &meta.name))
        .collect::<Result<Vec<_>, _>>()?;
    aws.s3()
        .put_bucket_tagging()
        .bucket(&meta.name)
        .tagging(build(
            Tagging::builder().set_tag_set(Some(tags)).build(),
            &meta.name,
        )?)
        .send()
        .await
        .map_err(|e| meta.fail("PutBucketTagging", e))?;
    Ok(())
}

/// S3's tags, by bucket name. S3 replaces the whole set on every put, so both changes read
/// the current set first and keep the rest (a user's cost centre).
pub struct S3Tags;

#[async_trait]
impl TagApi for S3Tags {
    async fn read(
        &self,
        aws: &AwsClients,
        meta: &Meta,
        _observed: &Observed,
    ) -> Result<Vec<(String, String)>, EngineError> {
        bucket_tags(aws, meta).await
    }
    async fn tag(
        &self,
        aws: &AwsClients,
        meta: &Meta,
        _observed: &Observed,
        tags: &[(String, String)],
    ) -> Result<(), EngineError> {
        let mut set = bucket_tags(aws, meta).await?;
        set.retain(|(k, _)| !tags.iter().any(|(t, _)| t == k));
        set.extend(tags.iter().cloned());
        put_bucket_tags(aws, meta, &set).await
    }
    async fn untag(
        &self,
        aws: &AwsClients,
        meta: &Meta,
        _observed: &Observed,
        keys: &[String],
    ) -> Result<(), EngineError> {
        let mut set = bucket_tags(aws, meta).await?;
        set.retain(|(k, _)| !keys.contains(k));
        if !set.is_empty() {
            return put_bucket_tags(aws, meta, &set).await;
        }
        // No tags left: delete the tag set rather than put an empty one.
        aws.s3()
            .delete_bucket_tagging()
            .bucket(&meta.name)
            .send()
            .await
            .map_err(|e| meta.fail("DeleteBucketTagging", e))?;
        Ok(())
    }
}

impl Bucket {
    pub fn arn(&self) -> String {
        format!("arn:{}:s3:::{}", partition_of(&self.region), self.meta.name)
    }

    /// The TLS-only policy document.
    pub fn policy(&self) -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [self.arn(), format!("{}/*", self.arn())],
                "Condition": { "Bool": { "aws:SecureTransport": "false" } },
            }]
        })
    }

    fn lifecycle_value(l: &Lifecycle) -> Value {
        json!({
            "noncurrent_versions_expire_after_days": l.noncurrent_expire_days,
            "incomplete_uploads_aborted_after_days": l.abort_multipart_days,
            "transitions": l.transitions.iter()
                .map(|t| format!("{} after {} days", t.class.as_str(), t.days))
                .collect::<Vec<_>>(),
        })
    }

    fn lifecycle_config(&self) -> Result<BucketLifecycleConfiguration, EngineError> {
        let l = &self.lifecycle;
        let mut rule = LifecycleRule::builder()
            .id(LIFECYCLE_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(l.noncurrent_expire_days)
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(l.abort_multipart_days)
                    .build(),
            );
        for t in &l.transitions {
            rule = rule.transitions(
                Transition::builder()
                    .days(t.days)
                    .storage_class(t.class.clone())
                    .build(),
            );
        }
        build(
            BucketLifecycleConfiguration::builder()
                .rules(build(rule.build(), &self.meta.name)?)
                .build(),
            &self.meta.name,
        )
    }

    async fn put_versioning(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.s3()
            .put_bucket_versioning()
            .bucket(&self.meta.name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.meta.fail("PutBucketVersioning", e))?;
        Ok(())
    }

    async fn put_encryption(&self, aws: &AwsClients) -> Result<(), EngineError> {
        let by_default = build(
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::Aes256)
                .build(),
            &self.meta.name,
        )?;
        let config = build(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .build(),
                )
                .build(),
            &self.meta.name,
        )?;
        aws.s3()
            .put_bucket_encryption()
            .bucket(&self.meta.name)
            .server_side_encryption_configuration(config)
            .send()
            .await
            .map_err(|e| self.meta.fail("PutBucketEncryption", e))?;
        Ok(())
    }

    async fn put_public_access_block(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.s3()
            .put_public_access_block()
            .bucket(&self.meta.name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.meta.fail("PutPublicAccessBlock", e))?;
        Ok(())
    }

    async fn put_lifecycle(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.s3()
            .put_bucket_lifecycle_configuration()
            .bucket(&self.meta.name)
            .lifecycle_configuration(self.lifecycle_config()?)
            .send()
            .await
            .map_err(|e| self.meta.fail("PutBucketLifecycleConfiguration", e))?;
        Ok(())
    }

    async fn put_policy(&self, aws: &AwsClients) -> Result<(), EngineError> {
        if self.tls_only {
            aws.s3()
                .put_bucket_policy()
                .bucket(&self.meta.name)
                .policy(self.policy().to_string())
                .send()
                .await
                .map_err(|e| self.meta.fail("PutBucketPolicy", e))?;
        } else {
            aws.s3()
                .delete_bucket_policy()
                .bucket(&self.meta.name)
                .send()
                .await
                .map_err(|e| self.meta.fail("DeleteBucketPolicy", e))?;
        }
        Ok(())
    }

    /// Sets our tags on a new bucket (or one an interrupted apply left behind).
    async fn put_tags(&self, aws: &AwsClients) -> Result<(), EngineError> {
        // Keep tags that are not ours (a user's cost centre): S3 replaces the whole set.
        let mut set = bucket_tags(aws, &self.meta).await?;
        set.retain(|(k, _)| !k.starts_with("agentbus:"));
        set.extend(self.meta.tags.iter().cloned());
        put_bucket_tags(aws, &self.meta, &set).await
    }

    /// Deletes every object version and delete marker, a thousand at a time.
    async fn empty(&self, aws: &AwsClients) -> Result<u64, EngineError> {
        let mut deleted = 0;
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = aws
                .s3()
                .list_object_versions()
                .bucket(&self.meta.name)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|e| self.meta.fail("ListObjectVersions", e))?;
            let mut ids = Vec::new();
            for v in page.versions() {
                ids.push((v.key().unwrap_or_default(), v.version_id()));
            }
            for m in page.delete_markers() {
                ids.push((m.key().unwrap_or_default(), m.version_id()));
            }
            if !ids.is_empty() {
                let objects = ids
                    .iter()
                    .map(|(k, v)| {
                        build(
                            ObjectIdentifier::builder()
                                .key(*k)
                                .set_version_id(v.map(str::to_string))
                                .build(),
                            &self.meta.name,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                deleted += objects.len() as u64;
                aws.s3()
                    .delete_objects()
                    .bucket(&self.meta.name)
                    .delete(build(
                        Delete::builder()
                            .set_objects(Some(objects))
                            .quiet(true)
                            .build(),
                        &self.meta.name,
                    )?)
                    .send()
                    .await
                    .map_err(|e| self.meta.fail("DeleteObjects", e))?;
            }
            if page.is_truncated() != Some(true) {
                return Ok(deleted);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
        }
    }
}

#[async_trait]
impl Resource for Bucket {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "s3 bucket"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let bucket = format!("arn:{}:s3:::{}", ws.partition, self.meta.name);
        let objects = format!("{bucket}/*");
        // S3's actions are named apart from its API's operations: HeadBucket is ListBucket,
        // the encryption configuration is GetEncryptionConfiguration, and so on.
        Permissions::new()
            .read(
                &[
                    "s3:ListBucket",
                    "s3:GetBucketVersioning",
                    "s3:GetEncryptionConfiguration",
                    "s3:GetBucketPublicAccessBlock",
                    "s3:GetLifecycleConfiguration",
                    "s3:GetBucketPolicy",
                    "s3:GetBucketTagging",
                ],
                &[&bucket],
            )
            .write(
                &[
                    "s3:CreateBucket",
                    "s3:PutBucketVersioning",
                    "s3:PutEncryptionConfiguration",
                    "s3:PutBucketPublicAccessBlock",
                    "s3:PutLifecycleConfiguration",
                    "s3:PutBucketPolicy",
                    "s3:DeleteBucketPolicy",
                    "s3:PutBucketTagging",
                    "s3:DeleteBucket",
                    // `--destroy-data` empties the bucket first.
                    "s3:ListBucketVersions",
                ],
                &[bucket],
            )
            .write(&["s3:DeleteObject", "s3:DeleteObjectVersion"], &[objects])
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&S3Tags)
    }
    fn data_bearing(&self) -> bool {
        true
    }
    fn protected(&self) -> Option<String> {
        self.retain.then(|| {
            "prod buckets are retained: kept. Empty and delete it yourself if you mean it".into()
        })
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("versioning", "Enabled")
            .set("encryption", "AES256")
            .set(
                "public_access_block",
                "all four blocks on (ACLs blocked and ignored, public policies blocked, public buckets restricted)",
            )
            .set("lifecycle", Self::lifecycle_value(&self.lifecycle))
            .set(
                "policy",
                if self.tls_only {
                    self.policy()
                } else {
                    Value::Null
                },
            )
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let name = &m.name;
        let head = aws.s3().head_bucket().bucket(name).send().await;
        // A 404 that came with a body (some S3-compatible stores send one) is absence too.
        if head
            .as_ref()
            .err()
            .and_then(|e| e.raw_response())
            .is_some_and(|r| r.status().as_u16() == 404)
        {
            return Ok(None);
        }
        if found(head, HeadBucketError::is_not_found, m, "HeadBucket")?.is_none() {
            return Ok(None);
        }
        Ok(Some(
            Observed::default()
                .output("name", name.clone())
                .output("arn", self.arn()),
        ))
    }
    /// The bucket's five configurations, read at once.
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        let m = &self.meta;
        let name = &m.name;
        let s3 = aws.s3();
        let (versioning, encryption, pab, lifecycle, policy) = tokio::join!(
            s3.get_bucket_versioning().bucket(name).send(),
            s3.get_bucket_encryption().bucket(name).send(),
            s3.get_public_access_block().bucket(name).send(),
            s3.get_bucket_lifecycle_configuration().bucket(name).send(),
            s3.get_bucket_policy().bucket(name).send(),
        );
        let versioning = versioning
            .map_err(|e| m.fail("GetBucketVersioning", e))?
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "never enabled".into());
        let encryption = found(
            encryption,
            unmodeled::<GetBucketEncryptionError>(codes::NO_ENCRYPTION),
            m,
            "GetBucketEncryption",
        )?
        .and_then(|o| {
            o.server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| d.sse_algorithm().as_str().to_string())
        })
        .unwrap_or_else(|| "none".into());
        let pab = match found(
            pab,
            unmodeled::<GetPublicAccessBlockError>(codes::NO_PUBLIC_ACCESS_BLOCK),
            m,
            "GetPublicAccessBlock",
        )? {
            Some(o) => match o.public_access_block_configuration() {
                Some(c)
                    if c.block_public_acls() == Some(true)
                        && c.ignore_public_acls() == Some(true)
                        && c.block_public_policy() == Some(true)
                        && c.restrict_public_buckets() == Some(true) =>
                {
                    "all four blocks on (ACLs blocked and ignored, public policies blocked, public buckets restricted)".to_string()
                }
                Some(c) => format!(
                    "block_public_acls={:?} ignore_public_acls={:?} block_public_policy={:?} restrict_public_buckets={:?}",
                    c.block_public_acls(),
                    c.ignore_public_acls(),
                    c.block_public_policy(),
                    c.restrict_public_buckets()
                ),
                None => "none".into(),
            },
            None => "none".into(),
        };
        let lifecycle = match found(
            lifecycle,
            unmodeled::<GetBucketLifecycleConfigurationError>(codes::NO_LIFECYCLE),
            m,
            "GetBucketLifecycleConfiguration",
        )? {
            Some(o) => o
                .rules()
                .iter()
                .find(|r| r.id() == Some(LIFECYCLE_RULE_ID))
                .map(|r| {
                    Self::lifecycle_value(&Lifecycle {
                        noncurrent_expire_days: r
                            .noncurrent_version_expiration()
                            .and_then(|n| n.noncurrent_days())
                            .unwrap_or(0),
                        abort_multipart_days: r
                            .abort_incomplete_multipart_upload()
                            .and_then(|a| a.days_after_initiation())
                            .unwrap_or(0),
                        transitions: r
                            .transitions()
                            .iter()
                            .filter_map(|t| {
                                Some(Tiering {
                                    days: t.days()?,
                                    class: t.storage_class()?.clone(),
                                })
                            })
                            .collect(),
                    })
                })
                .unwrap_or(Value::Null),
            None => Value::Null,
        };
        let policy = found(
            policy,
            unmodeled::<GetBucketPolicyError>(codes::NO_POLICY),
            m,
            "GetBucketPolicy",
        )?
        .and_then(|o| o.policy().map(tier_xs::components::normalize_json))
        .unwrap_or(Value::Null);
        Ok(Observed::default()
            .field("versioning", versioning)
            .field("encryption", encryption)
            .field("public_access_block", pab)
            .field("lifecycle", lifecycle)
            .field("policy", policy))
    }
    async fn create(&self, aws: &AwsClients, _outputs: &Outputs) -> Result<(), EngineError> {
        let m = &self.meta;
        let mut req = aws.s3().create_bucket().bucket(&m.name);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        let res = req.send().await;
        if let Err(e) = &res
            && e.as_service_error()
                .is_some_and(CreateBucketError::is_bucket_already_exists)
        {
            return Err(EngineError::Invalid(format!(
                "{}: the name is taken by another AWS account; bucket names are global",
                m.name
            )));
        }
        // Ours already (an interrupted apply): converge it below.
        made(
            res,
            CreateBucketError::is_bucket_already_owned_by_you,
            m,
            "CreateBucket",
        )?;
        // The public-access block first, so the bucket is never open.
        self.put_public_access_block(aws).await?;
        self.put_encryption(aws).await?;
        self.put_versioning(aws).await?;
        self.put_lifecycle(aws).await?;
        if self.tls_only {
            self.put_policy(aws).await?;
        }
        self.put_tags(aws).await
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let changed = c.fields;
        for field in changed {
            match field.as_str() {
                "versioning" => self.put_versioning(aws).await?,
                "encryption" => self.put_encryption(aws).await?,
                "public_access_block" => self.put_public_access_block(aws).await?,
                "lifecycle" => self.put_lifecycle(aws).await?,
                "policy" => self.put_policy(aws).await?,
                _ => {}
            }
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        // Only reached with --destroy-data: the objects and their versions go first.
        let n = self.empty(aws).await?;
        tracing::info!(bucket = %self.meta.name, versions = n, "emptied");
        gone(
            aws.s3()
                .delete_bucket()
                .bucket(&self.meta.name)
                .send()
                .await,
            unmodeled::<DeleteBucketError>(codes::NO_SUCH_BUCKET),
            &self.meta,
            "DeleteBucket",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let c = crate::cost::small_cost(ctx)?;
        let (p, u) = (c.prices, c.usage);
        Ok(match self.usage {
            BucketUsage::Artifacts => vec![
                CostLine::new(
                    self.meta.id,
                    "standard storage",
                    u.artifacts_gb,
                    "GB-month",
                    p.s3_standard_gb_month,
                ),
                CostLine::new(
                    self.meta.id,
                    "PUT/LIST requests",
                    u.s3_puts / 1e3,
                    "k requests",
                    p.s3_put_1k,
                ),
                CostLine::new(
                    self.meta.id,
                    "GET requests",
                    u.s3_gets / 1e3,
                    "k requests",
                    p.s3_get_1k,
                ),
            ],
            // One small JSON object per record.
            BucketUsage::Timeline => vec![
                CostLine::new(
                    self.meta.id,
                    "records (one PUT each)",
                    u.timeline_records / 1e3,
                    "k requests",
                    p.s3_put_1k,
                ),
                CostLine::new(
                    self.meta.id,
                    "standard storage",
                    u.timeline_records * c.xs_usage.event_kb / 1_048_576.0,
                    "GB-month",
                    p.s3_standard_gb_month,
                ),
            ],
        })
    }
    fn change_notes(&self, fields: &[String]) -> Vec<String> {
        if fields.iter().any(|f| f == "versioning") {
            // "Wait 15 minutes after enabling versioning before issuing write operations (PUT
            // or DELETE)": until it has propagated, S3 may answer 404 for objects written
            // meanwhile (S3 User Guide, "Enabling versioning on buckets").
            vec![VERSIONING_SETTLES.into()]
        } else {
            Vec::new()
        }
    }
    fn notes(&self) -> Vec<String> {
        if self.tls_only {
            Vec::new()
        } else {
            vec!["no TLS-only bucket policy: the endpoint is plain HTTP, where that policy would refuse every request".into()]
        }
    }
}
