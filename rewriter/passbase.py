"""Pass interface and registry.

A pass registers under its name with its option schema (Olive style), so the CLI lists passes and their
options without a hand-kept table. Each pass: ``match`` lists every candidate site with "will change" or the
reason it won't (that is ``--explain``); ``apply`` edits the handle in place and returns what it changed.
A pass never measures latency and never prints: the manager and the report do.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import RewriteError
from .model import ModelHandle

if TYPE_CHECKING:
    from .inputs import Splits

WILL_CHANGE = "will change"


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
        elif raw.lower() in ("none", "") and self.default is None:
            value = None
        else:
            value = _convert(pass_name, key, raw, self.type)
        if self.choices is not None and value not in self.choices:
            raise RewriteError(f"option {pass_name}.{key}={raw!r}: must be one of "
                               f"{', '.join(map(str, self.choices))}")
        return value


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
    names = " or ".join(t.__name__ for t in types)
    raise RewriteError(f"option {pass_name}.{key}={raw!r}: expected {names}")


@dataclass
class Site:
    """One candidate site of a pass: a node, and whether (and why not) it is rewritten."""

    node: str
    op: str
    decision: str  # WILL_CHANGE, or the reason it won't
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def will_change(self) -> bool:
        return self.decision == WILL_CHANGE

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["will_change"] = self.will_change
        return d


@dataclass
class PassResult:
    """What ``apply`` did: sites (with decisions), new/changed node names, notes for the report."""

    sites: list[Site]
    new_nodes: list[str] = field(default_factory=list)  # nodes the pass created or modified (tagged)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # pass-specific report data (per-site errors, ...)

    @property
    def sites_changed(self) -> int:
        return sum(s.will_change for s in self.sites)


class Pass:
    """Base class. Subclasses set the class attributes and implement ``match`` and ``apply``."""

    name: ClassVar[str]
    description: ClassVar[str]
    formats: ClassVar[tuple[str, ...]] = ("onnx", "ir")
    exact: ClassVar[bool] = False
    quantizes: ClassVar[bool] = False  # a quantizing pass must be the last one
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **opts: Any):
        self.opts: dict[str, Any] = {k: o.default for k, o in self.options.items()}
        for k, v in opts.items():
            if k not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise RewriteError(f"pass {self.name} has no option '{k}' (options: {known})")
            self.opts[k] = self.options[k].parse(self.name, k, v)
        self.check_options()

    def check_options(self) -> None:
        """Validate option combinations; raise RewriteError with a clear message."""

    def is_exact(self) -> bool:
        """Whether this configured instance must reproduce the output to float tolerance."""
        return self.exact

    def match(self, model: ModelHandle, ctx: PassContext) -> list[Site]:
        raise NotImplementedError

    def apply(self, model: ModelHandle, ctx: PassContext) -> PassResult:
        raise NotImplementedError

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
    _calib_cache: dict = field(default_factory=dict)
    splits: Splits | None = None  # calibration / validation / test inputs (rewriter.inputs.split_inputs)

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
