//! `agentbus image build|push`: the server's container image without Docker.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tier_xs::image::registry::{Registry, RegistryAuth, parse_reference};
use tier_xs::image::{self, BuildOptions, Image};

use super::{connect, human, print_json};
use crate::{Global, Output};

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The agentbus binary to package (default: the running one). Package a release build:
    /// `cargo build --release -p cli`, or `--target x86_64-unknown-linux-musl` for a static one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Build the agents' image instead: `agentbus-agent` as the entrypoint, no port, no health
    /// check (default binary: `agentbus-agent` next to the running one; `cargo build --release
    /// -p agents`).
    #[arg(long)]
    agent: bool,
    /// Put the binary on this image instead of an empty one (it must provide the C library
    /// a glibc build links against; a static build runs on anything).
    #[arg(long)]
    base: Option<String>,
    /// CA certificate bundle to include (default: this machine's).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Talk plain HTTP to a registry on this machine (the base's, and the push target's).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    action: ImageCommand,
}

impl ImageArgs {
    pub fn json(&self) -> bool {
        match &self.action {
            ImageCommand::Build { g, .. } => g.json,
            ImageCommand::Push { g, .. } => g.json(),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build the server image and write it as an OCI layout; prints the digest.
    Build {
        #[command(flatten)]
        args: BuildArgs,
        /// Directory of the OCI image layout (skopeo, podman and crane read it).
        #[arg(long, default_value = "agentbus-image")]
        out: PathBuf,
        #[command(flatten)]
        g: Output,
    },
    /// Build the server image and push it: to the workspace's ECR repository (created if
    /// needed; the next deploy uses the image), or with --registry to any OCI registry.
    /// Prints the pushed reference (registry/repository@digest).
    Push {
        #[command(flatten)]
        args: BuildArgs,
        /// Registry host[:port] instead of the workspace's ECR.
        #[arg(long, requires = "repository")]
        registry: Option<String>,
        /// Repository in --registry.
        #[arg(long, requires = "registry")]
        repository: Option<String>,
        /// Tag (default: VERSION-DIGEST, unique per image, as immutable repositories need).
        #[arg(long)]
        tag: Option<String>,
        /// User for --registry; the password comes from AGENTBUS_REGISTRY_PASSWORD.
        #[arg(long, requires = "registry")]
        username: Option<String>,
        /// With --registry: also make this image the one the env's next deploy uses.
        #[arg(long, requires = "registry")]
        remember: bool,
        /// The workspace (for ECR, or --remember).
        #[command(flatten)]
        g: Global,
    },
}

fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(0),
    }
}

async fn build(json: bool, args: &BuildArgs) -> Result<Image> {
    let current = std::env::current_exe().context("cannot find the running binary")?;
    let kind = if args.agent {
        image::ImageKind::Agent
    } else {
        image::ImageKind::Server
    };
    let binary = match (&args.binary, kind) {
        (Some(b), _) => b.clone(),
        (None, image::ImageKind::Server) => current.clone(),
        (None, image::ImageKind::Agent) => {
            let b = current.with_file_name("agentbus-agent");
            if !b.exists() {
                bail!(
                    "{} is not built: `cargo build --release -p agents`, or name it with --binary",
                    b.display()
                );
            }
            b
        }
    };
    if cfg!(debug_assertions) && binary == current {
        human(
            json,
            "note: packaging a debug build; for an image you deploy use `cargo run --release -p cli -- image ...`\n",
        );
    }
    let base = match &args.base {
        None => None,
        Some(b) => {
            let r = parse_reference(b)?;
            let host = r.resolve_registry().to_string();
            let registry = Registry::new(&host, RegistryAuth::Anonymous, args.insecure)?;
            let arch = image::architecture(&binary)?;
            Some(
                registry
                    .pull_base(&r, &arch)
                    .await
                    .with_context(|| format!("cannot use {b} as the base"))?,
            )
        }
    };
    let opts = BuildOptions {
        binary,
        kind,
        ca_bundle: args.ca_bundle.clone(),
        base,
        created_epoch: source_date_epoch()?,
    };
    let started = std::time::Instant::now();
    let img = tokio::task::spawn_blocking(move || image::build(&opts))
        .await
        .context("the build task stopped")??;
    let s = &img.summary;
    human(
        json,
        &format!(
            "built {} in {:.1}s: linux/{}, {} binary ({} MB){}{}, {} layer(s), {:.1} MB compressed\n",
            s.digest,
            started.elapsed().as_secs_f64(),
            s.architecture,
            s.linking,
            s.binary_bytes / 1_000_000,
            if s.libraries.is_empty() {
                String::new()
            } else {
                format!(" with {}", s.libraries.join(", "))
            },
            s.base
                .as_ref()
                .map(|b| format!(" on {b}"))
                .unwrap_or_default(),
            img.layers.len(),
            s.compressed_bytes as f64 / 1_000_000.0,
        ),
    );
    Ok(img)
}

