//! Talking to OCI registries (ECR, a registry on loopback, any distribution-spec server)
//! through the `oci-client` library: push a built image, ask whether an image exists, pull
//! a base image.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
pub use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;

use super::platform::{self, CpuArchitecture};
use super::{
    BaseImage, Blob, Image, ImageError, MEDIA_DOCKER_LAYER, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_LAYER, MEDIA_MANIFEST, sha256_digest,
};

/// Whether `host` (with or without a port) is this machine.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses an image reference (`host/repo:tag`, `host/repo@sha256:...`, `nginx`).
pub fn parse_reference(s: &str) -> Result<Reference, ImageError> {
    s.parse::<Reference>()
        .map_err(|e| ImageError::Invalid(format!("{s:?} is not an image reference: {e}")))
}

fn reg_err(what: &str, e: OciDistributionError) -> ImageError {
    let text = format!("{what}: {}", crate::engine::error_text(&e));
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => ImageError::Unauthorized(text),
        _ => ImageError::Registry(text),
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// What a push did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pushed {
    /// `host/repository@sha256:...`: what a deploy should point at.
    pub reference: String,
    /// `host/repository:tag`.
    pub tagged: String,
    pub digest: String,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub bytes_uploaded: u64,
    /// The manifest was there already (same digest): nothing new was written.
    pub already_present: bool,
}

/// One registry host with its credentials.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    pub host: String,
}

