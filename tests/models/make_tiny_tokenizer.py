"""Make the tiny WordPiece tokenizer the text tests use with tiny_bert.onnx (vocabulary 1000).

A BERT-style `tokenizer.json` (lowercasing BERT normalizer, BERT pre-tokenizer,
`[CLS] $A [SEP]` post-processing; [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4;
padding and truncation to 16 configured, as real files configure theirs),
trained with the `tokenizers` library on the docstrings of a few standard-library
modules, so it needs nothing but infc's own run-time dependencies. Its ids stay
below tiny BERT's vocabulary of 1000. Run: `python tests/models/make_tiny_tokenizer.py`.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
VOCAB = 1000
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MODULES = ["argparse", "collections", "csv", "json", "pathlib", "textwrap", "unittest"]


def corpus() -> list[str]:
    texts = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if inspect.isclass(obj) or inspect.isroutine(obj) else None
            if doc:
                texts.append(doc)
    return texts


def main() -> None:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    # as real tokenizer files do (MiniLM's among them): padding and truncation the step must override
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=16)
    tokenizer.enable_truncation(16)
    tokenizer.save(str(HERE / "tiny_tokenizer.json"))
    print(f"wrote {HERE / 'tiny_tokenizer.json'}: {tokenizer.get_vocab_size()} tokens")


if __name__ == "__main__":
    main()
