"""A reader for OpenVINO IR v10 files: the graph and its constants as numpy arrays.

The photoreal generator's weights ship only as OpenVINO IR (an XML graph plus a binary
blob of constants). Reading them directly keeps the OpenVINO runtime out of facecat's
dependencies: the XML is parsed with the standard library, the constants are views into
the blob, and the PyTorch port takes its parameters from here by following the graph.
Only what a weight conversion needs is modelled (layers, edges, constants); nothing is
executed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_DTYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "i64": np.int64,
    "i32": np.int32,
    "u8": np.uint8,
    "i8": np.int8,
}


class IRFormatError(ValueError):
    """The IR is not the version or the shape of graph a converter expects."""


@dataclass
class Layer:
    """One node of the graph: its type, name, attributes and (for ``Const``) its value."""

    id: str
    type: str
    name: str
    attrs: dict[str, str]
    value: np.ndarray | None = None
    # (producer layer id, producer port), ordered by this layer's input port.
    inputs: list[tuple[str, str]] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


class IRGraph:
    """The layers of one IR file, with helpers to walk from a node to its neighbours."""

    def __init__(self, layers: dict[str, Layer]) -> None:
        self.layers = layers

    @classmethod
    def read(cls, xml_path: str | Path, bin_path: str | Path) -> IRGraph:
        """Parse ``xml_path`` and take every constant's bytes out of ``bin_path``."""
        root = ET.parse(xml_path).getroot()
        if root.tag != "net" or root.get("version") not in {"10", "11"}:
            raise IRFormatError(f"{xml_path} is not an OpenVINO IR v10/v11 file")
        blob = Path(bin_path).read_bytes()
        layers: dict[str, Layer] = {}
        for node in root.iterfind("layers/layer"):
            data = node.find("data")
            attrs = dict(data.attrib) if data is not None else {}
            layer = Layer(node.get("id", ""), node.get("type", ""), node.get("name", ""), attrs)
            if layer.type == "Const":
                layer.value = _const_value(attrs, blob, layer.name)
            layers[layer.id] = layer
        edges = sorted(
            (
                int(e.get("to-port", 0)),
                e.get("to-layer", ""),
                e.get("from-layer", ""),
                e.get("from-port", ""),
            )
            for e in root.iterfind("edges/edge")
        )
        for _, to_layer, from_layer, from_port in edges:
            layers[to_layer].inputs.append((from_layer, from_port))
            layers[from_layer].consumers.append(to_layer)
        return cls(layers)

    def of_type(self, layer_type: str) -> list[Layer]:
        """Layers of one type, in the file's (topological) order."""
        return [layer for layer in self.layers.values() if layer.type == layer_type]

    def inputs(self, layer: Layer) -> list[Layer]:
        """The layers feeding ``layer``, in input-port order."""
        return [self.layers[source] for source, _ in layer.inputs]

    def consumers(self, layer: Layer) -> list[Layer]:
        """The layers reading ``layer``'s output."""
        return [self.layers[target] for target in layer.consumers]

    def const_input(self, layer: Layer) -> Layer:
        """The single constant input of a binary op (e.g. the weight of a Convolution)."""
        consts = [source for source in self.inputs(layer) if source.type == "Const"]
        if len(consts) != 1:
            raise IRFormatError(f"{layer.type} {layer.name!r} has {len(consts)} constant inputs")
        return consts[0]

    def data_input(self, layer: Layer) -> Layer:
        """The single non-constant input of a binary op."""
        data = [source for source in self.inputs(layer) if source.type != "Const"]
        if len(data) != 1:
            raise IRFormatError(f"{layer.type} {layer.name!r} has {len(data)} data inputs")
        return data[0]

    def named_consts(self, prefix: str) -> dict[str, np.ndarray]:
        """Constants whose names start with ``prefix`` (names the exporter kept), unprefixed."""
        return {
            layer.name[len(prefix) :]: layer.value
            for layer in self.of_type("Const")
            if layer.name.startswith(prefix) and layer.value is not None
        }


def _const_value(attrs: dict[str, str], blob: bytes, name: str) -> np.ndarray:
    try:
        dtype = _DTYPES[attrs["element_type"]]
        offset, size = int(attrs["offset"]), int(attrs["size"])
    except KeyError as exc:
        raise IRFormatError(f"constant {name!r} lacks {exc} or has an unknown type") from None
    if offset + size > len(blob):
        raise IRFormatError(f"constant {name!r} runs past the end of the weights file")
    shape = [int(d) for d in attrs.get("shape", "").split(",") if d.strip()]
    return np.frombuffer(
        blob, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset
    ).reshape(shape)
