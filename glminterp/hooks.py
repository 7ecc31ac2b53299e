"""Forward hooks that record layer outputs safely.

:class:`ActivationRecorder` is a context manager in the style of torchcam's extractors: hooks are
removed and every module's train/eval flag restored in ``finally``, also when the forward pass
raises. Outputs are copied inside the hook, before any later in-place op (``ReLU(inplace=True)``)
can overwrite them, and reduced right away (pooling) so memory is bounded by the output.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import torch
from torch import nn

POOLS: tuple[str, ...] = ("avg", "max")


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for parameter-free models)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def layer_name_error(name: str, model: nn.Module, *, argument: str = "layers") -> KeyError:
    """A ``KeyError`` naming the wrong layer and listing valid names, closest matches first."""
    valid = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, valid, n=len(valid), cutoff=0.0)
    return KeyError(
        f"{argument}: {name!r} is not a module of {type(model).__name__}. Valid names, closest "
        f"first: {', '.join(close)}"
    )


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Validate module names; returns them as a list (order kept, duplicates dropped)."""
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers is empty; give at least one module name.")
    modules = dict(model.named_modules())
    for n in names:
        if n not in modules or n == "":
            raise layer_name_error(n, model)
    return list(dict.fromkeys(names))


class ActivationRecorder:
    """Record (reduced) outputs of named modules during forward passes.

    Parameters
    ----------
    model : nn.Module
    layers : str or sequence of str
        Module names as in ``model.named_modules()``.
    reduce : callable, optional
        ``reduce(layer_name, output) -> object`` applied inside the hook to a detached output;
        its result is stored. The default copies the output to the CPU. A reducer must return
        new memory (a copy or a reduction), never a view of ``output``.
    eval_mode : bool
        Put the model in eval mode while recording (restored on exit).

    Attributes
    ----------
    records : dict of str to list
        One entry per forward pass for each layer.

    Examples
    --------
    >>> with ActivationRecorder(model, ["fc1"]) as rec:  # doctest: +SKIP
    ...     model(x)
    >>> rec.records["fc1"][0].shape  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str],
        reduce: Callable[[str, torch.Tensor], object] | None = None,
        *,
        eval_mode: bool = True,
    ) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.reduce = reduce or (lambda name, out: out.detach().to("cpu", copy=True))
        self.eval_mode = eval_mode
        self.records: dict[str, list] = {n: [] for n in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._modes: dict[nn.Module, bool] = {}

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Layer {name!r} returned {type(output).__name__}, not a Tensor; record a "
                    "submodule that returns a tensor."
                )
            self.records[name].append(self.reduce(name, output.detach()))

        return hook

    def __enter__(self) -> ActivationRecorder:
        self._modes = {m: m.training for m in self.model.modules()}
        modules = dict(self.model.named_modules())
        try:
            for name in self.layers:
                self._handles.append(modules[name].register_forward_hook(self._hook(name)))
            if self.eval_mode:
                self.model.eval()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook and restore each module's train/eval flag (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m, flag in self._modes.items():
            m.training = flag
        self._modes = {}

    def clear(self) -> None:
        """Drop recorded outputs (keep hooks)."""
        for v in self.records.values():
            v.clear()


def pool_output(output: torch.Tensor, pool: str) -> torch.Tensor:
    """Per-channel pooling of a ``(N, C, H, W)`` map, or flattening of any other output.

    Always returns new memory on the CPU as float32, so later in-place ops cannot change it.
    """
    if output.dim() == 4:
        if pool == "avg":
            red = output.mean(dim=(2, 3))
        elif pool == "max":
            red = output.amax(dim=(2, 3))
        else:
            raise ValueError(f"pool={pool!r}; use one of {POOLS}.")
    else:
        red = output.reshape(output.shape[0], -1)
    return red.to("cpu", torch.float32, copy=True)
