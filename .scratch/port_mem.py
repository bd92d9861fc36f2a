import resource, sys, os
sys.path.insert(0, ".")
def rss(): 
    return int(open("/proc/self/statm").read().split()[1])*4096/2**20
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
from fixtures import fixture_path
import onnx
from rewriter.model import ModelHandle
p = fixture_path("midasnet_ts11_384x384")
print("start", rss(), peak())
h = ModelHandle.load(p); print("load", rss(), peak())
c = h.clone(); print("clone", rss(), peak())
c2 = h.clone(); print("clone2", rss(), peak())
del c, c2; import gc; gc.collect(); print("del", rss(), peak())
h.validate(); print("validate", rss(), peak())
