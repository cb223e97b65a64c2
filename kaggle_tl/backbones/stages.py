"""Multi-level features: the pooled outputs of a backbone's last K stages (one per resolution, two at the last).

A stage is found from the Keras graph, for any model (registered or a user's file), the way
timm's ``feature_info`` names a network's stage outputs:

* the *final* layer is the one whose output today's pooled feature comes from: walking back from
  the model's output through (N, D) tensors, the first (N, H, W, C) one (the input of the
  GlobalAveragePooling2D of ``pooling="avg"`` models);
* a tensor's *level* is how many times the input has been halved to reach it, counted from the
  layers' ``strides`` (so it does not depend on the input size: 32 px and 224 px give the same
  layers); tensors computed only from a globally pooled vector (squeeze-excite branches) have none;
* the *trunk* of a level: its layers that every path from the input to the final layer passes
  through (articulation points, found by counting paths), so a branch of an Inception block or
  the inside of a residual block is never a stage;
* a level's stage is the last post-activation trunk layer after the level's last merge (Add /
  Concatenate); else that merge (ResNetV2, Xception, ConvNeXt block outputs); else the last
  post-activation trunk layer. A level with none of these (the input, rescaling, padding) is no stage.
  For EfficientNet(-Lite) and MobileNetV2 that is the expansion activation of the first
  block of the next resolution, as the reference figures asked for;
* the final level has two stages: the last post-activation trunk layer before the final layer, when
  there is one (EfficientNet-Lite's last block's depthwise output, ResNet's second-to-last block),
  and the final layer.

Which layers and dims each registered backbone has is a generated table, so a run plans its
cache entries without importing TensorFlow::

    python -m kaggle_tl.backbones.stages --write

Keras numbers auto-named layers (``add_3``) per session: the table holds the names of a fresh
session (``keras.backend.clear_session()`` before each build). A model built after others in the
same session may carry other numbers for its auto-named layers; its stages are the same by
position (``stage_layers`` on the live model gives its names).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from kaggle_tl.errors import KaggleTLError

TABLE_PATH = Path(__file__).with_name("stages_table.py")


def _producer(tensor):
    """(operation, its node) that computed a KerasTensor; (None, None) for a model input."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None, None
    node = history.operation._inbound_nodes[history.node_index]
    return (None, None) if node.is_input else (history.operation, node)


def _final_tensor(model):
    """The (N, H, W, C) tensor today's pooled output comes from (the global pooling's input)."""
    tensor = model.outputs[0]
    while len(tensor.shape) != 4:
        op, node = _producer(tensor)
        if op is None or not node.input_tensors:
            raise KaggleTLError(f"model {model.name!r}: no spatial (N, H, W, C) layer before its output")
        tensor = node.input_tensors[0]
    return tensor


def _ancestors(final) -> list:
    """Every tensor ``final`` depends on, itself included, in a topological order (inputs first)."""
    order, seen, stack = [], set(), [(final, False)]
    while stack:  # iterative post-order DFS: deep graphs (1,000+ layers) exceed Python's recursion limit
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        stack.append((tensor, True))
        _, node = _producer(tensor)
        if node is not None:
            stack.extend((t, False) for t in reversed(node.input_tensors) if id(t) not in seen)
    return order


def _is_post_activation(op, inputs: list, post: dict) -> bool:
    import keras

    activations = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)
    if isinstance(op, activations):
        return True
    activation = getattr(op, "activation", None)  # Activation layers, and convs with one built in (VGG)
    if activation is not None and activation is not keras.activations.linear:
        return True
    # A concatenation of activations (an Inception block's output) is one.
    return isinstance(op, keras.layers.Concatenate) and all(post.get(id(t), False) for t in inputs)


