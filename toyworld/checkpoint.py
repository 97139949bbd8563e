"""Install the committed toy-world checkpoint (xz-compressed) and check its sha256.

``python -m toyworld.checkpoint install`` writes
``models/checkpoints/act_toyworld_sd15.safetensors`` (about 300 MB, mostly the zero layers
of the pass-through text encoder) from ``toyworld/weights/act_toyworld_sd15.safetensors.xz``
(about 50 MB) and refuses a file whose sha256 differs from ``toyworld/weights/SHA256SUMS``.
``pack`` does the reverse after training.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import shutil
import sys
from pathlib import Path

__all__ = ["CHECKPOINT_NAME", "checkpoint_path", "install", "pack", "expected_sha256"]

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_NAME = "act_toyworld_sd15.safetensors"
WEIGHTS = Path(__file__).resolve().parent / "weights"
PACKED = WEIGHTS / (CHECKPOINT_NAME + ".xz")
SUMS = WEIGHTS / "SHA256SUMS"


def checkpoint_path() -> Path:
    return ROOT / "models" / "checkpoints" / CHECKPOINT_NAME


def expected_sha256() -> str:
    for line in SUMS.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.strip() == CHECKPOINT_NAME:
            return digest
    raise KeyError(f"{CHECKPOINT_NAME} is not listed in {SUMS}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def install(dest: Path | None = None) -> Path:
    """Decompress the checkpoint to ``dest`` unless an identical file is already there."""
    dest = dest or checkpoint_path()
    want = expected_sha256()
    if dest.exists() and _sha256(dest) == want:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".partial")
    with lzma.open(PACKED, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
    got = _sha256(tmp)
    if got != want:
        tmp.unlink()
        raise RuntimeError(f"{PACKED.name} decompressed to sha256 {got}, expected {want}")
    tmp.replace(dest)
    return dest


def pack(src: Path) -> None:
    """Compress a freshly trained checkpoint into the repository and record its sha256."""
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, lzma.open(PACKED, "wb", preset=6) as out:
        shutil.copyfileobj(f, out, 1 << 22)
    SUMS.write_text(f"{_sha256(src)}  {CHECKPOINT_NAME}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="decompress and verify the toy checkpoint")
    p = sub.add_parser("pack", help="compress a trained checkpoint into toyworld/weights")
    p.add_argument("src", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "install":
        print(f"[checkpoint] {install()} (sha256 {expected_sha256()[:16]}... verified)")
    else:
        pack(args.src)
        print(f"[checkpoint] packed {args.src} -> {PACKED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
