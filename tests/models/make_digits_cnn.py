"""Make tests/models/digits_cnn.onnx: a small CNN (about 1.3 M MACs) trained on scikit-learn's digits.

The model the issue's measurements call "always quantizing makes small CNNs
slower": the search must keep it fp32 unless int8 is really faster. Input
float32 [N, 1, 8, 8] (the digits example's pre-processing), output logits [N, 10].
Run: `pip install ".[examples]" && python tests/models/make_digits_cnn.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255) / 255.0
    x = torch.tensor(((images - 0.5) / 0.5)[:, None], dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(15):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        print(f"training accuracy: {(model(x).argmax(1) == y).float().mean():.4f}")
    torch.onnx.export(model, (x[:1],), HERE / "digits_cnn.onnx", input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    print(f"wrote {HERE / 'digits_cnn.onnx'}")


if __name__ == "__main__":
    main()
