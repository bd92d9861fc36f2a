"""Model handle over ONNX and OpenVINO IR: load, validate, clone, tag, save atomically.

A pass edits ``handle.onnx`` (an ``onnx.ModelProto``, usually through onnx-graphsurgeon) or ``handle.ov`` (an
``openvino.Model``, through the openvino graph API). Everything else (running, costing, diffing) goes through
this handle so it works the same on both formats.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import InvalidGraph, RewriteError

TAG_KEY = "rewriter.pass"  # ONNX NodeProto.metadata_props key naming the pass that made the node
SITE_KEY = "rewriter.site"  # ONNX NodeProto.metadata_props key naming the site (decision) it belongs to
IR_TAGS = "rewriter_tags"  # OpenVINO model rt_info section: {friendly_name: pass name}
IR_SITES = "rewriter_sites"  # OpenVINO model rt_info section: {friendly_name: site id}

_CORE = None


def ov_core():
    """One shared ``openvino.Core`` (creating one costs ~100 ms)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


class ModelHandle:
    """One model in either format. ``format`` is ``"onnx"`` or ``"ir"``."""

    def __init__(self, model: Any, source: Path | None = None, external_data: bool = False):
        self._cow: ModelHandle | None = None  # copy-on-write: the handle whose proto this clone still shares
        self._dependents: list[weakref.ref] = []  # lazy clones sharing this handle's proto
        if isinstance(model, onnx.ModelProto):
            self.format = "onnx"
            self._onnx: onnx.ModelProto | None = model
            self.ov = None
        else:
            self.format = "ir"
            self._onnx = None
            self.ov = model
        self.source = source
        self.external_data = external_data
        self.version = 0  # bumped by every edit: the cached graph view (rewriter.graph.view) is per version
        self.view_cache: tuple | None = None  # (key, GraphView) of rewriter.graph.view
        self._donor = False  # the first lazy clone that edits takes this proto (see donate_weights)
        self._hollow = False  # the large weights' data was given away; read back from the source file on demand
        self._stat: tuple[int, int] | None = None  # (size, mtime) of the source file when it was read
        self._pristine = True  # never handed out for editing: the proto is still what the source file holds

    # ---- copy-on-write ---------------------------------------------------------------------------------
    @property
    def onnx(self) -> onnx.ModelProto | None:
        """The ONNX model, this handle's own, for editing (a lazy clone copies its source's proto on first access
        here; lazy clones of this handle take their copy first). Read through ``proto`` to avoid copies."""
        self._donor = self._pristine = False  # handed out for editing: it may no longer match its file
        if self._hollow:
            self._reload()
        if self._dependents:  # the caller may edit it in place: clones must not see that
            self.own_dependents()
        if self._cow is not None:
            src, self._cow = self._cow, None
            self._onnx = src._give()
        return self._onnx

    @onnx.setter
    def onnx(self, model: onnx.ModelProto | None) -> None:
        self.own_dependents()
        self._cow = None
        self._onnx = model
        self._donor = self._hollow = self._pristine = False

    @property
    def proto(self) -> onnx.ModelProto | None:
        """The ONNX model for reading only: a lazy clone reads its source's proto without copying it."""
        if self._cow is not None:
            return self._cow.proto
        if self._hollow:
            self._reload()
        return self._onnx

    @property
    def graph_proto(self) -> onnx.ModelProto | None:
        """The ONNX model for reading its structure only (nodes, names, attributes, shapes, small constants):
        after ``donate_weights`` its large initializers may have dims and type but no data."""
        return self._cow.graph_proto if self._cow is not None else self._onnx

    @property
    def hollow(self) -> bool:
        """True while the large weights' data was given to a clone (``proto`` reads it back from the file)."""
        return self._cow.hollow if self._cow is not None else self._hollow

    def donate_weights(self) -> bool:
        """Let the first lazy clone that edits take this proto instead of a copy of it (one copy of the weights
        fewer). This handle keeps its graph (``graph_proto``) with the large weights' data dropped, and reads them
        back from its unchanged source file when anything asks for them (``proto``, ``onnx``, saving). Only for
        an unedited handle read from one ``.onnx`` file; returns whether donation is on. The caller opts in
        when the original's weights will not be read again (``rewrite(verify=False)`` without ``measure``)."""
        self._donor = (self.format == "onnx" and self._cow is None and not self.external_data and self._pristine
                       and self.version == 0 and self._stat is not None and self._stat == _file_stat(self.source))
        return self._donor

    def _give(self) -> onnx.ModelProto:
        """The proto for a lazy clone that starts editing: a copy, or this one when this handle donates."""
        if self._donor and not self._hollow and self._stat == _file_stat(self.source):
            given, self._onnx = self._onnx, _hollow_copy(self._onnx)
            self._donor, self._hollow = False, True
            self.view_cache = None
            return given
        if self._hollow:  # the weights went to an earlier clone: this one reads its own from the file
            if self._stat != _file_stat(self.source):
                raise RewriteError(f"{self.source}: changed on disk since it was read; its weights cannot be read back")
            return _load_onnx(self.source)[0]
        return _copy_proto(self.proto)

    def _reload(self) -> None:
        """Read the weights this handle gave away back from its source file (unchanged since it was read)."""
        if self._stat != _file_stat(self.source):
            raise RewriteError(f"{self.source}: changed on disk since it was read; its weights cannot be read back")
        self._onnx, _ = _load_onnx(self.source)
        self._hollow = False
        self.view_cache = None

    @property
    def shares(self) -> ModelHandle | None:
        """The handle whose proto this lazy clone still reads (None once it has its own)."""
        return self._cow

    @property
    def shared(self) -> bool:
        """True while this handle is a lazy clone that has not copied its source's proto yet."""
        return self._cow is not None

    def own_dependents(self) -> None:
        """Give every lazy clone of this handle its own copy (call before editing this handle's proto)."""
        self._donor = False  # about to be edited: copies, not this proto, go to the clones
        deps, self._dependents = self._dependents, []
        for ref in deps:
            d = ref()
            if d is not None and d._cow is self:
                d.onnx  # noqa: B018 (the property access copies the proto)

    def touch(self) -> None:
        """Mark the model as edited (drops the cached graph view)."""
        self.version += 1
        self.view_cache = None

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, src: str | os.PathLike | onnx.ModelProto | Any) -> ModelHandle:
        """Load from a path (``.onnx`` or ``.xml``), an ``onnx.ModelProto`` or an ``openvino.Model``."""
        if isinstance(src, ModelHandle):
            return src.clone()
        if isinstance(src, onnx.ModelProto):
            return cls(_copy_proto(src))
        if isinstance(src, (str, os.PathLike)):
            return cls._load_path(Path(src))
        if type(src).__name__ == "Model" and hasattr(src, "get_ops"):
            return cls(src.clone())
        raise RewriteError(f"cannot load a model from {type(src).__name__}: give a path, onnx.ModelProto "
                           "or openvino.Model")

    @classmethod
    def _load_path(cls, path: Path) -> ModelHandle:
        if not path.exists():
            raise RewriteError(f"{path}: no such file")
        if path.is_dir():
            raise RewriteError(f"{path}: is a directory, not a model file")
        suffix = path.suffix.lower()
        if suffix == ".xml":
            return cls(_load_ir(path), source=path)
        if suffix == ".bin":
            raise RewriteError(f"{path}: give the IR's .xml file, not its .bin weights")
        if suffix not in (".onnx", ".pb", ""):
            raise RewriteError(f"{path}: unknown model type '{suffix}' (expected .onnx or OpenVINO .xml)")
        stat = _file_stat(path)
        model, external = _load_onnx(path)
        h = cls(model, source=path, external_data=external)
        h._stat = stat
        return h

    # ---- basics --------------------------------------------------------------------------------------
    def clone(self) -> ModelHandle:
        """An independent handle. ONNX clones are copy-on-write: the proto (weights included) is copied when
        the clone's ``onnx`` is first accessed or this handle is edited (``own_dependents``), not before."""
        if self.format == "onnx":
            src = self._cow or self
            c = ModelHandle(onnx.ModelProto(), self.source, self.external_data)
            c._onnx, c._cow = None, src
            src._dependents.append(weakref.ref(c))
            return c
        return ModelHandle(self.ov.clone(), self.source)

    @property
    def name(self) -> str:
        if self.source is not None:
            return str(self.source)
        return "<onnx.ModelProto>" if self.format == "onnx" else "<openvino.Model>"

    def set_onnx(self, model: onnx.ModelProto) -> None:
        """Replace the ONNX model (e.g. after ``gs.export_onnx``), keeping node tags made so far."""
        tags, sites = self.tags(), self.site_tags()
        self.onnx = model  # the setter gives lazy clones their copy of the old proto first
        self.touch()
        for node in model.graph.node:
            if node.name in tags and not _onnx_tag(node):
                _set_onnx_tag(node, tags[node.name], sites.get(node.name))

    def ov_model(self):
        """An ``openvino.Model`` of this model (converted from ONNX when needed; do not edit it)."""
        if self.format == "ir":
            return self.ov
        return ov_core().read_model(_serialize_for_ov(self.proto))

    def to_ir(self) -> ModelHandle:
        """ONNX → OpenVINO IR (an independent handle)."""
        if self.format == "ir":
            return self.clone()
        m = _convert_onnx(self.proto)
        h = ModelHandle(m, self.source)
        for node, pass_name in self.tags().items():
            for op in m.get_ops():
                if op.get_friendly_name() == node:
                    h.tag([node], pass_name)
        return h

    # ---- pass tags -----------------------------------------------------------------------------------
    def tag(self, node_names: list[str] | set[str], pass_name: str, site: str | None = None) -> None:
        """Mark nodes as made by ``pass_name`` for ``site`` (ONNX node metadata / IR model rt_info)."""
        names = set(node_names)
        if self.format == "onnx":
            self.own_dependents()
            for node in self.onnx.graph.node:
                if node.name in names:
                    _set_onnx_tag(node, pass_name, site)
        else:
            ops = {op.get_friendly_name(): op for op in self.ov.get_ops()} if names else {}
            for n in names:
                self.ov.set_rt_info(pass_name, [IR_TAGS, n])
                if site is not None:
                    self.ov.set_rt_info(site, [IR_SITES, n])
                if n in ops:
                    ops[n].get_rt_info()[TAG_KEY] = pass_name

    def tags(self) -> dict[str, str]:
        """{node name: pass name} for every tagged node."""
        if self.format == "onnx":
            return {n.name: t for n in self.graph_proto.graph.node if (t := _onnx_tag(n))}
        return self._ir_section(IR_TAGS)

    def site_tags(self) -> dict[str, str]:
        """{node name: site id} for every node tagged with the site it was made for."""
        if self.format == "onnx":
            return {n.name: t for n in self.graph_proto.graph.node if (t := _onnx_tag(n, SITE_KEY))}
        return self._ir_section(IR_SITES)

    def _ir_section(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.ov.has_rt_info([key]):
            section = self.ov.get_rt_info()[key]
            try:
                items = section.value.items() if hasattr(section, "value") else section.items()
            except AttributeError:
                items = []
            for k, v in items:
                out[str(k)] = v.astype(str) if hasattr(v, "astype") else str(v)
        return out

    # ---- inputs / outputs ----------------------------------------------------------------------------
    def inputs(self) -> list[tuple[str, list[int | None], np.dtype]]:
        """[(name, shape with None for dynamic dims, numpy dtype)] of the graph inputs."""
        if self.format == "onnx":
            g = self.graph_proto.graph
            inits = {i.name for i in g.initializer}
            out = []
            for vi in g.input:
                if vi.name in inits:
                    continue
                tt = vi.type.tensor_type
                shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in tt.shape.dim]
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.float32
                out.append((vi.name, shape, np.dtype(dtype)))
            return out
        out = []
        for p in self.ov.inputs:
            ps = p.get_partial_shape()
            shape = [d.get_length() if d.is_static else None for d in ps]
            out.append((p.get_any_name(), shape, np.dtype(p.get_element_type().to_dtype())))
        return out

    def outputs(self) -> list[str]:
        if self.format == "onnx":
            return [o.name for o in self.graph_proto.graph.output]
        return [o.get_any_name() for o in self.ov.outputs]

    def op_types(self) -> dict[str, int]:
        """Operation census {op type: count} from the graph view; constants, inputs and outputs excluded."""
        from .graph import view

        counts: dict[str, int] = {}
        for n in view(self).nodes:
            if n.kind not in ("constant", "input", "output"):  # weights and graph boundaries are not operations
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return dict(sorted(counts.items()))

    # ---- validation ----------------------------------------------------------------------------------
    def validate(self, compile_cpu: bool = True) -> None:
        """Check the graph is well formed: onnx.checker + strict shape inference / ov type inference, and an
        OpenVINO CPU compile.

        ONNX models are checked on their weight-free skeleton (large initializers declared as inputs): the
        checker and shape inference need no weight values, and the compile checks op support and shapes, so a
        400 MB model costs a few MB to check. Large initializers get a cheap data-size check instead.
        """
        if self.format == "onnx":
            from .graph.onnx_backend import skeleton

            sk = skeleton(self.proto, None, None)
            try:
                _check_weight_sizes(self.proto)
                onnx.checker.check_model(sk)
                onnx.shape_inference.infer_shapes(sk, check_type=True, strict_mode=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
                raise InvalidGraph(f"{self.name}: invalid ONNX graph: {_first_line(e)}") from e
            if compile_cpu:
                _compile_check(sk, self.name)
        else:
            try:
                self.ov.validate_nodes_and_infer_types()
                if compile_cpu:
                    ov_core().compile_model(self.ov, "CPU")
            except RuntimeError as e:
                raise InvalidGraph(f"{self.name}: invalid OpenVINO model: {_first_line(e)}") from e

    # ---- saving --------------------------------------------------------------------------------------
    def default_output(self, to: str | None = None) -> Path:
        if self.source is None:
            raise RewriteError("the model was not loaded from a file: give an output path (-o)")
        fmt = to or self.format
        stem = self.source.name[: -len(self.source.suffix)] if self.source.suffix else self.source.name
        return self.source.with_name(f"{stem}.rewritten.{'xml' if fmt == 'ir' else 'onnx'}")

    def save(self, path: str | os.PathLike, to: str | None = None, compress_to_fp16: bool = False) -> Path:
        """Write atomically (temp files in the target folder, then rename). ``to``: ``onnx``/``ir``."""
        path = Path(path)
        fmt = to or self.format
        if fmt not in ("onnx", "ir"):
            raise RewriteError(f"unknown output format '{fmt}' (use onnx or ir)")
        if fmt == "onnx" and self.format == "ir":
            raise RewriteError("an OpenVINO IR model cannot be saved as ONNX; use --to ir or a .xml output")
        if fmt == "ir" and path.suffix.lower() != ".xml":
            raise RewriteError(f"{path}: an IR output path must end in .xml")
        if fmt == "onnx" and path.suffix.lower() == ".xml":
            raise RewriteError(f"{path}: an .xml output needs --to ir")
        check_output_path(path, self.source)
        with _atomic_dir(path.parent) as tmp:
            if fmt == "onnx":
                t = tmp / path.name
                big = approx_size(self.proto) > 1_800_000_000
                if self.external_data or big:  # onnx.save converts the proto in place: save a copy
                    onnx.save(_copy_proto(self.proto), str(t), save_as_external_data=True,
                              all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)
                else:
                    write_onnx(self.proto, t)
                moved = [(t, path)]
                if (tmp / (path.name + ".data")).exists():
                    moved.insert(0, (tmp / (path.name + ".data"), path.with_name(path.name + ".data")))
            else:
                import openvino as ov

                t = tmp / path.name
                model = _convert_onnx(self.proto) if self.format == "onnx" else self.ov
                if self.format == "onnx":
                    for node, pass_name in self.tags().items():
                        model.set_rt_info(pass_name, [IR_TAGS, node])
                    for node, site in self.site_tags().items():
                        model.set_rt_info(site, [IR_SITES, node])
                ov.save_model(model, str(t), compress_to_fp16=compress_to_fp16)
                moved = [(t.with_suffix(".bin"), path.with_suffix(".bin")), (t, path)]
            for a, b in moved:  # weights first, so a visible .xml/.onnx always has its data
                os.replace(a, b)
        return path


def check_output_path(path: Path, source: Path | None) -> None:
    """Refuse output paths that would overwrite the input or cannot be written."""
    if source is not None:
        src = Path(source).resolve()
        dst = path.resolve()
        same = {dst, dst.with_suffix(".bin")} if dst.suffix == ".xml" else {dst}
        if src in same or (src.suffix == ".xml" and src.with_suffix(".bin") in same):
            raise RewriteError(f"{path}: output path equals the input; choose another -o")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise RewriteError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise RewriteError(f"{path}: output folder {parent} is not writable")


@contextmanager
def _atomic_dir(parent: Path) -> Iterator[Path]:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".rewrite-tmp-", dir=parent))
    except OSError as e:
        raise RewriteError(f"cannot write to {parent}: {e.strerror}") from e
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- ONNX helpers ----------------------------------------------------------------------------------------
def _check_weight_sizes(model: onnx.ModelProto) -> None:
    """Raise ValueError when an initializer's raw data does not match its dims and type (the checker's test
    for the weights a skeleton leaves out)."""
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or not t.raw_data or t.data_type == onnx.TensorProto.STRING:
            continue
        n = int(np.prod(t.dims)) if t.dims else 1
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            need = (n + 1) // 2
        else:
            need = n * itemsize
        if len(t.raw_data) != need:
            raise ValueError(f"initializer '{t.name}' has {len(t.raw_data)} bytes of data, its dims and type "
                             f"need {need}")


