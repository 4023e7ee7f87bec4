"""The Method contract: a frozen dataclass of hyperparameters + ``prepare`` + ``train_step``.

A method turns a loaded backbone into the module that is trained, with ``requires_grad`` set
exactly on what it trains (``prepare``), and says how one optimisation step runs
(``train_step``: backprop + AdamW by default; MeZO overrides it). Its step reports its phases
to a :class:`StepHooks`, which is how measurement code (FLOP counting, backward reads,
autocast) wraps forward / backward / optimizer without each method knowing about it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator, Literal

from spbench.domains import at_least, check_field, check_fields, hparam, positive
from spbench.errors import InputError
from spbench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from spbench.backbones import Backbone
    from spbench.objectives import Objective


class StepHooks:
    """Context managers around a step's phases. The default does nothing.

    Measurement code subclasses it (``spbench.measure``); a method calls ``hooks.phase(name)``
    with name "forward", "backward" or "optimizer".
    """

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield


NO_HOOKS = StepHooks()


def set_trainable(model: "nn.Module", predicate: Any) -> None:
    """Freeze everything, then unfreeze parameters whose qualified name satisfies ``predicate``."""
    for name, param in model.named_parameters():
        param.requires_grad_(bool(predicate(name)))


def trainable_parameters(model: "nn.Module") -> list["torch.Tensor"]:
    return [p for p in model.parameters() if p.requires_grad]


@dataclass(frozen=True)
class Stage:
    """One stage of a training run: train ``model`` with ``method`` on ``objective`` for
    ``share`` of the budget (see :meth:`Method.stages`)."""

    method: "Method"
    model: "nn.Module"
    objective: str
    share: float = 1.0


@dataclass(frozen=True)
class Method:
    """Base of every method. Subclasses add hyperparameter fields with defaults.

    ``lr`` and ``weight_decay`` configure the default AdamW; ``objective`` names what the
    method works with by default ("classification" or "prompt").
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Back-propagates through the backbone, so activation checkpointing of its layers applies.
    supports_grad_checkpointing: ClassVar[bool] = False
    # Weights that may be stored in half precision without a backprop optimizer updating them
    # there (MeZO's forward-only updates, LST's frozen backbone): ``to_half_weights`` casts them.
    supports_half_weights: ClassVar[bool] = False
    lr: float = hparam(1e-4, positive(), search="x0.1:x10:log")
    weight_decay: float = hparam(0.0, at_least(0))

    def __post_init__(self) -> None:
        """Every hyperparameter in its declared domain (``spbench.domains``): a bad value
        fails where the method is built, before any backbone loads."""
        try:
            check_fields(self)
        except InputError as exc:
            raise InputError(f"{self.name or type(self).__name__}: {exc}") from None

    def prepare(self, backbone: "Backbone") -> "nn.Module":
        """Return the module to train, with ``requires_grad`` set exactly."""
        raise NotImplementedError

    def enable_grad_checkpointing(self, model: "nn.Module") -> None:
        """Recompute each backbone layer's activations in backward instead of keeping them:
        transformers' own activation checkpointing, non-reentrant (through peft wrappers too)."""
        if not self.supports_grad_checkpointing:
            raise InputError(f"gradient checkpointing does not apply to {self.name}")
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # the name it had before (deprecated alias since)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # transformers also makes the embedding output require grad, which only reentrant
        # checkpointing needs: it would pull backward through every frozen layer down to the
        # embeddings (measured: side_lora's predicted peak +20% on tiny-roberta). Undo it.
        model.disable_input_require_grads()

    def to_half_weights(self, model: "nn.Module", dtype: "torch.dtype") -> None:
        """Cast the weights this method may keep in ``dtype`` (a half type), in place."""
        raise InputError(f"half-precision weights are not sound for {self.name}")

    def make_optimizer(self, model: "nn.Module", foreach: bool | None = None) -> "torch.optim.Optimizer":
        """AdamW over the trainable parameters (``foreach`` as CUDA would choose it, or not)."""
        import torch

        params = trainable_parameters(model)
        if not params:
            raise ValueError(f"method {self.name!r} left no trainable parameter")
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, foreach=foreach)

    def train_step(self, model: "nn.Module", batch: dict[str, "torch.Tensor"],
                   optimizer: "torch.optim.Optimizer", objective: "Objective",
                   hooks: StepHooks = NO_HOOKS) -> "torch.Tensor":
        """One backprop step; returns the detached loss (no ``.item()``: it must run on fake tensors)."""
        with hooks.phase("forward"):
            loss = objective.loss(model, batch)
        with hooks.phase("backward"):
            loss.backward()
        with hooks.phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def deployable(self, model: "nn.Module") -> "nn.Module":
        """The trained ``model`` as it would be deployed for inference (may change ``model`` in
        place). Default: as it trains (side networks, prefixes and prompt tokens kept); LoRA
        and its variants override it with peft's ``merge_and_unload``."""
        return model

    def deploy_state(self, model: "nn.Module") -> dict[str, "torch.Tensor"]:
        """What must be stored to deploy the trained ``model`` on top of the shared, untouched
        backbone, by name (``spbench.measure.inference.deploy_bytes`` saves it with
        safetensors). Default: what training changed, its trainable parameters (adapters and
        head; side network, ladders and head; every parameter for full fine-tuning). Tied
        parameters appear once; buffers are the backbone's own and are not stored."""
        return {name: p for name, p in model.named_parameters() if p.requires_grad}

    @property
    def uses_backward(self) -> bool:
        return True

    @property
    def lr_schedule(self) -> Literal["linear", "constant"]:
        """How ``spbench.train.fit`` schedules the rate: "linear" (warmup, then decay to 0),
        or "constant" for methods without a backward pass (MeZO's paper keeps its rate constant)."""
        return "linear" if self.uses_backward else "constant"

    def notes(self, backbone: "Backbone") -> dict[str, Any]:
        """Flags for every result of this method on ``backbone`` (e.g. k-LST's padded windows)."""
        return {}

    def warm_start(self, model: "nn.Module", objective: "Objective", train_rows: Any, *, pad_id: int = 0,
                   device: str = "cpu", seed: int = 0) -> dict[str, Any]:
        """Set up ``model`` from the training rows before the first step (``spbench.train.fit``
        calls it once per run) and say what was done ({}: nothing, the default; MeZO fits its
        head by a linear probe)."""
        return {}

    def stages(self, backbone: "Backbone", model: "nn.Module", objective: str) -> Iterable[Stage]:
        """The stages of an accuracy run, each trained before the next is asked for (so a later
        stage may be built from an earlier one's weights). One stage by default: ``model``
        (this method's ``prepare`` of ``backbone``) on ``objective``."""
        return [Stage(self, model, objective)]

    def config(self) -> dict[str, Any]:
        """Hyperparameters as a plain dict (``method_config`` in results)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_overrides(cls, overrides: dict[str, str] | None = None) -> "Method":
        """Build with ``--set key=value`` strings, each parsed to the field's declared type and
        checked against its domain (an error names the key, not the method: callers add it)."""
        overrides = dict(overrides or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key not in fields:
                raise InputError(
                    f"method {cls.name!r} has no hyperparameter {key!r}; it has: {', '.join(sorted(fields))}"
                )
            kwargs[key] = parse_value(raw, hints[key], key)
            check_field(cls, key, kwargs[key])
        return cls(**kwargs)


def parse_value(raw: Any, hint: Any, key: str) -> Any:
    """Parse a ``--set`` string into the annotated type (bool, int, float, str, tuple, Optional)."""
    if not isinstance(raw, str):
        return raw
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(raw, arg, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(f"{key}={raw!r}: " + "; ".join(errors))
    if origin is tuple:
        items = [s for s in raw.split(",") if s.strip()]
        inner = args[0] if args else str
        return tuple(parse_value(s.strip(), inner, key) for s in items)
    if typing.get_origin(hint) is typing.Literal:
        if raw not in args:
            raise InputError(f"{key} must be one of {', '.join(map(str, args))}, not {raw!r}")
        return raw
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{key} expects true/false, not {raw!r}")
    if hint in (int, float):
        try:
            return hint(raw)
        except ValueError:
            raise InputError(f"{key} expects {hint.__name__}, not {raw!r}") from None
    return raw


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str) -> Any:
    """Class decorator: register a Method subclass under ``name`` (also sets ``cls.name``)."""

    def deco(cls: type[Method]) -> type[Method]:
        METHODS.register(name)(cls)
        cls.name = name
        return cls

    return deco
