"""Recording pooled activations at sites with forward hooks.

Every forward call of a site's module contributes one pooled vector per batch item:

* tokens (B, T, D): mean over the non-padding tokens (``recorder.token_mask``, (B, T); all
  tokens when it is None); a site whose layout is set to ``tokens`` may also output
  channel-last grids (B, *positions, D), e.g. (B, T, H, W, D) of a video transformer: mean
  over every position (frames included);
* seq_first (*positions, B, D), the batch in dim -2 (sequence-first transformers, Cosmos 1's
  (T, H, W, B, D) blocks): mean over every position;
* unbatched (*positions, D), no batch dim (a model that takes batch 1 only, MiniMax H3's
  packed (S, D) sequence): the whole output is one item, mean over every position -> (1, D);
* channels (B, C, *spatial): mean over the spatial dims;
* vector (B, D): as is.

Only the pooled vectors are kept (memory O(N D) per site), detached, as float32. Hooks are
removed when the context exits, also when the forward pass raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import ActivationError
from .sites import Site, find_module, read_output

__all__ = ["Recorder", "detect_layout", "pool", "record_activations"]

_RANKS = {"tokens": tuple(range(3, 9)), "seq_first": tuple(range(3, 9)), "vector": (2,),
          "unbatched": tuple(range(2, 9))}


def detect_layout(x: torch.Tensor, site: Site) -> str:
    """Return the layout of a site's output: the site's own, or decided from the rank.

    Raises
    ------
    ActivationError
        If the rank does not fit the layout.
    """
    layout = site.layout
    if layout == "auto":
        layout = {2: "vector", 3: "tokens"}.get(x.ndim, "channels" if x.ndim >= 4 else "")
    ranks = _RANKS.get(layout, tuple(range(3, 9)))
    if not layout or x.ndim not in ranks:
        raise ActivationError(f"site {str(site)!r}: output of shape {tuple(x.shape)} does not fit "
                              f"layout {site.layout!r}; expected (B, D), (B, T, D) (or "
                              f"(B, *positions, D) with layout 'tokens', (*positions, B, D) "
                              f"with 'seq_first', (*positions, D) with 'unbatched') or "
                              f"(B, C, *spatial)")
    return layout


def _pool_tokens(x: torch.Tensor, token_mask: torch.Tensor | None, site: Site) -> torch.Tensor:
    values = x.detach().float()  # (B, T, D) or (B, *positions, D)
    if token_mask is None:
        return values.mean(dim=tuple(range(1, values.ndim - 1)))  # (B, D)
    if values.ndim != 3:
        raise ActivationError(f"site {str(site)!r}: a token_mask needs (B, T, D) outputs, found "
                              f"shape {tuple(x.shape)}; set recorder.token_mask to None")
    mask = token_mask.to(device=x.device, dtype=torch.bool)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ActivationError(f"site {str(site)!r}: token_mask has shape {tuple(mask.shape)} but "
                              f"the output has (B, T) = {tuple(x.shape[:2])}; set "
                              "recorder.token_mask to the batch's attention mask")
    counts = mask.sum(dim=1, keepdim=True)  # (B, 1)
    if bool((counts == 0).any()):
        raise ActivationError(f"site {str(site)!r}: an input has no non-padding token in "
                              "token_mask")
    summed = values.masked_fill(~mask.unsqueeze(-1), 0.0).sum(dim=1)  # (B, D)
    return summed / counts


def pool(x: torch.Tensor, layout: str, token_mask: torch.Tensor | None = None,
         site: Site | None = None) -> torch.Tensor:
    """Pool one output to one float32 vector per item, shape (B, D) (see module docstring)."""
    site = site or Site("?")
    if layout == "tokens":
        return _pool_tokens(x, token_mask, site)
    if layout == "seq_first":  # (*positions, B, D) -> (B, *positions, D), then as tokens
        return _pool_tokens(x.movedim(-2, 0), None, site)
    if layout == "unbatched":  # (*positions, D): one item -> (1, *positions, D), as tokens
        return _pool_tokens(x.unsqueeze(0), None, site)
    if layout == "channels":
        return x.detach().mean(dim=tuple(range(2, x.ndim)), dtype=torch.float32)
    return x.detach().float()


def _check_finite(key: str, pooled: torch.Tensor) -> None:
    if not bool(torch.isfinite(pooled).all()):
        raise ActivationError(f"site {key!r}: recorded activations contain NaN or infinite "
                              "values; run the model in float32 or choose other sites")


class Recorder:
    """Collects pooled activations; created by :func:`record_activations`.

    Attributes
    ----------
    sites : tuple of Site
    layouts : dict of str to str
        Layout detected per site (``tokens``, ``channels`` or ``vector``).
    order : list of str
        Sites in the order they first ran (the forward order).
    paused : bool
        While true, forward calls are not recorded (default false).
    """

    def __init__(self, sites: Iterable[Site], device: torch.device | str = "cpu") -> None:
        self.sites = tuple(sites)
        self.device = torch.device(device)
        self.layouts: dict[str, str] = {}
        self.order: list[str] = []
        self._samples: dict[str, list[torch.Tensor]] = {str(site): [] for site in self.sites}
        self._token_mask: torch.Tensor | None = None
        self.paused = False

    @property
    def token_mask(self) -> torch.Tensor | None:
        """(B, T) bool or 0/1 mask of non-padding tokens used for the following forward calls."""
        return self._token_mask

    @token_mask.setter
    def token_mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.ndim != 2):
            raise ActivationError("token_mask must be a (B, T) tensor (e.g. an attention mask) "
                                  "or None")
        self._token_mask = mask

    def observe(self, site: Site, output: object) -> None:
        """Pool and store one module output of ``site`` (called by the forward hook).

        Nothing is stored while :attr:`paused` is true (forward passes a caller runs only to
        reach the inputs it wants recorded, e.g. the earlier steps of a sampling trajectory).
        """
        if self.paused:
            return
        key = str(site)
        x = read_output(output, site)
        layout = detect_layout(x, site)
        if self.layouts.setdefault(key, layout) != layout:
            raise ActivationError(f"site {key!r}: layout changed from {self.layouts[key]} to "
                                  f"{layout} between calls (shape {tuple(x.shape)})")
        pooled = pool(x, layout, self._token_mask, site)  # (B, D)
        if pooled.device.type == "cpu":
            _check_finite(key, pooled)  # at once, where the check costs no device sync
        if key not in self.order:
            self.order.append(key)
        # kept where it was computed until stacked(): no copy (and so no wait for the
        # accelerator) per call and site
        self._samples[key].append(pooled)

    def stacked(self) -> dict[str, torch.Tensor]:
        """Return ``{site: Tensor (N, D)}`` on :attr:`device` for every site that ran at least
        once.

        Raises ActivationError for non-finite samples recorded on an accelerator (on the CPU
        they are refused when recorded).
        """
        out = {}
        for key, rows in self._samples.items():
            if rows:
                samples = torch.cat([row.to(rows[0].device) for row in rows])  # (N, D)
                if samples.device.type != "cpu":
                    _check_finite(key, samples)
                out[key] = samples.to(self.device)
        return out

    def counts(self) -> dict[str, int]:
        """Number of recorded rows per site (0 for sites that never ran)."""
        return {key: sum(int(r.shape[0]) for r in rows) for key, rows in self._samples.items()}

    def clear(self) -> None:
        """Drop the recorded samples (layouts and order are kept)."""
        for rows in self._samples.values():
            rows.clear()


@contextmanager
def record_activations(model: nn.Module, sites: Iterable[Site | str], *,
                       device: torch.device | str = "cpu") -> Iterator[Recorder]:
    """Record pooled activations of ``sites`` during the forward passes run inside the context.

    Parameters
    ----------
    model : nn.Module
    sites : iterable of Site or str
        E.g. from :func:`~act_core.sites.resolve_sites`, or strings ``"name[:index]"``.
    device : device
        Where the pooled vectors are kept (default CPU).

    Yields
    ------
    Recorder
        ``recorder.stacked()`` gives ``{site: (N, D)}`` after the passes.

    Raises
    ------
    SiteError
        At entry, if a site does not exist.
    ActivationError
        During a forward pass, for non-finite activations or a bad token mask.
    """
    parsed = [Site.parse(site) for site in sites]
    modules = [find_module(model, site) for site in parsed]
    recorder = Recorder(parsed, device)
    handles = []
    try:
        for site, module in zip(parsed, modules, strict=True):
            hook = _make_hook(recorder, site)
            handles.append(module.register_forward_hook(hook))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def _make_hook(recorder: Recorder, site: Site):
    def hook(module: nn.Module, args: object, output: object) -> None:
        recorder.observe(site, output)

    return hook
