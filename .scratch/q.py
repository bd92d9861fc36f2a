import sys, time, resource; sys.path.insert(0, ".")
from fixtures import fixture_path
from rewriter.model import ModelHandle, ov_core
from rewriter.graph.onnx_backend import skeleton
h = ModelHandle.load(str(fixture_path("midasnet_ts11_384x384")))
sk = skeleton(h.proto, None, None)
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
print("peak", peak())
t=time.perf_counter(); m = ov_core().read_model(sk.SerializeToString()); print("read", time.perf_counter()-t, peak())
t=time.perf_counter(); q = ov_core().query_model(m, "CPU"); print("query", time.perf_counter()-t, peak(), len(q), len(m.get_ops()))
t=time.perf_counter(); ov_core().compile_model(m, "CPU"); print("compile", time.perf_counter()-t, peak())
