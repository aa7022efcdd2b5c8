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


# --------------------------------------------------------------------------------------
# Small fixed-width networks for the demo zoo (models/zoo): the shapes of CheXNet
# (DenseNet), the paper's attention VGG and Inception, and a ResNet, small enough to train
# on a CPU in minutes at 64 x 64 and to ship as safetensors of about 1 MB. Their widths are
# fixed so that a weights file always matches its architecture name.


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A ResNet with one basic block per stage (widths 16, 32, 64, 128) and a stride-2
    stem: ~0.3 M parameters. Any input size (global average pooling)."""

    WIDTHS = (16, 32, 64, 128)

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        w = self.WIDTHS
        self.stem = _conv_bn_relu(in_channels, w[0], 3, 2)
        blocks: list[nn.Module] = []
        cin = w[0]
        for i, cout in enumerate(w):
            blocks.append(_BasicBlock(cin, cout, 1 if i == 0 else 2))
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, 2 * growth, 1, bias=False),
            nn.BatchNorm2d(2 * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


class DenseNetSmall(nn.Module):
    """A DenseNet-BC in the shape of CheXNet's DenseNet-121, scaled down: a stride-2 stem,
    dense blocks of 2, 4 and 6 bottleneck layers (growth 12) joined by compressing
    transitions; ~50 k parameters."""

    GROWTH = 12
    BLOCKS = (2, 4, 6)
    STEM = 16

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        c = self.STEM
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, c, 3, 2)]
        for i, count in enumerate(self.BLOCKS):
            for _ in range(count):
                layers.append(_DenseLayer(c, self.GROWTH))
                c += self.GROWTH
            if i < len(self.BLOCKS) - 1:
                layers += [
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c // 2, 1, bias=False),
                    nn.AvgPool2d(2),
                ]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class _InceptionModule(nn.Module):
    """Four parallel branches: 1x1, 1x1-3x3, 1x1-3x3-3x3 (a factorized 5x5), pool-1x1."""

    def __init__(self, cin: int, b1: int, b3: int, b5: int, bp: int) -> None:
        super().__init__()
        self.b1 = _conv_bn_relu(cin, b1, 1)
        self.b3 = nn.Sequential(_conv_bn_relu(cin, b3 // 2, 1), _conv_bn_relu(b3 // 2, b3))
        self.b5 = nn.Sequential(
            _conv_bn_relu(cin, b5 // 2, 1), _conv_bn_relu(b5 // 2, b5), _conv_bn_relu(b5, b5)
        )
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), _conv_bn_relu(cin, bp, 1))
        self.out_channels = b1 + b3 + b5 + bp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionSmall(nn.Module):
    """An Inception-v3-style network (the paper's fundus model), scaled down: a stride-2
    stem and four inception modules with factorized 5x5 branches; ~0.1 M parameters."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, 32, 3, 2)
        m1 = _InceptionModule(32, 16, 24, 8, 8)
        m2 = _InceptionModule(m1.out_channels, 24, 32, 16, 16)
        m3 = _InceptionModule(m2.out_channels, 32, 48, 24, 24)
        m4 = _InceptionModule(m3.out_channels, 48, 64, 32, 32)
        self.features = nn.Sequential(
            m1, nn.MaxPool2d(2), m2, nn.MaxPool2d(2), m3, nn.MaxPool2d(2), m4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(m4.out_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(self.stem(x))), 1))


def _attention_vgg_small(in_channels: int, num_outputs: int) -> nn.Module:
    return AttentionVGG(in_channels, num_outputs, width=16)


ARCHITECTURES.update(
    {
        "resnet_small": ResNetSmall,
        "densenet_small": DenseNetSmall,
        "inception_small": InceptionSmall,
        "attention_vgg_small": _attention_vgg_small,
    }
)