def _file_stat(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_size, st.st_mtime_ns)


def _hollow_copy(m: onnx.ModelProto) -> onnx.ModelProto:
    """``m`` with its large initializers reduced to name, dims and type (the structure, a few MB)."""
    from .graph.onnx_backend import SMALL

    h = onnx.ModelProto()
    _copy_fields(m, h, "graph")
    _copy_fields(m.graph, h.graph, "initializer")
    for t in m.graph.initializer:
        if int(np.prod(t.dims)) > SMALL:
            h.graph.initializer.add(name=t.name, dims=list(t.dims), data_type=t.data_type)
        else:
            h.graph.initializer.add().CopyFrom(t)
    return h


def _copy_proto(m: onnx.ModelProto) -> onnx.ModelProto:
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def _onnx_tag(node: onnx.NodeProto, key: str = TAG_KEY) -> str | None:
    for p in node.metadata_props:
        if p.key == key:
            return p.value
    return None


def _set_onnx_tag(node: onnx.NodeProto, pass_name: str, site: str | None = None) -> None:
    for key, value in ((TAG_KEY, pass_name), (SITE_KEY, site)):
        if value is None:
            continue
        for p in node.metadata_props:
            if p.key == key:
                p.value = value
                break
        else:
            e = node.metadata_props.add()
            e.key, e.value = key, value


