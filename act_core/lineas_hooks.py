"""LinEAS's trainable maps inside the model: one forward hook per site while fitting.

Each hook pools the site's output the way the map sees it (:func:`_pool`), records the pooled
input and its transported value for the loss, and returns the output transported with the
current, differentiable ``omega`` and ``beta`` (:class:`_State`), so that gradients reach every
earlier map through the frozen model. :class:`_Hooks` installs them and removes them on exit,
also on error. The algorithm around them is :mod:`act_core.lineas`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .record import detect_layout
from .sites import Site, find_module, read_output, write_output

__all__: list[str] = []  # private to act_core.lineas


def _pool(x: torch.Tensor, layout: str, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Differentiable pooling to (B, D) float32 (tokens: mean over ``token_mask``)."""
    if layout == "channels":
        return x.mean(dim=tuple(range(2, x.ndim)), dtype=torch.float32)  # (B, C)
    if layout == "vector":
        return x.float()
    if layout == "seq_first":  # (*positions, B, D): the batch in dim -2
        return x.float().movedim(-2, 0).flatten(1, -2).mean(dim=1)
    if layout == "unbatched":  # (*positions, D): one item -> (1, D)
        return x.float().reshape(1, -1, x.shape[-1]).mean(dim=1)
    if token_mask is None:  # (B, T, D) or (B, *positions, D) -> (B, D), as the recorder pools
        return x.float().mean(dim=tuple(range(1, x.ndim - 1)))
    mask = token_mask.to(device=x.device, dtype=torch.float32).unsqueeze(-1)  # (B, T, 1)
    return (x.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class _State:
    """Parameters, per-call records and the recorder interface hosts see (``token_mask``)."""

    def __init__(self, keys: Sequence[str], widths: dict[str, int], scales: dict[str, torch.Tensor],
                 device: torch.device, learn_scale: bool = True) -> None:
        self.learn_scale = learn_scale  # False: omega stays 1, only the shifts are learned
        self.delta = {k: torch.zeros(widths[k], device=device, requires_grad=learn_scale)
                      for k in keys}
        self.shift = {k: torch.zeros(widths[k], device=device, requires_grad=True) for k in keys}
        self.scales = scales  # (D,) per site: beta = scales * shift
        self.token_mask: torch.Tensor | None = None
        self.paused = False
        self.layouts: dict[str, str] = {}
        self.pooled: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        self.moved: dict[str, list[torch.Tensor]] = {k: [] for k in keys}

    def params(self) -> list[torch.Tensor]:
        return [*(self.delta.values() if self.learn_scale else ()), *self.shift.values()]

    def coefficients(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``omega`` and ``beta`` (D,) of a site, differentiable."""
        return 1.0 + self.delta[key], self.scales[key] * self.shift[key]

    def clear(self) -> None:
        for rows in (*self.pooled.values(), *self.moved.values()):
            rows.clear()

    def warm_start(self, source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
                   ) -> None:
        """Set every site to its own Linear-AcT map (unmodified source -> target samples); with
        shifts only, to the difference of the means."""
        from .estimators import linear_act

        with torch.no_grad():
            for key, delta in self.delta.items():
                if not self.learn_scale:
                    gap = target[key].mean(dim=0) - source[key].mean(dim=0)
                    self.shift[key].copy_(gap.to(delta) / self.scales[key])
                    continue
                fitted = linear_act(source[key], target[key])
                delta.copy_((fitted.scale - 1.0).to(delta))
                self.shift[key].copy_(fitted.shift.to(delta) / self.scales[key])

    def proximal(self, lr: float, l1: float, group: float) -> None:
        """Soft-threshold every unit (L1), then shrink every site's group (group lasso)."""
        with torch.no_grad():
            for key, d in self.delta.items():
                b = self.shift[key]
                if l1 > 0:
                    for p in (d, b):
                        p.copy_(p.sign() * (p.abs() - lr * l1).clamp(min=0.0))
                if group > 0:
                    norm = torch.sqrt((d ** 2).sum() + (b ** 2).sum())
                    threshold = lr * group * math.sqrt(2 * d.numel())
                    factor = (1.0 - threshold / norm).clamp(min=0.0) if norm > 0 else norm
                    d.mul_(factor)
                    b.mul_(factor)


def _make_hook(state: _State, site: Site, keep_tokens: Callable[[], torch.Tensor | None] | None):
    key = str(site)

    def hook(module: nn.Module, args: object, output: object) -> object | None:
        if state.paused:
            return None
        whole = site.output_index is None and isinstance(output, torch.Tensor)
        x = output if whole else read_output(output, site)
        layout = state.layouts.setdefault(key, detect_layout(x, site))
        pooled = _pool(x, layout, state.token_mask)  # (B, D), what the map sees
        omega, beta = state.coefficients(key)
        state.pooled[key].append(pooled.detach())
        state.moved[key].append(pooled * omega + beta)  # (B, D), pooled transported output
        if layout == "channels":
            delta = (omega - 1.0) * pooled + beta  # (B, C): every value of a channel shifts
            y = x + delta.to(x.dtype).view(*delta.shape, *([1] * (x.ndim - 2)))
        else:
            y = x * omega.to(x.dtype) + beta.to(x.dtype)  # (..., D)
            if keep_tokens is not None and x.ndim == 3:
                keep = keep_tokens()
                if keep is not None and tuple(keep.shape) == tuple(x.shape[:2]):
                    y = torch.where(keep.to(x.device).unsqueeze(-1), x, y)
        return y if whole else write_output(output, site, y)

    return hook


@dataclass
class _Hooks:
    """Installs the training hooks on the sites; removed in ``close`` (always, in finally)."""

    model: nn.Module
    sites: Sequence[Site]
    state: _State
    keep_tokens: Callable[[], torch.Tensor | None] | None
    handles: list = field(default_factory=list)

    def __enter__(self) -> _Hooks:
        try:
            for site in self.sites:
                module = find_module(self.model, site)
                self.handles.append(module.register_forward_hook(
                    _make_hook(self.state, site, self.keep_tokens)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
