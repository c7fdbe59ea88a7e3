"""A corpus of real English sentences for the vector search benchmark, without the network:
the API documentation botocore ships (every `documentation` string of the newest model of
each AWS service), split into sentences, stripped of markup, deduplicated, in a fixed order.
botocore comes with moto in the test venv.

  vector_corpus.py COUNT > corpus.txt     (one sentence per line)
"""
import gzip
import html
import json
import re
import sys
from pathlib import Path

import botocore

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
TAG = re.compile(r"<[^>]+>")


def documentation(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "documentation" and isinstance(v, str):
                yield v
            else:
                yield from documentation(v)
    elif isinstance(node, list):
        for v in node:
            yield from documentation(v)


def sentences():
    data = Path(botocore.__file__).parent / "data"
    for service in sorted(p for p in data.iterdir() if p.is_dir()):
        versions = sorted(v for v in service.iterdir() if (v / "service-2.json.gz").exists())
        if not versions:
            continue
        with gzip.open(versions[-1] / "service-2.json.gz", "rt", encoding="utf-8") as f:
            model = json.load(f)
        for doc in documentation(model):
            text = " ".join(html.unescape(TAG.sub(" ", doc)).split())
            for s in SENTENCE.split(text):
                words = s.split()
                if 5 <= len(words) <= 60 and sum(c.isalpha() for c in s) > len(s) / 2:
                    yield s


def main():
    count = int(sys.argv[1])
    seen = set()
    for s in sentences():
        if s not in seen:
            seen.add(s)
            print(s)
            if len(seen) == count:
                return
    sys.exit(f"only {len(seen)} sentences")


if __name__ == "__main__":
    main()