pub async fn run(cmd: ImageArgs) -> Result<u8> {
    match cmd.action {
        ImageCommand::Build { args, out, g } => {
            let img = build(g.json, &args).await?;
            img.write_layout(&out, &img.default_tag())?;
            human(
                g.json,
                &format!(
                    "wrote the OCI layout to {} (tag {})\n",
                    out.display(),
                    img.default_tag()
                ),
            );
            if g.json {
                print_json(&serde_json::json!({
                    "digest": img.digest, "tag": img.default_tag(), "layout": out,
                    "summary": img.summary,
                }))?;
            } else {
                println!("{}", img.digest);
            }
            Ok(0)
        }
        ImageCommand::Push {
            args,
            registry,
            repository,
            tag,
            username,
            remember,
            g,
        } => {
            let g = &g;
            // The workspace's repository and the remembered image are the server's.
            if args.agent && (registry.is_none() || remember) {
                bail!(
                    "the agents' image goes to a registry you name (--registry and --repository, without --remember): the workspace's repository and its remembered image are the server's"
                );
            }
            let img = build(g.json(), &args).await?;
            let tag = tag.unwrap_or_else(|| img.default_tag());
            let started = std::time::Instant::now();
            let (pushed, remembered) = match (registry, repository) {
                (Some(host), Some(repo)) => {
                    let auth = match username {
                        None => RegistryAuth::Anonymous,
                        Some(u) => {
                            let p = std::env::var("AGENTBUS_REGISTRY_PASSWORD").context(
                                "--username needs the password in AGENTBUS_REGISTRY_PASSWORD",
                            )?;
                            RegistryAuth::Basic(u, p)
                        }
                    };
                    let login_given = !matches!(auth, RegistryAuth::Anonymous);
                    let reg = Registry::new(&host, auth, args.insecure)?;
                    let pushed = reg.push(&repo, &tag, &img).await.map_err(|e| {
                        let hint = match (&e, login_given) {
                            (image::ImageError::Unauthorized(_), false) => {
                                "log in with --username (the password in AGENTBUS_REGISTRY_PASSWORD)"
                            }
                            (image::ImageError::Unauthorized(_), true) => {
                                "check --username and AGENTBUS_REGISTRY_PASSWORD"
                            }
                            _ => "",
                        };
                        let e = anyhow::Error::new(e);
                        if hint.is_empty() { e } else { e.context(hint) }
                    })?;
                    let remembered = if remember {
                        let d = connect(g).await?;
                        d.remember_image(&pushed.reference).await?;
                        Some(d.ws.id())
                    } else {
                        None
                    };
                    (pushed, remembered)
                }
                (None, None) => {
                    if args.insecure {
                        bail!(
                            "--insecure is for a registry on this machine; ECR is reached over HTTPS"
                        );
                    }
                    let d = connect(g).await?;
                    let uri = d.ensure_image_repository().await?;
                    let repo = uri
                        .split_once('/')
                        .map(|(_, r)| r.to_string())
                        .with_context(|| format!("unexpected repository URI {uri:?}"))?;
                    let login = d.ecr_login().await?;
                    let reg = Registry::new(
                        &login.host,
                        RegistryAuth::Basic(login.user.clone(), login.password.clone()),
                        false,
                    )?;
                    let pushed = reg.push(&repo, &tag, &img).await?;
                    d.remember_image(&pushed.reference).await?;
                    (pushed, Some(d.ws.id()))
                }
                _ => bail!("--registry and --repository go together"),
            };
            let said = if pushed.already_present {
                format!(
                    "already in the registry: {} (nothing to upload; checked in {:.1}s)\n",
                    pushed.tagged,
                    started.elapsed().as_secs_f64()
                )
            } else {
                format!(
                    "pushed {} in {:.1}s ({} blob(s) uploaded, {:.1} MB; {} already there)\n",
                    pushed.tagged,
                    started.elapsed().as_secs_f64(),
                    pushed.blobs_uploaded,
                    pushed.bytes_uploaded as f64 / 1_000_000.0,
                    pushed.blobs_present,
                )
            };
            human(g.json(), &said);
            if let Some(ws) = &remembered {
                human(
                    g.json(),
                    &format!(
                        "the next deploy of {ws} uses this image (unless --image says otherwise)\n"
                    ),
                );
            }
            if g.json() {
                print_json(&serde_json::json!({
                    "pushed": pushed, "summary": img.summary, "remembered_for": remembered,
                }))?;
            } else {
                println!("{}", pushed.reference);
            }
            Ok(0)
        }
    }
}
