"""A faithful PyTorch port of face-api.js's AgeGenderNet (TinyXception, 112x112 RGB).

Everything here mirrors ``@vladmandic/face-api`` 1.7.15 as run by TensorFlow.js, because
the published accuracy (and ``shared/reference/faceapi_agegender_reference.npz``) only
holds for the exact same arithmetic: the zero padding to a square, TensorFlow's legacy
bilinear resize (not OpenCV's or Pillow's), the mean/255 normalisation, TF 'same'
padding (stride 2 pads only after; max-pool pads with -inf) and the uint8-quantised
weights dequantised as ``q * scale + min``.

Tensors enter and leave as NHWC (channels-last, like TF.js); inside, the network runs
NCHW-shaped tensors in ``torch.channels_last`` memory, which is what makes the depthwise
convolutions fast on CPU.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
NUM_MAIN_BLOCKS = 2
# face-api's gender head is [male, female]; p(female) is column 1.
FEMALE_COLUMN = 1


class ModelSignatureError(ValueError):
    """The weight files do not describe the network this port implements."""


# --- weight files ---------------------------------------------------------------------


def _separable(prefix: str, c_in: int, c_out: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{prefix}/depthwise_filter", (3, 3, c_in, 1)),
        (f"{prefix}/pointwise_filter", (1, 1, c_in, c_out)),
        (f"{prefix}/bias", (c_out,)),
    ]


def _reduction(prefix: str, c_in: int, c_out: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        *_separable(f"{prefix}/separable_conv0", c_in, c_out),
        *_separable(f"{prefix}/separable_conv1", c_out, c_out),
        (f"{prefix}/expansion_conv/filters", (1, 1, c_in, c_out)),
        (f"{prefix}/expansion_conv/bias", (c_out,)),
    ]


def expected_signature() -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and TF-layout shapes, in manifest order, that this port expects."""
    spec: list[tuple[str, tuple[int, ...]]] = [
        ("entry_flow/conv_in/filters", (3, 3, 3, 32)),
        ("entry_flow/conv_in/bias", (32,)),
        *_reduction("entry_flow/reduction_block_0", 32, 64),
        *_reduction("entry_flow/reduction_block_1", 64, 128),
    ]
    for i in range(NUM_MAIN_BLOCKS):
        for j in range(3):
            spec += _separable(f"middle_flow/main_block_{i}/separable_conv{j}", 128, 128)
    spec += [
        *_reduction("exit_flow/reduction_block", 128, 256),
        *_separable("exit_flow/separable_conv", 256, 512),
        ("fc/age/weights", (512, 1)),
        ("fc/age/bias", (1,)),
        ("fc/gender/weights", (512, 2)),
        ("fc/gender/bias", (2,)),
    ]
    return spec


Signature = Sequence[tuple[str, tuple[int, ...]]]


def check_signature(
    entries: Sequence[dict], signature: Signature | None = None, model: str = "AgeGenderNet"
) -> None:
    """Raise ModelSignatureError unless the manifest lists exactly the expected tensors.

    A different face-api model (say the tiny face detector's manifest given by mistake)
    would otherwise fail deep inside ``load_state_dict`` or, worse, load silently.
    ``signature`` defaults to AgeGenderNet's; ``model`` names the network in the error.
    """
    expected = dict(expected_signature() if signature is None else signature)
    found = {e["name"]: tuple(e["shape"]) for e in entries}
    problems = [f"missing {n}" for n in expected if n not in found]
    problems += [f"unexpected {n}" for n in found if n not in expected]
    problems += [
        f"{n}: shape {found[n]} != expected {shape}"
        for n, shape in expected.items()
        if n in found and found[n] != shape
    ]
    if problems:
        shown = "; ".join(problems[:6]) + (
            f" (+{len(problems) - 6} more)" if len(problems) > 6 else ""
        )
        raise ModelSignatureError(f"not a face-api {model} weight manifest: {shown}")