def _describe(model) -> list[tuple[str, int, float]]:
    """(layer name, channels, level) of every stage candidate of ``model``, earliest first."""
    import keras

    final = _final_tensor(model)
    tensors = _ancestors(final)
    level, post, paths_in, rows = {}, {}, {}, []
    for tensor in tensors:
        op, node = _producer(tensor)
        inputs = node.input_tensors if node is not None else []
        paths_in[id(tensor)] = sum(paths_in[id(t)] for t in inputs) if inputs else 1
        spatial = [level[id(t)] for t in inputs if level.get(id(t)) is not None]
        if op is None:
            level[id(tensor)] = 0.0 if len(tensor.shape) == 4 else None
        elif len(tensor.shape) != 4 or not spatial or isinstance(op, (keras.layers.GlobalAveragePooling2D,
                                                                     keras.layers.GlobalMaxPooling2D)):
            level[id(tensor)] = None  # a vector, or computed from one only (squeeze-excite)
        else:
            level[id(tensor)] = max(spatial) + _halvings(op, inputs, tensor)
        post[id(tensor)] = op is not None and _is_post_activation(op, inputs, post)
        rows.append((tensor, op, inputs))
    # Paths from each tensor to the final one; a tensor is on the trunk when every input->final path
    # passes through it: paths_in * paths_out == all paths (exact: Python integers do not overflow).
    paths_out = {id(final): 1}
    for tensor, _, inputs in reversed(rows):
        for t in inputs:
            paths_out[id(t)] = paths_out.get(id(t), 0) + paths_out.get(id(tensor), 0)
    total = paths_in[id(final)]
    by_level: dict[float, list] = {}
    for tensor, op, inputs in rows:
        if op is None or level[id(tensor)] is None:
            continue
        on_trunk = paths_in[id(tensor)] * paths_out.get(id(tensor), 0) == total
        by_level.setdefault(round(level[id(tensor)], 6), []).append((tensor, op, len(inputs) > 1, on_trunk))
    final_level = round(level[id(final)], 6)
    stages = []
    for lvl in sorted(by_level):
        if lvl < final_level and (chosen := _stage_of(by_level[lvl], post)) is not None:
            tensor, op = chosen
            stages.append((op.name, int(tensor.shape[-1]), lvl))
    # The final resolution has two: the last post-activation trunk layer before the final layer (the
    # last block's depthwise output in EfficientNet-Lite: -0.024 +- 0.003 CV log loss on CIFAR-10-small
    # with Lite0), then the final layer.
    before = [(t, op) for t, op, _, on_trunk in by_level[final_level] if on_trunk and post[id(t)] and t is not final]
    if before:
        tensor, op = before[-1]
        stages.append((op.name, int(tensor.shape[-1]), final_level))
    final_op, _ = _producer(final)
    return stages + [(final_op.name, int(final.shape[-1]), final_level)]


def _halvings(op, inputs: list, tensor) -> float:
    """How many times ``op`` halves the resolution: log2 of its stride (or of the size ratio)."""
    stride = _stride(op)
    if stride is not None:
        return math.log2(stride) if stride > 1 else 0.0
    # A layer with no `strides` (a user's own): judged by size, counted only when it halves or more.
    h_in, h_out = inputs[0].shape[1] if len(inputs[0].shape) == 4 else None, tensor.shape[1]
    if h_in and h_out and 2 * h_out <= h_in:
        return float(round(math.log2(h_in / h_out)))
    return 0.0


def _stride(op) -> int | None:
    """A layer's stride along H; for a nested Sequential (ConvNeXt's stem and downsampling), its layers'
    product; None when unknown."""
    strides = getattr(op, "strides", None)
    if strides is not None:
        stride = strides[0] if isinstance(strides, (tuple, list)) else strides
        return int(stride or 1)
    sublayers = getattr(op, "layers", None)
    if sublayers:
        return math.prod(_stride(layer) or 1 for layer in sublayers)
    return None


def _stage_of(tensors: list, post: dict):
    """A level's stage (tensor, layer) from its (tensor, layer, is merge, on trunk) rows in order, or None.

    See the module docstring; a level with no trunk at all (NASNet's cells each take the two
    previous cells) takes its widest merge, the last of equals: the level's last cell output.
    """
    trunk = [row for row in tensors if row[3]]
    merges = [i for i, row in enumerate(trunk) if row[2]]
    last_merge = merges[-1] if merges else -1
    after = [(t, op) for t, op, _, _ in trunk[last_merge + 1:] if post[id(t)]]
    if after:
        return after[-1]
    if last_merge >= 0:
        return trunk[last_merge][:2]
    if not trunk:  # the widest merge, the last of equals (a cell's output, not a side branch's)
        merges = [(t.shape[-1], i, t, op) for i, (t, op, merge, _) in enumerate(tensors) if merge]
        return max(merges, key=lambda m: m[:2])[2:] if merges else None
    return None


def stage_layers(model, k: int) -> list[str]:
    """Names of the layers of ``model``'s last ``k`` stages (one per resolution, two at the last), earliest first.

    The last one is the layer whose output today's pooled feature comes from. Raises
    KaggleTLError when the model has fewer than ``k`` stages.
    """
    stages = [name for name, _, _ in _describe(model)]
    if not 1 <= k <= len(stages):
        raise KaggleTLError(f"model {model.name!r}: stages must be 1 to {len(stages)} (its resolution "
                            f"stages: {', '.join(stages)}), got {k}")
    return stages[-k:]


def match_plan(model, plan: list[tuple[str, int]]) -> list[str]:
    """The layer names in ``model`` of a planned run's stages (``stage_plan``'s), matched by position.

    The table's names are a fresh session's; a model built after others in one process may number
    its auto-named layers differently (xception's ``add`` becomes ``add_12``). Its stages are the
    same ones: this returns the live names, after checking the dims agree.
    """
    live = describe_stages(model)[-len(plan):]
    if len(live) != len(plan) or [dim for _, dim in live] != [dim for _, dim in plan]:
        raise KaggleTLError(f"model {model.name!r}: its stages {live} do not match the planned {plan}; "
                            f"regenerate the table (python -m kaggle_tl.backbones.stages --write)")
    return [name for name, _ in live]


