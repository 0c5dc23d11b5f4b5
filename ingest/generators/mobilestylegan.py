"""MobileStyleGAN (Belousov 2021) in PyTorch, with its weights taken from the OpenVINO IR.

MobileStyleGAN distils StyleGAN2-FFHQ into a network of modulated depthwise-separable
convolutions that upsamples with an inverse Haar wavelet transform instead of transposed
convolutions, which is why it renders 1024 px faces fast enough for a CPU. The only
public weights facecat may fetch are the IR files inside the ``random-face`` wheel; this
module rebuilds the architecture and reads its parameters out of that graph.

What the exporter folded, and how the port mirrors it:
- each demodulation (a per-channel constant in MobileStyleGAN, computed from a stored
  mean style rather than the current one) is multiplied into the last convolution weight;
- each noise input was fixed at export time and multiplied by its strength, so it is a
  buffer: the network is deterministic, the same style gives the same image;
- the intermediate ``to_img`` heads, unused at inference, were pruned.

Styles: ``forward`` takes one style per face, ``(N, 512)``, or one per layer,
``(N, NUM_STYLES, 512)`` (W+), ordered coarse to fine: the 4 px convolution, then
(upsample + first convolution, second convolution) for each of the seven blocks from
8 px to 512 px, then the final colour head. Coarse entries set pose and face shape,
fine ones colour and texture; editing and inversion work on this tensor.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ingest.generators.openvino_ir import IRFormatError, IRGraph

STYLE_DIM = 512
CHANNELS = (512, 512, 512, 512, 512, 256, 128, 64)
NUM_BLOCKS = len(CHANNELS) - 1
NUM_STYLES = 1 + 2 * NUM_BLOCKS + 1
NATIVE_SIZE = 4 * 2 ** (NUM_BLOCKS + 1)  # 1024: seven wavelet blocks and the final inverse
MAPPING_LAYERS = 8
_SQRT2 = math.sqrt(2.0)


class MappingNetwork(nn.Module):
    """z → style: pixel norm, then eight linear layers with scaled leaky ReLU."""

    def __init__(self, dim: int = STYLE_DIM, n_layers: int = MAPPING_LAYERS) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * _SQRT2
        return x


class Modulation(nn.Module):
    """The per-layer affine map from a style to a per-channel input scale."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.affine = nn.Linear(STYLE_DIM, channels)
        self.scale = scale

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        factor = (self.affine(style) * self.scale)[:, :, None, None]
        return x * factor if torch.is_grad_enabled() else x.mul_(factor)


class StyledConv(nn.Module):
    """A modulated convolution (full 3x3, or depthwise 3x3 + pointwise) + noise, bias, lReLU."""

    def __init__(self, c_in: int, c_out: int, size: int, depthwise: bool) -> None:
        super().__init__()
        self.modulation = Modulation(c_in, 1.0 / math.sqrt(c_in * 9))
        self.weight_dw = nn.Parameter(torch.zeros(c_in, 1, 3, 3)) if depthwise else None
        shape = (c_out, c_in, 1, 1) if depthwise else (c_out, c_in, 3, 3)
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        self.register_buffer("noise", torch.zeros(1, 1, size, size))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.modulation(x, style)
        bias = self.bias.view(-1)
        if self.weight_dw is not None:
            x = F.conv2d(x, self.weight_dw, padding=1, groups=x.shape[1])
            x = F.conv2d(x, self.weight, bias)
        else:
            x = F.conv2d(x, self.weight, bias, padding=1)
        if torch.is_grad_enabled():
            return F.leaky_relu(x + self.noise, 0.2)
        return F.leaky_relu_(x.add_(self.noise), 0.2)  # in place: no copy of a large map


