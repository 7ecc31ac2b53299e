"""A model zoo the package did not write: plain-torch networks shaped like the ones users bring.

No torchvision: each block is written the way torchvision writes it (a ``BasicBlock`` calls one
``self.relu`` twice, shortcuts are 1x1 stride-2 convolutions with BatchNorm, stages are ``layerN``
Sequentials, the head is ``fc`` or ``classifier``), but small enough for CPU seconds. Every factory
takes ``seed`` (weights drawn from a seeded generator, global RNG restored) plus ``in_channels`` and
``n_classes``, and returns a model in eval mode; inputs are ``(N, in_channels, 8, 8)`` unless the
entry's ``input_shape`` says otherwise.

``ZOO`` maps a name to a :class:`ZooEntry` (factory, input shape, head kind, whether the network
is a CNN and where its last conv maps live). Factory names are stable: other test modules import
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        # BatchNorm starts at mean 0 / var 1; give it non-trivial running statistics so that a
        # train-mode forward (which would update them) is detectable and eval differs from train.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


# --------------------------------------------------------------------------------------- ResNets
class BasicBlock(nn.Module):
    """torchvision's BasicBlock: ONE ``self.relu`` called twice per forward."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), one reused ``self.relu``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet layout at toy width: conv1/bn1/relu (no maxpool at 8x8), layer1..2,
    ``avgpool`` (AdaptiveAvgPool2d), ``torch.flatten``, ``fc``."""

    def __init__(self, block, layers, in_channels: int = 1, n_classes: int = 10, width: int = 8):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width * block.expansion, n_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


def resnet_basic(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    """ResNet-18-style: two BasicBlocks per stage, stride-2 1x1 downsample in ``layer2``."""
    return _seeded(lambda: ResNet(BasicBlock, [2, 2], in_channels, n_classes), seed)


def resnet_bottleneck(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    """ResNet-50-style: one Bottleneck per stage (expansion 4)."""
    return _seeded(lambda: ResNet(Bottleneck, [1, 1], in_channels, n_classes, width=4), seed)


# ------------------------------------------------------------------------------------------- VGG
class VGG(nn.Module):
    """``features -> avgpool -> flatten -> classifier(Linear, ReLU, Dropout, Linear)``."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(8 * 2 * 2, 16), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(16, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: VGG(in_channels, n_classes), seed)


# -------------------------------------------------------------------------------------- DenseNet
class DenseNetish(nn.Module):
    """torchvision DenseNet's forward: ``features`` (ending in BatchNorm), then functional
    ``F.relu`` and ``F.adaptive_avg_pool2d`` in ``forward``, then ``classifier``."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 12, 3, padding=1, bias=False),
            nn.BatchNorm2d(12),
        )
        self.classifier = nn.Linear(12, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


def densenet(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: DenseNetish(in_channels, n_classes), seed)


class MeanPoolNet(nn.Module):
    """Functional ``F.relu`` inside and ``x.mean(dim=(2, 3))`` in ``forward`` (no pooling module):
    the last map module is ``relu2``, whose channel means are exactly the head's input."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 10, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(10, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = self.relu2(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def mean_pool_net(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: MeanPoolNet(in_channels, n_classes), seed)


# ------------------------------------------------------------------------------------- MobileNet
class MobileNetish(nn.Module):
    """Depthwise-separable blocks with ReLU6, ``classifier = Sequential(Dropout, Linear)``."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenet(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: MobileNetish(in_channels, n_classes), seed)


# ------------------------------------------------------------------------- activations and heads
class SmoothNet(nn.Module):
    """SiLU and GELU activations, GAP module, ``head`` Linear."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.act1 = nn.SiLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.GELU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.head(self.flatten(self.pool(x)))


def silu_gelu_net(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: SmoothNet(in_channels, n_classes), seed)


def three_channel_net(seed: int = 0, in_channels: int = 3, n_classes: int = 10) -> nn.Module:
    """An RGB-input ResNet (``in_channels=3``)."""
    return resnet_basic(seed=seed, in_channels=in_channels, n_classes=n_classes)


class GapHead(nn.Module):
    """Conv -> ReLU -> GAP -> Linear with a declared output link (multi-label or regression)."""

    def __init__(self, in_channels: int, n_outputs: int, link: str) -> None:
        super().__init__()
        self.glminterp_link = link
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(self.flatten(self.gap(x)))


def multilabel_net(seed: int = 0, in_channels: int = 1, n_classes: int = 4) -> nn.Module:
    """Multi-label head: ``n_classes`` independent sigmoids (trained with BCE on 0/1 targets)."""
    return _seeded(lambda: GapHead(in_channels, n_classes, "sigmoid"), seed)


