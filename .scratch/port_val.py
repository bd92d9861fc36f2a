import time, sys
from rewriter.model import ModelHandle
from fixtures import fixture_path
p = fixture_path(sys.argv[1] if len(sys.argv) > 1 else "midasnet_ts11_384x384")
t=time.perf_counter(); h = ModelHandle.load(p); print("load", time.perf_counter()-t)
t=time.perf_counter(); h.validate(); print("validate skeleton+compile", time.perf_counter()-t)
t=time.perf_counter(); c=h.clone(); print("clone", time.perf_counter()-t)
from rewriter.graph import view
t=time.perf_counter(); v=view(h); v.shape(v.outputs[0]); print("view+shapes", time.perf_counter()-t)
