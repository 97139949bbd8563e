"""The stacks of repeated blocks of any model, read from its module tree (no forward pass).

A diffusion transformer, a UNet or a text encoder is, at its core, one or a few lists of
repeated blocks (``blocks.0 .. blocks.29``, ``double_blocks`` + ``single_blocks``,
``encoder.layers``). :func:`find_block_stacks` finds them: step 1 of site discovery
(:mod:`act_core.discover`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

__all__ = ["BlockStack", "find_block_stacks"]

# a module that attends: by class or module name (Flux's single blocks hold only a QKNorm)
_ATTENTION = re.compile(r"attn|attention|qkv|query|to_q|q_proj", re.IGNORECASE)


@dataclass(frozen=True)
class BlockStack:
    """One list of repeated blocks.

    Attributes
    ----------
    name : str
        Path of the ``ModuleList``/``Sequential`` in ``model.named_modules()``.
    block_type : str
        Class name of the repeated block.
    blocks : tuple of str
        Module paths of the blocks of that class, in order.
    parameters : int
        Parameters held by those blocks.
    """

    name: str
    block_type: str
    blocks: tuple[str, ...]
    parameters: int


def _attends(model: nn.Module, stack: BlockStack) -> bool:
    """True when a block of the stack holds an attention layer (by class or module name)."""
    modules = dict(model.named_modules())
    return any(_ATTENTION.search(f"{name}.{type(m).__name__}")
               for block in stack.blocks for name, m in modules[block].named_modules())


def find_block_stacks(model: nn.Module, min_length: int = 2,
                      min_share: float = 0.0) -> list[BlockStack]:
    """The main stacks of repeated blocks of ``model``, from its module tree alone.

    Parameters
    ----------
    model : nn.Module
    min_length : int
        Fewest blocks of one class a list must hold to count as a stack.
    min_share : float
        Keep stacks holding at least this fraction of the parameters of the largest stack
        (default 0: every stack; tiny test instances make shares meaningless, and the probe
        pass drops stacks that do not run). Where some stacks' blocks hold an
        attention layer (a module whose class or name says ``attn``/``attention``), only
        those count (drops lists of MLPs such as a mixture of experts or a modulation
        approximator).

    Returns
    -------
    list of BlockStack, outermost stacks only (a stack inside a block of another stack is not
    returned), in ``named_modules()`` order. Empty when the model has no repeated blocks.
    """
    stacks: list[BlockStack] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential, nn.ModuleDict)):
            continue
        if any(name.startswith(f"{block}.") for stack in stacks for block in stack.blocks):
            continue  # nested inside a block already found
        by_type: dict[type, list[tuple[str, nn.Module]]] = {}
        for child_name, child in module.named_children():
            if next(child.children(), None) is not None:  # a block, not a leaf layer
                by_type.setdefault(type(child), []).append((child_name, child))
        if not by_type:
            continue
        block_type, children = max(by_type.items(), key=lambda item: len(item[1]))
        if len(children) < min_length:
            continue
        prefix = f"{name}." if name else ""
        count = sum(p.numel() for _, child in children for p in child.parameters())
        stacks.append(BlockStack(name, block_type.__name__,
                                 tuple(f"{prefix}{child_name}" for child_name, _ in children),
                                 count))
    attending = [stack for stack in stacks if _attends(model, stack)]
    stacks = attending or stacks  # transformer stacks, where there are any
    if not stacks:
        return []
    largest = max(stack.parameters for stack in stacks)
    return [stack for stack in stacks if stack.parameters >= min_share * largest]
