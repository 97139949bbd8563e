"""Write ComfyUI workflows in the web page's own format from a compact spec.

A ``WorkflowSpec`` lists nodes by type with their widget values and links by output name::

    wf = WorkflowSpec("demo")
    ckpt = wf.add("CheckpointLoaderSimple", (0, 0), ckpt_name="model.safetensors")
    text = wf.add("CLIPTextEncode", (400, 0), text="a red circle", clip=ckpt.out("CLIP"))

``to_ui(spec, object_info)`` turns it into the UI ("litegraph", ``"version": 0.4``) JSON the
page saves and loads, and ``to_api(spec, object_info)`` into the API graph the page would send
to ``/prompt``. Both read the node schemas from the server's ``/object_info``, so the order of
``widgets_values`` follows the schema: every widget input in ``input_order`` (required, then
optional), with the page's extra ``control_after_generate`` value ("fixed") right after an INT
input that declares it. A value the schema does not know, a wrong link type, a missing
required link or a combo value outside its options raises ``WorkflowSpecError``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Output", "NodeSpec", "WorkflowSpec", "WorkflowSpecError", "to_api", "to_ui",
           "widget_names"]

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Nodes that exist only in the page (not in /object_info): type -> widget names.
PAGE_ONLY = {"Note": ["text"], "MarkdownNote": ["text"]}
CONTROL_VALUE = "fixed"  # the seed stays as written when the page queues the workflow
SIZES = {"CheckpointLoaderSimple": (315, 98), "CLIPTextEncode": (400, 160),
         "EmptyLatentImage": (315, 106), "KSampler": (315, 262), "VAEDecode": (210, 46),
         "SaveImage": (400, 400), "ActLearnTransport": (420, 420),
         "ActApplyTransport": (315, 178), "ActSaveMaps": (315, 58), "ActLoadMaps": (315, 58),
         "ActStrengthGrid": (315, 310), "Note": (420, 220), "MarkdownNote": (420, 220)}


class WorkflowSpecError(ValueError):
    """A spec that does not fit the node schemas; the message names node, input and fix."""


@dataclass(frozen=True)
class Output:
    """Output ``name`` (as in the schema's ``output_name``) of node ``node_id``."""

    node_id: int
    name: str


@dataclass
class NodeSpec:
    id: int
    type: str
    pos: tuple[float, float]
    inputs: dict[str, Any]
    title: str | None = None
    size: tuple[float, float] | None = None

    def out(self, name: str) -> Output:
        return Output(self.id, name)


@dataclass
class WorkflowSpec:
    name: str
    nodes: list[NodeSpec] = field(default_factory=list)
    thumbnail_node: int | None = None  # the SaveImage whose picture represents the workflow

    def add(self, node_type: str, pos: tuple[float, float], *, title: str | None = None,
            size: tuple[float, float] | None = None, **inputs: Any) -> NodeSpec:
        node = NodeSpec(len(self.nodes) + 1, node_type, pos, inputs, title, size)
        self.nodes.append(node)
        return node

    def node(self, node_id: int) -> NodeSpec:
        return self.nodes[node_id - 1]


def _schema(object_info: dict, node: NodeSpec) -> dict:
    try:
        return object_info[node.type]
    except KeyError:
        raise WorkflowSpecError(f"node {node.id}: type {node.type!r} is not in /object_info; "
                                "is its custom node pack installed and importable?") from None


def _ordered_inputs(schema: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, optional) for every input, in the page's order."""
    out = []
    for section, optional in (("required", False), ("optional", True)):
        specs = schema["input"].get(section, {})
        for name in schema.get("input_order", {}).get(section, list(specs)):
            spec = specs[name]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, spec[0], opts, optional))
    return out


