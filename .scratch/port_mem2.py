import resource, sys, functools
sys.path.insert(0, ".")
def rss(): return int(open("/proc/self/statm").read().split()[1])*4096/2**20
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
import rewriter.model as M, rewriter.engine as E, rewriter.manager as G, rewriter.preflight as P, rewriter.inputs as I
def wrap(mod, name):
    f = getattr(mod, name)
    @functools.wraps(f)
    def w(*a, **k):
        print(f"> {name:20s} rss {rss():7.0f} peak {peak():7.0f}", flush=True)
        r = f(*a, **k)
        print(f"< {name:20s} rss {rss():7.0f} peak {peak():7.0f}", flush=True)
        return r
    setattr(mod, name, w)
for mod, n in [(M, "_copy_proto"), (M.ModelHandle, "save"), (M.ModelHandle, "validate"), (E, "_never_slower"), (E, "_emit"),
               (G, "_latency"), (G, "_pass_latency"), (P, "preflight"), (I, "split_inputs"), (M, "_load_onnx")]:
    wrap(mod, n)
from fixtures import fixture_path
from rewriter.cli import main
main(["--passes","asym_interp,dwpw","--no-verify","--opt","dwpw.refit=false",str(fixture_path("midasnet_ts11_384x384")),"-o","/tmp/port_out.onnx","-q"])
print("end", rss(), peak())
