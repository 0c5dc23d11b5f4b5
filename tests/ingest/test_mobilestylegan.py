"""MobileStyleGAN: the OpenVINO IR reader, the PyTorch port and ``PhotorealGenerator``.

Tests marked ``model`` use the real IR files (``facecat models fetch``); the IR reader,
the wavelet transform and the argument checks run on tiny inputs made here.

About the tolerances against ``mobilestylegan_reference.npz``: the reference was computed
with OpenVINO's *default* CPU inference precision, which on a CPU with AVX512-BF16 (the
one that made it) is bfloat16, not float32 (``core.get_property("CPU",
"INFERENCE_PRECISION_HINT")`` reports ``bfloat16`` there). Re-running the very same IR
with OpenVINO at ``INFERENCE_PRECISION_HINT=f32`` gives:

- mapping network: style max abs diff 0.0252 from the reference ``style`` (the README
  expected 1e-3);
- synthesis, fed the reference's own styles: per-row mean abs diff 0.0023-0.0054 from
  ``img256`` (within the README's 0.01) but per-row max up to 0.358 (the README says 0.1);

and this port matches OpenVINO-f32 to about 1e-4 everywhere. So the README's max bound
cannot be met by any float32 implementation, OpenVINO's own f32 included: bfloat16 keeps
8 bits of mantissa, its rounding errors compound through twenty modulated layers and
seven inverse wavelet transforms, and where the image has a sharp edge (a strand of hair
against the background) a sub-pixel shift of that edge changes single pixels by a large
fraction of the [-1, 1] range, while the mean stays small. The bounds here are those the
bf16 reference allows: style max 0.03 / mean 0.005; images mean 0.01 (the README's) and
max 0.4.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.weights import weight_path, weights_checksum
from ingest.generators import mobilestylegan as msg
from ingest.generators import photoreal
from ingest.generators.openvino_ir import IRFormatError, IRGraph
from ingest.generators.photoreal import ARTIFACTS, PhotorealGenerator, seed_noise

REFERENCE = "mobilestylegan_reference.npz"
REFERENCE_SEEDS = [0, 1, 2, 3, 42, 545972026]

# Bounds the bf16 reference allows (see the module docstring).
STYLE_MAX, STYLE_MEAN = 0.03, 0.005
IMAGE_MEAN, IMAGE_MAX = 0.01, 0.4

# SHA-256 over the four pinned IR checksums, stored with every photoreal face: if it
# changes, the provenance of every face already in a catalog names other weights.
CHECKSUM = "eae7e424446d30913612bac0078dc97deaa50f2b0df2ba0343a4fa2f7eb82432"


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def generator(models_dir: Path) -> PhotorealGenerator:
    return PhotorealGenerator.from_models_dir(models_dir, device="cpu")


def _to_reference_scale(rendered: torch.Tensor) -> np.ndarray:
    """``render``'s (N, H, W, 3) [0, 255] back to the network's (N, 3, H, W) [-1, 1]."""
    return ((rendered.permute(0, 3, 1, 2) - 127.5) / 127.5).numpy()


def _summaries(images: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's summaries of (N, 3, 1024, 1024) outputs: 4x4 means, centre crop."""
    n = len(images)
    return {
        "img256": images.reshape(n, 3, 256, 4, 256, 4).mean(axis=(3, 5)),
        "crop96": images[:, :, 464:560, 464:560].copy(),
    }


@pytest.fixture(scope="module")
def rendered(generator, reference) -> dict[str, dict[str, np.ndarray]]:
    """The reference styles (plain and truncated) rendered once, as the reference summarised
    them; the plain batch's first row is also kept whole for the batching tests."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for suffix in ("", "_truncated"):
        with torch.inference_mode():
            images = _to_reference_scale(
                generator.render(torch.from_numpy(reference["style" + suffix]))
            )
        out[suffix] = _summaries(images)
        if suffix == "":
            out[suffix]["row0"] = images[0].copy()
        del images
    return out


# --- the OpenVINO IR reader (tiny files) -------------------------------------------------


def _write_ir(tmp_path: Path, xml: str, blob: bytes) -> tuple[Path, Path]:
    xml_path, bin_path = tmp_path / "net.xml", tmp_path / "net.bin"
    xml_path.write_text(xml)
    bin_path.write_bytes(blob)
    return xml_path, bin_path


TINY_IR = """<?xml version="1.0"?>
<net name="tiny" version="10">
  <layers>
    <layer id="0" name="x" type="Parameter" version="opset1">
      <data shape="1,4" element_type="f32"/>
    </layer>
    <layer id="1" name="m.w" type="Const" version="opset1">
      <data element_type="f32" shape="4,2" offset="0" size="32"/>
    </layer>
    <layer id="2" name="matmul" type="MatMul" version="opset1"/>
    <layer id="3" name="m.b" type="Const" version="opset1">
      <data element_type="f16" shape="1,2" offset="32" size="4"/>
    </layer>
    <layer id="4" name="add" type="Add" version="opset1"/>
    <layer id="5" name="out" type="Result" version="opset1"/>
  </layers>
  <edges>
    <edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>
    <edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>
    <edge from-layer="2" from-port="2" to-layer="4" to-port="0"/>
    <edge from-layer="3" from-port="0" to-layer="4" to-port="1"/>
    <edge from-layer="4" from-port="2" to-layer="5" to-port="0"/>
  </edges>