def _is_widget(kind: Any, opts: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def _default(name: str, kind: Any, opts: dict) -> Any:
    if "default" in opts:
        return opts["default"]
    options = kind if isinstance(kind, list) else opts.get("options", [])
    if options:
        return options[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _check_value(node: NodeSpec, name: str, kind: Any, opts: dict, value: Any) -> None:
    options = kind if isinstance(kind, list) else opts.get("options")
    if (kind == "COMBO" or isinstance(kind, list)) and value not in (options or []):
        raise WorkflowSpecError(f"node {node.id} ({node.type}): {name}={value!r} is not one of "
                                f"the server's options {options!r} (install the file or fix "
                                "the spec)")


def widget_names(schema: dict) -> list[str]:
    """Widget names in ``widgets_values`` order, ``control_after_generate`` included."""
    names = []
    for name, kind, opts, _ in _ordered_inputs(schema):
        if _is_widget(kind, opts):
            names.append(name)
            if kind == "INT" and opts.get("control_after_generate"):
                names.append("control_after_generate")
    return names


def _resolve(spec: WorkflowSpec, object_info: dict, node: NodeSpec) -> tuple[dict, dict]:
    """Split a node's spec inputs into widget values (all, defaults filled) and links."""
    schema = _schema(object_info, node)
    inputs = _ordered_inputs(schema)
    unknown = set(node.inputs) - {name for name, *_ in inputs}
    if unknown:
        raise WorkflowSpecError(f"node {node.id} ({node.type}) has no input(s) "
                                f"{sorted(unknown)}; it has {[n for n, *_ in inputs]}")
    widgets, links = {}, {}
    for name, kind, opts, optional in inputs:
        value = node.inputs.get(name)
        if _is_widget(kind, opts):
            if isinstance(value, Output):
                raise WorkflowSpecError(f"node {node.id}: linking widget {name!r} is not "
                                        "supported by this writer; give a value")
            value = _default(name, kind, opts) if name not in node.inputs else value
            _check_value(node, name, kind, opts, value)
            widgets[name] = value
        elif isinstance(value, Output):
            source = spec.node(value.node_id)
            names = _schema(object_info, source)["output_name"]
            if value.name not in names:
                raise WorkflowSpecError(f"node {source.id} ({source.type}) has no output "
                                        f"{value.name!r}; it has {names}")
            slot = names.index(value.name)
            out_type = _schema(object_info, source)["output"][slot]
            if kind != "*" and out_type != kind:
                raise WorkflowSpecError(f"node {node.id} ({node.type}).{name} takes {kind}, "
                                        f"but {source.type}.{value.name} gives {out_type}")
            links[name] = (source.id, slot, kind)
        elif not optional:
            raise WorkflowSpecError(f"node {node.id} ({node.type}): required input {name!r} "
                                    "is not linked")
    return widgets, links


def to_api(spec: WorkflowSpec, object_info: dict) -> dict:
    """The API graph (``{"id": {"class_type", "inputs"}}``) the page sends for ``spec``."""
    graph = {}
    for node in spec.nodes:
        if node.type in PAGE_ONLY:
            continue
        widgets, links = _resolve(spec, object_info, node)
        inputs = dict(widgets)
        inputs.update({name: [str(src), slot] for name, (src, slot, _) in links.items()})
        graph[str(node.id)] = {"class_type": node.type, "inputs": inputs}
    return graph


def _page_only_node(node: NodeSpec, order: int) -> dict:
    return {"id": node.id, "type": node.type, "pos": list(node.pos),
            "size": list(node.size or SIZES.get(node.type, (400, 200))), "flags": {},
            "order": order, "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [node.inputs[n] for n in PAGE_ONLY[node.type]],
            **({"title": node.title} if node.title else {}),
            "color": "#432", "bgcolor": "#653"}


def _ui_inputs(schema: dict, node: NodeSpec, node_links: dict, links: list) -> list[dict]:
    """The page's ``inputs`` list: sockets first, then one entry per widget. Appends links."""
    sockets, widget_inputs = [], []
    for name, kind, opts, optional in _ordered_inputs(schema):
        entry = {"localized_name": name, "name": name,
                 "type": kind if isinstance(kind, str) else "COMBO", "link": None}
        if name in node_links:
            src, slot, _ = node_links[name]
            entry["link"] = len(links) + 1
            links.append([entry["link"], src, slot, node.id, None, entry["type"]])
        if _is_widget(kind, opts):
            entry["widget"] = {"name": name}
            widget_inputs.append(entry)
        else:
            if optional:
                entry["shape"] = 7
            sockets.append(entry)
    ui_inputs = sockets + widget_inputs
    for index, entry in enumerate(ui_inputs):  # a link's target slot = index in this list
        if entry["link"] is not None:
            links[entry["link"] - 1][4] = index
    return ui_inputs


def _ui_node(spec: WorkflowSpec, object_info: dict, node: NodeSpec, order: int,
             links: list) -> dict:
    if node.type in PAGE_ONLY:
        return _page_only_node(node, order)
    schema = _schema(object_info, node)
    widgets, node_links = _resolve(spec, object_info, node)
    values = [CONTROL_VALUE if name == "control_after_generate" else widgets[name]
              for name in widget_names(schema)]
    return {
        "id": node.id, "type": node.type, "pos": list(node.pos),
        "size": list(node.size or SIZES.get(node.type, (315, 120))), "flags": {},
        "order": order, "mode": 0, "inputs": _ui_inputs(schema, node, node_links, links),
        "outputs": [{"localized_name": name, "name": name, "type": kind, "links": []}
                    for name, kind in zip(schema["output_name"], schema["output"])],
        "properties": {"Node name for S&R": node.type},
        "widgets_values": values,
        **({"title": node.title} if node.title else {}),
    }


def to_ui(spec: WorkflowSpec, object_info: dict) -> dict:
    """The UI-format workflow (litegraph ``version`` 0.4) the page saves for ``spec``.

    ``links`` rows are ``[id, origin node, origin slot, target node, target slot, type]``.
    """
    links: list[list] = []
    nodes = [_ui_node(spec, object_info, node, order, links)
             for order, node in enumerate(spec.nodes)]
    by_id = {node["id"]: node for node in nodes}
    for link_id, src, slot, *_ in links:
        by_id[src]["outputs"][slot]["links"].append(link_id)
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"act-for-comfyui/{spec.name}")),
        "revision": 0, "last_node_id": len(spec.nodes), "last_link_id": len(links),
        "nodes": nodes, "links": links, "groups": [], "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4,
    }
