"""Puts an image manifest into moto's ECR, as a push would leave it.

moto's ECR has the API but no registry endpoint to push blobs to; deploys refuse images that
are not in their registry, so tests and benchmarks that deploy against moto register their
(never pulled) image here first.

    python seed_image.py ENDPOINT_URL REPOSITORY TAG
"""

import json
import sys

import boto3

endpoint, repository, tag = sys.argv[1:4]
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
# An image with no layers and the empty JSON object as its config.
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "size": 2,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    },
    "layers": [],
}
try:
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
except ecr.exceptions.ImageAlreadyExistsException:
    pass
