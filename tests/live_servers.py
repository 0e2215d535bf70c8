"""Start the servers live tests need on a machine without sound card or display: a JACK dummy server (paced,
bit-exact loopback) and Xvfb.  Each is started only if its binary exists; tests skip with a reason otherwise."""
from __future__ import annotations

import os
import shutil
import subprocess
import time


def _wait(check, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def jack_running() -> bool:
    if shutil.which("jack_lsp") is None:
        return False
    return subprocess.run(["jack_lsp"], capture_output=True, timeout=5).returncode == 0


def start_jack():
    """(process or None if one was already running, reason-if-unavailable)."""
    if shutil.which("jackd") is None:
        return None, "needs the JACK server (Debian: apt-get install jackd2)"
    if jack_running():
        return None, None
    env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1")
    os.environ["JACK_NO_START_SERVER"] = "1"      # clients must never spawn a server of their own
    proc = subprocess.Popen(["jackd", "--no-realtime", "-d", "dummy", "-r", "44100", "-p", "256", "-C", "2", "-P", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not _wait(jack_running):
        proc.kill()
        return None, "jackd did not start"
    return proc, None


def start_xvfb(display=":97"):
    if shutil.which("Xvfb") is None:
        return None, None, "needs Xvfb (Debian: apt-get install xvfb)"
    proc = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = f"/tmp/.X11-unix/X{display.lstrip(':')}"
    if not _wait(lambda: os.path.exists(socket)):
        proc.kill()
        return None, None, "Xvfb did not start"
    return proc, display, None


def loopback():
    """Route this process's playback straight into its capture, cutting the (silent) system capture.
    PortAudio's JACK port numbering differs between versions (in_0 or in_1), so the names are looked up."""
    ports = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=5).stdout.split()
    ins = sorted(p for p in ports if p.startswith("PortAudio") and ":in_" in p)
    outs = sorted(p for p in ports if p.startswith("PortAudio") and ":out_" in p)
    if not ins or not outs:
        raise RuntimeError(f"no PortAudio ports to loop back: {ports}")
    for cmd in (["jack_disconnect", "system:capture_1", ins[0]], ["jack_connect", outs[0], ins[0]]):
        subprocess.run(cmd, capture_output=True, timeout=5)