def live_layers(model, outputs) -> list[str]:
    """The layer names in ``model`` of a BackboneRef's ``outputs`` ((name, dim), the last "pooled").

    The names a run planned are a fresh session's (stages_table) or a user's: when ``model`` has
    them all, they are used; else the planned stages are matched by position (``match_plan``).
    """
    final_op, _ = _producer(_final_tensor(model))
    names = [name for name, _ in outputs[:-1]]
    present = {op.name for op in model.operations}
    if all(name in present for name in names):
        return [*names, final_op.name]
    return match_plan(model, [*outputs[:-1], (final_op.name, outputs[-1][1])])


def multi_level_model(model, layers: list[str]):
    """A model whose outputs are the average-pooled (N, d_i) outputs of ``layers``, in that order.

    The final layer's entry is ``model``'s own output tensor (today's feature, e.g. ConvNeXt's
    layer-normalised pooled vector), and asking for the final layer alone returns ``model`` itself,
    unchanged: K=1 is today's features bit for bit. (GeM pooling, p=3, was measured instead of the
    average and left out: on CIFAR-10-small it cost 0.003 to 0.012 of log loss with the new defaults.)
    """
    import keras

    final_op, _ = _producer(_final_tensor(model))
    if list(layers) == [final_op.name]:
        return model
    # By operation, not get_layer: some stages are operations (ConvNeXt's `x + y` residual adds).
    by_name = {op.name: op for op in model.operations}
    outputs = []
    for name in layers:
        if name not in by_name:
            raise KaggleTLError(f"model {model.name!r}: no layer named {name!r} (its resolution stages: "
                                f"{', '.join(n for n, _, _ in _describe(model))})")
        tensor = by_name[name].output
        if len(tensor.shape) != 4:
            raise KaggleTLError(f"model {model.name!r}: layer {name!r} has output shape {tensor.shape}; "
                                f"a stage needs (N, H, W, C)")
        if name == final_op.name:
            outputs.append(model.outputs[0])
        else:
            outputs.append(keras.layers.GlobalAveragePooling2D(name=f"{name}_stage_avg")(tensor))
    return keras.Model(model.inputs, outputs, name=f"{model.name}_stages")


def describe_stages(model) -> list[tuple[str, int]]:
    """(layer name, channels) of every stage of ``model`` (one per resolution, two at the last), earliest first."""
    return [(name, dim) for name, dim, _ in _describe(model)]


def backbone_stages(name: str) -> list[tuple[str, int]]:
    """Discover ``name``'s stages: built at its minimum size with random weights, in a fresh session."""
    import keras

    from kaggle_tl.backbones import backbone_spec

    keras.backend.clear_session()  # fresh auto-name counters: the names the table records
    spec = backbone_spec(name)
    backbone = spec(None, spec.min_size)
    stages = describe_stages(backbone.model)
    keras.backend.clear_session()  # 40+ models in one process: free each graph
    return stages


def published_stages() -> dict[str, list[tuple[str, int]]]:
    """The committed table: {backbone: [(layer name, dim), ...] for every stage, earliest first}."""
    from kaggle_tl.backbones.stages_table import STAGES

    return STAGES


def stage_plan(name: str, k: int) -> list[tuple[str, int]]:
    """(layer name, dim) of registered backbone ``name``'s last ``k`` stages, without TensorFlow."""
    table = published_stages()
    if name not in table:
        raise KaggleTLError(f"no stage table entry for backbone {name!r}: a user model's stages are "
                            f"found from its file (stage_layers); registered: {', '.join(sorted(table))}")
    stages = table[name]
    if not 1 <= k <= len(stages):
        raise KaggleTLError(f"{name}: stages must be 1 to {len(stages)}, got {k}")
    return list(stages[-k:])


def main(argv=None) -> int:
    from kaggle_tl.backbones.generated import table_main

    return table_main(argv, description="Find backbones' resolution stages (random weights, min size).",
                      path=TABLE_PATH, variable="STAGES", measure=backbone_stages, show=str,
                      doc=["Resolution stages of each backbone: (layer name, channels), earliest first; the last is the",
                           "layer today's pooled feature comes from. Generated by",
                           "``python -m kaggle_tl.backbones.stages --write``: do not edit by hand."],
                      entry=lambda name, stages: [f"    {name!r}: [", *(f"        ({layer!r}, {dim}),"
                                                                       for layer, dim in stages), "    ],"])


if __name__ == "__main__":
    sys.exit(main())
