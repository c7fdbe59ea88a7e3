//! The workspace's ECR repository: where `agentbus image push` puts the server image.
//! Immutable tags, scan on push, AES-256 at rest, and a lifecycle policy that keeps the
//! last N images. It holds data (images), so only `--destroy-data` deletes it.

use async_trait::async_trait;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use serde_json::{Value, json};

use crate::aws::AwsClients;
use crate::cost::base::PRICES;
use crate::cost::{CostContext, CostError, CostLine};
use crate::engine::pair;
use crate::engine::permissions::Permissions;
use crate::tag_api;
use crate::workspace::Workspace;
use aws_sdk_ecr::operation::create_repository::CreateRepositoryError;
use aws_sdk_ecr::operation::delete_repository::DeleteRepositoryError;
use aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesError;
use aws_sdk_ecr::operation::get_lifecycle_policy::GetLifecyclePolicyError;

use crate::engine::{
    self, Desired, Edit, EngineError, Meta, Observed, Outputs, Resource, TagApi, found, gone,
};

/// Images a repository keeps by default.
pub const KEEP_IMAGES: u32 = 10;
/// What one compressed server image weighs, for the cost estimate (measured: see
/// docs/benchmarks/image.md).
pub const IMAGE_MB: f64 = 15.0;

/// `(account, region)` of an ECR registry host.
pub fn ecr_host(host: &str) -> Option<(&str, &str)> {
    let (account, rest) = host.split_once(".dkr.ecr.")?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then_some((account, region))
}

/// The ECR repository of an image reference (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:tag|@digest]`)
/// as `(account, region, repository)`; `None` for an image in another registry.
pub fn ecr_image(image: &str) -> Option<(&str, &str, &str)> {
    let (host, rest) = image.split_once('/')?;
    let (account, region) = ecr_host(host)?;
    let repo = rest.split(['@', ':']).next().filter(|r| !r.is_empty())?;
    Some((account, region, repo))
}

pub struct EcrRepository {
    pub meta: Meta,
    pub keep_images: u32,
    /// Tags of this repository's images the workspace runs: never expired, however many
    /// images are pushed after them (a Spot replacement must still pull them).
    pub running_tags: Vec<String>,
}

fn ecr_tag(k: &str, v: &str, name: &str) -> Result<Tag, EngineError> {
    Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| EngineError::Invalid(format!("{name}: {e}")))
}

tag_api! {
    /// ECR's tags, by the repository's `arn` output.
    pub struct EcrTags;
    read(aws, meta, o): "ListTagsForResource" => aws.ecr().list_tags_for_resource().resource_arn(o.out("arn")),
        |out| out.tags().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "TagResource" => aws.ecr().tag_resource().resource_arn(o.out("arn"))
        .set_tags(Some(tags.iter().map(|(k, v)| ecr_tag(k, v, &meta.name)).collect::<Result<_, _>>()?));
    untag(aws, meta, o, keys): "UntagResource" => aws.ecr().untag_resource().resource_arn(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

impl EcrRepository {
    /// The lifecycle policy document: keep each image the workspace runs, and expire all but
    /// the newest `keep_images` of the others. An image that matches a rule's tags is never
    /// expired by a rule of lower priority (ECR User Guide, "Lifecycle policy evaluation
    /// rules"), so a running image is kept by its own rule (count 1) whatever the last rule
    /// counts.
    pub fn lifecycle_policy(&self) -> Value {
        let mut tags: Vec<&String> = self.running_tags.iter().collect();
        tags.sort();
        tags.dedup();
        let mut rules: Vec<Value> = tags
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                json!({
                    "rulePriority": i + 1,
                    "description": format!("keep {tag}: the workspace runs it"),
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPatternList": [tag],
                        "countType": "imageCountMoreThan",
                        "countNumber": 1,
                    },
                    "action": { "type": "expire" },
                })
            })
            .collect();
        rules.push(json!({
            "rulePriority": tags.len() + 1,
            "description": format!("keep the last {} images", self.keep_images),
            "selection": {
                "tagStatus": "any",
                "countType": "imageCountMoreThan",
                "countNumber": self.keep_images,
            },
            "action": { "type": "expire" },
        }));
        json!({ "rules": rules })
    }

    fn aws_tags(&self) -> Result<Vec<Tag>, EngineError> {
        self.meta
            .tags
            .iter()
            .map(|(k, v)| ecr_tag(k, v, &self.meta.name))
            .collect()
    }

    async fn put_lifecycle(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.ecr()
            .put_lifecycle_policy()
            .repository_name(&self.meta.name)
            .lifecycle_policy_text(self.lifecycle_policy().to_string())
            .send()
            .await
            .map_err(|e| self.meta.fail("PutLifecyclePolicy", e))?;
        Ok(())
    }

    fn outputs(&self, o: Observed, arn: &str, uri: &str) -> Observed {
        o.output("arn", arn).output("uri", uri)
    }
}

