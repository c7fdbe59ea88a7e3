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

use tier_xs::engine::EngineError;
use tier_xs::tag_api;

use crate::aws::LargeAws;

tag_api! {
    /// RDS's tags, by the resource's `arn` output.
    pub struct RdsTags;
    read(aws, meta, o): "ListTagsForResource" => future aws.rds().list_tags_for_resource(o.out("arn")),
        |tags| tags;
    tag(aws, meta, o, tags): "AddTagsToResource" => future aws.rds().add_tags_to_resource(o.out("arn"), tags);
    untag(aws, meta, o, keys): "RemoveTagsFromResource" => future aws.rds().remove_tags_from_resource(o.out("arn"), keys);
}

/// An RDS call that failed, for the messages of the waits.
pub fn rds_error(e: impl std::error::Error) -> EngineError {
    EngineError::Invalid(tier_xs::engine::error_text(&e))
}
