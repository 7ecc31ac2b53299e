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
    for m in model.modules():  # parameters()' order, without its generator's set-up cost
        for p in m._parameters.values():
            if p is not None:
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


class ReusedModuleError(ValueError):
    """A module asked for by plain name runs more than once in one forward pass."""


def parse_layer(spec: str) -> tuple[str, str, int | None]:
    """Split a layer spec into ``(module name, "out" | "in", call)``.

    ``"layer2.1"`` is the output of a module that runs once per forward pass; ``"relu#2"`` the
    output of its 2nd call in each forward pass (a reused module such as ResNet's
    ``BasicBlock.relu``); ``"fc#in"`` the input of a module (what a forward pre-hook sees; the
    head's regressors are exactly ``"<head>#in"``).
    """
    name, sep, tag = str(spec).partition("#")
    if not sep:
        return name, "out", None
    if tag == "in":
        return name, "in", None
    if tag.isdigit() and int(tag) >= 1:
        return name, "out", int(tag)
    raise ValueError(
        f"layer {spec!r}: after '#' write a call number (1, 2, ...) or 'in' (the module's input)."
    )


def resolve_layers(model: nn.Module, layers: str | Sequence[str],
                   modules: dict[str, nn.Module] | None = None) -> list[str]:
    """Validate layer specs (module names, optionally ``#k`` or ``#in``); returns them as a list
    (order kept, duplicates dropped). ``modules`` is ``dict(model.named_modules())`` when the
    caller has it already."""
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("layers is empty; give at least one module name.")
    if modules is None:
        modules = dict(model.named_modules())
    for n in names:
        base = parse_layer(n)[0]
        if base not in modules or base == "":
            raise layer_name_error(base, model)
    return list(dict.fromkeys(names))


def reuse_message(name: str, calls: int, parent: str | None = None) -> str:
    """What to pass instead of a module that runs ``calls`` times per forward pass."""
    alts = ", ".join(repr(f"{name}#{k}") for k in range(1, calls + 1))
    extra = f", or the enclosing module {parent!r} (runs once)" if parent else ""
    return (
        f"Module {name!r} runs {calls} times in one forward pass (a reused module, e.g. "
        f"ResNet's BasicBlock.relu), so its output is not one row per sample. Record one call "
        f"with {alts}{extra}."
    )


class model_guard:  # noqa: N801 - used like a function: ``with model_guard(model):``
    """Run a user's model and leave it exactly as found.

    On entry every module's train/eval flag, every parameter's ``requires_grad`` and ``.grad``
    and every buffer (BatchNorm running statistics, ``num_batches_tracked``) are saved; with
    ``eval_mode=True`` (the default) the model is put in eval mode so that it computes as at
    inference (no BatchNorm updates, no dropout). On exit, also after an exception, all of it
    is restored, so ``state_dict()`` is bit-identical even when ``eval_mode=False`` let a
    train-mode forward update BatchNorm statistics.

    Parameters
    ----------
    model : nn.Module
    eval_mode : bool
        Compute in eval mode (restored on exit).
    """

    def __init__(self, model: nn.Module, *, eval_mode: bool = True) -> None:
        self.model = model
        self.eval_mode = eval_mode
        self._saved: tuple | None = None

    def __enter__(self) -> nn.Module:
        m = self.model
        mods = list(m.modules())
        flags = [(mod, mod.training) for mod in mods]
        # what parameters() / buffers() yield (each tensor once), read from one module walk:
        # the generators walk the tree again each, a fixed cost that small models notice
        params, buffers, seen = [], [], set()
        for mod in mods:
            for p in mod._parameters.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    params.append((p, p.requires_grad, p.grad))
            for b in mod._buffers.values():
                if b is not None and id(b) not in seen:
                    seen.add(id(b))
                    buffers.append((b, b.detach().clone()))
        self._saved = (flags, params, buffers)
        if self.eval_mode and any(f for _, f in flags):
            m.eval()
        return m

    def __exit__(self, *exc) -> None:
        if self._saved is None:
            return
        flags, params, buffers = self._saved
        self._saved = None
        for mod, flag in flags:
            if mod.training != flag:  # Module.__setattr__ is slow: touch changed flags only
                mod.training = flag
        for p, req, grad in params:
            if p.requires_grad != req:
                p.requires_grad_(req)
            if p.grad is not grad:
                p.grad = grad
        if buffers:
            with torch.inference_mode(False), torch.no_grad():
                for b, saved in buffers:
                    if b.shape != saved.shape or not torch.equal(b, saved):
                        b.data = saved


