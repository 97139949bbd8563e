"""Host cost of AcT's apply path per site and model call, against the floors of a forward hook.

On an accelerator a sampler with hundreds of sites can be bound by the host: what counts there
is the Python and the kernel launches each site adds to every model call, not the arithmetic.
This measures that cost where the arithmetic is negligible: a model of SITES norm layers (half
GroupNorm sites in channel mode, half LayerNorm sites in token mode) on tiny tensors, on the
CPU, one thread. Variants, alternating from repeat to repeat in one run, each timed in this
thread's CPU time:

* ``plain``: the model alone;
* ``empty hook``: a forward hook that returns None on every site (PyTorch's hook dispatch);
* ``hook + addcmul``: a forward hook doing one multiply-add with prepared coefficients;
* ``act both``: ``TransportPlan.applied(1.0)`` (linear_act maps, unbounded support);
* ``act cond``: the same with per-item strengths (1, 0): the conditional CFG half.

Each figure is microseconds per site and call above ``plain`` (median over repeats).

Usage: ``.venv/bin/python -m benchmarks.bench_site_cost [--sites 256] [--repeats 40] [--docs]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from act_core.apply import TransportPlan
from act_core.maps import QUANTILE_LEVELS, TransportMap
from benchmarks.timing import alternate, median, write_section

DOCS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
BEGIN, END = "<!-- bench_site_cost:begin -->", "<!-- bench_site_cost:end -->"
WIDTH = 32


class Norms(nn.Module):
    """``sites / 2`` GroupNorms on (B, C, H, W), then as many LayerNorms on (B, T, C)."""

    def __init__(self, sites: int) -> None:
        super().__init__()
        self.g = nn.ModuleList(nn.GroupNorm(4, WIDTH) for _ in range(sites // 2))
        self.l = nn.ModuleList(nn.LayerNorm(WIDTH) for _ in range(sites // 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for norm in self.g:
            x = norm(x)
        for norm in self.l:
            t = norm(t)
        return x, t


def _map(mode: str, gen: torch.Generator) -> TransportMap:
    levels = len(QUANTILE_LEVELS)
    return TransportMap(
        scale=torch.rand(WIDTH, generator=gen) + 0.5, shift=torch.randn(WIDTH, generator=gen),
        lo=torch.full((WIDTH,), -5.0), hi=torch.full((WIDTH,), 5.0),
        quantiles=torch.linspace(-5, 5, levels)[:, None].expand(-1, WIDTH).contiguous(),
        mode=mode)


def measure(sites: int, repeats: int, calls: int = 5) -> dict[str, float]:
    """Microseconds per site and call above ``plain``, per variant."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    model = Norms(sites).eval()
    maps = {f"g.{i}": _map("channels", gen) for i in range(sites // 2)}
    maps.update({f"l.{i}": _map("tokens", gen) for i in range(sites // 2)})
    x, t = torch.randn(2, WIDTH, 2, 2, generator=gen), torch.randn(2, 3, WIDTH, generator=gen)
    plan = TransportPlan(model, maps, "unbounded")
    items = torch.tensor([1.0, 0.0])
    a4, b4 = torch.rand(2, WIDTH, 1, 1), torch.rand(2, WIDTH, 1, 1)
    a3, b3 = torch.rand(2, 1, WIDTH), torch.rand(2, 1, WIDTH)
    modules = [*model.g, *model.l]

    def with_hook(hook) -> None:
        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            model(x, t)
        finally:
            for handle in handles:
                handle.remove()

    def addcmul_hook(module, args, out):
        return torch.addcmul(b4, out, a4) if out.ndim == 4 else torch.addcmul(b3, out, a3)

    def act(strength) -> None:
        with plan.applied(strength):
            model(x, t)

    variants = {
        "plain": lambda: model(x, t),
        "empty hook": lambda: with_hook(lambda module, args, out: None),
        "hook + addcmul": lambda: with_hook(addcmul_hook),
        "act both": lambda: act(1.0),
        "act cond": lambda: act(items),
    }
    with torch.inference_mode():
        times = {k: [t.thread for t in v] for k, v in alternate(variants, repeats, calls).items()}
    plain = median(times["plain"])
    return {name: (median(v) - plain) / sites * 1e6
            for name, v in times.items() if name != "plain"} | {"plain_ms": plain * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--docs", action="store_true", help="write the table into docs/results.md")
    args = parser.parse_args()
    result = measure(args.sites, args.repeats)
    rows = "\n".join(f"| {name} | {value:.1f} |" for name, value in result.items()
                     if name != "plain_ms")
    text = (f"{BEGIN}\n`python -m benchmarks.bench_site_cost --sites {args.sites} --repeats "
            f"{args.repeats}` ({args.sites} sites, CPU, one thread, torch {torch.__version__}; "
            f"plain model call {result['plain_ms']:.2f} ms):\n\n"
            "| per site and model call, above plain | µs |\n|---|---|\n" + rows + f"\n{END}\n")
    print(text)
    if args.docs:
        write_section(DOCS, text, BEGIN, END)


if __name__ == "__main__":
    main()
