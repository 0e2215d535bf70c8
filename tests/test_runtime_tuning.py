"""Process-wide tuning done on `import sgvis`: large allocations stay on the heap (no page faults per frame)."""
import subprocess
import sys
import textwrap

import pytest

# Allocate and free a 40 MB float tensor (above glibc's adaptive mmap ceiling of 32 MB) 20 times and count the
# minor page faults of the last 15 rounds: without the tuning each round maps fresh pages and faults every one of
# them in (10240 4-kB pages a round); with it the memory is reused (this VM still counted about a quarter of the
# pages a round, the kernel's own sampling faults).
PROBE = textwrap.dedent("""
    import resource, sys
    import sgvis, torch
    def round_():
        x = torch.ones(10 << 20)
        del x
    for _ in range(5):
        round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(15):
        round_()
    print(sgvis.HEAP_TUNED, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(env_extra: dict) -> tuple[bool, int]:
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("SGVIS_HEAP_TUNING", None)
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is for glibc (Linux)")
def test_import_keeps_large_allocations_on_the_heap():
    tuned, faults = _faults({})
    off, faults_off = _faults({"SGVIS_HEAP_TUNING": "0"})
    assert tuned and not off
    pages_per_round = (40 << 20) // 4096
    assert faults_off > 5 * pages_per_round          # untuned: each round faults its pages in again
    assert faults < faults_off / 2                    # tuned: the rounds reuse the same memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is for glibc (Linux)")
def test_user_malloc_settings_are_left_alone():
    tuned, _ = _faults({"MALLOC_ARENA_MAX": "2"})
    assert not tuned