def load_weights(
    manifest_path: str | Path,
    bin_path: str | Path | None = None,
    signature: Signature | None = None,
    model: str = "AgeGenderNet",
) -> dict[str, np.ndarray]:
    """Read a TF.js weights manifest and its binary into float32 arrays (TF layouts).

    The binary is the tensors of the manifest, concatenated without padding, in manifest
    order. Quantised tensors take 1 (uint8) or 2 (uint16) bytes per value and are
    dequantised as TF.js does it (``q * scale + min`` in float64, stored as float32);
    others are raw little-endian float32. ``bin_path`` overrides the manifest's ``paths``
    (a single shard), so a verified file can be passed explicitly. ``signature`` and
    ``model`` go to :func:`check_signature` (AgeGenderNet's by default).
    """
    manifest_path = Path(manifest_path)
    groups = json.loads(manifest_path.read_text())
    entries = [w for g in groups for w in g["weights"]]
    check_signature(entries, signature, model)
    if bin_path is not None:
        buffer = Path(bin_path).read_bytes()
    else:
        buffer = b"".join(
            (manifest_path.parent / p).read_bytes() for g in groups for p in g["paths"]
        )

    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        shape = tuple(entry["shape"])
        count = math.prod(shape)
        if entry.get("dtype", "float32") != "float32":
            raise ModelSignatureError(f"{entry['name']}: unsupported dtype {entry['dtype']!r}")
        quant = entry.get("quantization")
        if quant is None:
            stored = np.dtype("<f4")
        elif quant["dtype"] in ("uint8", "uint16"):
            stored = np.dtype(quant["dtype"]).newbyteorder("<")
        else:
            raise ModelSignatureError(
                f"{entry['name']}: unsupported quantization {quant['dtype']!r}"
            )
        nbytes = stored.itemsize * count
        if offset + nbytes > len(buffer):
            raise ModelSignatureError(f"weight file too short at {entry['name']}")
        raw = np.frombuffer(buffer, stored, count, offset)
        if quant is None:
            values = raw.astype(np.float32)
        else:
            scale, low = float(quant["scale"]), float(quant["min"])
            values = (raw.astype(np.float64) * scale + low).astype(np.float32)
        tensors[entry["name"]] = values.reshape(shape)
        offset += nbytes
    if offset != len(buffer):
        raise ModelSignatureError(
            f"weight file has {len(buffer) - offset} bytes beyond what the manifest describes"
        )
    return tensors


def to_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename TF.js tensors to this module's parameters and permute them to torch layouts."""
    state: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        scope, _, leaf = name.rpartition("/")
        key = scope.replace("/", ".")
        t = torch.from_numpy(np.ascontiguousarray(value))
        if leaf == "filters":  # [kh, kw, in, out] -> [out, in, kh, kw]
            state[f"{key}.weight"] = t.permute(3, 2, 0, 1)
        elif leaf == "depthwise_filter":  # [kh, kw, in, 1] -> [in, 1, kh, kw]
            state[f"{key}.depthwise.weight"] = t.permute(2, 3, 0, 1)
        elif leaf == "pointwise_filter":  # [1, 1, in, out] -> [out, in, 1, 1]
            state[f"{key}.pointwise.weight"] = t.permute(3, 2, 0, 1)
        elif leaf == "weights":  # dense [in, out] -> [out, in]
            state[f"{key}.weight"] = t.t()
        elif leaf == "bias":
            # A separable conv's bias is added after its pointwise convolution.
            target = (
                "pointwise.bias"
                if scope.rsplit("/", 1)[-1].startswith("separable_conv")
                else "bias"
            )
            state[f"{key}.{target}"] = t
        else:
            raise ModelSignatureError(f"unexpected tensor {name}")
    return {k: v.contiguous() for k, v in state.items()}


# --- preprocessing --------------------------------------------------------------------


