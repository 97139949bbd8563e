"""Run the real ComfyUI server on loopback and drive it over its HTTP API.

``ComfyServer`` starts ``.comfyui/ComfyUI/main.py`` in a fresh base directory whose
``custom_nodes`` holds this pack and whose ``models/checkpoints`` holds the toy checkpoint,
submits API-format graphs to ``/prompt``, waits on ``/history`` and reads the images back
through ``/view``. The server is always stopped (its whole process group) on exit.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from toyworld.checkpoint import CHECKPOINT_NAME, checkpoint_path

from .comfy_env import COMFYUI_DIR

__all__ = ["ComfyServer", "ComfyError", "add_sampling", "free_port", "txt2img_graph"]

ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "comfyui-activation-transport"


class ComfyError(RuntimeError):
    """The server refused a graph or a node failed; carries ComfyUI's own message."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Context manager around a real ComfyUI server process on 127.0.0.1."""

    def __init__(self, base_dir: Path | None = None, extra_args: tuple[str, ...] = (),
                 startup_timeout: float = 180.0, log_path: Path | None = None,
                 threads: int | None = None):
        self._tmp = None if base_dir else tempfile.TemporaryDirectory(prefix="act-comfy-")
        self.base = Path(base_dir or self._tmp.name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.log_path = log_path or self.base / "server.log"
        self.threads = threads  # torch/OpenMP threads of the server (None: torch's default)
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _prepare_base(self) -> None:
        for sub in ("custom_nodes", "models/checkpoints", "models/act_maps", "input", "output",
                    "user", "temp"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        pack = self.base / "custom_nodes" / PACK_NAME
        if not pack.exists():
            pack.symlink_to(ROOT, target_is_directory=True)
        ckpt = self.base / "models" / "checkpoints" / CHECKPOINT_NAME
        if not ckpt.exists() and checkpoint_path().exists():
            ckpt.symlink_to(checkpoint_path())

    def start(self) -> ComfyServer:
        _exit_on_sigterm()
        self._prepare_base()
        cmd = [sys.executable, str(COMFYUI_DIR / "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base),
               "--disable-auto-launch", "--disable-api-nodes",
               "--database-url", "sqlite:///:memory:", "--use-pytorch-cross-attention",
               "--fp32-text-enc", *self.extra_args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=str(COMFYUI_DIR), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1",
                                          **({"OMP_NUM_THREADS": str(self.threads)}
                                             if self.threads else {})})
        try:
            self._wait_until_up()
        except BaseException:  # also KeyboardInterrupt/SystemExit: never leave it running
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI exited at start-up:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        raise ComfyError(f"ComfyUI did not answer within {self.startup_timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=20)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- HTTP --------------------------------------------------------------------------------
    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post_json(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
                return json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            raise ComfyError(f"{path} refused the request ({e.code}): {e.read().decode()}") from e

    def submit(self, graph: dict) -> str:
        return self.post_json("/prompt", {"prompt": graph, "client_id": "act-tests"})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 900) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get_json(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") == "error":
                    raise ComfyError(_error_message(status))
                if status.get("completed", True):
                    return entry
            if self.proc is not None and self.proc.poll() is not None:
                raise ComfyError(f"ComfyUI died while running:\n{self.log_tail()}")
            time.sleep(0.2)
        raise ComfyError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, graph: dict, timeout: float = 900) -> dict:
        """Submit a graph, wait for it, and return its /history entry."""
        return self.wait(self.submit(graph), timeout)

    def images(self, entry: dict, node_id: str | None = None) -> list[np.ndarray]:
        """uint8 (H, W, 3) images an executed graph saved (all nodes, or one node)."""
        from PIL import Image

        out = []
        for nid, node_out in entry.get("outputs", {}).items():
            if node_id is not None and nid != str(node_id):
                continue
            for img in node_out.get("images", []):
                q = urllib.parse.urlencode({k: img[k] for k in ("filename", "subfolder", "type")})
                with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=30) as r:
                    out.append(np.array(Image.open(io.BytesIO(r.read())).convert("RGB")))
        return out


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``with ComfyServer()`` stops the server even when
    the driving script is terminated (only where no handler was installed)."""
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        def _raise(signum, frame):
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _raise)


def _error_message(status: dict) -> str:
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type')}: {data.get('exception_message')}")
    return f"execution failed: {status}"


def txt2img_graph(prompt: str, seed: int, *, batch: int = 1, steps: int = 20, cfg: float = 5.0,
                  size: int = 64, negative: str = "", sampler: str = "euler",
                  checkpoint: str = CHECKPOINT_NAME, prefix: str = "toy") -> dict:
    """The stock txt2img graph: CheckpointLoaderSimple, CLIPTextEncode x2, EmptyLatentImage,
    KSampler, VAEDecode, SaveImage. Node ids are strings as in saved API workflows."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage",
              "inputs": {"width": size, "height": size, "batch_size": batch}},
    }
    add_sampling(g, "", model=["1", 0], positive=["2", 0], seed=seed, prefix=prefix, latent="4",
                 steps=steps, cfg=cfg, sampler=sampler, names=("5", "6", "7"), checkpoint="1",
                 negative="3")
    return g


def add_sampling(g: dict, suffix: str, *, model: list, positive: list, seed: int, prefix: str,
                 latent: str = "lat", steps: int = 20, cfg: float = 5.0, sampler: str = "euler",
                 names: tuple[str, str, str] = ("ks", "dec", "save"), checkpoint: str = "ckpt",
                 negative: str = "neg") -> str:
    """Add KSampler (``sampler``, normal schedule) -> VAEDecode -> SaveImage to the API graph
    ``g``, on the checkpoint node ``checkpoint`` (its VAE), the negative conditioning node
    ``negative`` and the latent node ``latent``, as ``<names[i]><suffix>``; returns the
    SaveImage node's id (for :meth:`ComfyServer.images`)."""
    ks, dec, save = (name + suffix for name in names)
    g[ks] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": positive, "negative": [negative, 0],
        "latent_image": [latent, 0], "seed": seed, "steps": steps, "cfg": cfg,
        "sampler_name": sampler, "scheduler": "normal", "denoise": 1.0}}
    g[dec] = {"class_type": "VAEDecode", "inputs": {"samples": [ks, 0], "vae": [checkpoint, 2]}}
    g[save] = {"class_type": "SaveImage", "inputs": {"images": [dec, 0], "filename_prefix": prefix}}
    return save
