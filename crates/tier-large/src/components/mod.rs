//! The large tier's resource kinds, one per module: the database's subnet group, the Aurora
//! cluster and its instances (RDS resources, sharing RDS's tag API), the autoscalers of the
//! dashboard's tasks and the database's readers (scalable targets and target-tracking
//! policies), and the account's Transaction Search setting.

pub mod cluster;
pub mod instance;
pub mod scalable_target;
pub mod scaling_policy;
pub mod subnet_group;
pub mod transaction_search;

use aws_sdk_rds::types::Tag;
use tier_xs::engine::{EngineError, pair};
use tier_xs::tag_api;

use crate::aws::LargeAws;

fn rds_tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// A resource's tags as RDS takes them at creation.
pub fn rds_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter().map(|(k, v)| rds_tag(k, v)).collect()
}

tag_api! {
    /// RDS's tags, by the resource's `arn` output.
    pub struct RdsTags;
    read(aws, meta, o): "ListTagsForResource" => aws.rds().list_tags_for_resource().resource_name(o.out("arn")),
        |out| out.tag_list().iter().map(|t| pair(t.key(), t.value())).collect();
    tag(aws, meta, o, tags): "AddTagsToResource" => aws.rds().add_tags_to_resource().resource_name(o.out("arn"))
        .set_tags(Some(rds_tags(tags)));
    untag(aws, meta, o, keys): "RemoveTagsFromResource" => aws.rds().remove_tags_from_resource().resource_name(o.out("arn"))
        .set_tag_keys(Some(keys.to_vec()));
}

/// An RDS call that failed, for the messages of the waits.
pub fn rds_error(e: impl std::error::Error) -> EngineError {
    EngineError::Invalid(tier_xs::engine::error_text(&e))
}