class ToFrequencies(nn.Module):
    """The final head: a modulated 1x1 convolution to 12 wavelet channels (RGB × 4 bands)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.modulation = Modulation(c_in, 1.0 / math.sqrt(c_in))
        self.weight = nn.Parameter(torch.zeros(12, c_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, 12, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.modulation(x, style), self.weight) + self.bias


# out[2i + dy, 2j + dx] = ½ · Σ_band sign[band][dy][dx] · band[i, j], for bands LL, LH, HL, HH.
_HAAR = 0.5 * torch.tensor(
    [
        [[1.0, 1.0], [1.0, 1.0]],
        [[1.0, 1.0], [-1.0, -1.0]],
        [[1.0, -1.0], [1.0, -1.0]],
        [[1.0, -1.0], [-1.0, 1.0]],
    ]
)


def inverse_haar(x: torch.Tensor) -> torch.Tensor:
    """One level of the inverse Haar wavelet transform: (N, 4C, H, W) → (N, C, 2H, 2W).

    Channels come in groups of four bands (LL, LH, HL, HH) per output channel, so the
    transform is one grouped transposed convolution. The original network lays them out
    as all LL channels then (LH, HL, HH) per channel; ``synthesis_state_dict`` permutes
    the producing layers' output channels once, at load time, into this order.
    """
    channels = x.shape[1] // 4
    kernel = _HAAR.to(x.dtype).to(x.device).repeat(channels, 1, 1)[:, None]
    return F.conv_transpose2d(x, kernel, stride=2, groups=channels)


def wavelet_order(channels: int) -> torch.Tensor:
    """Indices that take the original band layout to the grouped one (see inverse_haar)."""
    c = channels // 4
    return torch.tensor(
        [g if band == 0 else c + 3 * g + band - 1 for g in range(c) for band in range(4)]
    )


class WaveletUpsample(nn.Module):
    """Modulates the input, then doubles its size with the inverse Haar transform."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.modulation = Modulation(c_in, 1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return inverse_haar(self.modulation(x, style))


