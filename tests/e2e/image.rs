//! Container images: `agentbus image build|push` against a real registry on 127.0.0.1
//! (Debian's docker-registry), read back by skopeo, which none of us wrote; the binary taken
//! out of the pushed layer runs on the libraries the image carries. The workspace's ECR
//! repository against moto.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{
    IMAGE, REGISTRY_PASSWORD, REGISTRY_USER, agentbus, agentbus_env, clients, deploy_xs,
    deploy_xs_with, registry, registry_with_login, seed_image, unique_env,
};
use crate::server::{free_port, up};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "agentbus-e2e-{tag}-{}-{}",
        std::process::id(),
        unique_env("d")
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn skopeo(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Pushes the running test build's agentbus binary to `repository` of the local registry.
fn push(repository: &str, extra: &[&str]) -> serde_json::Value {
    let reg = registry();
    let mut args = vec![
        "image",
        "push",
        "--registry",
        &reg.host,
        "--repository",
        repository,
        "--insecure",
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = agentbus(&args);
    assert_eq!(r.code, 0, "{r:?}");
    r.json()
}

#[test]
fn image_builds_reproducibly_and_a_pushed_image_reads_back_in_skopeo_and_runs() {
    let dir = tmp("img");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let build = |out: &Path| {
        let r = agentbus(&["image", "build", "--out", out.to_str().unwrap(), "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        r.json()
    };
    let first = build(&a);
    let second = build(&b);
    let digest = first["digest"].as_str().unwrap().to_string();
    assert_eq!(
        second["digest"], first["digest"],
        "same inputs, same digest"
    );
    assert_eq!(first["summary"]["linking"], "dynamic");
    // The OCI layout on disk is read by skopeo too.
    let layout = skopeo(&["inspect", &format!("oci:{}", a.display())]);
    assert_eq!(layout["Digest"], digest.as_str());

    // Its own repository: other tests push the same image elsewhere at the same time.
    let pushed = push("agentbus-readback", &[]);
    assert_eq!(pushed["pushed"]["digest"], digest.as_str());
    assert_eq!(pushed["pushed"]["already_present"], false);
    let tagged = pushed["pushed"]["tagged"].as_str().unwrap().to_string();
    let reference = pushed["pushed"]["reference"].as_str().unwrap().to_string();
    assert_eq!(
        reference,
        format!("{}/agentbus-readback@{digest}", registry().host)
    );

    let inspect = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{tagged}"),
    ]);
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);
    // --raw: the config as stored, with Docker's Healthcheck, which skopeo's model drops.
    let config = skopeo(&[
        "inspect",
        "--config",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    let c = &config["config"];
    assert_eq!(c["User"], "10001:10001");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/agentbus"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{config}");

    // The Dockerfile builds the same layout: its settings match the built config.
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile")).unwrap();
    let port = c["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .replace("/tcp", "");
    for line in [
        format!("USER {}", c["User"].as_str().unwrap()),
        format!("EXPOSE {port}"),
        format!("ENTRYPOINT {}", c["Entrypoint"]).replace(',', ", "),
        format!("CMD {}", c["Cmd"]),
        {
            // The health check's timings, from the built config (nanoseconds), as Docker
            // writes them.
            let h = &c["Healthcheck"];
            let secs = |k: &str| h[k].as_u64().unwrap() / 1_000_000_000;
            format!(
                "HEALTHCHECK --interval={}s --timeout={}s --start-period={}s --retries={}",
                secs("Interval"),
                secs("Timeout"),
                secs("StartPeriod"),
                h["Retries"]
            )
        },
    ] {
        assert!(dockerfile.contains(&line), "Dockerfile lacks {line:?}");
    }
    assert!(dockerfile.contains(&format!(
            "CMD {}",
            serde_json::json!(c["Healthcheck"]["Test"].as_array().unwrap()[1..])
                .to_string()
                .replace(',', ", ")
        )));

    // A second push of the same image writes nothing.
    let again = push("agentbus-readback", &[]);
    assert_eq!(again["pushed"]["already_present"], true);

    // Take the layer out of the registry with skopeo and unpack it.
    let copy = dir.join("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("dir:{}", copy.display()),
    ]);
    let layer = inspect["Layers"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let st = Command::new("tar")
        .args([
            "-xzf",
            copy.join(layer).to_str().unwrap(),
            "-C",
            root.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    // Run the extracted binary on the loader and libraries of the image, not this machine's.
    let run = |args: &[&str]| {
        Command::new(root.join("lib64/ld-linux-x86-64.so.2"))
            .arg("--library-path")
            .arg(root.join("lib/x86_64-linux-gnu"))
            .arg(root.join("usr/local/bin/agentbus"))
            .args(args)
            .output()
            .unwrap()
    };
    let v = run(&["--version"]);
    assert!(v.status.success(), "{v:?}");
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{v:?}"
    );
    let port = free_port();
    let down = run(&["healthcheck", "--port", &port.to_string()]);
    assert!(!down.status.success(), "nothing listens yet: {down:?}");
    let data = dir.join("data");
    let _server = up(&data, port);
    let ok = run(&["healthcheck", "--port", &port.to_string()]);
    assert!(ok.status.success(), "{ok:?}");

    // The same binary on the pushed image as a base: two layers, the base's first.
    let on_base = push("agentbus-on-base", &["--base", &tagged]);
    assert_eq!(on_base["summary"]["base"], tagged.as_str());
    let on_base_ref = on_base["pushed"]["reference"].as_str().unwrap();
    let inspect2 = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{on_base_ref}"),
    ]);
    let layers = inspect2["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], inspect["Layers"][0]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A registry that asks for a login (HTTP basic authentication, as ECR's login is with its
/// token): a push without the login, or with a wrong password, is refused saying so; with it
/// the image lands, and skopeo reads it back only with the same login.
#[test]
fn a_push_to_a_registry_that_asks_for_a_login_logs_in_or_says_why_not() {
    let reg = registry_with_login();
    let base = [
        "image",
        "push",
        "--registry",
        reg.host.as_str(),
        "--repository",
        "private/agentbus",
        "--insecure",
        "--json",
    ];
    // With --json the error is JSON on stdout.
    let r = agentbus(&base);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("log in with --username")
            && r.stdout
                .contains("it asks for a login it was not given or did not accept"),
        "{r:?}"
    );
    let mut with_user = base.to_vec();
    with_user.extend(["--username", REGISTRY_USER]);
    let r = agentbus_env(&with_user, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("--username needs the password in AGENTBUS_REGISTRY_PASSWORD"),
        "{r:?}"
    );
    let r = agentbus_env(&with_user, &[("AGENTBUS_REGISTRY_PASSWORD", "not-it")]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("check --username and AGENTBUS_REGISTRY_PASSWORD"),
        "{r:?}"
    );
    assert!(
        !format!("{}{}", r.stdout, r.stderr).contains("not-it"),
        "the password is never printed: {r:?}"
    );
    let r = agentbus_env(
        &with_user,
        &[("AGENTBUS_REGISTRY_PASSWORD", REGISTRY_PASSWORD)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let pushed = r.json();
    let tagged = pushed["pushed"]["tagged"].as_str().unwrap().to_string();
    let inspect = |creds: Option<String>| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--creds", &c]);
        }
        cmd.arg(format!("docker://{tagged}"))
            .output()
            .expect("skopeo (scripts/test.sh installs it)")
    };
    let out = inspect(Some(format!("{REGISTRY_USER}:{REGISTRY_PASSWORD}")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["Digest"], pushed["pushed"]["digest"]);
    let out = inspect(None);
    assert!(!out.status.success(), "the registry answers only the login");
}

#[test]
fn image_commands_refuse_bad_input_clearly() {
    let r = agentbus(&[
        "image",
        "push",
        "--registry",
        "registry.example.com",
        "--repository",
        "x",
        "--insecure",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("only for a registry on this machine"),
        "{r:?}"
    );
    let dir = tmp("bad");
    let not_elf = dir.join("script");
    std::fs::write(&not_elf, "#!/bin/sh\n").unwrap();
    let r = agentbus(&[
        "image",
        "build",
        "--binary",
        not_elf.to_str().unwrap(),
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not a Linux ELF executable"), "{r:?}");
    let r = agentbus(&["image", "push", "--registry", &registry().host]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("--repository"), "{r:?}");
    // The agents' image never lands in the server's repository or as the remembered image.
    let r = agentbus(&["image", "push", "--agent"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("the agents' image goes to a registry you name"),
        "{r:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_agents_image_is_its_own_image_and_reads_back_in_skopeo() {
    let dir = tmp("agent-img");
    let out = dir.join("layout");
    // Any Linux executable stands in for agentbus-agent here; the entrypoint is what matters.
    let r = agentbus(&[
        "image",
        "build",
        "--agent",
        "--binary",
        env!("CARGO_BIN_EXE_agentbus"),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let tag = r.json()["tag"].as_str().unwrap().to_string();
    let cfg = skopeo(&[
        "inspect",
        "--config",
        &format!("oci:{}:{tag}", out.display()),
    ]);
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/agentbus-agent"]),
        "{cfg}"
    );
    assert!(cfg["config"].get("ExposedPorts").is_none(), "{cfg}");
    assert!(cfg["config"].get("Healthcheck").is_none(), "{cfg}");
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.title"],
        "agentbus-agent"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn deploy_uses_the_pushed_image_and_refuses_one_the_registry_lacks() {
    let env = unique_env("img");
    let reg = registry();
    let zeros = format!("{}/agentbus@sha256:{}", reg.host, "0".repeat(64));
    let r = agentbus(&["plan", "xs", "--env", &env, "--image", &zeros]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("is not in its registry"), "{r:?}");
    let missing = IMAGE.replace(":test", ":missing");
    let r = agentbus(&["deploy", "xs", "--env", &env, "--image", &missing, "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not in its ECR repository"), "{r:?}");
    // Refused before anything was created.
    let r = agentbus(&["status", "--env", &env, "--json"]);
    assert!(r.json()["history"].as_array().unwrap().is_empty(), "{r:?}");

    // Push with --remember: the env's next deploy uses that image without --image.
    let pushed = push("agentbus-deploy", &["--remember", "--env", &env]);
    let reference = pushed["pushed"]["reference"].as_str().unwrap().to_string();
    assert_eq!(pushed["remembered_for"], format!("agentbus-{env}"));
    let r = agentbus_env(
        &[
            "deploy",
            "xs",
            "--env",
            &env,
            "--yes",
            "--wait-timeout",
            "60",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let image = rt.block_on(async {
        let c = clients().await;
        let td = c
            .ecs()
            .describe_task_definition()
            .task_definition(format!("agentbus-{env}-dashboard"))
            .send()
            .await
            .unwrap();
        td.task_definition().unwrap().container_definitions()[0]
            .image()
            .unwrap()
            .to_string()
    });
    assert_eq!(image, reference);
    // Its architecture read from the pushed config, through the registry's API.
    assert_eq!(
        runtime_platform(&format!("agentbus-{env}-dashboard")),
        ("X86_64".into(), "LINUX".into())
    );
    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn the_image_repository_is_created_with_its_settings_and_kept_unless_destroy_data() {
    let env = unique_env("ecr");
    deploy_xs(&env);
    let name = format!("agentbus-{env}-images");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(clients());
    let describe = || {
        rt.block_on(
            c.ecr()
                .describe_repositories()
                .repository_names(&name)
                .send(),
        )
        .map_err(Box::new)
    };
    let out = describe().unwrap();
    let repo = &out.repositories()[0];
    assert_eq!(repo.image_tag_mutability().unwrap().as_str(), "IMMUTABLE");
    assert!(repo.image_scanning_configuration().unwrap().scan_on_push());
    assert_eq!(
        repo.encryption_configuration()
            .unwrap()
            .encryption_type()
            .as_str(),
        "AES256"
    );
    let policy = rt
        .block_on(c.ecr().get_lifecycle_policy().repository_name(&name).send())
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(policy.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(policy["rules"][0]["selection"]["countNumber"], 10);
    let tags = rt
        .block_on(
            c.ecr()
                .list_tags_for_resource()
                .resource_arn(repo.repository_arn().unwrap())
                .send(),
        )
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == "agentbus:workspace" && t.value() == format!("agentbus-{env}")),
        "{tags:?}"
    );

    // The image the workspace runs from its own repository is kept by a rule of its own,
    // however many images are pushed after it.
    let own = seed_image(&name, "v7", &[]);
    deploy_xs_with(&env, &own);
    let policy = rt
        .block_on(c.ecr().get_lifecycle_policy().repository_name(&name).send())
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(policy.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(
        policy["rules"][0]["selection"]["tagPatternList"],
        serde_json::json!(["v7"]),
        "{policy}"
    );
    assert_eq!(policy["rules"][1]["selection"]["tagStatus"], "any");
    let again = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {again:?}");

    let r = agentbus(&["destroy", "--env", &env, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!("kept ecr repository {name}")),
        "{r:?}"
    );
    assert!(describe().is_ok(), "kept without --destroy-data");
    let r = agentbus(&["destroy", "--env", &env, "--yes", "--destroy-data"]);
    assert_eq!(r.code, 0, "{r:?}");
    let gone = describe().unwrap_err();
    assert!(
        format!("{gone:?}").contains("RepositoryNotFoundException"),
        "{gone:?}"
    );
}

/// The task definition `family`'s platform, read back raw: (cpu architecture, os family).
fn runtime_platform(family: &str) -> (String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = clients().await;
        let td = c
            .ecs()
            .describe_task_definition()
            .task_definition(family)
            .send()
            .await
            .unwrap();
        let p = td.task_definition().unwrap().runtime_platform().unwrap();
        (
            p.cpu_architecture().unwrap().as_str().to_string(),
            p.operating_system_family().unwrap().as_str().to_string(),
        )
    })
}

#[test]
fn a_task_runs_on_the_architecture_its_image_was_built_for() {
    let env = unique_env("arch");
    let repo = format!("e2e-arch/{env}");
    let arm = seed_image(&repo, "arm", &["arm64"]);
    let x86 = seed_image(&repo, "x86", &["amd64"]);
    // Images no Fargate task can run are refused by the plan, which says what they are.
    for (tag, platform, says) in [
        ("s390x", &["s390x"][..], "is built for linux/s390x"),
        ("bare", &["none"][..], "names no architecture"),
        (
            "win",
            &["amd64", "windows"][..],
            "is built for windows/amd64",
        ),
    ] {
        let image = seed_image(&repo, tag, platform);
        let r = agentbus(&["plan", "xs", "--env", &env, "--image", &image, "--json"]);
        assert_eq!(r.code, 1, "{r:?}");
        let problems = r.json()["plan"]["problems"].to_string();
        assert!(problems.contains(says), "{tag}: {problems}");
    }

    // An arm64 image runs on ARM64: without it, Fargate would start it on X86_64.
    deploy_xs_with(&env, &arm);
    let family = format!("agentbus-{env}-dashboard");
    assert_eq!(runtime_platform(&family), ("ARM64".into(), "LINUX".into()));
    // Remembered with the image: the next plan is empty.
    let again = agentbus(&["plan", "xs", "--env", &env, "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {again:?}");

    // Another image of another architecture: the task definition changes both.
    let p = agentbus(&["plan", "xs", "--env", &env, "--image", &x86, "--json"]).json();
    let change = p["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "dashboard-task-definition")
        .unwrap()
        .clone();
    let arch = change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "cpu_architecture")
        .unwrap_or_else(|| panic!("{change}"));
    assert_eq!(
        (&arch["before"], &arch["after"]),
        (&serde_json::json!("ARM64"), &serde_json::json!("X86_64")),
        "{change}"
    );
    deploy_xs_with(&env, &x86);
    assert_eq!(runtime_platform(&family), ("X86_64".into(), "LINUX".into()));
    let r = agentbus(&["destroy", "--env", &env, "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
}
