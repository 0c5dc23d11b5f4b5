"""A faithful PyTorch port of face-api.js's ``faceRecognitionNet`` (128-d face descriptor).

face-api's network is itself a port of dlib's ResNet-34-like face descriptor
(``dlib_face_recognition_resnet_model_v1``); facecat uses it to keep an identity across
age edits, to find look-alikes and to measure diversity. Everything mirrors
``@vladmandic/face-api`` 1.7.15 as run by TensorFlow.js, because descriptor distances are
only comparable with the original's (and ``shared/reference/faceapi_recognition_reference
.npz``) under the same arithmetic: zero padding to a centred square, TF's legacy bilinear
resize to 150 px, ``(x - mean RGB) / 255``, 'valid' strided convolutions and pools, and
the shape-fixing zero padding of face-api's down-sampling residual blocks.

The preprocessing and weight-file helpers are shared with the AgeGenderNet port in
:mod:`analysis.faceapi`. Inside, the network runs NCHW tensors in ``torch.channels_last``
memory, which measured faster on CPU than contiguous NCHW for these dense 3x3 convs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from analysis import weights
from analysis.device import resolve_device
from analysis.faceapi import MEAN_RGB, Signature, load_weights, pad_to_square
from analysis.faceapi import resize_bilinear_legacy as _resize

logger = logging.getLogger(__name__)

INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
# (name, input channels, output channels, down-samples), in face-api's order.
RESIDUAL_LAYERS: tuple[tuple[str, int, int, bool], ...] = (
    ("conv32_1", 32, 32, False),
    ("conv32_2", 32, 32, False),
    ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True),
    ("conv64_1", 64, 64, False),
    ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True),
    ("conv128_1", 128, 128, False),
    ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True),
    ("conv256_1", 256, 256, False),
    ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
)


# --- weight files ---------------------------------------------------------------------


def _conv_layer_signature(prefix: str, kernel: int, c_in: int, c_out: int) -> Signature:
    return [
        (f"{prefix}/conv/filters", (kernel, kernel, c_in, c_out)),
        (f"{prefix}/conv/bias", (c_out,)),
        (f"{prefix}/scale/weights", (c_out,)),
        (f"{prefix}/scale/biases", (c_out,)),
    ]


def expected_signature() -> Signature:
    """Tensor names and TF-layout shapes, in manifest order, that this port expects."""
    spec = list(_conv_layer_signature("conv32_down", 7, 3, 32))
    for name, c_in, c_out, _ in RESIDUAL_LAYERS:
        spec += _conv_layer_signature(f"{name}/conv1", 3, c_in, c_out)
        spec += _conv_layer_signature(f"{name}/conv2", 3, c_out, c_out)
    spec.append(("fc", (256, DESCRIPTOR_SIZE)))
    return spec


def to_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename TF.js tensors to this module's parameters (``/`` -> ``.``), torch layouts."""
    state: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        key = name.replace("/", ".")
        if name.endswith("/conv/filters"):  # [kh, kw, in, out] -> [out, in, kh, kw]
            state[key.removesuffix("filters") + "weight"] = t.permute(3, 2, 0, 1).contiguous()
        else:  # conv bias, scale weights/biases and fc [256, 128] keep their layout
            state[key] = t
    return state


# --- network --------------------------------------------------------------------------


class Scale(nn.Module):
    """dlib's affine layer (a frozen batch norm): ``x * weights + biases`` per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(channels))
        self.biases = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights.view(1, -1, 1, 1) + self.biases.view(1, -1, 1, 1)


class ConvLayer(nn.Module):
    """Convolution + bias + scale, as face-api's ``convLayer`` (ReLU applied by callers).

    Stride 1 is TF 'same' (symmetric padding 1 for a 3x3 kernel), stride 2 is 'valid'.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding)
        self.scale = Scale(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.conv(x))


