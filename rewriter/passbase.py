"""Pass interface and registry.

A pass registers under its name with its option schema (Olive style), so the CLI lists passes and their
options without a hand-kept table. A pass ``plan``s one :class:`Decision` per candidate site on a format-free
:class:`~rewriter.graph.GraphView` (the choices it has, the default, and why: that is ``--explain``) and
``emit``s one site through a format-free :class:`~rewriter.graph.Editor`; ``rewriter.engine`` selects,
emits, tags, validates and assembles the :class:`PassResult`. A pass never measures latency and never prints.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import RewriteError
from .model import ModelHandle

if TYPE_CHECKING:
    from .graph import Editor, GraphView
    from .inputs import Splits

WILL_CHANGE = "will change"
KEEP = "keep"


@dataclass
class Option:
    """One pass option: default value, type and a one-line help text."""

    default: Any
    type: type | tuple = str
    help: str = ""
    choices: tuple | None = None

    def parse(self, pass_name: str, key: str, raw: Any) -> Any:
        """Convert a command-line string (or a Python value) to the option's type, or raise RewriteError."""
        if not isinstance(raw, str):
            value = raw
        elif raw.lower() in ("none", "") and (self.default is None or _allows_none(self.type)):
            value = None
        else:
            value = _convert(pass_name, key, raw, self.type)
        if self.choices is not None and value not in self.choices:
            raise RewriteError(f"option {pass_name}.{key}={raw!r}: must be one of "
                               f"{', '.join(map(str, self.choices))}")
        return value


def _allows_none(typ: type | tuple) -> bool:
    return isinstance(typ, tuple) and type(None) in typ


def _convert(pass_name: str, key: str, raw: str, typ: type | tuple) -> Any:
    types = typ if isinstance(typ, tuple) else (typ,)
    for t in types:
        try:
            if t is bool:
                low = raw.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            if t is list:
                return [s for s in raw.split("|") if s]
            return t(raw)
        except (TypeError, ValueError):
            continue
    names = " or ".join(t.__name__ for t in types if t is not type(None))
    raise RewriteError(f"option {pass_name}.{key}={raw!r}: expected {names}")


class Config(dict):
    """A pass's options after parsing: read-only (``cfg["rank"]`` or ``cfg.rank``); equal to a plain dict."""

    def _frozen(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("pass options are frozen; build a new pass with other options")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _frozen  # type: ignore[assignment]

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))


@dataclass(frozen=True)
class Decision:
    """What a pass does at one site: the choices it has, the one taken, and why (that is ``--explain``).

    ``site`` is the graph view's id of the site's anchor node; ``choices[0]`` is always KEEP.
    """

    site: str
    pass_name: str
    op: str
    choices: tuple[str, ...]
    choice: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def will_change(self) -> bool:
        return self.choice != KEEP

    @property
    def node(self) -> str:
        """The anchor node's id (the report's ``node`` key)."""
        return self.site

    @property
    def decision(self) -> str:
        """WILL_CHANGE, or the reason the site stays (the report's ``decision`` key)."""
        return WILL_CHANGE if self.will_change else self.reason

    def with_choice(self, choice: str, reason: str, **details: Any) -> Decision:
        """A copy taking ``choice`` for ``reason`` (details merged)."""
        return replace(self, choice=choice, reason=reason, details={**self.details, **details})

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "decision": self.decision, "details": dict(self.details),
                "will_change": self.will_change, "site": self.site, "choice": self.choice,
                "choices": list(self.choices), "reason": self.reason}


def keep(site: str, pass_name: str, op: str, reason: str, details: dict[str, Any] | None = None,
         choices: tuple[str, ...] = (KEEP,)) -> Decision:
    """A decision that leaves the site unchanged (with the choices it could still be forced to)."""
    return Decision(site, pass_name, op, choices, KEEP, reason, dict(details or {}))


