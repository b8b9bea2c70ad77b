"""A stacked GRU classifier: what a `model.factory` returns (see factories.py for the contract)."""

from torch import nn


class StackedGRU(nn.Module):
    def __init__(self, input_size: int, num_classes: int, hidden: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        out, _ = self.gru(x)  # (N, k, hidden)
        return self.head(out[:, -1])


def build_gru(input_size: int, num_classes: int, hidden: int = 32, layers: int = 2) -> nn.Module:
    """Called as build_gru(input_size, num_classes, **model.args) under the trial's seed."""
    return StackedGRU(input_size, num_classes, hidden, layers)
