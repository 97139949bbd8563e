"""The example workflows in ``example_workflows/``, written from the specs below.

``python -m harness.workflows`` starts the real ComfyUI server (toy checkpoint, this pack, the
shipped example maps), reads ``/object_info`` and writes ``example_workflows/<name>.json`` in
the web page's UI format. ``--thumbnails`` also runs every workflow on the toy checkpoint and
writes ``<name>.png`` (with the workflow embedded, as SaveImage does: drop it on the page to
load it) and ``<name>.jpg`` (what the page's template browser shows for a custom-node
template). ``--check`` only compares the committed JSON with the specs (exit 1 on a
difference).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from toyworld.checkpoint import CHECKPOINT_NAME, checkpoint_path
from toyworld.example_maps import STRIPED_MAP, install_example_maps
from toyworld.experiments import NEGATION_SITES

from .comfy_server import ROOT, ComfyServer
from .workflow_format import WorkflowSpec, to_api, to_ui

__all__ = ["EXAMPLES", "WORKFLOW_DIR", "concept_negation", "load_and_apply", "object_info_of",
           "slider_panel", "style_intensity", "to_api", "toy_server", "write_thumbnail",
           "write_workflows"]

log = logging.getLogger(__name__)
WORKFLOW_DIR = ROOT / "example_workflows"
SAMPLING = {"steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal"}
PLAIN = ["a red circle", "a blue square", "a green triangle",
         "a green circle", "a red square", "a blue triangle"]
DOT = " with a black dot"


def _base(wf: WorkflowSpec, note: str, size: int = 64):
    wf.add("Note", (0, -250), title="About this workflow", size=(400, 210), text=note)
    ckpt = wf.add("CheckpointLoaderSimple", (0, 0), ckpt_name=CHECKPOINT_NAME)
    latent = wf.add("EmptyLatentImage", (0, 140), width=size, height=size, batch_size=1)
    return ckpt, latent


def _prompts(wf: WorkflowSpec, ckpt, text: str, x: float, y: float):
    pos = wf.add("CLIPTextEncode", (x, y), title="Positive", text=text, clip=ckpt.out("CLIP"))
    neg = wf.add("CLIPTextEncode", (x, y + 200), title="Negative", size=(400, 100), text="",
                 clip=ckpt.out("CLIP"))
    return pos, neg


def _sample(wf: WorkflowSpec, model, pos, neg, latent, ckpt, x: float, y: float, prefix: str,
            seed: int):
    k = wf.add("KSampler", (x, y), model=model, positive=pos.out("CONDITIONING"),
               negative=neg.out("CONDITIONING"), latent_image=latent.out("LATENT"), seed=seed,
               denoise=1.0, **SAMPLING)
    dec = wf.add("VAEDecode", (x + 340, y), samples=k.out("LATENT"), vae=ckpt.out("VAE"))
    return wf.add("SaveImage", (x + 580, y), size=(260, 300), images=dec.out("IMAGE"),
                  filename_prefix=prefix)


def _grid(wf: WorkflowSpec, ckpt, maps, pos, neg, latent, x: float, y: float, prefix: str,
          seed: int):
    grid = wf.add("ActStrengthGrid", (x, y), model=ckpt.out("MODEL"), maps=maps.out("maps"),
                  positive=pos.out("CONDITIONING"), negative=neg.out("CONDITIONING"),
                  latent_image=latent.out("LATENT"), vae=ckpt.out("VAE"),
                  strengths="0, 0.25, 0.5, 0.75, 1", seed=seed, **SAMPLING)
    return wf.add("SaveImage", (x + 340, y), size=(660, 300), images=grid.out("grid"),
                  filename_prefix=prefix)


def style_intensity() -> WorkflowSpec:
    """Learn 'striped' from six plain/striped prompt pairs; sweep it on a held-out prompt."""
    wf = WorkflowSpec("act_style_intensity")
    ckpt, latent = _base(wf, (
        "Style intensity with AcT (toy checkpoint act_toyworld_sd15).\n\n"
        "AcT Learn Transport compares the model's activations on plain prompts (source) with "
        "the same prompts in the 'striped' style (target) and fits one small transport map per "
        "unit. Every setting is at its default: sites 'auto' tries each site preset on "
        "prompts it holds out and learns the one that brings them closest to the target; "
        "the diagnostics picture (Preview Image) shows its choice and, per site, how far "
        "apart the two sets are and what the maps close.\n\nThe strength grid draws a prompt "
        "that was NOT used for learning ('a yellow triangle') at strengths 0 to 1; the bottom "
        "row applies strength 0.5 through a normal KSampler. AcT Save Maps writes "
        "models/act_maps/act/toyworld_striped_00001.safetensors for AcT Load Maps."))
    learn = wf.add("ActLearnTransport", (420, 0), model=ckpt.out("MODEL"), clip=ckpt.out("CLIP"),
                   latent=latent.out("LATENT"), source_prompts="\n".join(PLAIN),
                   target_prompts="\n".join(p.replace("a ", "a striped ", 1) for p in PLAIN),
                   seed=0)
    wf.add("PreviewImage", (420, 580), size=(420, 300), images=learn.out("diagnostics"))
    wf.add("ActSaveMaps", (420, 460), maps=learn.out("maps"),
           filename_prefix="act/toyworld_striped")
    pos, neg = _prompts(wf, ckpt, "a yellow triangle", 0, 300)
    wf.thumbnail_node = _grid(wf, ckpt, learn, pos, neg, latent, 880, 0,
                              "act/style_intensity_grid", seed=4).id
    apply = wf.add("ActApplyTransport", (880, 380), model=ckpt.out("MODEL"),
                   maps=learn.out("maps"), strength=0.5)
    _sample(wf, apply.out("MODEL"), pos, neg, latent, ckpt, 1220, 380,
            "act/style_intensity_0.5", seed=4)
    return wf


def concept_negation() -> WorkflowSpec:
    """Learn to remove 'with a black dot'; apply it at strength 1 to a prompt that asks for it."""
    wf = WorkflowSpec("act_concept_negation")
    ckpt, latent = _base(wf, (
        "Concept negation with AcT (toy checkpoint act_toyworld_sd15).\n\n"
        "Source = prompts that ask for a black dot; target = the same prompts without it. "
        "AcT Learn Transport at its defaults: sites 'auto' measures each site preset on "
        "prompts it holds out and learns the best (the diagnostics picture, in the Preview "
        "Image, says which, and warns when the maps would change nothing). Support "
        "'unbounded': on this model 'minmax' (the reference's choice for removal) leaves the "
        "dot in place. The maps act on the conditional half of the CFG batch (apply_to, the "
        "default).\n\nThe held-out "
        "prompt 'a yellow square with a black dot' is drawn with the maps at strength 1 "
        "(the dot should be gone), and the grid shows strengths 0 to 1 for the same seed."))
    learn = wf.add("ActLearnTransport", (420, 0), model=ckpt.out("MODEL"), clip=ckpt.out("CLIP"),
                   latent=latent.out("LATENT"), source_prompts="\n".join(p + DOT for p in PLAIN),
                   target_prompts="\n".join(PLAIN), seed=0)
    wf.add("PreviewImage", (420, 580), size=(420, 300), images=learn.out("diagnostics"))
    pos, neg = _prompts(wf, ckpt, "a yellow square" + DOT, 0, 300)
    apply = wf.add("ActApplyTransport", (880, 380), model=ckpt.out("MODEL"),
                   maps=learn.out("maps"), strength=1.0)
    _sample(wf, apply.out("MODEL"), pos, neg, latent, ckpt, 1220, 380,
            "act/concept_negation_1.0", seed=5)
    wf.thumbnail_node = _grid(wf, ckpt, learn, pos, neg, latent, 880, 0,
                              "act/concept_negation_grid", seed=5).id
    return wf


def load_and_apply() -> WorkflowSpec:
    """Apply the shipped striped-style maps to a fresh prompt."""
    wf = WorkflowSpec("act_load_and_apply")
    ckpt, latent = _base(wf, (
        "Load saved AcT maps and apply them (toy checkpoint act_toyworld_sd15).\n\n"
        f"AcT Load Maps reads models/act_maps/{STRIPED_MAP}, maps the pack ships (learned "
        "by the 'style intensity' example from plain and striped prompts). AcT Apply "
        "Transport patches a copy of the model; strength 0 = unchanged, 1 = fully "
        "'striped'. Maps you save with AcT Save Maps appear in the same list."))
    maps = wf.add("ActLoadMaps", (420, 0), map_name=STRIPED_MAP)
    apply = wf.add("ActApplyTransport", (420, 120), model=ckpt.out("MODEL"),
                   maps=maps.out("maps"), strength=1.0)
    pos, neg = _prompts(wf, ckpt, "a yellow circle", 0, 300)
    wf.thumbnail_node = _sample(wf, apply.out("MODEL"), pos, neg, latent, ckpt, 420, 340,
                                "act/load_and_apply", seed=6).id
    return wf


def slider_panel() -> WorkflowSpec:
    """Two sliders on one model: the shipped stripes maps and freshly learned dot removal."""
    wf = WorkflowSpec("act_slider_panel")
    ckpt, latent = _base(wf, (
        "Two sliders at once with the AcT Slider Panel (toy checkpoint act_toyworld_sd15).\n\n"
        f"Slider 1 'stripes': the shipped maps models/act_maps/{STRIPED_MAP} (plain -> "
        "striped). Slider 2 'no dot': maps learned here from prompts with a black dot -> "
        "the same prompts without it (as in the concept-negation example). The panel applies "
        "both as one patch; they act one after the other at every site, slider 1 first, "
        "exactly like two chained AcT Apply Transport nodes (same image, bit for bit).\n\n"
        "Each slider has its own strength, curve over the steps and start/end range; the "
        "'curves' output plots them (both constant here). Measured on this model: the "
        "stripes map on the first half of the steps alone draws no stripes, on the second "
        "half alone 83% striped (docs/results.md). The report warns when two sliders push "
        "the same units in opposite directions."), size=64)
    stripes = wf.add("ActLoadMaps", (420, 0), map_name=STRIPED_MAP)
    learn = wf.add("ActLearnTransport", (420, 120), model=ckpt.out("MODEL"),
                   clip=ckpt.out("CLIP"), latent=latent.out("LATENT"),
                   source_prompts="\n".join(p + DOT for p in PLAIN),
                   target_prompts="\n".join(PLAIN), sites=NEGATION_SITES, support="unbounded",
                   seed=0)
    panel = wf.add("ActSliderPanel", (880, 0), size=(340, 560), model=ckpt.out("MODEL"),
                   maps_1=stripes.out("maps"), label_1="stripes", strength_1=1.0,
                   curve_1="constant", maps_2=learn.out("maps"), label_2="no dot", strength_2=1.0)
    wf.add("PreviewImage", (1240, 380), size=(420, 260), images=panel.out("curves"))
    pos, neg = _prompts(wf, ckpt, "a yellow square" + DOT, 0, 300)
    wf.thumbnail_node = _sample(wf, panel.out("MODEL"), pos, neg, latent, ckpt, 1240, 0,
                                "act/slider_panel", seed=5).id
    return wf


EXAMPLES = {"act_style_intensity": style_intensity, "act_concept_negation": concept_negation,
            "act_load_and_apply": load_and_apply, "act_slider_panel": slider_panel}


@contextlib.contextmanager
def toy_server(checkpoint: Path | None = None, install_maps: bool = True,
               threads: int | None = None) -> Iterator[ComfyServer]:
    """The real ComfyUI server in a temporary base dir with the toy checkpoint (and maps);
    ``threads``: the server's torch threads (None: torch's default)."""
    ckpt = Path(checkpoint or checkpoint_path())
    if not ckpt.is_file():
        raise FileNotFoundError(f"no toy checkpoint at {ckpt}: run `python -m "
                                "toyworld.checkpoint install` (or pass --checkpoint)")
    with tempfile.TemporaryDirectory(prefix="act-workflows-") as tmp:
        base = Path(tmp)
        (base / "models" / "checkpoints").mkdir(parents=True)
        (base / "models" / "checkpoints" / CHECKPOINT_NAME).symlink_to(ckpt.resolve())
        if install_maps:
            install_example_maps(base / "models")
        with ComfyServer(base_dir=base, threads=threads) as server:
            yield server


def object_info_of(server: ComfyServer) -> dict:
    return server.get_json("/object_info")


def _dump(workflow: dict) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def write_workflows(object_info: dict, out_dir: Path = WORKFLOW_DIR, check: bool = False
                    ) -> list[str]:
    """Write (or with ``check``, compare) every example; return the names that differed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    differ = []
    for name, make in EXAMPLES.items():
        text, path = _dump(to_ui(make(), object_info)), out_dir / f"{name}.json"
        if not path.is_file() or path.read_text() != text:
            differ.append(name)
            if not check:
                path.write_text(text)
    return differ


