"""A loaded set of maps with its metadata, and the checks a host runs before applying it."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence

from .errors import MapCompatibilityError
from .maps import TransportMap

__all__ = ["MapSet", "check_compatible", "hint_mismatches", "prompt_hash"]


class MapSet(Mapping[str, TransportMap]):
    """Read-only ``{site: TransportMap}`` mapping carrying the map file's metadata.

    Parameters
    ----------
    maps : mapping of str to TransportMap
        Keyed by site string, in forward order.
    metadata : dict, optional
        The decoded ``act`` metadata (see :mod:`act_core.mapfile`).
    sequence_gate : SequenceGate, optional
        One gate for the whole set (:mod:`act_core.seqgate`), or None.
    """

    def __init__(self, maps: Mapping[str, TransportMap], metadata: Mapping | None = None,
                 sequence_gate: object | None = None) -> None:
        self._maps = dict(maps)
        self._metadata = copy.deepcopy(dict(metadata or {}))
        self.sequence_gate = sequence_gate

    def __getitem__(self, site: str) -> TransportMap:
        return self._maps[site]

    def __iter__(self) -> Iterator[str]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)

    def __repr__(self) -> str:
        return (f"MapSet({len(self)} sites, method={self.metadata.get('method')!r}, "
                f"model={self.metadata.get('model')!r})")

    @property
    def metadata(self) -> dict:
        """A copy of the metadata dict (editing it does not change the set)."""
        return copy.deepcopy(self._metadata)

    @property
    def family(self) -> str | None:
        """Model family recorded at fitting time (``metadata["model"]["family"]``), if any."""
        model = self._metadata.get("model") or {}
        return model.get("family") if isinstance(model, Mapping) else None

    @property
    def support(self) -> str:
        """Support recommended when the maps were saved (``"minmax"`` when not recorded)."""
        return str(self._metadata.get("support") or "minmax")

    def widths(self) -> dict[str, int]:
        """Width D of every site's map."""
        return {site: tmap.dim for site, tmap in self._maps.items()}


def check_compatible(mapset: Mapping[str, TransportMap], widths: Mapping[str, int],
                     family: str | None = None) -> None:
    """Check that maps fit a model before applying them.

    Parameters
    ----------
    mapset : MapSet or mapping of str to TransportMap
    widths : mapping of str to int
        The model's width per available site (D of the site's output).
    family : str, optional
        The model's family; compared with the family recorded in a MapSet's metadata.

    Raises
    ------
    MapCompatibilityError
        Listing every missing site, width mismatch and a family mismatch.
    """
    problems = []
    recorded = getattr(mapset, "family", None)
    if family is not None and recorded is not None and recorded != family:
        problems.append(f"the maps were fitted on a {recorded!r} model, this is {family!r}")
    missing = [site for site in mapset if site not in widths]
    if missing:
        problems.append(f"{len(missing)} site(s) not in the model: {missing[:5]}")
    mismatched = [f"{site} (map D={tmap.dim}, model D={widths[site]})"
                  for site, tmap in mapset.items() if site in widths and widths[site] != tmap.dim]
    if mismatched:
        problems.append(f"width mismatch at {len(mismatched)} site(s): {mismatched[:5]}")
    if problems:
        raise MapCompatibilityError("maps do not fit this model: " + "; ".join(problems)
                                    + ". Fit maps for this model or load the matching file.")


def hint_mismatches(recorded: Mapping, current: Mapping, keys: Sequence[str],
                    this: str = "this model") -> list[str]:
    """What a map file's model hint (``metadata["model"]``) says that ``current`` contradicts:
    one ``"<key> <recorded> (<this>: <current>)"`` per key both give and disagree on (a key the
    file leaves empty is not checked). Every host refuses maps with these words."""
    return [f"{key} {recorded[key]!r} ({this}: {current.get(key)!r})" for key in keys
            if recorded.get(key) not in (None, []) and recorded[key] != current.get(key)]


def prompt_hash(source_prompts: Sequence[str], target_prompts: Sequence[str]) -> str:
    """SHA-256 (hex) of the canonical JSON ``{"source": [...], "target": [...]}``.

    The order of the prompts matters; use it to tell which prompt sets a map file came from.
    """
    payload = {"source": [str(p) for p in source_prompts],
               "target": [str(p) for p in target_prompts]}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
