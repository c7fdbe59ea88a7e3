//! An image in ECR, read through the ECR API (the deployer's AWS credentials, no registry
//! login): `BatchGetImage` for its manifest, `GetDownloadUrlForLayer` and a GET of the
//! pre-signed URL for its config (ECR keeps the config as one of the image's blobs).

use std::time::Duration;

use aws_sdk_ecr::operation::batch_get_image::BatchGetImageError;
use aws_sdk_ecr::types::ImageIdentifier;
use oci_client::Reference;
use serde_json::Value;

use super::platform::{self, CpuArchitecture, Manifest};
use super::{MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST, sha256_digest};
use crate::engine::error_text;

/// A config larger than this is not an image config.
const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The architecture a Fargate task runs the ECR image `image` (parsed as `r`, in `account`'s
/// registry) on. Every error is a plan problem, worded for the user.
pub async fn architecture(
    ecr: &aws_sdk_ecr::Client,
    image: &str,
    account: &str,
    r: &Reference,
) -> Result<CpuArchitecture, String> {
    let not_pushed = || {
        format!("image {image} is not in its ECR repository: push it first (`agentbus image push`)")
    };
    let cannot = |e: String| format!("cannot confirm that image {image} exists: {e}");
    let id = ImageIdentifier::builder()
        .set_image_digest(r.digest().map(str::to_string))
        .set_image_tag(if r.digest().is_none() {
            Some(r.tag().unwrap_or("latest").to_string())
        } else {
            None
        })
        .build();
    let out = match ecr
        .batch_get_image()
        .registry_id(account)
        .repository_name(r.repository())
        .image_ids(id)
        .accepted_media_types(MEDIA_MANIFEST)
        .accepted_media_types(MEDIA_DOCKER_MANIFEST)
        .accepted_media_types(MEDIA_INDEX)
        .accepted_media_types(MEDIA_DOCKER_LIST)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(BatchGetImageError::is_repository_not_found_exception) =>
        {
            return Err(not_pushed());
        }
        Err(e) => return Err(cannot(error_text(&e))),
    };
    let Some(manifest) = out.images().first().and_then(|i| i.image_manifest()) else {
        // ImageNotFound is the answer for an image that is not there; anything else
        // (a digest that does not match the tag, a manifest type not asked for) is said.
        return match out.failures().first() {
            Some(f)
                if f.failure_code().map(|c| c.as_str()) != Some("ImageNotFound")
                    && f.failure_code().is_some() =>
            {
                Err(cannot(format!(
                    "{}: {}",
                    f.failure_code().map(|c| c.as_str()).unwrap_or_default(),
                    f.failure_reason().unwrap_or_default()
                )))
            }
            _ => Err(not_pushed()),
        };
    };
    let manifest: Value = serde_json::from_str(manifest)
        .map_err(|e| cannot(format!("its manifest is not JSON: {e}")))?;
    match platform::read_manifest(image, &manifest)? {
        Manifest::Index(platforms) => platform::choose(image, &platforms),
        Manifest::Single { config_digest } => {
            // The SDK retries the API call; the download from S3 is retried here, with a
            // fresh URL each time.
            let mut attempt = 0;
            let config = loop {
                match config(ecr, account, r.repository(), &config_digest).await {
                    Ok(c) => break c,
                    Err(Download::Retry(_)) if attempt < DOWNLOAD_RETRIES => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    Err(Download::Retry(e) | Download::Fail(e)) => {
                        return Err(format!("cannot read the config of image {image}: {e}"));
                    }
                }
            };
            platform::from_config(image, &config)
        }
    }
}

/// Downloads tried again after a network error or a 5xx/429 answer: as many attempts in
/// all as the SDK makes of a call.
const DOWNLOAD_RETRIES: u32 = crate::aws::MAX_ATTEMPTS - 1;

/// Why a config could not be read.
enum Download {
    /// Worth another try.
    Retry(String),
    Fail(String),
}

/// The image config `digest` of `repository`, downloaded from where ECR says it is.
async fn config(
    ecr: &aws_sdk_ecr::Client,
    account: &str,
    repository: &str,
    digest: &str,
) -> Result<Value, Download> {
    let out = ecr
        .get_download_url_for_layer()
        .registry_id(account)
        .repository_name(repository)
        .layer_digest(digest)
        .send()
        .await
        .map_err(|e| Download::Fail(error_text(&e)))?;
    let url = out
        .download_url()
        .ok_or_else(|| Download::Fail("GetDownloadUrlForLayer answered no URL".into()))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Download::Fail(e.to_string()))?;
    let failed = |e: reqwest::Error| {
        let text = format!("downloading it: {}", error_text(&e));
        match e.status() {
            Some(s) if s.is_client_error() && s != reqwest::StatusCode::TOO_MANY_REQUESTS => {
                Download::Fail(text)
            }
            _ => Download::Retry(text),
        }
    };
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    let mut data = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        if data.len() + chunk.len() > MAX_CONFIG_BYTES {
            return Err(Download::Fail(format!(
                "it is larger than {MAX_CONFIG_BYTES} bytes"
            )));
        }
        data.extend_from_slice(&chunk);
    }
    if sha256_digest(&data) != digest {
        // A download cut short is worth another try.
        return Err(Download::Retry(format!(
            "the bytes downloaded do not match its digest {digest}"
        )));
    }
    serde_json::from_slice(&data).map_err(|e| Download::Fail(format!("it is not JSON: {e}")))
}