</net>
"""
TINY_WEIGHT = np.arange(8, dtype=np.float32).reshape(4, 2)
TINY_BIAS = np.array([[0.5, -2.0]], dtype=np.float16)
TINY_BLOB = TINY_WEIGHT.tobytes() + TINY_BIAS.tobytes()


def test_ir_reader_reads_constants_and_follows_edges(tmp_path: Path) -> None:
    graph = IRGraph.read(*_write_ir(tmp_path, TINY_IR, TINY_BLOB))
    (matmul,) = graph.of_type("MatMul")
    # Inputs come in input-port order, whatever the order of the edges in the file.
    assert [layer.name for layer in graph.inputs(matmul)] == ["x", "m.w"]
    assert graph.data_input(matmul).type == "Parameter"
    np.testing.assert_array_equal(graph.const_input(matmul).value, TINY_WEIGHT)
    (add,) = graph.consumers(matmul)
    assert add.type == "Add"
    bias = graph.const_input(add)
    assert bias.value.dtype == np.float16
    np.testing.assert_array_equal(bias.value, TINY_BIAS)
    named = graph.named_consts("m.")
    assert sorted(named) == ["b", "w"]
    np.testing.assert_array_equal(named["w"], TINY_WEIGHT)
    assert [layer.type for layer in graph.consumers(add)] == ["Result"]
    with pytest.raises(IRFormatError, match="constant inputs"):
        graph.const_input(graph.layers["5"])


@pytest.mark.parametrize(
    "xml",
    [
        '<?xml version="1.0"?><html><body><p>not a network</p></body></html>',
        '<?xml version="1.0"?><net name="old" version="7"><layers/><edges/></net>',
    ],
    ids=["not-ir", "ir-v7"],
)
def test_ir_reader_rejects_other_xml(tmp_path: Path, xml: str) -> None:
    with pytest.raises(IRFormatError, match="not an OpenVINO IR"):
        IRGraph.read(*_write_ir(tmp_path, xml, b""))


def test_ir_reader_rejects_a_truncated_weights_file(tmp_path: Path) -> None:
    paths = _write_ir(tmp_path, TINY_IR, TINY_BLOB[:20])
    with pytest.raises(IRFormatError, match="runs past the end"):
        IRGraph.read(*paths)
    assert issubclass(IRFormatError, ValueError)


def test_ir_reader_rejects_a_constant_without_a_type(tmp_path: Path) -> None:
    xml = TINY_IR.replace('element_type="f32" shape="4,2"', 'shape="4,2"')
    with pytest.raises(IRFormatError, match=r"'m\.w'"):
        IRGraph.read(*_write_ir(tmp_path, xml, TINY_BLOB))


# --- the wavelet transform ---------------------------------------------------------------


def _forward_haar(x: np.ndarray) -> np.ndarray:
    """(N, C, 2H, 2W) → (N, 4C, H, W), bands (LL, LH, HL, HH) grouped per channel."""
    a, b = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]  # top-left, top-right
    c, d = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]  # bottom-left, bottom-right
    bands = [
        (a + b + c + d) / 2,  # LL
        (a + b - c - d) / 2,  # LH: top minus bottom
        (a - b + c - d) / 2,  # HL: left minus right
        (a - b - c + d) / 2,  # HH: diagonal
    ]
    n, channels, h, w = a.shape
    return np.stack(bands, axis=2).reshape(n, 4 * channels, h, w)


def test_inverse_haar_inverts_the_forward_transform() -> None:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 3, 8, 6)).astype(np.float32)
    restored = msg.inverse_haar(torch.from_numpy(_forward_haar(image)))
    assert restored.shape == (2, 3, 8, 6)
    np.testing.assert_allclose(restored.numpy(), image, atol=1e-6)
    # And the other way round: it is a bijection (an orthonormal transform).
    bands = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        _forward_haar(msg.inverse_haar(torch.from_numpy(bands)).numpy()), bands, atol=1e-6
    )


def test_wavelet_order_takes_the_original_layout_to_grouped_bands() -> None:
    rng = np.random.default_rng(1)
    channels = 5
    ll, lh, hl, hh = (rng.standard_normal((1, channels, 2, 2)) for _ in range(4))
    # The original network: every LL channel, then (LH, HL, HH) for each channel.
    original = np.concatenate(
        [ll, np.stack([lh, hl, hh], axis=2).reshape(1, 3 * channels, 2, 2)], axis=1
    )
    grouped = np.stack([ll, lh, hl, hh], axis=2).reshape(1, 4 * channels, 2, 2)
    order = msg.wavelet_order(4 * channels).numpy()
    np.testing.assert_array_equal(original[:, order], grouped)


# --- generator arguments (no weights) ----------------------------------------------------


def test_truncation_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="truncation"):
        PhotorealGenerator(
            msg.MappingNetwork(), msg.SynthesisNetwork(), checksum="x", truncation=1.5
        )


def test_seed_noise_is_numpy_pcg64_cast_to_float32() -> None:
    z = seed_noise([7, 545972026])
    assert z.dtype == torch.float32 and z.shape == (2, msg.STYLE_DIM)
    expected = np.random.default_rng(545972026).standard_normal(512).astype(np.float32)
    np.testing.assert_array_equal(z[1].numpy(), expected)
    assert seed_noise([]).shape == (0, msg.STYLE_DIM)


# --- conversion of the real IR -----------------------------------------------------------


def _fetched_graph(models_dir: Path, network: str) -> IRGraph:
    """The verified IR of ``network`` (mapping or synthesis) in the models folder."""
    return IRGraph.read(
        weight_path(f"mobilestylegan-{network}-xml", models_dir),
        weight_path(f"mobilestylegan-{network}-bin", models_dir),
    )


@pytest.mark.model
def test_synthesis_state_dict_has_exactly_the_networks_parameters(models_dir: Path) -> None:
    graph = _fetched_graph(models_dir, "synthesis")
    state = msg.synthesis_state_dict(graph)
    network = msg.SynthesisNetwork()
    assert set(state) == set(network.state_dict())
    network.load_state_dict(state, strict=True)  # shapes too
    assert all(t.dtype == torch.float32 for t in state.values())
    # The synthesis graph is not a mapping network: the converter says so.
    with pytest.raises(IRFormatError, match="linear layers"):
        msg.mapping_state_dict(graph)


@pytest.mark.model
def test_mapping_state_dict_has_exactly_the_networks_parameters(models_dir: Path) -> None:
    graph = _fetched_graph(models_dir, "mapping")
    state = msg.mapping_state_dict(graph)
    network = msg.MappingNetwork()
    assert set(state) == set(network.state_dict())
    network.load_state_dict(state, strict=True)


# --- against the reference ---------------------------------------------------------------


@pytest.mark.model
def test_mapping_network_matches_the_reference(generator, reference) -> None:
    """Within what the bf16 reference allows (OpenVINO's own f32 differs by 0.0252)."""
    with torch.inference_mode():
        styles = generator.mapping(torch.from_numpy(reference["z"])).numpy()
    diff = np.abs(styles - reference["style"])
    assert diff.max() <= STYLE_MAX, diff.max()
    assert diff.mean() <= STYLE_MEAN, diff.mean()


@pytest.mark.model
@pytest.mark.parametrize("suffix", ["", "_truncated"], ids=["plain", "truncated"])
@pytest.mark.parametrize("summary", ["img256", "crop96"])
def test_synthesis_matches_the_reference(rendered, reference, suffix, summary) -> None:
    """Every row within the README's mean bound (0.01); the max bound is 0.4, not the
    README's 0.1, which OpenVINO's own f32 inference misses too (module docstring)."""
    ours, theirs = rendered[suffix][summary], reference[summary + suffix]
    assert ours.shape == theirs.shape == (6, 3, *theirs.shape[2:])
    diff = np.abs(ours - theirs).reshape(len(theirs), -1)
    assert np.all(diff.mean(axis=1) <= IMAGE_MEAN), diff.mean(axis=1)
    assert np.all(diff.max(axis=1) <= IMAGE_MAX), diff.max(axis=1)


@pytest.mark.model
def test_sample_latents_are_truncated_mapped_seed_noise(generator, reference) -> None:
    latents = generator.sample_latents(REFERENCE_SEEDS)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu"
    assert latents.shape == (len(REFERENCE_SEEDS), msg.STYLE_DIM)
    # The seeds' z are the reference's z, bit for bit.
    z = np.stack([np.random.default_rng(s).standard_normal(512) for s in REFERENCE_SEEDS]).astype(
        np.float32
    )
    np.testing.assert_array_equal(z, reference["z"])
    with torch.inference_mode():
        mapped = generator.mapping(torch.from_numpy(z))
        mean = generator.style_mean
        expected = mean + photoreal.DEFAULT_TRUNCATION * (mapped - mean)
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-6)
    # Against the (bf16) reference: the truncated styles and the mean style.
    assert float(reference["truncation_psi"]) == pytest.approx(photoreal.DEFAULT_TRUNCATION)
    diff = np.abs(latents.numpy() - reference["style_truncated"])
    assert diff.max() <= STYLE_MAX and diff.mean() <= STYLE_MEAN, (diff.max(), diff.mean())
    mean_diff = np.abs(generator.style_mean.numpy() - reference["style_mean"]).max()
    assert mean_diff <= STYLE_MAX, mean_diff


