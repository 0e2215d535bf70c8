"""OSC: every control on the bus as `/sgvis/<name>` over UDP (python-osc parses and builds the packets), and the
audio analysis sent out every frame so other tools can follow the same sound.

In (`sgvis live --osc-port 9000 [--osc-bind 127.0.0.1]`): a dot in a control's name is a slash in its address
(`/sgvis/groups/coarse 1.5`, `/sgvis/motion/camera 0.5`, `/sgvis/preset/save mine`).  Numbers take one int or
float, bools one int/float/T/F, choices one string, triggers no argument or a number (0, a button's release,
is ignored).  A message of the wrong address, type or count, or a packet that is not OSC, is counted as rejected
(--stats: controls.sources.osc) and logged once per address; the show never stops for one.

Out (`--osc-out HOST:PORT`), one message each per frame: /sgvis/audio/rms, /low, /mid, /high, /onset (floats
0-1), /beat_phase (0-1), /bpm (float, 0 while unknown); on events: /sgvis/audio/hit 1 (an onset stood out),
/sgvis/audio/beat 1 (a beat fell).
"""
from __future__ import annotations

import socket
import sys
import threading

from sgvis.control import ControlBus
from sgvis.errors import UserError

PREFIX = "/sgvis"
HIT_ON, HIT_OFF = 0.5, 0.25        # onset strength that makes a hit, and that re-arms the next one
LOGGED_MAX = 200                   # distinct bad addresses logged (then only counted)


def _osc():
    try:
        from pythonosc import osc_message_builder, osc_packet
    except ImportError:
        raise UserError("OSC needs python-osc: pip install 'sgvis[vj]' (or pip install python-osc)") from None
    return osc_packet, osc_message_builder


def parse_host_port(text: str, what: str = "--osc-out") -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 < number < 65536:
        raise UserError(f"{what} expects HOST:PORT, e.g. 127.0.0.1:9001; got {text!r}")
    try:
        socket.getaddrinfo(host, number, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror:
        raise UserError(f"{what} {text}: unknown host {host!r}") from None
    return host, number


def osc_value(control, args: list):
    """(value to send, None) or (None, why the arguments do not fit `control`)."""
    kind = control.kind
    if kind == "trigger":
        if len(args) == 0:
            return None, None
        if len(args) == 1 and isinstance(args[0], (int, float)):
            return (None, None) if args[0] else ("release", None)
        return None, f"{control.name} is a trigger: no argument or one number"
    if len(args) != 1:
        return None, f"{control.name} takes one argument, got {len(args)}"
    arg = args[0]
    if kind in ("float", "int") and (isinstance(arg, bool) or not isinstance(arg, (int, float))):
        return None, f"{control.name} takes a number, got {type(arg).__name__}"
    if kind == "bool" and not isinstance(arg, (bool, int, float)):
        return None, f"{control.name} takes 0/1 or T/F, got {type(arg).__name__}"
    if kind == "choice" and not isinstance(arg, str):
        return None, f"{control.name} takes a string, got {type(arg).__name__}"
    return arg, None


class OscControls:
    """Producer "osc": listens on `bind`:`port` (port None: no listening, port 0: any free port) and sends the
    analysis to `out` ("HOST:PORT") from on_features(), which the show calls once per frame."""

    source = "osc"

    def __init__(self, port: int | None = 9000, bind: str = "127.0.0.1", out: str | None = None,
                 announce: bool = True):
        self.packet, self.builder = _osc()
        if port is not None and not 0 <= int(port) < 65536:
            raise UserError(f"--osc-port must be 0-65535 (0: any free port), got {port}")
        self.port, self.bind = port, bind
        self.out = parse_host_port(out) if out else None
        self.announce = announce
        self.bus: ControlBus | None = None
        self.address: tuple[str, int] | None = None     # where it listens, once started
        self.sock = self.out_sock = None
        self.thread = None
        self._stop = threading.Event()
        self._logged: set[str] = set()
        self._armed = True
        self.sent = self.send_errors = 0

    # -- in --------------------------------------------------------------------------------------
    def start(self, bus: ControlBus) -> None:
        self.bus = bus
        if self.out is not None:
            self.out_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if self.port is None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.bind, int(self.port)))
        except OSError as e:
            sock.close()
            raise UserError(f"cannot listen for OSC on {self.bind}:{self.port} ({e.strerror or e})") from None
        sock.settimeout(0.1)
        self.sock, self.address = sock, sock.getsockname()
        if self.announce:
            print(f"sgvis: OSC in on udp {self.address[0]}:{self.address[1]} ({PREFIX}/<control>)", file=sys.stderr)
        self.thread = threading.Thread(target=self._serve, name="sgvis-osc", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                self.handle_packet(data)
            except Exception as e:              # never let one message end the listener
                self._reject("?", f"internal error: {e}")

    def handle_packet(self, data: bytes) -> None:
        try:
            messages = [m.message for m in self.packet.OscPacket(data).messages]
        except self.packet.ParseError as e:
            self._reject("(unreadable)", f"not an OSC packet ({e})")
            return
        for message in messages:
            self.handle_message(message.address, list(message.params))

    def handle_message(self, address: str, args: list) -> bool:
        """Send one OSC message to the bus; False (counted, logged once) when it is not a control's."""
        if not address.startswith(PREFIX + "/"):
            return self._reject(address, f"not a {PREFIX}/ address")
        name = address[len(PREFIX) + 1:].replace("/", ".")
        control = self.bus.controls.get(name)
        if control is None:
            return self._reject(address, f"no control {name!r}")
        value, error = osc_value(control, args)
        if error:
            return self._reject(address, error)
        if value == "release" and control.kind == "trigger":
            return True
        if self.bus.send(name, value, self.source):
            return True
        self._log(address, self.bus.counts[self.source].last_error)
        return False

    def _reject(self, address: str, reason: str) -> bool:
        self.bus.reject(self.source, f"{address}: {reason}")
        self._log(address, reason)
        return False

    def _log(self, address: str, reason: str) -> None:
        if address in self._logged or len(self._logged) >= LOGGED_MAX:
            return
        self._logged.add(address)
        print(f"sgvis: OSC {address} ignored: {reason} (more are counted in --stats)", file=sys.stderr)

    # -- out -------------------------------------------------------------------------------------
    def on_features(self, f) -> None:
        if self.out_sock is None:
            return
        messages = [("rms", f.rms), ("low", f.low), ("mid", f.mid), ("high", f.high), ("onset", f.onset),
                    ("beat_phase", f.beat_phase), ("bpm", f.tempo)]
        if self._armed and f.onset >= HIT_ON:
            self._armed = False
            messages.append(("hit", 1))
        elif f.onset < HIT_OFF:
            self._armed = True
        if f.beat:
            messages.append(("beat", 1))
        for name, value in messages:
            builder = self.builder.OscMessageBuilder(f"{PREFIX}/audio/{name}")
            builder.add_arg(value if isinstance(value, int) else float(value))
            try:
                self.out_sock.sendto(builder.build().dgram, self.out)
                self.sent += 1
            except OSError:                     # nobody listening, network down: the show goes on
                self.send_errors += 1

    def report(self) -> dict:
        return {"listening": list(self.address) if self.address else None, "sent": self.sent,
                "send_errors": self.send_errors}

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
            self.thread = None
        for sock in (self.sock, self.out_sock):
            if sock is not None:
                sock.close()
        self.sock = self.out_sock = None