def _load_onnx(path: Path) -> tuple[onnx.ModelProto, bool]:
    data = path.read_bytes()
    if not data:
        raise RewriteError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except Exception as e:
        raise RewriteError(f"{path}: not a valid ONNX model (truncated or corrupt protobuf: "
                           f"{_first_line(e)})") from e
    if not model.HasField("graph") or not model.graph.node:
        raise RewriteError(f"{path}: not an ONNX model (no graph nodes)")
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if external:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as e:
            raise RewriteError(f"{path}: cannot read its external data: {_first_line(e)}") from e
    from .graph.onnx_backend import skeleton

    try:  # on the weight-free skeleton: the checker needs no weight values (their sizes are checked apart)
        _check_weight_sizes(model)
        onnx.checker.check_model(skeleton(model, None, None))
    except (onnx.checker.ValidationError, ValueError) as e:
        raise RewriteError(f"{path}: invalid ONNX model: {_first_line(e)}") from e
    return model, external


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload_size: int) -> bytes:
    """Key and length of a length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(payload_size)


def _copy_fields(src, dst, skip: str) -> None:
    for fd, val in src.ListFields():
        if fd.name == skip:
            continue
        if hasattr(val, "extend"):  # repeated field (FieldDescriptor.label is gone from newer protobuf)
            getattr(dst, fd.name).extend(val)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(val)
        else:
            setattr(dst, fd.name, val)


def write_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as one ``.onnx`` file, serializing one initializer at a time.

    ``onnx.save`` builds the whole serialized model in memory (one more copy of the weights); protobuf parses
    a message's fields in any order, so the graph's initializers can be written last, each on its own.
    """
    head, graph = onnx.ModelProto(), onnx.GraphProto()
    _copy_fields(model, head, "graph")
    _copy_fields(model.graph, graph, "initializer")
    write_onnx_parts(head, graph, model.graph.initializer, path)


