"""Up-front checks, run once before any pass: everything that can be refused cheaply is refused here.

A bad input costs the user one line and exit 2 within a second, not minutes of passes followed by a failed
save. Checked: the file is readable and a model (an IR's .bin present and long enough for every constant);
every float weight is finite (a NaN or Inf makes every fidelity figure meaningless and can stall a solver);
the output path is writable, is not the input and sits in a folder; pass names, option values, targets,
budget and image folders are valid; and whether the model has an image-like input (else a note says
verification uses random feeds). Nothing here writes anything.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import RewriteError
from .model import ModelHandle
from .passbase import Pass, build_passes, check_order

_ONNX_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
               onnx.TensorProto.BFLOAT16}
_SHOWN = 3  # bad weights named in the one-line message


@dataclass
class Checked:
    """What the checks established: the loaded model, the built passes, the output path and notes."""

    handle: ModelHandle
    passes: list[Pass]
    output: Path | None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def preflight(model: Any, passes: str | list | None = None, *, opts: dict | None = None,
              output: str | os.PathLike | None = None, to: str | None = None,
              reports: tuple[str | os.PathLike | None, ...] = (), targets: tuple[str, ...] | None = None,
              budget: dict | str | None = None, calib: str | None = None, images: str | None = None,
              default_output: bool = False) -> Checked:
    """Check a rewrite request before any pass runs; raise ``RewriteError`` (one line, exit 2) on the first fault.

    ``model``: a path, ``onnx.ModelProto``, ``openvino.Model`` or ``ModelHandle`` (loaded once here and
    returned as ``Checked.handle``). ``passes``: names (comma string or list) or ``Pass`` instances.
    ``output``: where the model will be written (``default_output=True`` derives NAME.rewritten.EXT when it is
    None); ``reports``: other files that will be written (JSON/Markdown/HTML). Nothing is written.
    """
    t0 = time.perf_counter()
    plist = _passes(passes, opts) if passes is not None else []
    if targets is not None:
        from .manager import TARGETS

        for t in targets:
            if t not in TARGETS:
                raise RewriteError(f"unknown target '{t}' (use {', '.join(TARGETS)})")
    if isinstance(budget, str):
        from .verify import parse_budget

        parse_budget(budget)
    for flag, folder in (("--calib", calib), ("--images", images)):
        if folder is not None:
            from .inputs import list_images

            try:
                list_images(folder)
            except RewriteError as e:
                raise RewriteError(f"{flag} {e}") from e
    if isinstance(model, (str, os.PathLike)):
        _check_readable(Path(model))
    handle = ModelHandle.load(model)
    for p in plist:
        if handle.format not in p.formats:
            raise RewriteError(f"pass {p.name} does not support {handle.format.upper()} models "
                               f"(supports: {', '.join(p.formats)})")
    check_finite(handle)
    out = Path(output) if output is not None else (handle.default_output(to) if default_output else None)
    if out is not None:
        check_output(out, handle.source, to or handle.format, handle.format)
    for extra in reports:
        if extra:
            check_output(Path(extra), handle.source, None, handle.format)
    notes = []
    from .inputs import image_input

    if image_input(handle) is None:
        shapes = ", ".join(f"{n} {list(s)}" for n, s, _ in handle.inputs())
        notes.append(f"no 3-channel image input ({shapes}): verification and calibration use seeded random feeds")
    return Checked(handle, plist, out, notes, round(time.perf_counter() - t0, 3))


def _passes(passes: str | list, opts: dict | None) -> list[Pass]:
    if isinstance(passes, str):
        passes = [p.strip() for p in passes.split(",") if p.strip()]
    if not passes:
        raise RewriteError("no passes given (e.g. --passes asym_interp,dwpw); see --list-passes")
    if all(isinstance(p, Pass) for p in passes):
        if opts:
            raise RewriteError("options go to the pass constructors when passing Pass instances")
        check_order(list(passes))
        return list(passes)
    if any(isinstance(p, Pass) for p in passes):
        raise RewriteError("give pass names or Pass instances, not a mix")
    return build_passes(list(passes), opts)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise RewriteError(f"{path}: no such file")
    if path.is_dir():
        raise RewriteError(f"{path}: is a directory, not a model file")
    if not os.access(path, os.R_OK):
        raise RewriteError(f"{path}: not readable (permission denied)")
    if path.suffix.lower() == ".xml":
        bin_path = path.with_suffix(".bin")
        if bin_path.exists() and not os.access(bin_path, os.R_OK):
            raise RewriteError(f"{bin_path}: not readable (permission denied)")


# ---- finite weights ------------------------------------------------------------------------------------
def check_finite(handle: ModelHandle) -> None:
    """Refuse a model with a NaN or Inf in any float weight, naming the initializer/constant."""
    bad = _nonfinite_onnx(handle.proto) if handle.format == "onnx" else _nonfinite_ir(handle.ov)
    if not bad:
        return
    parts = [f"{kind} '{name}' ({_count(arr)})" for kind, name, arr in bad[:_SHOWN]]
    more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    raise RewriteError(f"{handle.name}: non-finite weights in {', '.join(parts)}{more}; "
                       "fix or re-export the model (its outputs and every fidelity figure would be meaningless)")


def _count(a: np.ndarray) -> str:
    nan = int(np.isnan(a).sum())
    inf = int(a.size - nan - np.isfinite(a).sum())
    return ", ".join(s for s in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if s)


def _float_array(t: onnx.TensorProto) -> np.ndarray | None:
    if t.data_type not in _ONNX_FLOAT:
        return None
    if t.data_type == onnx.TensorProto.BFLOAT16:  # numpy has no bfloat16: widen the bits to float32
        bits = np.frombuffer(t.raw_data, np.uint16) if t.raw_data else np.asarray(t.int32_data, np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return numpy_helper.to_array(t)


def _nonfinite_onnx(model: onnx.ModelProto) -> list[tuple[str, str, np.ndarray]]:
    bad = []
    for t in model.graph.initializer:
        a = _float_array(t)
        if a is not None and not np.isfinite(a).all():
            bad.append(("initializer", t.name, a))
    for n in model.graph.node:
        if n.op_type != "Constant":
            continue
        for attr in n.attribute:
            if attr.name == "value":
                a = _float_array(attr.t)
            elif attr.name in ("value_float", "value_floats"):
                a = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
            else:
                continue
            if a is not None and not np.isfinite(a).all():
                bad.append(("Constant", n.name or n.output[0], a))
    return bad


def _nonfinite_ir(model: Any) -> list[tuple[str, str, np.ndarray]]:
    bad = []
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        et = op.get_output_element_type(0)
        if not et.is_real():
            continue
        data = op.get_data()
        if et.get_type_name() == "bf16":  # served as raw 16-bit words
            data = (np.asarray(data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif data.dtype.kind != "f":
            continue  # f8 and other packed types: numpy cannot read them
        if not np.isfinite(data).all():
            bad.append(("constant", op.get_friendly_name(), np.asarray(data)))
    return bad


# ---- output paths --------------------------------------------------------------------------------------
def check_output(path: Path, source: Path | None, fmt: str | None, input_format: str) -> None:
    """Refuse an output path that is the input, is a folder, sits under a non-folder or cannot be written.

    ``fmt`` is the model format written there (``onnx``/``ir``; None for a report file).
    """
    if fmt is not None:
        if fmt not in ("onnx", "ir"):
            raise RewriteError(f"unknown output format '{fmt}' (use onnx or ir)")
        if fmt == "onnx" and input_format == "ir":
            raise RewriteError(f"{path}: an OpenVINO IR model cannot be saved as ONNX; use --to ir or a .xml output")
        if fmt == "ir" and path.suffix.lower() != ".xml":
            raise RewriteError(f"{path}: an IR output path must end in .xml")
        if fmt == "onnx" and path.suffix.lower() == ".xml":
            raise RewriteError(f"{path}: an .xml output needs --to ir")
    if source is not None:
        src, dst = Path(source).resolve(), path.resolve()
        same = {dst, dst.with_suffix(".bin")} if dst.suffix == ".xml" else {dst}
        if src in same or (src.suffix == ".xml" and src.with_suffix(".bin") in same):
            raise RewriteError(f"{path}: output path equals the input; choose another -o")
    if path.is_dir():
        raise RewriteError(f"{path}: is a directory; give a file name for the output")
    parent = path.parent if str(path.parent) else Path(".")
    for anc in (parent, *parent.parents):  # the first existing ancestor must be a folder
        if anc.exists():
            if not anc.is_dir():
                raise RewriteError(f"{path}: {anc} is a file, not a folder")
            break
    if not parent.exists():
        raise RewriteError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RewriteError(f"{path}: output folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise RewriteError(f"{path}: exists and is not writable")