@dataclass
class PassResult:
    """What ``engine.apply_pass`` did: per-site decisions, tagged nodes, notes, report data, exactness."""

    decisions: list[Decision]
    new_nodes: list[str] = field(default_factory=list)  # nodes the pass created or modified (tagged)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # pass-specific report data (per-site errors, ...)
    exact: bool = False  # whether the rewritten model must reproduce the output to float tolerance

    @property
    def sites(self) -> list[Decision]:
        return self.decisions

    @property
    def sites_changed(self) -> int:
        return sum(d.will_change for d in self.decisions)


@dataclass
class Outcome:
    """What a pass's ``finish`` / ``emit_all`` reports back to the engine."""

    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    decisions: list[Decision] | None = None  # final decisions when the whole-model step changed them
    modified: list[str] = field(default_factory=list)  # further nodes it changed (tagged with the pass)


class Pass:
    """Base class. A pass plans (``plan``: one Decision per candidate site) and emits (``emit``: one site
    through a format-free editor). A whole-model pass (NNCF) implements ``emit_all`` instead. The engine
    (``rewriter.engine``) selects, emits, tags, validates and assembles the result."""

    name: ClassVar[str]
    description: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ("onnx", "ir")
    exact: ClassVar[bool] = False
    quantizes: ClassVar[bool] = False  # a quantizing pass must be the last one
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **opts: Any):
        values = {k: o.default for k, o in self.options.items()}
        for k, v in opts.items():
            if k not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise RewriteError(f"pass {self.name} has no option '{k}' (options: {known})")
            values[k] = self.options[k].parse(self.name, k, v)
        self.opts = Config(values)
        self.check_options()

    def check_options(self) -> None:
        """Validate option combinations; raise RewriteError with a clear message. Must not mutate."""

    def is_exact(self) -> bool:
        """Whether this configured pass is exact before knowing its decisions (the class default)."""
        return self.exact

    def exact_for(self, changed: list[Decision]) -> bool:
        """Whether emitting ``changed`` reproduces the output to float tolerance."""
        return self.exact

    # ---- what a pass implements --------------------------------------------------------------------------
    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        """One Decision per candidate site, in graph order. Never edits."""
        raise NotImplementedError

    def emit(self, decision: Decision, editor: Editor, ctx: PassContext) -> None:
        """Rewrite one site as ``decision.choice`` says, through ``editor``."""
        raise NotImplementedError

    emit_all: Any = None  # whole-model passes: emit_all(decisions, model, ctx) -> Outcome

    def needs_reference(self, changed: list[Decision], ctx: PassContext) -> bool:
        """Whether ``finish`` needs a copy of the model as it was before the pass."""
        return False

    def finish(self, changed: list[Decision], editor: Editor, ctx: PassContext,
               reference: ModelHandle | None) -> Outcome | None:
        """Data-dependent work after every site is emitted (refits); skipped when ``ctx.dry_run``."""
        return None

    # ---- conveniences (the engine does the work) ------------------------------------------------------------
    def match(self, model: ModelHandle, ctx: PassContext) -> list[Decision]:
        """``engine.plan``: every candidate site and what the pass would do there."""
        from .engine import plan

        return plan(model, self, ctx)

    def apply(self, model: ModelHandle, ctx: PassContext, selection: dict[str, str] | None = None) -> PassResult:
        """``engine.apply_pass``: rewrite ``model`` in place."""
        from .engine import apply_pass

        return apply_pass(model, self, ctx, selection)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "exact": self.exact,
                "formats": list(self.formats), "quantizes": self.quantizes,
                "options": {k: {"default": o.default, "help": o.help,
                                **({"choices": list(o.choices)} if o.choices else {})}
                            for k, o in self.options.items()}}


