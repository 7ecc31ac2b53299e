"""A network as a layer table: name, type, output shape, parameters (a readable model summary)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn


def layer_table(model: nn.Module, example: torch.Tensor) -> pd.DataFrame:
    """One row per leaf module in call order: ``layer, type, output shape, parameters``.

    Runs ``model`` once on ``example`` (a batch of one or more inputs) in eval mode without
    gradients; hooks, the train/eval flag and the weights are left exactly as found.
    Parameters are the module's own (a module called twice is listed twice, counted once in
    the total). A final ``total`` row sums the parameters of the whole model.
    """
    rows: list[dict] = []
    seen: set[str] = set()

    def make_hook(name: str, mod: nn.Module):
        def hook(_m, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
            n = 0 if name in seen else sum(p.numel() for p in mod.parameters(recurse=False))
            seen.add(name)
            rows.append({"layer": name, "type": type(mod).__name__,
                         "output shape": " x ".join(str(s) for s in shape) or "-",
                         "parameters": int(n)})
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    was_training = model.training
    handles = [m.register_forward_hook(make_hook(n, m)) for n, m in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = int(sum(p.numel() for p in model.parameters()))
    rows.append({"layer": "total", "type": type(model).__name__,
                 "output shape": "", "parameters": total})
    return pd.DataFrame(rows, columns=["layer", "type", "output shape", "parameters"])