def regression_net(seed: int = 0, in_channels: int = 1, n_classes: int = 2) -> nn.Module:
    """Regression head: ``n_classes`` real outputs, identity link (trained with MSE)."""
    return _seeded(lambda: GapHead(in_channels, n_classes, "identity"), seed)


class FlattenHeadCNN(nn.Module):
    """Conv stack -> ``nn.Flatten`` of the whole map -> Linear (no pooling: not a CAM head)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * 4 * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def flatten_head_cnn(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: FlattenHeadCNN(in_channels, n_classes), seed)


class PlainMLP(nn.Module):
    """``Flatten -> Linear -> ReLU -> Linear -> ReLU -> Linear`` in a Sequential ``net``."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * 64, 16), nn.ReLU(),
            nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(seed: int = 0, in_channels: int = 1, n_classes: int = 10) -> nn.Module:
    return _seeded(lambda: PlainMLP(in_channels, n_classes), seed)


def frozen_train_mode(model: nn.Module, freeze: str = "conv1") -> nn.Module:
    """Put ``model`` in train mode with the parameters of modules whose name starts with
    ``freeze`` frozen (``requires_grad=False``): how a fine-tuning user hands a model over."""
    model.train()
    for name, p in model.named_parameters():
        if name.startswith(freeze):
            p.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ZooEntry:
    """One zoo model and what a test needs to know about it.

    Attributes
    ----------
    factory : callable
        ``factory(seed=..., in_channels=..., n_classes=...)``.
    in_channels, n_classes : int
    link : str
        The head's inverse link ("softmax", "sigmoid", "identity").
    head : str
        Module name of the head Linear.
    cam_layer : str or None
        The last conv-map module whose channel means are the head's input (a GAP head), or None.
    gradcam_layer : str or None
        A conv-map module Grad-CAM can target.
    """

    factory: Callable[..., nn.Module]
    in_channels: int = 1
    n_classes: int = 10
    link: str = "softmax"
    head: str = "fc"
    cam_layer: str | None = None
    gradcam_layer: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, 8, 8)

    def build(self, seed: int = 0) -> nn.Module:
        return self.factory(seed=seed, in_channels=self.in_channels, n_classes=self.n_classes)


ZOO: dict[str, ZooEntry] = {
    "resnet_basic": ZooEntry(resnet_basic, cam_layer="layer2.1", gradcam_layer="layer2.1"),
    "resnet_bottleneck": ZooEntry(
        resnet_bottleneck, cam_layer="layer2.0", gradcam_layer="layer2.0"
    ),
    "vgg": ZooEntry(vgg, head="classifier.3", gradcam_layer="features.4"),
    # DenseNet: F.relu runs after the last module, so no module's maps pool to the head input.
    # (Grad-CAM on "features" itself is right here, but torchcam's copy of it is overwritten
    # by the in-place F.relu, so the comparison uses the last conv.)
    "densenet": ZooEntry(densenet, head="classifier", gradcam_layer="features.3"),
    "mean_pool_net": ZooEntry(mean_pool_net, cam_layer="relu2", gradcam_layer="relu2"),
    "mobilenet": ZooEntry(
        mobilenet, head="classifier.1", cam_layer="features.8", gradcam_layer="features.8"
    ),
    "silu_gelu_net": ZooEntry(
        silu_gelu_net, head="head", cam_layer="act2", gradcam_layer="act2"
    ),
    "three_channel_net": ZooEntry(
        three_channel_net, in_channels=3, cam_layer="layer2.1", gradcam_layer="layer2.1"
    ),
    "multilabel_net": ZooEntry(
        multilabel_net, n_classes=4, link="sigmoid", cam_layer="relu2", gradcam_layer="relu2"
    ),
    "regression_net": ZooEntry(
        regression_net, n_classes=2, link="identity", cam_layer="relu2", gradcam_layer="relu2"
    ),
    "flatten_head_cnn": ZooEntry(flatten_head_cnn, gradcam_layer="relu"),
    "mlp": ZooEntry(mlp, head="net.5"),
}


def zoo_input(entry: ZooEntry, n: int = 6, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal inputs of the entry's shape."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *entry.input_shape), generator=g)


def state_snapshot(model: nn.Module) -> tuple[dict, dict, dict]:
    """Everything a model-running function must leave unchanged: state_dict (cloned), every
    module's train flag and every parameter's requires_grad."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    return sd, flags, grads


def assert_unchanged(model: nn.Module, snapshot: tuple[dict, dict, dict]) -> None:
    """Raise AssertionError naming the first thing that changed since :func:`state_snapshot`."""
    sd, flags, grads = snapshot
    now = model.state_dict()
    assert now.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(now[k], v), f"state_dict[{k!r}] changed"
    assert {n: m.training for n, m in model.named_modules()} == flags, "train flags changed"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads, (
        "requires_grad changed"
    )
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()), (
        "hooks left behind"
    )
