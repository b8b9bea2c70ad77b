"""PyTorch's recurrent layers by the cell names of the spec (and of results.GATES): what models.py
builds and what factories.py and expansion.py recognise in a user's model. Its own module so that
those three import it without importing each other."""

from __future__ import annotations

from torch import nn

__all__ = ["RECURRENT_CELLS"]

RECURRENT_CELLS = {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}
