"""Replacing a module's ``forward`` for the duration of a context, and finding what is left.

An applied plan (:class:`act_core.apply.TransportPlan`) installs one :class:`_Patched` per site:
the module's own forward followed by the site's transport. Unlike a forward hook it keeps
PyTorch's fast call path (no hook dispatch). :func:`installed` restores every module on exit,
also on error; :func:`interventions` lists what is attached to a model (empty once every context
has exited).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .apply import _SiteHook

__all__ = ["installed", "interventions"]

#: "no instance ``forward``" (the class's forward is used), as opposed to any stored value.
_MISSING = object()


@contextmanager
def installed(patches: list) -> Iterator[None]:
    """Install each patch's ``forward`` (``patch.install()``) for the context; restore every
    module on exit, last installed first, also on error."""
    done: list[tuple[nn.Module, object]] = []
    try:
        for patch in patches:
            done.append((patch.module, patch.install()))
        yield
    finally:
        for module, previous in reversed(done):
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = previous


class _Patched:
    """The instance ``forward`` of a site's module while a plan is applied: the module's own
    forward, then the site's transport. Unlike a forward hook it keeps PyTorch's fast call
    path (no hook dispatch), and it also acts when a caller runs ``module.forward`` directly.
    """

    __slots__ = ("hook", "inner", "module", "previous")
    act_patch = True  # what :func:`interventions` recognises

    def __init__(self, module: nn.Module, hook: _SiteHook) -> None:
        self.module, self.hook = module, hook
        self.previous: object = None
        self.inner: Callable[..., object] | None = None

    def install(self) -> object:
        """Set ``module.forward`` to this patch; return what to restore (or ``_MISSING``)."""
        previous = self.module.__dict__.get("forward", _MISSING)
        if self.inner is None or previous is not self.previous:
            self.previous = previous
            self.inner = type(self.module).forward.__get__(self.module) \
                if previous is _MISSING else previous
        self.module.__dict__["forward"] = self
        return previous

    def __call__(self, *args: object, **kwargs: object) -> object:
        if torch.compiler.is_compiling():
            return self._call_eagerly(*args, **kwargs)
        return self._call(*args, **kwargs)

    def _call(self, *args: object, **kwargs: object) -> object:
        output = self.inner(*args, **kwargs)
        transported = self.hook._call(output)
        return output if transported is None else transported

    # under torch.compile (ComfyUI's TorchCompileModel) the site's module runs eagerly, as one
    # graph break: tracing the transport's per-map caches fails inside dynamo (torch 2.13), and
    # a break inside the module would make dynamo compile its forward once per site shape
    @torch.compiler.disable
    def _call_eagerly(self, *args: object, **kwargs: object) -> object:
        return self._call(*args, **kwargs)


def interventions(model: nn.Module) -> Counter:
    """What is attached to ``model``'s modules: per module name, its forward hooks and
    pre-hooks plus every replaced ``forward`` (an applied plan's patches, nested ones counted
    once each); modules with nothing are left out. Empty when no context is active: the check
    that nothing was left behind."""
    counts: Counter = Counter()
    for name, module in model.named_modules():
        count = len(module._forward_hooks) + len(module._forward_pre_hooks)
        forward = module.__dict__.get("forward")
        while callable(forward):  # (the pack's copy of this module has its own classes)
            count += 1
            forward = forward.previous if getattr(type(forward), "act_patch", False) else None
        if count:
            counts[name] = count
    return counts