class ResidualLayer(nn.Module):
    """Two 3x3 conv layers plus a shortcut, then ReLU (face-api's ``residual[Down]``).

    A down-sampling layer's shortcut is a 2x2/2 average pool of the input, zero-padded in
    channels when they double; when the pool's map is larger than the 'valid' strided
    conv's (even input sizes: 8 -> 3 vs 4, 4 -> 1 vs 2) the conv branch is padded with a
    zero row and column at the bottom/right, as face-api does.
    """

    def __init__(self, c_in: int, c_out: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = ConvLayer(c_in, c_out, stride=2 if down else 1)
        self.conv2 = ConvLayer(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2, 2)
        pad_h, pad_w = shortcut.shape[2] - out.shape[2], shortcut.shape[3] - out.shape[3]
        if pad_h or pad_w:
            out = F.pad(out, (0, pad_w, 0, pad_h))
        if shortcut.shape[1] != out.shape[1]:
            shortcut = torch.cat([shortcut, torch.zeros_like(shortcut)], dim=1)
        return F.relu(out + shortcut)


class FaceDescriptorNet(nn.Module):
    """face-api's ResNet face descriptor: RGB face crop -> 128-d identity embedding.

    Parameter names mirror the TF.js tensor names (``/`` -> ``.``), so the state dict is
    a rename of the manifest and ``load_state_dict(strict=True)`` checks it again.
    Euclidean distances below about 0.6 mean "same person" (dlib's threshold).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv32_down = ConvLayer(3, 32, kernel=7, stride=2)
        for name, c_in, c_out, down in RESIDUAL_LAYERS:
            self.add_module(name, ResidualLayer(c_in, c_out, down))
        self.fc = nn.Parameter(torch.zeros(256, DESCRIPTOR_SIZE))

    def forward(self, net_input: torch.Tensor) -> torch.Tensor:
        """Normalised NHWC input (see :func:`preprocess`) -> (N, 128) descriptors."""
        x = net_input.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        x = F.relu(self.conv32_down(x))
        x = F.max_pool2d(x, 3, 2)  # 'valid'
        for name, *_ in RESIDUAL_LAYERS:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3)) @ self.fc

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 images, (N, H, W, 3) or (N, 3, H, W), -> (N, 128), differentiable.

        The path for descriptor losses (e.g. keeping an identity while inverting or
        editing a generator's latent): gradients flow back to the pixels through the
        padding and the resize. A shape that is both (a 3-pixel-wide image with 3
        channels first) is read as channels-last.
        """
        if images.ndim == 4 and images.shape[-1] != 3 and images.shape[1] == 3:
            images = images.permute(0, 2, 3, 1)
        return self(preprocess(images))

    @classmethod
    def from_files(cls, manifest_path: str | Path, bin_path: str | Path) -> FaceDescriptorNet:
        """Build the network from face-api's manifest and .bin, checking the signature.

        Raises :class:`analysis.faceapi.ModelSignatureError` naming the missing,
        unexpected or mis-shaped tensors when the files are another model's.
        """
        tensors = load_weights(manifest_path, bin_path, expected_signature(), "faceRecognitionNet")
        net = cls()
        net.load_state_dict(to_state_dict(tensors), strict=True)
        net.eval().requires_grad_(False)
        net.to(memory_format=torch.channels_last)
        logger.debug("loaded face-api faceRecognitionNet from %s", bin_path)
        return net

    @classmethod
    def from_models_dir(
        cls, models_dir: str | Path, device: torch.device | str = "auto"
    ) -> FaceDescriptorNet:
        """Load the verified weights fetched by ``facecat models fetch`` onto ``device``.

        Missing or corrupt files raise :class:`analysis.weights.WeightsError` naming the
        fetch command; ``device="auto"`` prefers CUDA.
        """
        target = resolve_device(device) if isinstance(device, str) else torch.device(device)
        net = cls.from_files(
            weights.weight_path("faceapi-recognition-manifest", models_dir),
            weights.weight_path("faceapi-recognition-bin", models_dir),
        )
        return net.to(target)


# --- preprocessing and inference ------------------------------------------------------


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """NHWC RGB 0..255 (uint8 or float) -> normalised 150x150 NHWC float network input.

    As face-api's ``toBatchTensor(150, true)``: zero-pad to a centred square, TF legacy
    bilinear resize (skipped when already 150 px), then ``(x - MEAN_RGB) / 255``.
    Float input keeps its dtype and autograd graph.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {tuple(images.shape)}")
    resized = _resize(pad_to_square(images), INPUT_SIZE)
    mean = torch.tensor(MEAN_RGB, dtype=resized.dtype, device=resized.device)
    return (resized - mean) / 255.0


def face_descriptors(
    net: FaceDescriptorNet, images_uint8_rgb: np.ndarray | torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB face crops -> (N, 128) float32 descriptors on the net's device.

    Inference only (no autograd); runs in chunks of ``batch_size`` to bound memory. Crops
    should be framed like face-api's (a detector box, as from ``extractFaces``);
    non-square crops are padded, not stretched.
    """
    if isinstance(images_uint8_rgb, np.ndarray):  # views such as a[:, :, ::-1] too
        images_uint8_rgb = np.ascontiguousarray(images_uint8_rgb)
    images = torch.as_tensor(images_uint8_rgb)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {tuple(images.shape)}")
    device = net.fc.device
    with torch.inference_mode():
        chunks = [
            net(preprocess(images[i : i + batch_size].to(device)))
            for i in range(0, images.shape[0], batch_size)
        ]
    if not chunks:
        return torch.empty(0, DESCRIPTOR_SIZE, device=device)
    return torch.cat(chunks)


def descriptor_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance along the last axis (broadcasting), face-api's ``euclideanDistance``.

    Differentiable; below about 0.6 is dlib's "same person".
    """
    return torch.linalg.vector_norm(a - b, dim=-1)