#[async_trait]
impl Resource for EcrRepository {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn kind(&self) -> &'static str {
        "ecr repository"
    }
    fn permissions(&self, ws: &Workspace) -> Permissions {
        let repo = ws.arn("ecr", &format!("repository/{}", self.meta.name));
        Permissions::new()
            .read(
                &[
                    "ecr:DescribeRepositories",
                    "ecr:GetLifecyclePolicy",
                    "ecr:ListTagsForResource",
                ],
                &[&repo],
            )
            .write(
                &[
                    "ecr:CreateRepository",
                    "ecr:PutImageScanningConfiguration",
                    "ecr:PutImageTagMutability",
                    "ecr:PutLifecyclePolicy",
                    "ecr:DeleteRepository",
                    "ecr:TagResource",
                    "ecr:UntagResource",
                ],
                &[repo],
            )
    }
    fn tags(&self) -> Option<&dyn TagApi> {
        Some(&EcrTags)
    }
    fn data_bearing(&self) -> bool {
        true
    }
    fn desired(&self, _outputs: &Outputs) -> Desired {
        Desired::new()
            .set("tag_mutability", "IMMUTABLE")
            .set("scan_on_push", true)
            .set_replace("encryption", "AES256")
            .set("lifecycle_policy", self.lifecycle_policy())
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let m = &self.meta;
        let Some(out) = found(
            aws.ecr()
                .describe_repositories()
                .repository_names(&m.name)
                .send()
                .await,
            DescribeRepositoriesError::is_repository_not_found_exception,
            m,
            "DescribeRepositories",
        )?
        else {
            return Ok(None);
        };
        let Some(r) = out.repositories().first() else {
            return Ok(None);
        };
        let arn = r.repository_arn().unwrap_or_default().to_string();
        let uri = r.repository_uri().unwrap_or_default().to_string();
        let observed = Observed::default()
            .field(
                "tag_mutability",
                r.image_tag_mutability()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_else(|| "MUTABLE".into()),
            )
            .field(
                "scan_on_push",
                r.image_scanning_configuration()
                    .is_some_and(|c| c.scan_on_push()),
            )
            .field(
                "encryption",
                r.encryption_configuration()
                    .map(|c| c.encryption_type().as_str().to_string())
                    .unwrap_or_else(|| "AES256".into()),
            );
        Ok(Some(self.outputs(observed, &arn, &uri)))
    }
    async fn observe_more(
        &self,
        aws: &AwsClients,
        _found: &Observed,
    ) -> Result<Observed, EngineError> {
        let m = &self.meta;
        let policy = found(
            aws.ecr()
                .get_lifecycle_policy()
                .repository_name(&m.name)
                .send()
                .await,
            GetLifecyclePolicyError::is_lifecycle_policy_not_found_exception,
            m,
            "GetLifecyclePolicy",
        )?
        .and_then(|p| p.lifecycle_policy_text().map(super::normalize_json))
        .unwrap_or(Value::Null);
        Ok(Observed::default().field("lifecycle_policy", policy))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<(), EngineError> {
        let created = aws
            .ecr()
            .create_repository()
            .repository_name(&self.meta.name)
            .image_tag_mutability(ImageTagMutability::Immutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .encryption_configuration(
                EncryptionConfiguration::builder()
                    .encryption_type(EncryptionType::Aes256)
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.meta.name)))?,
            )
            .set_tags(Some(self.aws_tags()?))
            .send()
            .await;
        match created {
            Ok(_) => self.put_lifecycle(aws).await,
            // Created by an earlier `image push` or a run that stopped half-way: converge it.
            Err(e)
                if e.as_service_error()
                    .is_some_and(CreateRepositoryError::is_repository_already_exists_exception) =>
            {
                let current = engine::observe(self, aws).await?.unwrap_or_default();
                let all: Vec<String> = engine::desired_of(self, outputs)
                    .fields
                    .keys()
                    .cloned()
                    .collect();
                engine::update(self, aws, outputs, &current, &all).await?;
                Ok(())
            }
            Err(e) => Err(self.meta.fail("CreateRepository", e)),
        }
    }
    async fn update(&self, aws: &AwsClients, c: &Edit<'_>) -> Result<(), EngineError> {
        let changed = c.fields;
        for field in changed {
            match field.as_str() {
                "tag_mutability" => {
                    aws.ecr()
                        .put_image_tag_mutability()
                        .repository_name(&self.meta.name)
                        .image_tag_mutability(ImageTagMutability::Immutable)
                        .send()
                        .await
                        .map_err(|e| self.meta.fail("PutImageTagMutability", e))?;
                }
                "scan_on_push" => {
                    aws.ecr()
                        .put_image_scanning_configuration()
                        .repository_name(&self.meta.name)
                        .image_scanning_configuration(
                            ImageScanningConfiguration::builder()
                                .scan_on_push(true)
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| self.meta.fail("PutImageScanningConfiguration", e))?;
                }
                "lifecycle_policy" => self.put_lifecycle(aws).await?,
                // Encryption forces a replacement; the engine never gets here with it.
                _ => {}
            }
        }
        Ok(())
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        // Only reached with --destroy-data: the images go with the repository.
        gone(
            aws.ecr()
                .delete_repository()
                .repository_name(&self.meta.name)
                .force(true)
                .send()
                .await,
            DeleteRepositoryError::is_repository_not_found_exception,
            &self.meta,
            "DeleteRepository",
        )
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = PRICES.region(ctx.region)?;
        let gb = f64::from(self.keep_images) * IMAGE_MB / 1024.0;
        Ok(vec![CostLine::new(
            self.meta.id,
            &format!(
                "image storage ({} images of ~{IMAGE_MB:.0} MB kept)",
                self.keep_images
            ),
            gb,
            "GB-month",
            p.ecr_storage_gb_month,
        )])
    }
    fn notes(&self) -> Vec<String> {
        vec![
            "`agentbus image push` builds the server image and pushes it here; deploy then uses it"
                .into(),
        ]
    }
}