def pad_to_square(images: torch.Tensor) -> torch.Tensor:
    """Zero-pad NHWC images to a square, centred, as face-api's ``padToSquare(.., true)``.

    For an odd difference the extra row/column goes after (bottom/right): face-api
    appends ``round(diff / 2)`` (JavaScript rounds .5 up) and prepends the rest.
    """
    height, width = images.shape[1], images.shape[2]
    if height == width:
        return images
    diff = abs(height - width)
    after = math.floor(diff * 0.5 + 0.5)
    before = diff - after
    if height > width:  # pad the width axis
        return F.pad(images, (0, 0, before, after))
    return F.pad(images, (0, 0, 0, 0, before, after))


def _legacy_axis(in_size: int, out_size: int, device: torch.device):
    """Source indices and weights along one axis for TF's legacy bilinear resize."""
    ratio = in_size / out_size  # float64, as in TF.js (JavaScript numbers)
    src = torch.arange(out_size, dtype=torch.float64, device=device) * ratio
    lo = src.floor().clamp(min=0)
    frac = src - lo
    hi = src.ceil().clamp(max=in_size - 1)
    return lo.long(), hi.long(), frac


def resize_bilinear_legacy(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize NHWC images like ``tf.image.resizeBilinear`` (no align corners, no half pixels).

    Source coordinate = destination x in/out, so the image is sampled from its top-left
    corner and the last rows are never blended: that shift matters for this network and
    no OpenCV or Pillow mode reproduces it. Implemented with gathers, so it runs batched
    on any device and is differentiable with respect to the pixel values.

    The four neighbours are gathered in the input's dtype (uint8 stays uint8, which is
    cheap) and blended in float64, as TF.js does in JavaScript doubles, so the float32
    result is bit-identical to the original; a float32 blend is off by up to 3e-5.
    Returns float32 for integer input, the input's dtype otherwise.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    in_h, in_w = images.shape[1], images.shape[2]
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    if (in_h, in_w) == (out_h, out_w):
        return images.to(out_dtype)
    r_lo, r_hi, r_frac = _legacy_axis(in_h, out_h, images.device)
    c_lo, c_hi, c_frac = _legacy_axis(in_w, out_w, images.device)
    r_frac = r_frac.view(1, -1, 1, 1)
    c_frac = c_frac.view(1, 1, -1, 1)
    top = images.index_select(1, r_lo)
    bottom = images.index_select(1, r_hi)
    top_left = top.index_select(2, c_lo).to(torch.float64)
    top_right = top.index_select(2, c_hi).to(torch.float64)
    bottom_left = bottom.index_select(2, c_lo).to(torch.float64)
    bottom_right = bottom.index_select(2, c_hi).to(torch.float64)
    upper = top_left + (top_right - top_left) * c_frac
    lower = bottom_left + (bottom_right - bottom_left) * c_frac
    return (upper + (lower - upper) * r_frac).to(out_dtype)