@pytest.mark.model
def test_truncation_zero_is_the_mean_style_and_one_is_the_mapping(generator) -> None:
    z = seed_noise([5, 6])
    torch.testing.assert_close(
        generator.styles(z, truncation=0.0), generator.style_mean.expand(2, -1)
    )
    with torch.inference_mode():
        mapped = generator.mapping(z)
    torch.testing.assert_close(generator.styles(z, truncation=1.0), mapped, rtol=0, atol=1e-6)


# --- rendering ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_row0(generator, reference) -> np.ndarray:
    """The reference's first style rendered alone, as (3, 1024, 1024) in [-1, 1]."""
    with torch.inference_mode():
        return _to_reference_scale(generator.render(torch.from_numpy(reference["style"][:1])))[0]


@pytest.mark.model
def test_a_batch_renders_as_one_at_a_time(rendered, single_row0) -> None:
    diff = np.abs(rendered[""]["row0"] - single_row0).max()
    assert diff <= 1e-4, diff


@pytest.mark.model
def test_w_plus_with_identical_rows_equals_one_style(generator, reference, single_row0) -> None:
    style = torch.from_numpy(reference["style"][:1])
    w_plus = style[:, None, :].repeat(1, msg.NUM_STYLES, 1)
    assert w_plus.shape == (1, msg.NUM_STYLES, msg.STYLE_DIM)
    with torch.inference_mode():
        image = _to_reference_scale(generator.render(w_plus))[0]
    diff = np.abs(image - single_row0).max()
    assert diff <= 1e-5, diff