impl Registry {
    /// A client for `host`. `insecure` (plain HTTP) is accepted only for a registry on
    /// loopback: credentials and images would otherwise cross a network unprotected.
    pub fn new(host: &str, auth: RegistryAuth, insecure: bool) -> Result<Self, ImageError> {
        if host.is_empty() || host.contains('/') {
            return Err(ImageError::Invalid(format!(
                "{host:?} is not a registry host (host or host:port)"
            )));
        }
        if insecure && !is_loopback(host) {
            return Err(ImageError::Invalid(format!(
                "--insecure (plain HTTP) is only for a registry on this machine (localhost, 127.0.0.1, [::1]), not {host}"
            )));
        }
        let protocol = if insecure {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            // One PUT per blob: ECR answers a chunked upload's PATCH with 201 where the
            // distribution spec says 202, and wants every part but the last to be at least
            // 5 MiB (Amazon ECR User Guide, "Pushing an image"); a monolithic upload is what
            // every registry takes.
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            ..ClientConfig::default()
        });
        Ok(Registry {
            client,
            auth,
            host: host.to_string(),
        })
    }

    /// A client for the registry of `reference`, anonymous; plain HTTP for loopback hosts
    /// (a local development registry), HTTPS everywhere else.
    pub fn for_reference(reference: &Reference) -> Result<Self, ImageError> {
        let host = reference.resolve_registry().to_string();
        let insecure = is_loopback(&host);
        Self::new(&host, RegistryAuth::Anonymous, insecure)
    }

    fn reference(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), repository.to_string(), tag.to_string())
    }

    /// The digest of the manifest `reference` names, or `None` when the registry does not
    /// have it.
    pub async fn manifest_digest(
        &self,
        reference: &Reference,
    ) -> Result<Option<String>, ImageError> {
        match self
            .client
            .fetch_manifest_digest(reference, &self.auth)
            .await
        {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(reg_err(&format!("looking up {reference}"), e)),
        }
    }

    /// The CPU architecture a Fargate task runs `reference` on, or `Ok(None)` when the
    /// registry does not have it. An image the task could not run is an `Err(problem)`
    /// inside: a plan problem, worded for the user.
    pub async fn architecture(
        &self,
        reference: &Reference,
    ) -> Result<Option<Result<CpuArchitecture, String>>, ImageError> {
        let accept = [
            MEDIA_MANIFEST,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_INDEX,
            MEDIA_DOCKER_LIST,
        ];
        let raw = match self
            .client
            .pull_manifest_raw(reference, &self.auth, &accept)
            .await
        {
            Ok((raw, _)) => raw,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(reg_err(&format!("looking up {reference}"), e)),
        };
        let image = reference.whole();
        let manifest: Value = serde_json::from_slice(&raw)
            .map_err(|e| ImageError::Invalid(format!("{image}: the manifest is not JSON: {e}")))?;
        Ok(Some(match platform::read_manifest(&image, &manifest) {
            Err(problem) => Err(problem),
            Ok(platform::Manifest::Index(platforms)) => platform::choose(&image, &platforms),
            Ok(platform::Manifest::Single { config_digest }) => {
                let data = self.blob(reference, &config_digest).await?;
                let config: Value = serde_json::from_slice(&data).map_err(|e| {
                    ImageError::Invalid(format!("{image}: the config is not JSON: {e}"))
                })?;
                platform::from_config(&image, &config)
            }
        }))
    }

    /// Pushes the image's blobs (skipping those the registry has) and then its manifest
    /// under `tag`. The manifest bytes are pushed as built, so the digest is the build's.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        image: &Image,
    ) -> Result<Pushed, ImageError> {
        let tagged = self.reference(repository, tag);
        let by_digest = Reference::with_digest(
            self.host.clone(),
            repository.to_string(),
            image.digest.clone(),
        );
        self.client
            .auth(&tagged, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| reg_err(&format!("authenticating to {}", self.host), e))?;
        let mut pushed = Pushed {
            reference: format!("{}/{}@{}", self.host, repository, image.digest),
            tagged: format!("{}/{}:{}", self.host, repository, tag),
            digest: image.digest.clone(),
            blobs_uploaded: 0,
            blobs_present: 0,
            bytes_uploaded: 0,
            already_present: false,
        };
        if self.manifest_digest(&tagged).await?.as_deref() == Some(image.digest.as_str()) {
            pushed.already_present = true;
            return Ok(pushed);
        }
        for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
            let present = self
                .client
                .blob_exists(&by_digest, &blob.digest)
                .await
                .map_err(|e| reg_err(&format!("checking blob {}", blob.digest), e))?;
            if present {
                pushed.blobs_present += 1;
                continue;
            }
            self.client
                .push_blob(&by_digest, blob.data.clone(), &blob.digest)
                .await
                .map_err(|e| reg_err(&format!("uploading blob {}", blob.digest), e))?;
            pushed.blobs_uploaded += 1;
            pushed.bytes_uploaded += blob.data.len() as u64;
        }
        self.client
            .push_manifest_raw(
                &tagged,
                image.manifest.clone(),
                http::HeaderValue::from_static(MEDIA_MANIFEST),
            )
            .await
            .map_err(|e| reg_err(&format!("pushing the manifest to {}", pushed.tagged), e))?;
        // Read it back: the registry must serve exactly the digest we built.
        match self.manifest_digest(&by_digest).await? {
            Some(d) if d == image.digest => Ok(pushed),
            other => Err(ImageError::Registry(format!(
                "{} answers {:?} for the pushed manifest, expected {}",
                self.host, other, image.digest
            ))),
        }
    }

    /// Pulls a base image for `architecture` (`amd64`, `arm64`): its config and layers.
    pub async fn pull_base(
        &self,
        reference: &Reference,
        architecture: &str,
    ) -> Result<BaseImage, ImageError> {
        let accept = [
            MEDIA_MANIFEST,
            MEDIA_DOCKER_MANIFEST,
            MEDIA_INDEX,
            MEDIA_DOCKER_LIST,
        ];
        let what = |s: &str| format!("pulling {reference}: {s}");
        let (raw, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accept)
            .await
            .map_err(|e| reg_err(&what("manifest"), e))?;
        let mut manifest: Value = serde_json::from_slice(&raw)
            .map_err(|e| ImageError::Invalid(what(&format!("manifest is not JSON: {e}"))))?;
        let mut resolved = reference.clone();
        if manifest.get("manifests").is_some() {
            let digest = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == architecture
                })
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| {
                    ImageError::Invalid(what(&format!(
                        "no linux/{architecture} image in the index"
                    )))
                })?
                .to_string();
            resolved = Reference::with_digest(
                reference.resolve_registry().to_string(),
                reference.repository().to_string(),
                digest,
            );
            let (raw, _) = self
                .client
                .pull_manifest_raw(&resolved, &self.auth, &accept[..2])
                .await
                .map_err(|e| reg_err(&what("platform manifest"), e))?;
            manifest = serde_json::from_slice(&raw)
                .map_err(|e| ImageError::Invalid(what(&format!("manifest is not JSON: {e}"))))?;
        }
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| ImageError::Invalid(what("manifest has no config")))?
            .to_string();
        let config_data = self.blob(&resolved, &config_digest).await?;
        let config: Value = serde_json::from_slice(&config_data)
            .map_err(|e| ImageError::Invalid(what(&format!("config is not JSON: {e}"))))?;
        let mut layers = Vec::new();
        for l in manifest["layers"].as_array().into_iter().flatten() {
            let digest = l["digest"].as_str().unwrap_or_default().to_string();
            let media = match l["mediaType"].as_str().unwrap_or(MEDIA_LAYER) {
                // The Docker name of the same thing.
                MEDIA_DOCKER_LAYER => MEDIA_LAYER,
                m if m.starts_with("application/vnd.oci.image.layer.v1.tar") => m,
                m => {
                    return Err(ImageError::Invalid(what(&format!(
                        "layer {digest} has media type {m}, which cannot be copied"
                    ))));
                }
            };
            let data = self.blob(&resolved, &digest).await?;
            layers.push(Blob {
                media_type: media.to_string(),
                digest,
                data,
            });
        }
        Ok(BaseImage {
            reference: reference.whole(),
            config,
            layers,
        })
    }

    async fn blob(&self, image: &Reference, digest: &str) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        self.client
            .pull_blob(image, digest, &mut out)
            .await
            .map_err(|e| reg_err(&format!("pulling blob {digest}"), e))?;
        if sha256_digest(&out) != digest {
            return Err(ImageError::Registry(format!(
                "blob {digest} from {} does not match its digest",
                self.host
            )));
        }
        Ok(out)
    }
}