def write_thumbnail(server: ComfyServer, spec: WorkflowSpec, object_info: dict,
                    out_dir: Path = WORKFLOW_DIR, long_side: int = 256) -> list[Path]:
    """Run ``spec`` on ``server`` and save its thumbnail node's image as .png and .jpg.

    A small image is enlarged (nearest neighbour) until its long side is ``long_side``.
    """
    from PIL import Image, PngImagePlugin

    ui, api = to_ui(spec, object_info), to_api(spec, object_info)
    prompt_id = server.post_json("/prompt", {"prompt": api, "client_id": "act-workflows",
                                             "extra_data": {"extra_pnginfo": {"workflow": ui}}}
                                 )["prompt_id"]
    images = server.images(server.wait(prompt_id), str(spec.thumbnail_node))
    if not images:
        raise RuntimeError(f"{spec.name}: node {spec.thumbnail_node} saved no image")
    img = Image.fromarray(images[0])
    zoom = max(1, -(-long_side // max(img.size)))
    img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(api))
    info.add_text("workflow", json.dumps(ui))
    png, jpg = out_dir / f"{spec.name}.png", out_dir / f"{spec.name}.jpg"
    img.save(png, pnginfo=info, optimize=True)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    jpg.write_bytes(buf.getvalue())
    return [png, jpg]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thumbnails", action="store_true",
                    help="also run every workflow and write <name>.png and <name>.jpg")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a committed workflow differs from its spec")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="toy checkpoint file (default: models/checkpoints/...)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[workflows] %(message)s")
    t0 = time.time()
    with toy_server(args.checkpoint) as server:
        info = object_info_of(server)
        differ = write_workflows(info, check=args.check)
        if args.check:
            log.info("differ from their specs: %s", differ or "none")
            return 1 if differ else 0
        log.info("wrote %d workflow(s) to %s (%d changed)", len(EXAMPLES), WORKFLOW_DIR,
                 len(differ))
        if args.thumbnails:
            for make in EXAMPLES.values():
                paths = write_thumbnail(server, make(), info)
                log.info("%s (%.0f s)", ", ".join(p.name for p in paths), time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
