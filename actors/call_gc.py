"""The garbage collector of a process that makes model calls: tuned once, when it starts.

Why: an Agent host keeps ~210,000 objects alive from its imports (Ray, the SDK, pydantic), and
every call allocates a few hundred more. With CPython's default thresholds (700, 10, 10) the
collector ran ~110 young collections per 1,000 calls and, every ~2,000 calls, a full one that
walked all 210,000 objects for ~0.14 s: ~100 us of a host's CPU per call, a tenth of it
(``docs/performance.md``). So, once per process:

- ``gc.freeze()`` moves what is alive after start-up (modules, classes, the client) out of the
  collector's sight: a full collection walks only what came later. Those objects are never
  collected, which is what a process's start-up objects are for its whole life anyway; it is
  done once only, so agents a warm host makes later stay collectable when their run ends.
- a young generation of 10,000 objects instead of 700: the objects of the calls in flight
  (50 calls, a few hundred each) no longer fill it every few calls; what they leave as cyclic
  garbage is still collected, a few MB at most later.
"""

from __future__ import annotations

import gc

import ray

YOUNG_THRESHOLD = 10_000
_tuned = False


def tune_for_calls() -> bool:
    """Tune this process's collector, once, if it is a Ray actor's; return whether it did.

    A driver or a test process that builds an Agent in-process is left as it was.
    """
    global _tuned
    if _tuned:
        return False
    try:
        in_actor = ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # Ray not initialised: not an actor
        in_actor = False
    if not in_actor:
        return False
    _tuned = True
    gc.freeze()  # no collection first: ~0.1 s of CPU on a cold start's path, for a few KB
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return True
