"""Run `sgvis ARGS...` with one function slowed down, so that tests/test_faults.py can send a signal at a known
point of the run.

    python fault_driver.py MARKER TARGET SECONDS sgvis-args...

TARGET is "module:Class.method" or "module:function".  Each call runs the original, then creates the file MARKER
(the point has been reached: what the call wrote exists) and sleeps SECONDS, long enough for the test's signal to
arrive while the run is at that point.  TARGET "-" runs sgvis unchanged.
"""
import importlib
import os
import sys
import time


def slow_down(target: str, marker: str, seconds: float) -> None:
    module_name, _, attr = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)

    def slowed(*args, **kwargs):
        result = original(*args, **kwargs)
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
        time.sleep(seconds)
        return result

    setattr(owner, name, slowed)


def main() -> int:
    marker, target, seconds, *argv = sys.argv[1:]
    if target != "-":
        slow_down(target, marker, float(seconds))
    from sgvis.cli import main as sgvis_main
    return sgvis_main(argv)


if __name__ == "__main__":
    sys.exit(main())
