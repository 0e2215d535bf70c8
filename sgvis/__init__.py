"""sgvis: sound-driven StyleGAN visuals."""
import os

# OpenMP threads that spin while waiting steal the cores that audio capture, analysis and video encoding run on;
# under such contention a CPU generator ran ~30x slower (1007 ms vs 35 ms per frame, 2 cores). Passive waiting
# avoids that; set OMP_WAIT_POLICY yourself to override.  Must happen before torch is imported.
# (`sgvis live` on Linux replaces this with a short spin, see sgvis.live.prepare_openmp, unless the user set either.)
OPENMP_WAIT_FROM_USER = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# glibc serves allocations above its mmap threshold (at most 32 MB by its own adaptation) with fresh mmaps and
# returns them on free, so every frame batch's activations were page-faulted in and zeroed again: at batch 8 and
# 256x256 that was 15-18 ms of kernel time per frame, a third of the generator's cost. Keeping up to 256 MB
# allocations on the heap, and up to 512 MB of freed heap before trimming, removes it (docs/history.md). Left
# alone where the user tunes malloc through the environment (MALLOC_*, GLIBC_TUNABLES), with SGVIS_HEAP_TUNING=0,
# and on C libraries without mallopt.
MALLOC_MMAP_THRESHOLD = 256 << 20
MALLOC_TRIM_THRESHOLD = 512 << 20


def _keep_large_allocations_on_the_heap() -> bool:
    if os.environ.get("SGVIS_HEAP_TUNING") == "0":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                  MALLOC_TRIM_THRESHOLD))


HEAP_TUNED = _keep_large_allocations_on_the_heap()