@pytest.mark.model
def test_the_same_seed_gives_the_same_image(generator) -> None:
    first = generator.generate(generator.sample_latents([545972026]))
    second = generator.generate(generator.sample_latents([545972026]))
    assert first.dtype == torch.uint8
    assert first.shape == (1, msg.NATIVE_SIZE, msg.NATIVE_SIZE, 3) == (1, 1024, 1024, 3)
    assert torch.equal(first, second)
    assert first.float().std() > 10  # an image, not a flat frame


@pytest.mark.model
@pytest.mark.parametrize(
    "shape",
    [(512,), (1, 511), (1, 5, 512), (1, msg.NUM_STYLES, 256), (1, 1, msg.NUM_STYLES, 512)],
    ids=str,
)
def test_wrong_shaped_latents_raise(generator, shape) -> None:
    with pytest.raises(ValueError, match="512"):
        generator.render(torch.zeros(shape))
    with pytest.raises(ValueError, match="512"):
        generator.generate(torch.zeros(shape))


# --- provenance --------------------------------------------------------------------------


@pytest.mark.model
def test_checksum_names_the_four_pinned_ir_files(generator) -> None:
    pinned = "".join(weights_checksum(name) for name in ARTIFACTS)
    assert generator.checksum == hashlib.sha256(pinned.encode()).hexdigest() == CHECKSUM


@pytest.mark.model
def test_checksum_changes_when_an_artifact_checksum_changes(
    models_dir: Path, generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def other(name: str) -> str:
        pinned = weights_checksum(name)
        return "f" * 64 if name == "mobilestylegan-synthesis-bin" else pinned

    monkeypatch.setattr(photoreal, "weights_checksum", other)
    changed = PhotorealGenerator.from_models_dir(models_dir, device="cpu")
    assert changed.checksum != generator.checksum
    assert len(changed.checksum) == 64