def write_onnx_parts(head: onnx.ModelProto, graph: onnx.GraphProto, inits, path: Path) -> None:
    """Write the ONNX model ``head`` (no graph) + ``graph`` (no initializers) + ``inits`` (initializer protos,
    serialized one at a time, last) as one ``.onnx`` file."""
    n_graph = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
    n_init = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
    sizes = [t.ByteSize() for t in inits]
    graph_bytes = graph.SerializeToString()
    total = len(graph_bytes) + sum(len(_field(n_init, s)) + s for s in sizes)
    with open(path, "wb") as f:
        f.write(head.SerializeToString())
        f.write(_field(n_graph, total))
        f.write(graph_bytes)
        for t, size in zip(inits, sizes):
            f.write(_field(n_init, size))
            f.write(t.SerializeToString())


def _compile_check(sk: onnx.ModelProto, name: str) -> None:
    """OpenVINO reads the skeleton (frontend conversion, type inference) and its CPU plugin must support every
    op (``query_model`` runs the plugin's transformations without allocating weights or activations)."""
    try:
        m = ov_core().read_model(sk.SerializeToString())
        supported = ov_core().query_model(m, "CPU")
    except RuntimeError as e:
        raise InvalidGraph(f"{name}: OpenVINO cannot compile it: {_first_line(e)}") from e
    missing = [op.get_friendly_name() for op in m.get_ops() if op.get_friendly_name() not in supported]
    if missing:
        raise InvalidGraph(f"{name}: OpenVINO cannot compile it: the CPU plugin does not support "
                           f"{', '.join(missing[:5])}")


