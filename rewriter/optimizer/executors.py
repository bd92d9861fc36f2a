"""Where candidate evaluations run: in this process, in local worker processes, or on a Ray cluster.

Every executor has ``map(points, split) -> list[Evaluation]`` (results in the order of ``points``),
``imap`` (the same, yielded in order as they finish) and ``close()``. Workers rebuild the search space once
from ``space.spec()`` (a picklable recipe) and then receive only points, so a model is loaded once per
worker, not once per candidate.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import RewriteError
from .search import Evaluation, Point, SearchSpace


def safe_evaluate(space: SearchSpace, point: Point, split: str) -> Evaluation:
    """``space.evaluate`` with a failure turned into an Evaluation that the search never selects."""
    try:
        return space.evaluate(point, split)
    except RewriteError as e:
        return Evaluation(error=str(e))
    except Exception as e:  # a candidate that crashes a pass must not end the search: it is reported instead
        return Evaluation(error=f"{type(e).__name__}: {e}", info={"traceback": traceback.format_exc(limit=5)})


class InProcessExecutor:
    """Evaluate one point after the other in this process (the default)."""

    name = "in-process"

    def __init__(self, space: SearchSpace):
        self.space = space
        self.workers = 1

    def imap(self, points: Sequence[Point], split: str = "validation") -> Iterator[Evaluation]:
        """Evaluations in the order of ``points``, each as soon as it is done (for the progress bar)."""
        return (safe_evaluate(self.space, p, split) for p in points)

    def map(self, points: Sequence[Point], split: str = "validation") -> list[Evaluation]:
        return list(self.imap(points, split))

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- local processes ------------------------------------------------------------------------------------
_WORKER_SPACE: SearchSpace | None = None


def _worker_init(spec: Any) -> None:
    global _WORKER_SPACE
    from .space import build_space

    _quiet(spec)
    _WORKER_SPACE = build_space(spec)


def _quiet(spec: Any) -> None:
    """A worker that may quantize prints nothing of NNCF's (the parent reports progress)."""
    if "int8" in getattr(spec, "passes", ()):
        from ..progress import silence_nncf

        silence_nncf()


def _worker_eval(args: tuple[Point, str]) -> Evaluation:
    assert _WORKER_SPACE is not None, "worker not initialised"
    return safe_evaluate(_WORKER_SPACE, *args)


class ProcessExecutor:
    """``workers`` local processes (spawned, so no forked OpenVINO state), each holding its own space."""

    name = "processes"

    def __init__(self, space: SearchSpace, workers: int):
        import concurrent.futures as cf
        import multiprocessing as mp

        if workers < 1:
            raise RewriteError(f"--workers {workers}: must be at least 1")
        self.workers = workers
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                           initializer=_worker_init, initargs=(space.spec(),))

    def imap(self, points: Sequence[Point], split: str = "validation") -> Iterator[Evaluation]:
        return self.pool.map(_worker_eval, [(p, split) for p in points])

    def map(self, points: Sequence[Point], split: str = "validation") -> list[Evaluation]:
        return list(self.imap(points, split))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- Ray ------------------------------------------------------------------------------------------------
class RayExecutor:
    """Evaluations on an existing Ray cluster (``address``: "auto", "ray://host:10001", "host:6379").

    One actor per worker holds a space built from the spec; points go round-robin through Ray's ActorPool.
    The package must be importable on the cluster's workers (same environment), as Ray requires.
    """

    name = "ray"

    def __init__(self, space: SearchSpace, address: str, workers: int = 0):
        try:
            import ray
            from ray.util import ActorPool
        except ImportError as e:
            raise RewriteError("--ray needs the optional extra: pip install 'midas-npu-rewriter[ray]'") from e
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                         include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RewriteError(f"--ray {address}: cannot connect to a Ray cluster there ({e})") from e
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = n
        actor_cls = ray.remote(num_cpus=1)(_SpaceActor)
        spec_ref = ray.put(space.spec())
        self.actors = [actor_cls.remote(spec_ref) for _ in range(n)]
        self.pool = ActorPool(self.actors)

    def imap(self, points: Sequence[Point], split: str = "validation") -> Iterator[Evaluation]:
        return self.pool.map(lambda a, p: a.evaluate.remote(p, split), list(points))

    def map(self, points: Sequence[Point], split: str = "validation") -> list[Evaluation]:
        return list(self.imap(points, split))

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
        if self._owns:
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SpaceActor:
    """A Ray actor holding one search space."""

    def __init__(self, spec: Any):
        from .space import build_space

        _quiet(spec)
        self.space = build_space(spec)

    def evaluate(self, point: Point, split: str) -> Evaluation:
        return safe_evaluate(self.space, point, split)


def make_executor(space: SearchSpace, *, workers: int = 0, ray_address: str | None = None
                  ) -> InProcessExecutor | ProcessExecutor | RayExecutor:
    """In-process by default; ``workers`` > 0 local processes; ``ray_address`` a Ray cluster."""
    if ray_address:
        return RayExecutor(space, ray_address, workers)
    if workers and workers > 0:
        return ProcessExecutor(space, workers)
    return InProcessExecutor(space)
