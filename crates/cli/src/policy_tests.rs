//! The deployer's policy cannot drift: the documents in `docs/iam/` are what `iam-policy`
//! prints, and every AWS call the deploy's code makes has its permission in the policy of the
//! top tier. (The end-to-end module `iam` runs the deploy under IAM enforcement.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tier_xs::engine::Permissions;
use tier_xs::workspace::{Env, Tier, Workspace};

use crate::commands::ladder;

/// The workspace the documents in `docs/iam/` are written for.
fn documented() -> Workspace {
    Workspace::new(
        Env::new("dev").expect("a valid env"),
        "123456789012",
        "us-east-1",
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_documented_policies_are_what_iam_policy_prints() {
    for tier in [Tier::ExtraSmall, Tier::Small, Tier::Medium, Tier::Large] {
        let docs = tier_xs::ops::deployer_policy(&ladder(), tier, &documented())
            .expect("a policy for every tier of the build");
        let text = format!("{}\n", serde_json::to_string_pretty(&docs).expect("JSON"));
        let path = root().join(format!("docs/iam/{}.json", tier.name()));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is not what the code grants: regenerate it with\n  cargo run -q -p cli -- iam-policy --tier {} --env dev --account 123456789012 --region us-east-1 > docs/iam/{}.json",
            path.display(),
            tier.short(),
            tier.name()
        );
    }
}

#[test]
fn every_document_fits_iam_s_size_limit_for_a_managed_policy() {
    for tier in [Tier::ExtraSmall, Tier::Small, Tier::Medium, Tier::Large] {
        for doc in tier_xs::ops::deployer_policy(&ladder(), tier, &documented()).expect("a policy")
        {
            let size = doc
                .to_string()
                .chars()
                .filter(|c| !c.is_whitespace())
                .count();
            assert!(
                size <= tier_xs::components::iam::MANAGED_POLICY_LIMIT,
                "{size}"
            );
        }
    }
}

#[test]
fn a_lower_tier_s_policy_reads_every_tier_but_changes_only_its_own() {
    let ws = documented();
    let xs =
        tier_xs::ops::deployer_permissions(&ladder(), Tier::ExtraSmall, &ws).expect("a policy");
    let medium =
        tier_xs::ops::deployer_permissions(&ladder(), Tier::Medium, &ws).expect("a policy");
    let actions = |p: &[tier_xs::engine::permissions::Grant]| -> BTreeSet<String> {
        p.iter().flat_map(|g| g.actions.clone()).collect()
    };
    // Plans observe the state machine whatever the target...
    assert!(actions(&xs.read).contains("states:DescribeStateMachine"));
    // ...but only a medium policy may create one.
    assert!(!actions(&xs.write).contains("states:CreateStateMachine"));
    assert!(actions(&medium.write).contains("states:CreateStateMachine"));
    assert!(actions(&xs.write).contains("dynamodb:CreateTable"));
}

/// The SDK accessors of `AwsClients` (and the names the code binds clients to) and the IAM
/// service prefix of each.
const SERVICES: &[(&str, &str)] = &[
    ("dynamodb", "dynamodb"),
    ("ddb", "dynamodb"),
    ("ec2", "ec2"),
    ("ecs", "ecs"),
    ("iam", "iam"),
    ("secrets", "secretsmanager"),
    ("events", "events"),
    ("logs", "logs"),
    ("budgets", "budgets"),
    ("ecr", "ecr"),
    ("s3", "s3"),
    ("elb", "elasticloadbalancing"),
    ("sqs", "sqs"),
    ("sfn", "states"),
    ("cloudwatch", "cloudwatch"),
    ("sns", "sns"),
    ("rds", "rds"),
    ("autoscaling", "application-autoscaling"),
];

/// Operations whose IAM action has another name (S3's and Budgets' mostly, from their
/// service authorization references), and calls that need no permission.
const RENAMED: &[(&str, Option<&str>)] = &[
    ("s3:HeadBucket", Some("s3:ListBucket")),
    (
        "s3:GetBucketEncryption",
        Some("s3:GetEncryptionConfiguration"),
    ),
    (
        "s3:PutBucketEncryption",
        Some("s3:PutEncryptionConfiguration"),
    ),
    (
        "s3:GetPublicAccessBlock",
        Some("s3:GetBucketPublicAccessBlock"),
    ),
    (
        "s3:PutPublicAccessBlock",
        Some("s3:PutBucketPublicAccessBlock"),
    ),
    (
        "s3:GetBucketLifecycleConfiguration",
        Some("s3:GetLifecycleConfiguration"),
    ),
    (
        "s3:PutBucketLifecycleConfiguration",
        Some("s3:PutLifecycleConfiguration"),
    ),
    ("s3:DeleteObjects", Some("s3:DeleteObject")),
    ("s3:ListObjectVersions", Some("s3:ListBucketVersions")),
    ("s3:DeleteBucketTagging", Some("s3:PutBucketTagging")),
    ("budgets:DescribeBudget", Some("budgets:ViewBudget")),
    (
        "budgets:DescribeNotificationsForBudget",
        Some("budgets:ViewBudget"),
    ),
    (
        "budgets:DescribeSubscribersForNotification",
        Some("budgets:ViewBudget"),
    ),
    ("budgets:CreateBudget", Some("budgets:ModifyBudget")),
    ("budgets:UpdateBudget", Some("budgets:ModifyBudget")),
    ("budgets:DeleteBudget", Some("budgets:ModifyBudget")),
    ("budgets:CreateNotification", Some("budgets:ModifyBudget")),
    ("budgets:DeleteNotification", Some("budgets:ModifyBudget")),
    ("budgets:CreateSubscriber", Some("budgets:ModifyBudget")),
    ("budgets:DeleteSubscriber", Some("budgets:ModifyBudget")),
];

/// Methods of an SDK client that are not operations.
const NOT_OPERATIONS: &[&str] = &["config", "clone"];

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn ident_at(text: &str, at: usize) -> &str {
    let end = text[at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(text.len(), |n| at + n);
    &text[at..end]
}

/// The IAM actions of the SDK calls in `text`: `aws.ecs().describe_services(` (across lines)
/// and `ecs.list_tasks(` on a bound client.
fn calls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (name, prefix) in SERVICES {
        for pattern in [format!(".{name}()"), format!("{name}.")] {
            let mut from = 0;
            while let Some(i) = text[from..].find(&pattern) {
                let at = from + i;
                from = at + pattern.len();
                let mut rest = from;
                if pattern.starts_with('.') {
                    let skipped = text[rest..].trim_start();
                    if !skipped.starts_with('.') {
                        continue;
                    }
                    rest = text.len() - skipped.len() + 1;
                } else if at > 0 && {
                    let before = text[..at].chars().next_back().unwrap_or(' ');
                    before.is_ascii_alphanumeric() || before == '_' || before == '.'
                } {
                    continue;
                }
                let op = ident_at(text, rest);
                let after = &text[rest + op.len()..];
                if op.is_empty()
                    || !op.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    || !after.starts_with("()")
                    || NOT_OPERATIONS.contains(&op)
                {
                    continue;
                }
                // RDS spells "DB" in capitals in its operations (CreateDBCluster); the SDK's
                // method names cannot tell.
                let mut name = camel(op);
                if *prefix == "rds" {
                    name = name.replace("Db", "DB");
                }
                let action = format!("{prefix}:{name}");
                match RENAMED.iter().find(|(from, _)| *from == action) {
                    Some((_, Some(to))) => found.push(to.to_string()),
                    Some((_, None)) => {}
                    None => found.push(action),
                }
            }
        }
    }
    found
}

/// The files whose calls a deployer makes: the resource kinds, the engine, the ladder and
/// its layers, the operations, and the token store the CLI uses.
fn deploy_sources() -> Vec<PathBuf> {
    let r = root();
    let mut files = vec![
        r.join("crates/tier-xs/src/ops.rs"),
        r.join("crates/tier-xs/src/xs/layer.rs"),
        r.join("crates/tier-xs/src/xs/mod.rs"),
        r.join("crates/tier-xs/src/engine/lock.rs"),
        r.join("crates/tier-xs/src/engine/mod.rs"),
        r.join("crates/tier-xs/src/server/auth.rs"),
        r.join("crates/tier-small/src/layer.rs"),
        r.join("crates/tier-medium/src/layer.rs"),
        r.join("crates/tier-large/src/layer.rs"),
        r.join("crates/cli/src/commands/token.rs"),
    ];
    for dir in [
        "crates/tier-xs/src/components",
        "crates/tier-small/src/components",
        "crates/tier-medium/src/components",
        "crates/tier-large/src/components",
    ] {
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(r.join(dir))
            .expect("the components folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    files
}

/// A file's code without its tests (they call the emulator directly).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn every_aws_call_of_the_deploy_has_its_permission_in_the_top_tier_s_policy() {
    let p: Permissions = tier_xs::ops::deployer_permissions(&ladder(), Tier::Large, &documented())
        .expect("a policy");
    let granted: BTreeSet<&str> = p.actions().collect();
    let mut missing = BTreeSet::new();
    let mut seen = 0;
    for file in deploy_sources() {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for action in calls(without_tests(&text)) {
            seen += 1;
            if !granted.contains(action.as_str()) {
                missing.insert(format!("{action} ({})", file.display()));
            }
        }
    }
    assert!(seen > 150, "the scan found only {seen} calls");
    assert!(
        missing.is_empty(),
        "calls without a permission: {missing:#?}"
    );
}

#[test]
fn the_call_scan_reads_calls_across_lines_and_on_bound_clients() {
    let text = "let out = aws\n    .ecs()\n    .describe_services()\n    .cluster(c);\n\
                let ecr = x; ecr.describe_images().send(); aws.s3().head_bucket().bucket(b);\n\
                aws.ecr().config(); my_ecs.list_tasks();";
    let mut found = calls(text);
    found.sort();
    assert_eq!(
        found,
        [
            "ecr:DescribeImages",
            "ecs:DescribeServices",
            "s3:ListBucket"
        ]
    );
}
