"""The AcT nodes in the real ComfyUI server, on the toy checkpoint: what a user would check."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import read_image
from harness.comfy_server import ComfyError, ComfyServer, txt2img_graph
from toyworld.experiments import fit_combos, heldout_combos
from toyworld.render import Scene, parse_prompt

pytestmark = pytest.mark.comfyui

SOURCE = "\n".join(Scene(c, s).prompt for c, s in fit_combos())
TARGET = "\n".join(Scene(c, s, "striped").prompt for c, s in fit_combos())
HELDOUT = [Scene(c, s).prompt for c, s in heldout_combos()[:2]]


def learn_node(source=SOURCE, target=TARGET, **over) -> dict:
    inputs = {"model": ["1", 0], "clip": ["1", 1], "source_prompts": source,
              "target_prompts": target, "sites": "auto", "pattern": "", "method": "linear_act",
              "support": "unbounded", "incremental": True, "stages": 4, "collect_at": 0.0,
              "timestep_ranges": 1, "seed": 0, "latent": ["fit_latent", 0]}
    inputs.update(over)
    return {"class_type": "ActLearnTransport", "inputs": inputs}


def act_graph(prompt: str, seed: int, strength: float, batch: int = 2, maps_node=None,
              **apply_over) -> dict:
    """txt2img with ActLearnTransport -> ActApplyTransport in front of the KSampler."""
    g = txt2img_graph(prompt, seed=seed, batch=batch, prefix="act")
    g["fit_latent"] = {"class_type": "EmptyLatentImage",
                       "inputs": {"width": 64, "height": 64, "batch_size": 4}}
    g["learn"] = maps_node or learn_node()
    apply_inputs = {"model": ["1", 0], "maps": ["learn", 0], "strength": strength,
                    "start_percent": 0.0, "end_percent": 1.0, "apply_to": "conditional",
                    "support": "from maps"}
    apply_inputs.update(apply_over)
    g["apply"] = {"class_type": "ActApplyTransport", "inputs": apply_inputs}
    g["5"]["inputs"]["model"] = ["apply", 0]
    return g


def images_of(server, graph) -> list[np.ndarray]:
    return server.images(server.run(graph))


def test_nodes_are_registered_with_tooltips(comfy_server):
    info = comfy_server.get_json("/object_info")
    for node in ("ActLearnTransport", "ActApplyTransport", "ActSaveMaps", "ActLoadMaps",
                 "ActStrengthGrid"):
        assert info[node]["category"] == "AcT"
        assert info[node]["description"]
        for section in ("required", "optional"):
            for name, spec in info[node]["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node}.{name} has no tooltip"
    learn = info["ActLearnTransport"]["input"]["required"]
    assert {"model", "clip", "source_prompts", "target_prompts"} <= set(learn)
    assert {"model", "maps", "strength"} <= set(info["ActApplyTransport"]["input"]["required"])


def test_strength_zero_is_bit_identical_to_the_unpatched_model(comfy_server):
    plain = images_of(comfy_server, txt2img_graph(HELDOUT[0], seed=11, batch=2))
    zero = images_of(comfy_server, act_graph(HELDOUT[0], seed=11, strength=0.0))
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero))
    one = images_of(comfy_server, act_graph(HELDOUT[0], seed=11, strength=1.0))
    assert not all(np.array_equal(a, b) for a, b in zip(plain, one))


DEFAULTS = {"sites": "auto", "stages": 8}  # the learn node's defaults (auto: measured)


def test_default_learn_adds_stripes_on_held_out_prompts(comfy_server):
    """With the learn node's defaults (no preset chosen), maps from plain to striped prompts
    draw stripes on held-out plain prompts at strength 1 and keep their colour; strength 0
    draws none."""
    reads = {}
    for strength in (0.0, 1.0):
        reads[strength] = []
        for k, prompt in enumerate(HELDOUT):
            graph = act_graph(prompt, seed=300 + k, strength=strength,
                              maps_node=learn_node(**DEFAULTS))
            reads[strength] += [(parse_prompt(prompt), read_image(im))
                                for im in images_of(comfy_server, graph)]
    presence = {s: np.mean([r.style == "striped" for _, r in rs]) for s, rs in reads.items()}
    assert presence[0.0] == 0.0 and presence[1.0] >= 0.75, presence
    assert all(r.colour == scene.colour for _, rs in reads.items() for scene, r in rs)


DOT = " with a black dot"
NEGATION_STRENGTH = 1.0  # the bound: the dot gone at strength 1
NEG_HELDOUT = [Scene(c, s, "plain", True).prompt for c, s in heldout_combos()[:3]]


def test_default_learn_removes_the_dot_on_held_out_prompts(comfy_server):
    """With the learn node's defaults, maps from '... with a black dot' to the same prompts
    without it, on held-out prompts."""
    learn = learn_node(source="\n".join(p + DOT for p in SOURCE.splitlines()), target=SOURCE,
                       **DEFAULTS)
    reads = {}
    for strength in (0.0, NEGATION_STRENGTH):
        reads[strength] = []
        for k, prompt in enumerate(NEG_HELDOUT):
            graph = act_graph(prompt, seed=400 + k, strength=strength, maps_node=learn)
            graph["fit_latent"]["inputs"]["batch_size"] = 8
            reads[strength] += [read_image(im) for im in images_of(comfy_server, graph)]
    dot = {k: np.mean([r.dot for r in v]) for k, v in reads.items()}
    wanted = [parse_prompt(p).colour for p in NEG_HELDOUT for _ in range(2)]  # batch 2
    colour = {k: np.mean([r.colour == c for r, c in zip(v, wanted, strict=True)])
              for k, v in reads.items()}
    assert dot[0.0] >= 0.8 and dot[NEGATION_STRENGTH] <= 0.2, dot
    assert colour[NEGATION_STRENGTH] >= 0.8, colour


def test_learning_is_cached_on_rerun(comfy_server):
    graph = act_graph(HELDOUT[1], seed=5, strength=0.5)
    comfy_server.run(graph)
    graph = copy.deepcopy(graph)
    graph["5"]["inputs"]["seed"] = 6  # only the sampler changes
    entry = comfy_server.run(graph)
    cached = [set(data.get("nodes", [])) for kind, data in entry["status"]["messages"]
              if kind == "execution_cached"]
    assert cached and "learn" in cached[0]


@pytest.mark.parametrize("source,target,needle", [
    ("", TARGET, "source_prompts is empty"),
    (SOURCE, "\n\n# only a comment\n", "target_prompts is empty"),
])
def test_empty_prompt_sets_are_refused_clearly(comfy_server, source, target, needle):
    graph = act_graph(HELDOUT[0], seed=1, strength=1.0, maps_node=learn_node(source, target))
    with pytest.raises(ComfyError, match=needle):
        comfy_server.run(graph)


def test_strength_out_of_range_is_refused(comfy_server):
    with pytest.raises(ComfyError, match="outside the documented range"):
        comfy_server.run(act_graph(HELDOUT[0], seed=1, strength=3.0))


def test_save_load_round_trip_and_bad_files(comfy_server):
    maps_dir = Path(comfy_server.base) / "models" / "act_maps"
    save = act_graph(HELDOUT[0], seed=21, strength=0.75)
    save["save"] = {"class_type": "ActSaveMaps",
                    "inputs": {"maps": ["learn", 0], "filename_prefix": "tests/style"}}
    direct = images_of(comfy_server, save)
    saved = sorted((maps_dir / "tests").glob("style_*.safetensors"))
    assert saved, "ActSaveMaps wrote no file"
    name = f"tests/{saved[-1].name}"
    loaded = act_graph(HELDOUT[0], seed=21, strength=0.75, maps_node={
        "class_type": "ActLoadMaps", "inputs": {"map_name": name}})
    assert all(np.array_equal(a, b) for a, b in zip(direct, images_of(comfy_server, loaded)))

    (maps_dir / "tests" / "corrupt.safetensors").write_bytes(saved[-1].read_bytes()[:300])
    bad = act_graph(HELDOUT[0], seed=21, strength=0.75, maps_node={
        "class_type": "ActLoadMaps", "inputs": {"map_name": "tests/corrupt.safetensors"}})
    with pytest.raises(ComfyError, match="ActLoadMaps"):
        comfy_server.run(bad)


def test_maps_for_another_architecture_are_refused(comfy_server, tmp_path):
    import torch

    import act_core

    maps_dir = Path(comfy_server.base) / "models" / "act_maps"
    source, target = torch.randn(16, 1280), torch.randn(16, 1280) + 1
    foreign = {"input_blocks.4.1.transformer_blocks.0.norm1": act_core.fit(source, target)}
    act_core.save_maps(maps_dir / "sdxl_maps.safetensors", foreign,
                       model={"family": "sdxl", "arch": "UNetModel"})
    graph = act_graph(HELDOUT[0], seed=1, strength=1.0, maps_node={
        "class_type": "ActLoadMaps", "inputs": {"map_name": "sdxl_maps.safetensors"}})
    with pytest.raises(ComfyError, match="sdxl"):
        comfy_server.run(graph)


def test_maps_with_a_language_model_sequence_gate_are_refused(comfy_server):
    import torch

    import act_core
    from act_core.mapset import MapSet
    from act_core.seqgate import SequenceGate

    maps_dir = Path(comfy_server.base) / "models" / "act_maps"
    source, target = torch.randn(16, 320), torch.randn(16, 320) + 1
    gate = SequenceGate(site="model.layers.1", weight=torch.ones(320), bias=0.0)
    gated = MapSet({"input_blocks.1.1.norm": act_core.fit(source, target)}, sequence_gate=gate)
    act_core.save_maps(maps_dir / "seqgate_maps.safetensors", gated)
    graph = act_graph(HELDOUT[0], seed=1, strength=1.0, maps_node={
        "class_type": "ActLoadMaps", "inputs": {"map_name": "seqgate_maps.safetensors"}})
    with pytest.raises(ComfyError, match="sequence gate"):
        comfy_server.run(graph)


def test_interrupted_and_patched_runs_leave_the_server_clean(comfy_server):
    """After a patched run and an interrupted one, an unpatched image is bit-identical to one
    from a fresh server."""
    comfy_server.run(act_graph(HELDOUT[1], seed=3, strength=1.0))
    slow = act_graph(HELDOUT[1], seed=4, strength=1.0, batch=8)
    slow["5"]["inputs"]["steps"] = 400
    prompt_id = comfy_server.submit(slow)
    time.sleep(3)
    comfy_server.post_json("/interrupt", {})
    with pytest.raises(ComfyError):
        comfy_server.wait(prompt_id, timeout=300)
    after = images_of(comfy_server, txt2img_graph(HELDOUT[1], seed=77, batch=2, prefix="after"))
    with ComfyServer() as fresh:
        reference = images_of(fresh, txt2img_graph(HELDOUT[1], seed=77, batch=2, prefix="ref"))
    assert all(np.array_equal(a, b) for a, b in zip(after, reference))


def text_graph(prompt: str, seed: int, strength: float, method: str = "linear_act") -> dict:
    g = txt2img_graph(prompt, seed=seed, batch=2, prefix="clip")
    g["tl"] = {"class_type": "ActLearnTextTransport", "inputs": {
        "clip": ["1", 1], "source_prompts": SOURCE, "target_prompts": TARGET,
        "sites": "final norm", "pattern": "", "method": method, "support": "unbounded",
        **({"lineas_steps": 10} if method == "lineas" else {})}}
    g["tc"] = {"class_type": "ActApplyTransportCLIP",
               "inputs": {"clip": ["1", 1], "maps": ["tl", 0], "strength": strength}}
    g["2"]["inputs"]["clip"] = ["tc", 0]
    return g


@pytest.mark.parametrize("method", ["linear_act", "lineas"])
def test_text_encoder_maps_apply_to_the_clip(comfy_server, method):
    """Learned on the checkpoint's CLIP (loaded under ComfyUI's inference mode; lineas learns
    through it): λ = 0 leaves the images bit-identical, λ = 1 changes them."""
    plain = images_of(comfy_server, txt2img_graph(HELDOUT[0], seed=31, batch=2))
    zero = images_of(comfy_server, text_graph(HELDOUT[0], seed=31, strength=0.0, method=method))
    one = images_of(comfy_server, text_graph(HELDOUT[0], seed=31, strength=1.0, method=method))
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero))
    assert not all(np.array_equal(a, b) for a, b in zip(plain, one))
    # the unpatched CLIP in the same server is unaffected afterwards
    again = images_of(comfy_server, txt2img_graph(HELDOUT[0], seed=31, batch=2, prefix="again"))
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))


def test_text_encoder_maps_are_refused_by_the_model_node(comfy_server):
    graph = text_graph(HELDOUT[0], seed=31, strength=1.0)
    graph["apply"] = {"class_type": "ActApplyTransport", "inputs": {
        "model": ["1", 0], "maps": ["tl", 0], "strength": 1.0, "start_percent": 0.0,
        "end_percent": 1.0, "apply_to": "both", "support": "from maps"}}
    graph["5"]["inputs"]["model"] = ["apply", 0]
    with pytest.raises(ComfyError, match="text encoder"):
        comfy_server.run(graph)


# -- a queue of graphs: learning runs once, memory stays flat (issue 24) ---------------------

QUEUE = 50
LEARNED, REUSED = "AcT: learned", "AcT: reusing the"


def _rss_mib(server: ComfyServer) -> float:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _log(server: ComfyServer) -> str:
    return server.log_path.read_text(errors="replace")


def _queue(seed_base: int) -> list[dict]:
    """Graphs sharing one learn node (a seed no other test uses), differing in seed, prompt
    and strength."""
    shared = learn_node(seed=seed_base)
    graphs = []
    for i in range(QUEUE):
        g = act_graph(HELDOUT[i % len(HELDOUT)], seed=seed_base + i, batch=1,
                      strength=(0.5, 0.75, 1.0)[i % 3], maps_node=copy.deepcopy(shared))
        g["5"]["inputs"]["steps"] = 8
        graphs.append(g)
    return graphs


def test_a_queue_of_50_graphs_learns_once_and_stays_flat(comfy_server):
    plain = txt2img_graph(HELDOUT[0], seed=91, batch=1, prefix="queue_plain")
    before = images_of(comfy_server, plain)
    learned_before = _log(comfy_server).count(LEARNED)
    ids = [comfy_server.submit(g) for g in _queue(424242)]
    rss = []
    for prompt_id in ids:
        comfy_server.wait(prompt_id)
        rss.append(_rss_mib(comfy_server))
    assert _log(comfy_server).count(LEARNED) - learned_before == 1
    # flat after a warm-up: least-squares slope over the last 40 images, MiB per image
    tail = np.array(rss[10:])
    slope = np.polyfit(np.arange(len(tail)), tail, 1)[0]
    assert slope < 0.25, f"resident memory grows {slope:.2f} MiB per image: {rss}"
    after = images_of(comfy_server, plain)  # no hook or patch left on the model
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_maps_are_not_relearned_when_comfyui_drops_its_cache():
    """``--cache-ram 1000`` (1000 GB headroom: every run is under RAM pressure) makes ComfyUI
    release cached outputs after each run, as a loaded machine does; the learn node then runs
    again, and must reuse what it learned instead of learning again. Two graphs with different
    map sets, alternating: each map set is learned once."""
    graphs = []
    for learn_seed in (515151, 525252):
        g = act_graph(HELDOUT[1], seed=7, strength=1.0, batch=1,
                      maps_node=learn_node(seed=learn_seed))
        g["5"]["inputs"]["steps"] = 8
        graphs.append(g)
    with ComfyServer(extra_args=("--cache-ram", "1000")) as server:
        images = [images_of(server, graphs[i % 2]) for i in range(4)]
        log = _log(server)
    assert log.count(LEARNED) == 2, log[-3000:]
    assert log.count(REUSED) == 2, "ComfyUI kept its cache: this test no longer exercises the drop"
    for i in (0, 1):
        assert all(np.array_equal(a, b) for a, b in zip(images[i], images[i + 2]))
