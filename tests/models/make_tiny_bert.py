"""Make the tiny BERT the transformer-pass tests use (needs `pip install -e '.[examples]'`).

A randomly initialised, seeded `transformers.BertModel` (hidden 64, 2 layers,
4 heads, intermediate 128, vocabulary 1000, 128 positions), exported twice with
the same weights; both take input_ids, attention_mask, token_type_ids int64
[N, S] and give last_hidden_state float32 [N, S, 64], each under 1 MB:

  tiny_bert.onnx          eager attention, TorchScript exporter, opset 17: the
                          graph `onnxruntime.transformers` fuses fully
  tiny_bert_dynamo.onnx   SDPA attention, the default (dynamo) exporter, opset 18:
                          the graph it leaves with unfused attention

The committed file is what the tests load; they never need torch. Run:
`python tests/models/make_tiny_bert.py`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

HERE = Path(__file__).resolve().parent
SEED = 0
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT = "last_hidden_state"


class Encoder(torch.nn.Module):
    """BertModel with positional inputs and one output, as the exporter wants it."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def tiny_bert(attention: str = "eager") -> BertModel:
    """The seeded random model; LayerNorm and bias parameters are perturbed like a trained model's
    (left at their 1/0 initial values the exporter would share them, which no real model does)."""
    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, attn_implementation=attention)
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                param.add_(0.02 * torch.randn_like(param))
    return model


def export_torchscript(model: BertModel, path: Path, opset: int = 17) -> None:
    """Export with the TorchScript exporter: dynamic batch and sequence axes."""
    ids = torch.randint(1, model.config.vocab_size, (2, 16))
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    axes = {name: {0: "batch", 1: "sequence"} for name in [*INPUTS, OUTPUT]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer notes
        torch.onnx.export(Encoder(model), example, str(path), dynamo=False, opset_version=opset,
                          input_names=INPUTS, output_names=[OUTPUT], dynamic_axes=axes, do_constant_folding=True)


def export_dynamo(model: BertModel, path: Path, opset: int = 18) -> None:
    """Export with the default (torch.export-based) exporter: dynamic batch and sequence axes."""
    ids = torch.randint(1, model.config.vocab_size, (2, 16))
    example = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {name: {0: batch, 1: sequence} for name in INPUTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Encoder(model), example, dynamo=True, opset_version=opset, input_names=INPUTS,
                                    output_names=[OUTPUT], dynamic_shapes=shapes, verbose=False)
    assert program is not None
    program.save(str(path))


def main() -> None:
    for path, attention, export in ((HERE / "tiny_bert.onnx", "eager", export_torchscript),
                                    (HERE / "tiny_bert_dynamo.onnx", "sdpa", export_dynamo)):
        export(tiny_bert(attention), path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