class SynthesisBlock(nn.Module):
    """Upsample ×2, then two modulated depthwise-separable convolutions."""

    def __init__(self, c_in: int, c_out: int, size: int) -> None:
        super().__init__()
        self.up = WaveletUpsample(c_in)
        self.conv1 = StyledConv(c_in // 4, c_out, size, depthwise=True)
        self.conv2 = StyledConv(c_out, c_out, size, depthwise=True)

    def forward(self, x: torch.Tensor, style1: torch.Tensor, style2: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(self.up(x, style1), style1), style2)


class SynthesisNetwork(nn.Module):
    """style (or W+) → RGB image ``(N, 3, 1024, 1024)`` in about [-1, 1].

    ``channels`` (one entry per resolution from 4 px) is MobileStyleGAN's by default;
    tests build small random networks with fewer and narrower levels.
    """

    def __init__(self, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        self.num_styles = 2 * len(channels)
        self.native_size = 4 * 2 ** len(channels)
        self.input = nn.Parameter(torch.zeros(1, channels[0], 4, 4))
        self.conv1 = StyledConv(channels[0], channels[0], 4, depthwise=False)
        self.blocks = nn.ModuleList(
            SynthesisBlock(c_in, c_out, 8 * 2**i)
            for i, (c_in, c_out) in enumerate(itertools.pairwise(channels))
        )
        self.to_freq = ToFrequencies(channels[-1])

    def forward(self, styles: torch.Tensor) -> torch.Tensor:
        if styles.ndim == 2:
            styles = styles[:, None, :].expand(-1, self.num_styles, -1)
        if styles.shape[1:] != (self.num_styles, STYLE_DIM):
            raise ValueError(
                f"styles must be (N, 512) or (N, {self.num_styles}, 512), got {tuple(styles.shape)}"
            )
        x = self.conv1(self.input.repeat(styles.shape[0], 1, 1, 1), styles[:, 0])
        for i, block in enumerate(self.blocks):
            x = block(x, styles[:, 1 + 2 * i], styles[:, 2 + 2 * i])
        return inverse_haar(self.to_freq(x, styles[:, -1]))


# --- weights from the IR ----------------------------------------------------------------


def mapping_state_dict(graph: IRGraph) -> dict[str, torch.Tensor]:
    """The mapping network's parameters: its MatMuls in order, each with the bias added next.

    The exporter folded the equalized-learning-rate scales into the stored constants, so
    they load into plain ``nn.Linear`` layers as they are.
    """
    matmuls = graph.of_type("MatMul")
    if len(matmuls) != MAPPING_LAYERS:
        raise IRFormatError(f"mapping network has {len(matmuls)} linear layers, expected 8")
    state: dict[str, torch.Tensor] = {}
    for i, matmul in enumerate(matmuls):
        weight = graph.const_input(matmul).value
        (add,) = [c for c in graph.consumers(matmul) if c.type == "Add"]
        (reshape,) = [s for s in graph.inputs(add) if s.type == "Reshape"]
        bias = graph.inputs(reshape)[0].value
        state[f"layers.{i}.weight"] = _tensor(weight)
        state[f"layers.{i}.bias"] = _tensor(bias)
    return state


def synthesis_state_dict(graph: IRGraph) -> dict[str, torch.Tensor]:
    """The synthesis network's parameters, found by name where the exporter kept names and
    by position in the graph (the convolution after a named depthwise weight, the noise
    added before a named bias) where it folded them into anonymous constants."""
    named = graph.named_consts("m.")
    state: dict[str, torch.Tensor] = {"input": _tensor(named["input.input"])}
    ours = {"conv1": "conv1"} | {
        f"layers.{i}.{part}": f"blocks.{i}.{part}"
        for i in range(NUM_BLOCKS)
        for part in ("conv1", "conv2")
    }
    for theirs, mine in ours.items():
        state[f"{mine}.modulation.affine.weight"] = _tensor(
            named[f"{theirs}.conv.modulation.weight"]
        )
        state[f"{mine}.modulation.affine.bias"] = _tensor(
            named[f"{theirs}.conv.modulation.bias"].reshape(-1)
        )
        state[f"{mine}.bias"] = _tensor(named[f"{theirs}.bias"])
        if f"{theirs}.conv.weight_dw" in named:
            state[f"{mine}.weight_dw"] = _tensor(named[f"{theirs}.conv.weight_dw"].squeeze(1))
    for i in range(NUM_BLOCKS):
        state[f"blocks.{i}.up.modulation.affine.weight"] = _tensor(
            named[f"layers.{i}.up.modulation.weight"]
        )
        state[f"blocks.{i}.up.modulation.affine.bias"] = _tensor(
            named[f"layers.{i}.up.modulation.bias"].reshape(-1)
        )
    last = f"layers.{NUM_BLOCKS - 1}.to_img"
    state["to_freq.modulation.affine.weight"] = _tensor(named[f"{last}.conv.modulation.weight"])
    state["to_freq.modulation.affine.bias"] = _tensor(
        named[f"{last}.conv.modulation.bias"].reshape(-1)
    )
    state["to_freq.weight"] = _tensor(named[f"{last}.conv.weight"])
    state["to_freq.bias"] = _tensor(named[f"{last}.bias"])

    # Anonymous constants: each styled convolution is Convolution → Add(noise) → Add(bias).
    for bias_add in graph.of_type("Add"):
        bias = [s for s in graph.inputs(bias_add) if s.type == "Const" and s.name.startswith("m.")]
        if not bias or bias[0].value is None or bias[0].value.ndim != 4:
            continue  # modulation biases are 2-d
        if ".to_img." in bias[0].name:
            continue
        theirs = bias[0].name[2 : -len(".bias")]
        noise_add = graph.data_input(bias_add)
        conv = graph.data_input(noise_add)
        if noise_add.type != "Add" or conv.type != "Convolution":
            raise IRFormatError(f"unexpected graph around {bias[0].name!r}")
        state[f"{ours[theirs]}.noise"] = _tensor(graph.const_input(noise_add).value)
        state[f"{ours[theirs]}.weight"] = _tensor(graph.const_input(conv).value)
    _check_scales(graph, ours)
    producers = ["conv1", *(f"blocks.{i}.conv2" for i in range(NUM_BLOCKS - 1)), "to_freq"]
    consumers = [f"blocks.{i}.up.modulation.affine" for i in range(NUM_BLOCKS)] + [None]
    for producer, consumer in zip(producers, consumers, strict=True):
        order = wavelet_order(state[f"{producer}.weight"].shape[0])
        for key in (f"{producer}.weight", f"{producer}.bias"):
            state[key] = state[key][:, order] if key.endswith("bias") else state[key][order]
        if consumer:
            for key in (f"{consumer}.weight", f"{consumer}.bias"):
                state[key] = state[key][order]
    return state


def _check_scales(graph: IRGraph, ours: dict[str, str]) -> None:
    """The modulation scales are architecture constants here; make sure the IR agrees."""
    for matmul in graph.of_type("MatMul"):
        name = graph.const_input(matmul).name
        if ".up." in name:
            continue
        c_in = graph.const_input(matmul).value.shape[0]
        kernel = 1 if ".to_img." in name else 3
        expected = 1.0 / math.sqrt(c_in * kernel * kernel)
        node = graph.consumers(matmul)[0]  # Add(bias) → Reshape → Multiply(scale)
        while node.type != "Multiply":
            node = next(
                c for c in graph.consumers(node) if c.type in {"Add", "Reshape", "Multiply"}
            )
        scale = float(graph.const_input(node).value.reshape(-1)[0])
        if not math.isclose(scale, expected, rel_tol=1e-5):
            raise IRFormatError(f"modulation scale of {name!r} is {scale}, expected {expected}")


def _tensor(value: np.ndarray | None) -> torch.Tensor:
    if value is None:
        raise IRFormatError("expected a constant")
    return torch.from_numpy(np.array(value, dtype=np.float32))