class ActivationRecorder:
    """Record (reduced) outputs (or inputs) of named modules during forward passes.

    Parameters
    ----------
    model : nn.Module
    layers : str or sequence of str
        Module names as in ``model.named_modules()``, optionally with ``#k`` (the k-th call in
        each forward pass of a module that runs several times) or ``#in`` (the module's input,
        seen by a forward pre-hook). Run the model through :meth:`forward` to have a plain name
        whose module runs more than once per pass refused (:class:`ReusedModuleError`, naming
        the ``#k`` alternatives) instead of recorded once per call.
    reduce : callable, optional
        ``reduce(layer_name, output) -> object`` applied inside the hook to a detached output;
        its result is stored. The default copies the output to the CPU. A reducer must return
        new memory (a copy or a reduction), never a view of ``output``.
    eval_mode : bool
        Put the model in eval mode while recording. Flags, ``requires_grad`` and buffers are
        restored on exit (see :class:`model_guard`).
    modules : dict, optional
        ``dict(model.named_modules())``, when the caller has built it already.

    Attributes
    ----------
    records : dict of str to list
        One entry per forward pass for each layer.

    Examples
    --------
    >>> with ActivationRecorder(model, ["fc1", "layer1.0.relu#2", "fc#in"]) as rec:  # doctest: +SKIP
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
        modules: dict[str, nn.Module] | None = None,
    ) -> None:
        self.model = model
        self._modules = dict(model.named_modules()) if modules is None else modules
        self.layers = resolve_layers(model, layers, self._modules)
        self.reduce = reduce or (lambda name, out: out.detach().to("cpu", copy=True))
        self.eval_mode = eval_mode
        self.records: dict[str, list] = {n: [] for n in self.layers}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._guard: model_guard | None = None
        self._calls: dict[str, int] = {}
        self._parsed = [(spec, *parse_layer(spec)) for spec in self.layers]

    def _hook(self, spec: str, base: str, call: int | None, pre: bool):
        def record(value) -> None:
            if not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"Layer {spec!r} {'received' if pre else 'returned'} "
                    f"{type(value).__name__}, not a Tensor; record a submodule that returns a "
                    "tensor."
                )
            self.records[spec].append(self.reduce(spec, value.detach()))

        def count() -> int:
            self._calls[spec] = k = self._calls.get(spec, 0) + 1
            return k

        if pre:
            def pre_hook(module: nn.Module, inputs: tuple) -> None:  # '#in': every call
                if count() == 1 or call is None:
                    record(inputs[0] if inputs else None)

            return pre_hook

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if count() == call or call is None:
                record(output)

        return hook

    def forward(self, *args, **kwargs):
        """Run the model once and check that every plain-named layer ran exactly once.

        Raises
        ------
        ReusedModuleError
            If a module recorded by plain name ran more than once (its ``#k`` calls are named
            in the message).
        """
        self._calls.clear()
        out = self.model(*args, **kwargs)
        for spec, base, _, call in self._parsed:
            k = self._calls.get(spec, 0)
            if call is None and k > 1:
                raise ReusedModuleError(reuse_message(base, k))
            if k < (call or 1):
                raise ValueError(
                    f"Layer {spec!r} did not run{'' if call is None else f' {call} times'} in "
                    f"the forward pass (it ran {k} times)."
                )
        self._calls.clear()
        return out

    def _reset(self, module: nn.Module, inputs: tuple) -> None:
        self._calls.clear()

    def __enter__(self) -> ActivationRecorder:
        modules = self._modules
        self._guard = model_guard(self.model, eval_mode=self.eval_mode)
        self._guard.__enter__()
        try:
            if any(call is not None for *_, call in self._parsed):
                # '#k' counts calls within one forward pass: restart with every pass
                self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for spec, base, kind, call in self._parsed:
                fn = self._hook(spec, base, call, kind == "in")
                reg = modules[base].register_forward_pre_hook if kind == "in" else (
                    modules[base].register_forward_hook
                )
                self._handles.append(reg(fn))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook and restore the model's state (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._guard is not None:
            self._guard.__exit__()
            self._guard = None

    def clear(self) -> None:
        """Drop recorded outputs (keep hooks)."""
        for v in self.records.values():
            v.clear()


def can_tap(module: nn.Module) -> bool:
    """Whether :class:`ForwardTap` can stand in for hooks on ``module``: a plain (not scripted)
    module whose ``forward`` is its class's (none set on the instance)."""
    return "forward" not in module.__dict__ and not isinstance(module, torch.jit.ScriptModule)


class ForwardTap:
    """A module's ``forward`` shadowed on the instance by ``make(forward)`` until :meth:`remove`.

    A cheaper stand-in for a forward (pre-)hook on a module called once per batch: torch's
    hooked call path costs ~2 us a call, a tenth of a small batch's ``Linear``, while the
    wrapper keeps torch's plain call path (the wrapper sees exactly what ``forward`` receives,
    after any hooks). Only modules that pass :func:`can_tap` are tapped; :meth:`remove` deletes
    the instance attribute, so the module is left as found (its class's ``forward`` again).

    Parameters
    ----------
    module : nn.Module
    make : callable
        ``make(forward) -> wrapper``: the wrapper must call ``forward`` with the same arguments
        and return its result.
    """

    __slots__ = ("module", "wrapper")

    def __init__(self, module: nn.Module, make: Callable) -> None:
        if not can_tap(module):
            raise ValueError(f"{type(module).__name__} has its own forward; hook it instead.")
        self.module = module
        self.wrapper = make(module.forward)
        module.forward = self.wrapper

    def remove(self) -> None:
        """Restore the class's ``forward`` (idempotent)."""
        if self.wrapper is not None and self.module.__dict__.get("forward") is self.wrapper:
            del self.module.forward


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