def preprocess(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NHWC RGB 0..255 -> (resized 112x112 0..255, normalised network input), both NHWC.

    Integer input stays integer through padding and gathering (cheaper), float input
    keeps its dtype (and its autograd graph). Normalisation is ``(x - MEAN_RGB) / 255``
    in float32. (face-api's TypeScript source reads ``div(256)``; the published
    package's reference outputs match 255 exactly.)
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {tuple(images.shape)}")
    resized = resize_bilinear_legacy(pad_to_square(images), INPUT_SIZE)
    mean = torch.tensor(MEAN_RGB, dtype=resized.dtype, device=resized.device)
    return resized, (resized - mean) / 255.0


# --- network --------------------------------------------------------------------------


def _tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    top, bottom = _tf_same_pad(x.shape[2], kernel, stride)
    left, right = _tf_same_pad(x.shape[3], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class SeparableConv(nn.Module):
    """``tf.separableConv2d`` 3x3 stride 1 'same' + bias (after the pointwise conv)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        # Stride 1, kernel 3: TF 'same' is the symmetric padding 1.
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ReductionBlock(nn.Module):
    """Two separable convs, a 3x3/2 max-pool, plus a 1x1/2 conv shortcut of the raw input."""

    def __init__(self, c_in: int, c_out: int, activate_input: bool = True) -> None:
        super().__init__()
        self.activate_input = activate_input
        self.separable_conv0 = SeparableConv(c_in, c_out)
        self.separable_conv1 = SeparableConv(c_out, c_out)
        self.expansion_conv = nn.Conv2d(c_in, c_out, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(x) if self.activate_input else x
        out = self.separable_conv0(out)
        out = self.separable_conv1(F.relu(out))
        out = F.max_pool2d(_pad_same(out, 3, 2, value=-math.inf), 3, 2)
        # The shortcut takes the block input before its ReLU, as face-api does.
        return out + self.expansion_conv(x)


class MainBlock(nn.Module):
    """Three ReLU + separable conv stages with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.separable_conv0 = SeparableConv(channels, channels)
        self.separable_conv1 = SeparableConv(channels, channels)
        self.separable_conv2 = SeparableConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.separable_conv0(F.relu(x))
        out = self.separable_conv1(F.relu(out))
        out = self.separable_conv2(F.relu(out))
        return out + x


class AgeGenderNet(nn.Module):
    """TinyXception(2 main blocks) + 7x7 average pool + age and gender dense heads.

    Submodule names mirror the TF.js tensor names (``/`` -> ``.``), so the state dict is
    a rename of the manifest and ``load_state_dict(strict=True)`` checks it again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entry_flow = nn.ModuleDict(
            {
                "conv_in": nn.Conv2d(3, 32, 3, stride=2),
                "reduction_block_0": ReductionBlock(32, 64, activate_input=False),
                "reduction_block_1": ReductionBlock(64, 128),
            }
        )
        self.middle_flow = nn.ModuleDict(
            {f"main_block_{i}": MainBlock(128) for i in range(NUM_MAIN_BLOCKS)}
        )
        self.exit_flow = nn.ModuleDict(
            {
                "reduction_block": ReductionBlock(128, 256),
                "separable_conv": SeparableConv(256, 512),
            }
        )
        self.fc = nn.ModuleDict({"age": nn.Linear(512, 1), "gender": nn.Linear(512, 2)})

    def features(self, net_input: torch.Tensor) -> torch.Tensor:
        """Normalised NHWC 112x112 input -> the (N, 512) pooled features before the heads."""
        x = net_input.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        x = F.relu(self.entry_flow["conv_in"](_pad_same(x, 3, 2)))
        x = self.entry_flow["reduction_block_0"](x)
        x = self.entry_flow["reduction_block_1"](x)
        for block in self.middle_flow.values():
            x = block(x)
        x = self.exit_flow["reduction_block"](x)
        x = F.relu(self.exit_flow["separable_conv"](x))
        # avgPool 7x7 stride 2 'valid' on the 7x7 map: one cell, so flatten order is moot.
        return F.avg_pool2d(x, 7, 2).flatten(1)

    def forward(self, net_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised NHWC input -> (age in years, gender logits [male, female])."""
        pooled = self.features(net_input)
        return self.fc["age"](pooled).squeeze(1), self.fc["gender"](pooled)

    @classmethod
    def from_files(cls, manifest_path: str | Path, bin_path: str | Path) -> AgeGenderNet:
        """Build the network from face-api's manifest and .bin, checking the signature."""
        net = cls()
        net.load_state_dict(to_state_dict(load_weights(manifest_path, bin_path)), strict=True)
        net.eval().requires_grad_(False)
        net.to(memory_format=torch.channels_last)
        logger.debug("loaded face-api AgeGenderNet from %s", bin_path)
        return net


def predict_age_gender(
    net: AgeGenderNet, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """NHWC RGB 0..255 images (any square or non-square size) -> (age, p_female)."""
    _, net_input = preprocess(images)
    age, logits = net(net_input)
    return age, torch.softmax(logits, dim=1)[:, FEMALE_COLUMN]
