"""The allow-list of architectures whose weights may be uploaded as safetensors or ``.pth``.

Only the names here can be instantiated from uploaded weights: the weights carry tensors,
never code. Each builder takes the input channel count and the output width.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _first_conv(in_channels: int, conv: nn.Conv2d) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


def _resnet(depth: int) -> Callable[[int, int], nn.Module]:
    def build(in_channels: int, num_outputs: int) -> nn.Module:
        from torchvision import models as tvm

        net = getattr(tvm, f"resnet{depth}")(weights=None, num_classes=num_outputs)
        net.conv1 = _first_conv(in_channels, net.conv1)
        return net

    return build


def _densenet121(in_channels: int, num_outputs: int) -> nn.Module:
    from torchvision import models as tvm

    net = tvm.densenet121(weights=None, num_classes=num_outputs)
    net.features.conv0 = _first_conv(in_channels, net.features.conv0)
    return net


def _inception_v3(in_channels: int, num_outputs: int) -> nn.Module:
    from torchvision import models as tvm

    net = tvm.inception_v3(
        weights=None, num_classes=num_outputs, aux_logits=False, init_weights=True
    )
    net.transform_input = False
    net.Conv2d_1a_3x3.conv = _first_conv(in_channels, net.Conv2d_1a_3x3.conv)
    return net


def _efficientnet_b0(in_channels: int, num_outputs: int) -> nn.Module:
    from torchvision import models as tvm

    net = tvm.efficientnet_b0(weights=None, num_classes=num_outputs)
    stem = net.features[0][0]
    assert isinstance(stem, nn.Conv2d)
    net.features[0][0] = _first_conv(in_channels, stem)
    return net


class SmallCNN(nn.Module):
    """Four conv blocks and a linear head; fast on the CPU for tests and demos."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 32) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(in_channels, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 4 * w)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class _AttentionGate(nn.Module):
    """Soft spatial attention of Jetley et al. (learn to pay attention), as in the paper's
    dermoscopy network: a compatibility map between local features and the global vector."""

    def __init__(self, local_ch: int, global_ch: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(local_ch, global_ch, 1, bias=False)
        self.score = nn.Conv2d(global_ch, 1, 1)

    def forward(self, local: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        proj = self.project(local)
        att = torch.softmax(self.score(proj + g[:, :, None, None]).flatten(2), dim=2)
        return (proj.flatten(2) * att).sum(dim=2)


class AttentionVGG(nn.Module):
    """A small VGG-style network with two attention gates (the paper's skin-lesion model)."""

    def __init__(self, in_channels: int, num_outputs: int, width: int = 32) -> None:
        super().__init__()
        w = width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.stage1 = stage(in_channels, w)
        self.stage2 = stage(w, 2 * w)
        self.stage3 = stage(2 * w, 4 * w)
        self.stage4 = stage(4 * w, 8 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.att2 = _AttentionGate(2 * w, 8 * w)
        self.att3 = _AttentionGate(4 * w, 8 * w)
        self.classifier = nn.Linear(3 * 8 * w, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        g = torch.flatten(self.pool(f4), 1)
        return self.classifier(torch.cat([g, self.att2(f2, g), self.att3(f3, g)], dim=1))


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "densenet121": _densenet121,
    "inception_v3": _inception_v3,
    "efficientnet_b0": _efficientnet_b0,
    "attention_vgg": AttentionVGG,
    "small_cnn": SmallCNN,
}


def build_architecture(name: str, in_channels: int, num_outputs: int) -> nn.Module:
    """Instantiate an allow-listed architecture; unknown names list the valid ones."""
    try:
        builder = ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; valid: {valid}") from None
    return builder(in_channels, num_outputs)
