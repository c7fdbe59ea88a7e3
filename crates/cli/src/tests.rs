//! The command line as people meet it: every flag described, each command with only its own
//! flags, and the help texts pinned by reviewed snapshots.

use clap::{CommandFactory, Parser};

use super::Cli;

/// Every subcommand, as a path from the top (`["token", "create"]`).
fn every_command(
    cmd: &clap::Command,
    path: Vec<String>,
    out: &mut Vec<(Vec<String>, clap::Command)>,
) {
    for sub in cmd.get_subcommands() {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        out.push((p.clone(), sub.clone()));
        every_command(sub, p, out);
    }
}

fn commands() -> Vec<(Vec<String>, clap::Command)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    every_command(&cmd, Vec::new(), &mut out);
    out
}

#[test]
fn every_flag_and_argument_of_every_command_is_described() {
    let mut missing = Vec::new();
    for (path, cmd) in commands() {
        if cmd.get_about().is_none() && path.last().is_some_and(|n| n != "help") {
            missing.push(format!("{} (the command)", path.join(" ")));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{} {id}", path.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "undescribed: {missing:#?}");
}

#[test]
fn each_command_offers_only_the_flags_that_mean_something_to_it() {
    let flags = |name: &str| -> Vec<String> {
        let cmd = commands()
            .into_iter()
            .find(|(p, _)| p.join(" ") == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no command {name}"));
        cmd.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect()
    };
    let destroy = flags("destroy");
    for deploy_only in [
        "image",
        "allow-cidr",
        "budget-usd",
        "alert-email",
        "vpc",
        "wait-timeout",
        "profile-usage",
    ] {
        assert!(
            !destroy.contains(&deploy_only.to_string()),
            "destroy offers --{deploy_only}"
        );
    }
    for needed in ["destroy-data", "yes", "env", "parallelism", "lock-ttl"] {
        assert!(
            destroy.contains(&needed.to_string()),
            "destroy lacks --{needed}"
        );
    }
    let cost = flags("cost");
    assert!(
        !cost.contains(&"profile".to_string()),
        "cost offers the AWS --profile"
    );
    let up = flags("up");
    for aws in ["region", "profile", "yes"] {
        assert!(!up.contains(&aws.to_string()), "up offers --{aws}");
    }
    let plan = flags("plan");
    assert!(!plan.contains(&"yes".to_string()) && !plan.contains(&"lock-ttl".to_string()));
}

#[test]
fn a_negative_number_is_refused_with_the_flag_s_own_message() {
    for (args, flag) in [
        (
            vec!["agentbus", "deploy", "xs", "--parallelism", "-1"],
            "--parallelism",
        ),
        (
            vec!["agentbus", "deploy", "xs", "--parallelism", "0"],
            "--parallelism",
        ),
        (
            vec!["agentbus", "deploy", "xs", "--budget-usd", "-5"],
            "--budget-usd",
        ),
        (
            vec!["agentbus", "deploy", "xs", "--lock-ttl", "-60"],
            "--lock-ttl",
        ),
        (vec!["agentbus", "up", "--port", "-1"], "--port"),
    ] {
        let e = Cli::try_parse_from(&args).expect_err("a negative number must be refused");
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{args:?}: {e}"
        );
        let text = e.to_string();
        assert!(text.contains(flag), "{args:?}: {text}");
    }
}

#[test]
fn a_mistyped_flag_gets_a_suggestion() {
    let e = Cli::try_parse_from(["agentbus", "cost", "xs", "--profile", "team"])
        .expect_err("cost has no --profile");
    assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    assert!(e.to_string().contains("--profile-usage"), "{e}");
    let e = Cli::try_parse_from(["agentbus", "deploy", "xs", "--destory-data"]).expect_err("typo");
    assert!(e.to_string().contains("--destroy-data"), "{e}");
}

#[test]
fn the_help_of_every_command_reads_as_reviewed() {
    for (path, mut cmd) in commands() {
        if path.iter().any(|n| n == "help") {
            continue;
        }
        let help = cmd.render_help().to_string();
        insta::assert_snapshot!(format!("help_{}", path.join("_")), help);
    }
}

#[test]
fn completions_cover_every_command_and_its_flags() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let mut out = Vec::new();
        crate::commands::completions::write(shell, &mut Cli::command(), &mut out);
        let script = String::from_utf8(out).expect("utf-8");
        for word in [
            "deploy",
            "destroy",
            "destroy-data",
            "profile-usage",
            "completions",
        ] {
            assert!(script.contains(word), "{shell:?} lacks {word}");
        }
    }
}

#[test]
fn a_workspace_tool_takes_the_flags_of_plan_and_never_one_that_deletes_data() {
    use crate::commands::tool_inputs;
    let flags = |f: &[&str]| tool_inputs(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let i = flags(&["--vpc", "vpc-1", "--profile-usage", "team"]).unwrap();
    assert_eq!(i.settings["vpc"], "vpc-1");
    assert_eq!(i.usage.as_deref(), Some("team"));
    assert!(!i.destroy_data && !i.stop_in_flight);
    for bad in ["--destroy-data", "--stop-in-flight", "--yes", "--nope"] {
        let e = flags(&[bad]).unwrap_err();
        assert!(e.starts_with("flags: ") && e.contains(bad), "{e}");
    }
}
