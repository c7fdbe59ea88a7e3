//! What a deployer may do with each resource: every resource kind says which IAM actions its
//! own calls need, on which ARNs, to plan it (`read`: observe it and its tags) and to change it
//! (`write`: create, update, delete, tag). The deployer's policy is the union over a tier's
//! resources (`ops::deployer_policy`); `components::iam::documents` writes it out.

use serde_json::Value;

/// IAM actions on resources, under an optional condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    /// An IAM `Condition` block.
    pub condition: Option<Value>,
}

/// What planning and changing one resource (or one part of the deploy) needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Permissions {
    /// Planning: observing the resource and its tags.
    pub read: Vec<Grant>,
    /// Creating, changing, tagging and deleting it.
    pub write: Vec<Grant>,
}

fn grant<R: AsRef<str>>(actions: &[&str], resources: &[R], condition: Option<Value>) -> Grant {
    Grant {
        actions: actions.iter().map(|a| a.to_string()).collect(),
        resources: resources.iter().map(|r| r.as_ref().to_string()).collect(),
        condition,
    }
}

impl Permissions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds actions planning needs.
    pub fn read<R: AsRef<str>>(mut self, actions: &[&str], resources: &[R]) -> Self {
        self.read.push(grant(actions, resources, None));
        self
    }

    /// Adds actions planning needs, allowed only under `condition`.
    pub fn read_when<R: AsRef<str>>(
        mut self,
        actions: &[&str],
        resources: &[R],
        condition: Value,
    ) -> Self {
        self.read.push(grant(actions, resources, Some(condition)));
        self
    }

    /// Adds actions changing the resource needs.
    pub fn write<R: AsRef<str>>(mut self, actions: &[&str], resources: &[R]) -> Self {
        self.write.push(grant(actions, resources, None));
        self
    }

    /// Adds actions changing the resource needs, allowed only under `condition`.
    pub fn write_when<R: AsRef<str>>(
        mut self,
        actions: &[&str],
        resources: &[R],
        condition: Value,
    ) -> Self {
        self.write.push(grant(actions, resources, Some(condition)));
        self
    }

    /// Both sets of `other` added to these.
    pub fn and(mut self, other: Permissions) -> Self {
        self.read.extend(other.read);
        self.write.extend(other.write);
        self
    }

    /// Every action named, `service:Action`.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.read
            .iter()
            .chain(&self.write)
            .flat_map(|g| g.actions.iter().map(String::as_str))
    }
}

/// Actions that do not support resource-level permissions take `*`.
pub fn any() -> Vec<String> {
    vec!["*".to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_add_up_and_name_every_action() {
        let p = Permissions::new()
            .read(&["s3:GetBucketTagging"], &["arn:b"])
            .and(
                Permissions::new()
                    .write(&["s3:CreateBucket"], &["arn:b"])
                    .read_when(&["s3:ListBucket"], &["arn:b"], serde_json::json!({"c": 1})),
            );
        assert_eq!(p.read.len(), 2);
        assert_eq!(p.write.len(), 1);
        assert_eq!(p.read[1].condition, Some(serde_json::json!({"c": 1})));
        assert_eq!(
            p.actions().collect::<Vec<_>>(),
            ["s3:GetBucketTagging", "s3:ListBucket", "s3:CreateBucket"]
        );
        assert_eq!(any(), ["*"]);
    }
}
