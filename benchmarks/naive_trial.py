"""The baseline: what a careful researcher writes without expander-sweeps.

A torchvision-style dataset with a per-sample transform behind a DataLoader, nn.RNN / nn.LSTM,
`torch.nn.utils.prune.l1_unstructured` on the recurrent weights, and for every
(remaining fraction, noise) point: train dense, prune, fine-tune, evaluate.

    python benchmarks/naive_trial.py --data ../shared/data/mnist --remaining 1.0 0.1 --noise 0 0.3

benchmarks/run.py imports it to compare against the project in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import DataLoader, Dataset


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def mnist_split(folder: Path, train: int = 8000, test: int = 2000, seed: int = 0):
    """The 10k MNIST test set, shuffled once and split (images as uint8 28x28, labels)."""
    images = read_idx(next(folder.glob("t10k-images-idx3-ubyte*")))
    labels = read_idx(next(folder.glob("t10k-labels-idx1-ubyte*")))
    order = np.random.default_rng(seed).permutation(len(images))
    tr, te = order[:train], order[train:train + test]
    return (images[tr], labels[tr]), (images[te], labels[te])


class SequenceImages(Dataset):
    """torchvision-style: uint8 images in memory, a transform applied per sample in __getitem__."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, noise_variance: float = 0.0,
                 noise_fraction: float = 0.2):
        self.images, self.labels = images, labels
        self.noise_variance, self.noise_fraction = noise_variance, noise_fraction

    def transform(self, image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(image.astype(np.float32) / 255.0)  # like ToTensor: [0, 1], 28 x 28
        if self.noise_variance > 0:
            hit = torch.rand_like(x) < self.noise_fraction
            x = x + hit * torch.randn_like(x) * self.noise_variance ** 0.5
        return x  # rows are time steps: (k = 28, 28 features)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])


class Net(nn.Module):
    def __init__(self, inputs: int, hidden: int = 128, classes: int = 10, cell: str = "rnn"):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.RNN)(inputs, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)
        for name, p in self.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.kaiming_uniform_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def train(model: nn.Module, loader: DataLoader, epochs: int, device: torch.device, lr: float = 1e-3) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total


def run_point(train_set, test_set, layer: str, remaining: float, noise: float, epochs: int,
              finetune_epochs: int, device: torch.device, hidden: int = 128, seed: int = 0) -> float:
    """One grid point, the plain way: train dense, prune one-shot, fine-tune, test at one noise level."""
    torch.manual_seed(seed)
    loader = DataLoader(SequenceImages(*train_set), batch_size=128, shuffle=True)
    test_loader = DataLoader(SequenceImages(*test_set, noise_variance=noise), batch_size=1000)
    model = Net(28, hidden).to(device)
    train(model, loader, epochs, device)
    if remaining < 1.0:
        name = {"W_xh": "weight_ih_l0", "W_hh": "weight_hh_l0"}[layer]
        prune.l1_unstructured(model.rnn, name=name, amount=1.0 - remaining)
    train(model, loader, finetune_epochs, device)
    return evaluate(model, test_loader, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    parser.add_argument("--remaining", type=float, nargs="+", default=[1.0, 0.5, 0.1])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--layers", nargs="+", default=["W_xh", "W_hh"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_set, test_set = mnist_split(Path(args.data))
    started = time.perf_counter()
    for layer in args.layers:
        for remaining in args.remaining:
            for noise in args.noise:
                acc = run_point(train_set, test_set, layer, remaining, noise, args.epochs,
                                args.finetune_epochs, device)
                print(f"{layer} {100 * remaining:g}% noise {noise:g}: accuracy {100 * acc:.2f}%")
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