def approx_size(model: onnx.ModelProto) -> int:
    """Serialized size of ``model`` from its initializers' dims (``ByteSize`` walks the whole proto: ~1 s for
    400 MB)."""
    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        total += n * (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
                      if t.data_type != onnx.TensorProto.STRING else 1)
    return total + 64 * len(model.graph.node)


def _serialize_for_ov(model: onnx.ModelProto) -> bytes | str:
    if approx_size(model) < 1_800_000_000:
        return model.SerializeToString()
    d = tempfile.mkdtemp(prefix="rewrite-ov-")
    p = Path(d) / "m.onnx"
    onnx.save(model, str(p), save_as_external_data=True)
    return str(p)


def _convert_onnx(model: onnx.ModelProto):
    """ONNX → ``openvino.Model`` the way users convert (``ov.convert_model``: constants folded)."""
    import openvino as ov

    if approx_size(model) > 1_800_000_000:  # external data stays mmapped by OpenVINO: keep its folder
        d = tempfile.mkdtemp(prefix="rewrite-ir-")
        p = Path(d) / "m.onnx"
        onnx.save(_copy_proto(model), str(p), save_as_external_data=True)
        return ov.convert_model(str(p))
    with tempfile.TemporaryDirectory(prefix="rewrite-ir-") as d:
        p = Path(d) / "m.onnx"
        onnx.save(model, str(p))
        return ov.convert_model(str(p)).clone()


