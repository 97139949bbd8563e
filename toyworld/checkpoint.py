"""Install the committed toy-world checkpoint and check its sha256.

The checkpoint is made in two stages (docs/toyworld.md):

1. ``toyworld.train`` trains it from scratch; the file is committed xz-compressed,
   ``toyworld/weights/act_toyworld_sd15_stage1.safetensors.xz`` (about 50 MB);
2. ``toyworld.train_global`` fine-tunes its spatial transformers so that the prompt reaches
   the UNet as a global code; only the changed tensors are committed,
   ``toyworld/weights/act_toyworld_sd15_global.delta.safetensors.xz`` (about 16 MB).

``python -m toyworld.checkpoint install`` writes
``models/checkpoints/act_toyworld_sd15.safetensors`` (about 300 MB, mostly the zero layers of
the pass-through text encoder): it decompresses stage 1, writes the delta's tensors over their
bytes in place (the file's header, and so its layout, stays stage 1's) and refuses any file
whose sha256 differs from ``toyworld/weights/SHA256SUMS``. ``pack`` and ``pack-delta`` do the
reverse after training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path

import torch

__all__ = ["CHECKPOINT_NAME", "STAGE1_NAME", "DELTA_NAME", "checkpoint_path", "install",
           "pack", "pack_delta", "expected_sha256", "patch_tensors", "sha256_bytes"]

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_NAME = "act_toyworld_sd15.safetensors"
STAGE1_NAME = "act_toyworld_sd15_stage1.safetensors"
DELTA_NAME = "act_toyworld_sd15_global.delta.safetensors"
WEIGHTS = Path(__file__).resolve().parent / "weights"
SUMS = WEIGHTS / "SHA256SUMS"
_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


def checkpoint_path() -> Path:
    return ROOT / "models" / "checkpoints" / CHECKPOINT_NAME


def _sums() -> dict[str, str]:
    out = {}
    for line in SUMS.read_text().splitlines():
        digest, _, name = line.partition("  ")
        out[name.strip()] = digest
    return out


def expected_sha256(name: str = CHECKPOINT_NAME) -> str:
    sums = _sums()
    if name not in sums:
        raise KeyError(f"{name} is not listed in {SUMS}")
    return sums[name]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _unpack(name: str) -> bytes:
    """The committed ``name`` (xz), decompressed and checked against SHA256SUMS."""
    data = lzma.decompress((WEIGHTS / (name + ".xz")).read_bytes())
    got, want = sha256_bytes(data), expected_sha256(name)
    if got != want:
        raise RuntimeError(f"{name}.xz decompressed to sha256 {got}, expected {want}")
    return data


def patch_tensors(base: bytes, tensors: dict[str, torch.Tensor]) -> bytes:
    """A safetensors file ``base`` with the bytes of some of its tensors replaced.

    Each replacement must have the stored tensor's dtype and shape; the header, and so every
    other byte, is kept. Raises KeyError or ValueError naming the tensor otherwise.
    """
    size = int.from_bytes(base[:8], "little")
    header, start = json.loads(base[8:8 + size]), 8 + size
    out = bytearray(base)
    for name, tensor in tensors.items():
        if name not in header:
            raise KeyError(f"{name} is not a tensor of the base checkpoint")
        entry = header[name]
        if _DTYPES.get(entry["dtype"]) != tensor.dtype or list(tensor.shape) != entry["shape"]:
            raise ValueError(f"{name}: base has {entry['dtype']} {entry['shape']}, replacement "
                             f"{tensor.dtype} {list(tensor.shape)}")
        lo, hi = entry["data_offsets"]
        out[start + lo:start + hi] = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    return bytes(out)


def install(dest: Path | None = None) -> Path:
    """Build the checkpoint at ``dest`` unless an identical file is already there."""
    from safetensors.torch import load

    dest = dest or checkpoint_path()
    want = expected_sha256()
    if dest.exists() and _sha256(dest) == want:
        return dest
    data = patch_tensors(_unpack(STAGE1_NAME), load(_unpack(DELTA_NAME)))
    got = sha256_bytes(data)
    if got != want:
        raise RuntimeError(f"stage 1 + delta gave sha256 {got}, expected {want}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest


def _record(name: str, digest: str) -> None:
    sums = _sums() if SUMS.exists() else {}
    sums[name] = digest
    SUMS.write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))


def _compress(src: Path, name: str) -> None:
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    (WEIGHTS / (name + ".xz")).write_bytes(lzma.compress(src.read_bytes(), preset=6))
    _record(name, _sha256(src))


def pack(src: Path) -> None:
    """Compress a freshly trained stage-1 checkpoint into the repository, with its sha256."""
    _compress(src, STAGE1_NAME)


def pack_delta(delta: Path, final: Path) -> None:
    """Compress stage 2's delta into the repository; record its and the final file's sha256."""
    _compress(delta, DELTA_NAME)
    _record(CHECKPOINT_NAME, _sha256(final))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="build and verify the toy checkpoint")
    p = sub.add_parser("pack", help="compress a trained stage-1 checkpoint into toyworld/weights")
    p.add_argument("src", type=Path)
    p = sub.add_parser("pack-delta", help="compress stage 2's delta into toyworld/weights")
    p.add_argument("delta", type=Path)
    p.add_argument("final", type=Path, help="the checkpoint train_global wrote")
    args = ap.parse_args(argv)
    if args.cmd == "install":
        print(f"[checkpoint] {install()} (sha256 {expected_sha256()[:16]}... verified)")
    elif args.cmd == "pack":
        pack(args.src)
        print(f"[checkpoint] packed {args.src} -> {WEIGHTS / (STAGE1_NAME + '.xz')}")
    else:
        pack_delta(args.delta, args.final)
        print(f"[checkpoint] packed {args.delta} -> {WEIGHTS / (DELTA_NAME + '.xz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
