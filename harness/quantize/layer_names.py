"""Layer names: one user-facing name per quantizable layer, whatever the framework calls it.

Every framework names its ops its own way: an ONNX node `node_linear_5` inside the exporter's
name scope `bert.encoder.layer.0.output.dense`, a LiteRT op whose location is
`.../BertLayer_0/.../Linear_dense`, a Keras op `digits_cnn_1/conv1_1/convolution`. A `Layer`
holds the name a user knows (the torch module path where there is one, else the Keras layer
or the native name) beside the framework's own names, and `resolve` is the one place a
user's name (Suite(keep_float=...), a model's sensitive_layers) becomes layers. A name that
matches nothing is an error naming it and its close matches, never ignored: every model
source (torch, ONNX, Keras, .tflite, torch.export) resolves through here.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Layer:
    """One quantizable layer (conv, linear/matmul, ...) of a model in one framework."""

    name: str  # the user-facing name: torch module path where there is one, else Keras layer / native name
    native: tuple[str, ...] = ()  # the framework's own names: ONNX node names, TFLite op locations, ...
    op: str = ""  # the op type(s), e.g. "MatMul", "FULLY_CONNECTED", "Linear"
    aliases: tuple[str, ...] = ()  # other spellings a user may write (litert-torch's container-less module path)

    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases, *self.native)

    def inside(self, prefix: str) -> bool:
        """Is this layer inside module `prefix` (`bert.encoder.layer.0` holds `bert.encoder.layer.0.output.dense`)?"""
        return any(s.startswith(prefix + ".") for s in (self.name, *self.aliases))


class UnknownLayer(ValueError):
    """A layer name that maps to no layer of the model; the message lists close matches."""


def close_matches(name: str, layers: Sequence[Layer], n: int = 5) -> list[str]:
    """The user-facing names closest to `name` (difflib), matching on any spelling of a layer."""
    by_spelling: dict[str, str] = {}
    for layer in layers:
        for spelling in layer.spellings():
            by_spelling.setdefault(spelling, layer.name)
    found = difflib.get_close_matches(name, list(by_spelling), n=3 * n, cutoff=0.5)
    return list(dict.fromkeys(by_spelling[s] for s in found))[:n]


def unknown_layer_message(name: str, layers: Sequence[Layer], where: str, what: str = "") -> str:
    close = close_matches(name, layers)
    listing = ", ".join(layer.name for layer in layers[:12]) + (f", ... ({len(layers)} in all)" if len(layers) > 12 else "")
    hint = f"close matches: {', '.join(close)}" if close else "no close match"
    return (f"layer {name!r}{' ' + what if what else ''} matches no layer of {where}; {hint}. "
            f"Its quantizable layers: {listing or 'none'}")


def resolve(names: Iterable[str], layers: Sequence[Layer], where: str, what: str = "to keep in float") -> list[Layer]:
    """The layers `names` mean, each once, in the order named. A name is a layer's user-facing
    name, one of its aliases or native names, or a module holding layers (every layer inside it).
    `where` names the model and framework for the error, e.g. "digits-cnn in onnxruntime"."""
    chosen: list[Layer] = []
    for name in names:
        hits = [layer for layer in layers if name in layer.spellings()]
        if not hits:
            hits = [layer for layer in layers if layer.inside(name)]
        if not hits:
            raise UnknownLayer(unknown_layer_message(name, layers, where, what))
        chosen.extend(layer for layer in hits if layer not in chosen)
    return chosen


def by_name(layers: Sequence[Layer]) -> dict[str, Layer]:
    """Layers by user-facing name; two layers with one name is a bug in the framework's mapping."""
    found: dict[str, Layer] = {}
    for layer in layers:
        if layer.name in found:
            raise ValueError(f"two layers are named {layer.name!r}: {found[layer.name]} and {layer}")
        found[layer.name] = layer
    return found