# ---- IR helpers ------------------------------------------------------------------------------------------
def _load_ir(xml: Path):
    bin_path = xml.with_suffix(".bin")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise RewriteError(f"{xml}: not an OpenVINO IR (XML parse error: {e})") from e
    if root.tag != "net":
        raise RewriteError(f"{xml}: not an OpenVINO IR (root element <{root.tag}>, expected <net>)")
    need, last = 0, None
    for layer in root.iter("layer"):
        if layer.get("type") == "Const":
            data = layer.find("data")
            if data is not None and data.get("offset") is not None:
                end = int(data.get("offset")) + int(data.get("size", 0))
                if end > need:
                    need, last = end, layer.get("name")
    if need:
        if not bin_path.exists():
            raise RewriteError(f"{xml}: its weights file {bin_path.name} is missing")
        have = bin_path.stat().st_size
        if have < need:
            raise RewriteError(f"{bin_path}: weights file is short ({have} bytes, layer '{last}' needs {need})")
    try:
        return ov_core().read_model(str(xml))
    except Exception as e:
        raise RewriteError(f"{xml}: OpenVINO cannot read it: {_first_line(e)}") from e


def ir_const(node) -> np.ndarray | None:
    """Value of an IR Constant, following a Convert (FP16-compressed weights); None if not constant."""
    from .graph.openvino_backend import node_const

    return node_const(node)


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__
