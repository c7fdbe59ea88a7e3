"""Puts an image into moto's ECR through the ECR API, as a push would leave it.

moto's ECR has the API but no registry endpoint to push blobs to; deploys refuse images that
are not in their registry, and read the image's config for its architecture, so tests and
benchmarks that deploy against moto register their (never pulled) image here first: its
config goes up as a layer upload (InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload), then the manifest (PutImage).

    python seed_image.py ENDPOINT_URL REPOSITORY TAG [ARCHITECTURE [OS]]

ARCHITECTURE is the config's (`amd64` unless given; `none` leaves it out).
"""

import hashlib
import json
import sys

import boto3

endpoint, repository, tag = sys.argv[1:4]
architecture = sys.argv[4] if len(sys.argv) > 4 else "amd64"
os_name = sys.argv[5] if len(sys.argv) > 5 else "linux"
ecr = boto3.client(
    "ecr",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
try:
    ecr.create_repository(repositoryName=repository)
except ecr.exceptions.RepositoryAlreadyExistsException:
    pass

# An image with no layers: only its config, which names the platform.
config = {"os": os_name, "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}
if architecture != "none":
    config["architecture"] = architecture
data = json.dumps(config, sort_keys=True).encode()
digest = "sha256:" + hashlib.sha256(data).hexdigest()
upload = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
ecr.upload_layer_part(
    repositoryName=repository,
    uploadId=upload,
    partFirstByte=0,
    partLastByte=len(data) - 1,
    layerPartBlob=data,
)
done = ecr.complete_layer_upload(
    repositoryName=repository, uploadId=upload, layerDigests=[digest]
)
assert done["layerDigest"] == digest, done

manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": len(data),
        "digest": digest,
    },
    "layers": [],
}
try:
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
except ecr.exceptions.ImageAlreadyExistsException:
    pass
