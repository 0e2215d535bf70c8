"""sgvis: sound-driven StyleGAN visuals."""
import os

# OpenMP threads that spin while waiting steal the cores that audio capture, analysis and video encoding run on;
# under such contention a CPU generator ran ~30x slower (1007 ms vs 35 ms per frame, 2 cores). Passive waiting
# avoids that; set OMP_WAIT_POLICY yourself to override.  Must happen before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