@dataclass
class PassContext:
    """What a pass may need besides the model: calibration images, targets, seed, the original model."""

    calib_dir: str | None = None  # --calib: images for calibration / refit
    images_dir: str | None = None  # --images: images for verification (default: calib_dir, then skimage)
    targets: tuple[str, ...] = ("kmb", "mtl", "cpu")
    seed: int = 0
    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose
    original: ModelHandle | None = None  # the model as loaded, before any pass
    input_shape: dict[str, list[int]] | None = None  # --input-shape: pins dynamic input dims
    dry_run: bool = False  # planning: emit without data-dependent work (refit, NNCF)
    splits: Splits | None = None  # calibration / validation / test inputs (rewriter.inputs.split_inputs)
    # optimize: (feeds, sites) -> a rewriter.refit.Prefix captured once on the original, or None (capture anew)
    shared_prefix: Any = None
    _calib_cache: dict = field(default_factory=dict)

    def calibration(self, model: ModelHandle, count: int | None = None, preprocess: str = "auto",
                    folder: str | None = None):
        """Calibration inputs for ``model`` (see ``rewriter.inputs.calibration_set``); cached per shape.

        ``folder`` overrides ``calib_dir`` (e.g. the verification images); ``preprocess`` overrides detection.
        """
        from .inputs import calibration_set

        if self.splits is not None and (folder is None or folder in (self.calib_dir, self.images_dir)):
            split = "validation" if folder is not None and folder == self.images_dir != self.calib_dir else \
                "calibration"  # passes fit on the calibration split; --images is the validation one
            return self.splits.inputs(split, model, preprocess=preprocess, count=count)
        return calibration_set(model, folder or self.calib_dir, count=count, seed=self.seed,
                               preprocess=preprocess, cache=self._calib_cache)

    def validation(self, model: ModelHandle, count: int | None = None, preprocess: str = "auto"):
        """Inputs a pass may *judge* on (e.g. NNCF's accuracy control): the validation split, never the images it
        fits on; without splits, ``--images`` (else ``--calib``) as before."""
        if self.splits is not None:
            return self.splits.inputs("validation", model, preprocess=preprocess, count=count)
        return self.calibration(model, count=count, preprocess=preprocess, folder=self.images_dir or self.calib_dir)


REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by name."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"pass name {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


def load_passes() -> dict[str, type[Pass]]:
    """Import every module of ``rewriter.passes`` (each registers itself) and return the registry."""
    from . import passes as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    return dict(sorted(REGISTRY.items()))


def parse_opts(raw: list[str]) -> dict[str, dict[str, str]]:
    """``["dwpw.rank=2", ...]`` → ``{"dwpw": {"rank": "2"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        pass_name, dot, opt = key.partition(".")
        if not sep or not dot or not pass_name or not opt:
            raise RewriteError(f"--opt {item!r}: expected PASS.OPTION=VALUE, e.g. dwpw.rank=2")
        out.setdefault(pass_name, {})[opt] = value
    return out


def build_passes(names: list[str], opts: dict[str, dict[str, Any]] | None = None) -> list[Pass]:
    """Instantiate passes by name with their options, refusing unknown names and options."""
    registry = load_passes()
    opts = opts or {}
    for p in opts:
        if p not in registry:
            raise RewriteError(f"--opt for unknown pass '{p}' (known: {', '.join(registry)})")
        if p not in names:
            raise RewriteError(f"--opt for pass '{p}', which is not in --passes")
    out = []
    for n in names:
        if n not in registry:
            raise RewriteError(f"unknown pass '{n}' (known: {', '.join(registry)})")
        out.append(registry[n](**opts.get(n, {})))
    check_order(out)
    return out


def check_order(passes: list[Pass]) -> None:
    """Refuse any pass after a quantizing one (its output is quantized; nothing else may rewrite it)."""
    for i, p in enumerate(passes[:-1]):
        if p.quantizes:
            later = ", ".join(q.name for q in passes[i + 1:])
            raise RewriteError(f"pass '{p.name}' quantizes the model and must be last; move {later} before it")
