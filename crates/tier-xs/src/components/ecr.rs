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
use crate::engine::{
    Desired, EngineError, Observed, Outputs, Resource, error_code, observe_created, own_tags,
    tags_value,
};
use crate::workspace::Tier;

use super::tag_changes;

/// Images a repository keeps by default.
pub const KEEP_IMAGES: u32 = 10;
/// What one compressed server image weighs, for the cost estimate (measured: see
/// docs/benchmarks/image.md).
pub const IMAGE_MB: f64 = 15.0;

pub struct EcrRepository {
    pub id: &'static str,
    pub tier: Tier,
    pub name: String,
    pub keep_images: u32,
    pub tags: Vec<(String, String)>,
}

fn err(name: &str, op: &str, e: impl std::error::Error) -> EngineError {
    EngineError::aws(name, op, e)
}

impl EcrRepository {
    /// The lifecycle policy document: expire all but the newest `keep_images` images.
    pub fn lifecycle_policy(&self) -> Value {
        json!({
            "rules": [{
                "rulePriority": 1,
                "description": format!("keep the last {} images", self.keep_images),
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": self.keep_images,
                },
                "action": { "type": "expire" },
            }]
        })
    }

    fn aws_tags(&self) -> Result<Vec<Tag>, EngineError> {
        self.tags
            .iter()
            .map(|(k, v)| {
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.name)))
            })
            .collect()
    }

    async fn put_lifecycle(&self, aws: &AwsClients) -> Result<(), EngineError> {
        aws.ecr()
            .put_lifecycle_policy()
            .repository_name(&self.name)
            .lifecycle_policy_text(self.lifecycle_policy().to_string())
            .send()
            .await
            .map_err(|e| err(&self.name, "PutLifecyclePolicy", e))?;
        Ok(())
    }

    fn outputs(&self, o: Observed, arn: &str, uri: &str) -> Observed {
        o.output("arn", arn).output("uri", uri)
    }
}

#[async_trait]
impl Resource for EcrRepository {
    fn id(&self) -> &'static str {
        self.id
    }
    fn kind(&self) -> &'static str {
        "ecr repository"
    }
    fn name(&self) -> String {
        self.name.clone()
    }
    fn tier(&self) -> Tier {
        self.tier
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
            .set("tags", tags_value(&self.tags))
    }
    async fn observe(&self, aws: &AwsClients) -> Result<Option<Observed>, EngineError> {
        let out = match aws
            .ecr()
            .describe_repositories()
            .repository_names(&self.name)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if error_code(&e) == Some("RepositoryNotFoundException") => return Ok(None),
            Err(e) => return Err(err(&self.name, "DescribeRepositories", e)),
        };
        let Some(r) = out.repositories().first() else {
            return Ok(None);
        };
        let arn = r.repository_arn().unwrap_or_default().to_string();
        let uri = r.repository_uri().unwrap_or_default().to_string();
        let policy = match aws
            .ecr()
            .get_lifecycle_policy()
            .repository_name(&self.name)
            .send()
            .await
        {
            Ok(p) => p
                .lifecycle_policy_text()
                .map(super::normalize_json)
                .unwrap_or(Value::Null),
            Err(e) if error_code(&e) == Some("LifecyclePolicyNotFoundException") => Value::Null,
            Err(e) => return Err(err(&self.name, "GetLifecyclePolicy", e)),
        };
        let tags = aws
            .ecr()
            .list_tags_for_resource()
            .resource_arn(&arn)
            .send()
            .await
            .map_err(|e| err(&self.name, "ListTagsForResource", e))?;
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
            )
            .field("lifecycle_policy", policy)
            .field(
                "tags",
                own_tags(tags.tags().iter().map(|t| (t.key(), t.value()))),
            );
        Ok(Some(self.outputs(observed, &arn, &uri)))
    }
    async fn create(&self, aws: &AwsClients, outputs: &Outputs) -> Result<Observed, EngineError> {
        let created = aws
            .ecr()
            .create_repository()
            .repository_name(&self.name)
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
                    .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.name)))?,
            )
            .set_tags(Some(self.aws_tags()?))
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Created by an earlier `image push` or a run that stopped half-way: converge it.
            Err(e) if error_code(&e) == Some("RepositoryAlreadyExistsException") => {
                let current = self.observe(aws).await?.unwrap_or_default();
                let all: Vec<String> = self.desired(outputs).fields.keys().cloned().collect();
                return self.update(aws, outputs, &current, &all).await;
            }
            Err(e) => return Err(err(&self.name, "CreateRepository", e)),
        }
        self.put_lifecycle(aws).await?;
        observe_created(self, aws).await
    }
    async fn update(
        &self,
        aws: &AwsClients,
        _outputs: &Outputs,
        current: &Observed,
        changed: &[String],
    ) -> Result<Observed, EngineError> {
        for field in changed {
            match field.as_str() {
                "tag_mutability" => {
                    aws.ecr()
                        .put_image_tag_mutability()
                        .repository_name(&self.name)
                        .image_tag_mutability(ImageTagMutability::Immutable)
                        .send()
                        .await
                        .map_err(|e| err(&self.name, "PutImageTagMutability", e))?;
                }
                "scan_on_push" => {
                    aws.ecr()
                        .put_image_scanning_configuration()
                        .repository_name(&self.name)
                        .image_scanning_configuration(
                            ImageScanningConfiguration::builder()
                                .scan_on_push(true)
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| err(&self.name, "PutImageScanningConfiguration", e))?;
                }
                "lifecycle_policy" => self.put_lifecycle(aws).await?,
                "tags" => {
                    let arn = current.outputs.get("arn").cloned().unwrap_or_default();
                    let (set, remove) =
                        tag_changes(current.fields.get("tags"), Some(&tags_value(&self.tags)));
                    if !set.is_empty() {
                        let tags = set
                            .iter()
                            .map(|(k, v)| Tag::builder().key(k).value(v).build())
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| EngineError::Invalid(format!("{}: {e}", self.name)))?;
                        aws.ecr()
                            .tag_resource()
                            .resource_arn(&arn)
                            .set_tags(Some(tags))
                            .send()
                            .await
                            .map_err(|e| err(&self.name, "TagResource", e))?;
                    }
                    if !remove.is_empty() {
                        aws.ecr()
                            .untag_resource()
                            .resource_arn(&arn)
                            .set_tag_keys(Some(remove))
                            .send()
                            .await
                            .map_err(|e| err(&self.name, "UntagResource", e))?;
                    }
                }
                // Encryption forces a replacement; the engine never gets here with it.
                _ => {}
            }
        }
        Ok(Observed {
            fields: current.fields.clone(),
            outputs: current.outputs.clone(),
        })
    }
    async fn delete(&self, aws: &AwsClients, _current: &Observed) -> Result<(), EngineError> {
        // Only reached with --destroy-data: the images go with the repository.
        match aws
            .ecr()
            .delete_repository()
            .repository_name(&self.name)
            .force(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("RepositoryNotFoundException") => Ok(()),
            Err(e) => Err(err(&self.name, "DeleteRepository", e)),
        }
    }
    fn monthly_cost(&self, ctx: &CostContext<'_>) -> Result<Vec<CostLine>, CostError> {
        let p = PRICES.region(ctx.region)?;
        let gb = f64::from(self.keep_images) * IMAGE_MB / 1024.0;
        Ok(vec![CostLine::new(
            self.id,
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
