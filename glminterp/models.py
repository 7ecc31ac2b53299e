"""Reference architectures used by the analyses.

Every layer is a named module (no functional activations in ``forward``) so that hooks,
head detection, deconvnet rules and receptive-field arithmetic can see each one.
``glminterp_link`` tells :func:`glminterp.head.detect_head` which inverse link the training loss
implies, since the modules return logits.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES: tuple[str, ...] = ("mlp", "zero_one", "gap_cnn")


class MLP(nn.Module):
    """The seed question's network: ``in -> hidden (sigmoid) -> K``.

    Parameters
    ----------
    n_inputs : int
        Input pixels (784 for MNIST, 64 for UCI digits); images are flattened.
    n_hidden : int
    n_classes : int
    output : {"softmax", "sigmoid"}
        Output link: softmax (trained with cross-entropy) or one sigmoid per class (trained with
        binary cross-entropy on one-hot targets, as in the seed question).
    """

    def __init__(
        self, n_inputs: int = 784, n_hidden: int = 100, n_classes: int = 10, output: str = "softmax"
    ) -> None:
        super().__init__()
        if output not in ("softmax", "sigmoid"):
            raise ValueError(f"output={output!r}; use 'softmax' or 'sigmoid'.")
        self.glminterp_link = output
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(n_inputs, n_hidden)
        self.act1 = nn.Sigmoid()
        self.out = nn.Linear(n_hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act1(self.fc1(self.flatten(x))))


def zero_one_net(n_inputs: int = 784) -> MLP:
    """The ``784 -> 1 -> 2`` network of the seed question (0 versus 1 digits)."""
    return MLP(n_inputs=n_inputs, n_hidden=1, n_classes=2, output="softmax")


class GapCNN(nn.Module):
    """Conv blocks -> global average pooling -> one Linear: the CAM architecture (Zhou 2016).

    ``conv1 (3x3) -> [bn1] -> relu1 -> pool1 (2x2) -> conv2 (3x3) -> [bn2] -> relu2 -> pool2 (2x2)
    -> conv3 (3x3) -> [bn3] -> relu3 -> gap -> flatten -> [drop] -> fc``. The head's inputs are
    the channel means of ``relu3`` (a BatchNorm before each ReLU, in eval mode an affine map per
    channel, does not change that; dropout is the identity in eval mode).

    Parameters
    ----------
    in_channels : int
    n_classes : int
    widths : tuple of three ints
        Channels of conv1..conv3; ``widths[2]`` is the number of GLM regressors.
    batchnorm : bool
        Put a ``BatchNorm2d`` between each conv and its ReLU (steadier, faster training; fewer
        dead units entering the head).
    dropout : float
        Dropout probability before ``fc`` (0: no dropout module).
    """

    def __init__(
        self, in_channels: int = 1, n_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 16),
        batchnorm: bool = False, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout}; use a probability in [0, 1).")
        c1, c2, c3 = widths
        self.glminterp_link = "softmax"
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        if batchnorm:
            self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        if batchnorm:
            self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)
        if batchnorm:
            self.bn3 = nn.BatchNorm2d(c3)
        self.relu3 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        if dropout > 0:
            self.drop = nn.Dropout(float(dropout))
        self.fc = nn.Linear(c3, n_classes)

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, f"conv{i}")(x)
        bn = getattr(self, f"bn{i}", None)
        return getattr(self, f"relu{i}")(x if bn is None else bn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self._block(1, x))
        x = self.pool2(self._block(2, x))
        x = self.flatten(self.gap(self._block(3, x)))
        drop = getattr(self, "drop", None)
        return self.fc(x if drop is None else drop(x))


def build_model(name: str, *, seed: int | None = None, **kwargs) -> nn.Module:
    """Build a reference architecture by name (``"mlp"``, ``"zero_one"``, ``"gap_cnn"``).

    With ``seed`` the initial weights are drawn from a seeded generator (global RNG state is
    restored afterwards), so a whole analysis is reproducible from its seed.
    """
    builders = {"mlp": MLP, "zero_one": zero_one_net, "gap_cnn": GapCNN}
    if name not in builders:
        raise ValueError(
            f"architecture={name!r} is not known; use one of {ARCHITECTURES}, or for your own "
            "network `glminterp analyze --model package.module:factory --checkpoint weights.pt`."
        )
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    if seed is None:
        return builders[name](**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[name](**kwargs)
