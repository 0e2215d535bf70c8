"""MIDI: a controller's knobs, faders and pads as controls, through a YAML mapping (mido parses the messages,
python-rtmidi talks to the ports), and MIDI clock in as tempo.

    # sgvis MIDI map (sgvis midi-learn writes one)
    cc:
      - {cc: 1, control: intensity, range: [0, 4], curve: linear}     # channel: 1-16 (default: any)
      - {cc: 2, control: groups.coarse, curve: square}                # range: the control's own by default
      - {cc: 64, control: freeze}                                      # bools: on at 64 and above
    notes:
      - {note: 36, action: freeze}                                     # a bool toggles
      - {note: 37, action: reseed}                                     # a trigger fires
      - {note: 38, action: preset, value: calm}                        # others are set to `value`
      - {note: 39, action: tap}

Curves map the CC value 0-127 to 0-1 before the range: linear, square (fine control at the low end), sqrt (at
the high end), exp (equal ratios per step; the range must be above 0).  MIDI clock: every 24 clocks (a quarter
note) taps the tempo, so the show follows the clock's BPM and beat.

`sgvis live --midi NAME|all [--midi-map FILE]`; a controller unplugged mid-show is shown in the HUD and opened
again when it comes back.  `sgvis midi-learn --out FILE` writes a map by moving each knob in turn.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from sgvis.control import ControlBus, standard_controls
from sgvis.errors import UserError

CURVES = ("linear", "square", "sqrt", "exp")
CLOCKS_PER_BEAT = 24
INSTALL = "pip install 'sgvis[vj]' (mido and python-rtmidi)"


def shape(curve: str, x: float, lo: float, hi: float) -> float:
    """CC position x in [0, 1] -> a value in [lo, hi] along `curve`."""
    if curve == "square":
        x = x * x
    elif curve == "sqrt":
        x = math.sqrt(x)
    elif curve == "exp":
        return lo * (hi / lo) ** x
    return lo + (hi - lo) * x


@dataclass
class CCMap:
    cc: int
    control: str
    lo: float | None = None
    hi: float | None = None
    curve: str = "linear"
    channel: int | None = None          # 1-16; None: any


@dataclass
class NoteMap:
    note: int
    action: str
    value: object = None
    channel: int | None = None


class MidiMap:
    """CC and note mappings onto the bus, and MIDI clock as tap tempo."""

    def __init__(self, cc: list[CCMap] = (), notes: list[NoteMap] = ()):
        self.cc, self.notes = list(cc), list(notes)
        self._clocks = 0
        self._was_on: dict[int, bool] = {}

    # -- reading and writing -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> "MidiMap":
        from sgvis.config import read_yaml
        return cls.from_dict(read_yaml(path, "MIDI map"), where=str(path))

    @classmethod
    def from_dict(cls, data, where: str = "MIDI map") -> "MidiMap":
        controls = {c.name: c for c in standard_controls()}
        if not isinstance(data, dict) or set(data) - {"cc", "notes"}:
            raise UserError(f"{where}: a MIDI map has the lists 'cc' and 'notes'")
        cc, notes = [], []
        for i, entry in enumerate(data.get("cc") or [], 1):
            where_i = f"{where}: cc entry {i}"
            e = _entry(entry, where_i, {"cc", "control", "range", "curve", "channel"}, ("cc", "control"))
            control = controls.get(e["control"])
            if control is None or control.kind not in ("float", "int", "bool", "trigger"):
                raise UserError(f"{where_i}: {e['control']!r} is not a control a CC can drive "
                                f"(numbers, bools, triggers: {', '.join(n for n, c in controls.items() if c.kind in ('float', 'int', 'bool', 'trigger'))})")
            lo, hi = control.lo, control.hi
            if "range" in e:
                r = e["range"]
                if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r)):
                    raise UserError(f"{where_i}: range is [low, high], got {r!r}")
                lo, hi = float(r[0]), float(r[1])
            curve = e.get("curve", "linear")
            if curve not in CURVES:
                raise UserError(f"{where_i}: curve must be one of {', '.join(CURVES)}, got {curve!r}")
            if curve == "exp" and not (lo and hi and lo > 0 and hi > 0):
                raise UserError(f"{where_i}: curve exp needs a range above 0, got [{lo}, {hi}]")
            cc.append(CCMap(_number(e["cc"], 0, 127, where_i, "cc"), e["control"], lo, hi, curve,
                            _channel(e, where_i)))
        for i, entry in enumerate(data.get("notes") or [], 1):
            where_i = f"{where}: notes entry {i}"
            e = _entry(entry, where_i, {"note", "action", "value", "channel"}, ("note", "action"))
            control = controls.get(e["action"])
            if control is None:
                raise UserError(f"{where_i}: no control {e['action']!r} (controls: {', '.join(controls)})")
            if control.kind not in ("bool", "trigger") and "value" not in e:
                raise UserError(f"{where_i}: {e['action']} needs a value (e.g. value: calm)")
            notes.append(NoteMap(_number(e["note"], 0, 127, where_i, "note"), e["action"], e.get("value"),
                                 _channel(e, where_i)))
        return cls(cc, notes)

    def to_dict(self) -> dict:
        cc = []
        for m in self.cc:
            d = {"cc": m.cc, "control": m.control}
            if m.lo is not None:
                d["range"] = [m.lo, m.hi]
            d["curve"] = m.curve
            if m.channel is not None:
                d["channel"] = m.channel
            cc.append(d)
        notes = []
        for n in self.notes:
            d = {"note": n.note, "action": n.action}
            if n.value is not None:
                d["value"] = n.value
            if n.channel is not None:
                d["channel"] = n.channel
            notes.append(d)
        return {"cc": cc, "notes": notes}

    def save(self, path: str) -> None:
        text = "# sgvis MIDI map (sgvis live --midi-map FILE); see docs/vj.md\n" + yaml.safe_dump(
            self.to_dict(), sort_keys=False, default_flow_style=None)
        Path(path).write_text(text)

    # -- messages -> bus ----------------------------------------------------------------------------
    def handle(self, msg, bus: ControlBus, source: str = "midi") -> bool:
        """Apply one mido message; True when it meant something (a mapped CC or note, a clock beat)."""
        kind = msg.type
        if kind == "clock":
            self._clocks += 1
            if self._clocks >= CLOCKS_PER_BEAT:
                self._clocks = 0
                return bus.send("tap", None, source)
            return False
        if kind in ("start", "songpos"):
            self._clocks = CLOCKS_PER_BEAT - 1            # the next clock is a beat
            return False
        channel = getattr(msg, "channel", 0) + 1
        done = False
        if kind == "control_change":
            for m in self.cc:
                if m.cc == msg.control and m.channel in (None, channel):
                    done = self._send_cc(m, msg.value, bus, source) or done
        elif kind == "note_on" and msg.velocity > 0:
            for n in self.notes:
                if n.note == msg.note and n.channel in (None, channel):
                    done = self._send_note(n, bus, source) or done
        return done

    def _send_cc(self, m: CCMap, value: int, bus, source) -> bool:
        control = bus.controls.get(m.control)
        if control is None:
            return False
        on = value >= 64
        if control.kind == "bool":
            return bus.send(m.control, on, source)
        if control.kind == "trigger":                       # a button sending CC: fire on press only
            was = self._was_on.get(m.cc, False)
            self._was_on[m.cc] = on
            return bus.send(m.control, None, source) if on and not was else False
        return bus.send(m.control, shape(m.curve, value / 127.0, m.lo, m.hi), source)

    def _send_note(self, n: NoteMap, bus, source) -> bool:
        control = bus.controls.get(n.action)
        if control is None:
            return False
        if control.kind == "bool" and n.value is None:
            return bus.toggle(n.action, source)
        return bus.send(n.action, n.value, source)


def _entry(entry, where, allowed, required) -> dict:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping like {{{required[0]}: 1, {required[1]}: ...}}")
    unknown = set(entry) - allowed
    if unknown:
        raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} (keys: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in entry:
            raise UserError(f"{where}: missing {key!r}")
    return entry


def _number(value, lo, hi, where, what) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{where}: {what} must be a whole number {lo}-{hi}, got {value!r}")
    return value


def _channel(entry, where) -> int | None:
    return None if entry.get("channel") is None else _number(entry["channel"], 1, 16, where, "channel")


# -- ports ----------------------------------------------------------------------------------------------
def _mido():
    try:
        import mido
    except ImportError:
        raise UserError(f"MIDI needs mido and python-rtmidi: {INSTALL}") from None
    return mido


def port_functions():
    """(list input names, open an input with a callback) from mido's backend; one line when it is missing."""
    mido = _mido()
    try:
        mido.get_input_names()
    except ImportError:
        raise UserError(f"MIDI ports need python-rtmidi: {INSTALL}") from None
    except Exception as e:             # no ALSA sequencer, CoreMIDI refused...
        raise UserError(f"cannot list MIDI ports ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    return mido.get_input_names, lambda name, callback: mido.open_input(name, callback=callback)


def match_ports(wanted: str, names: list[str]) -> list[str]:
    if wanted == "all":
        return list(names)
    exact = [n for n in names if n == wanted]
    return exact or [n for n in names if wanted.lower() in n.lower()][:1]


class MidiControls:
    """Producer "midi": the mapped messages of one input port (or all) to the bus; unplugged ports are shown in
    `status` (the HUD) and reopened when they come back.  `list_inputs` and `open_input` are the boundary to the
    OS (mido's rtmidi backend by default)."""

    source = "midi"

    def __init__(self, port: str = "all", map_path: str | None = None, list_inputs=None, open_input=None,
                 poll_s: float = 1.0):
        self.map = MidiMap.load(map_path) if map_path else MidiMap()
        if list_inputs is None or open_input is None:
            list_inputs, open_input = port_functions()
        self.list_inputs, self.open_input = list_inputs, open_input
        self.wanted, self.poll_s = port, poll_s
        names = list(self.list_inputs())
        self.names = match_ports(port, names)
        if not self.names and port != "all":
            raise UserError(f"no MIDI input matches {port!r}; inputs: {', '.join(names) or 'none'}")
        if not self.names:
            print("sgvis: warning: no MIDI inputs yet; sgvis opens them when they are plugged in", file=sys.stderr)
        self.ports: dict[str, object] = {}
        self._opened: set[str] = set()
        self.status = ""
        self.lost = self.reconnects = 0
        self.bus: ControlBus | None = None
        self._stop = threading.Event()
        self.thread = None

    def start(self, bus: ControlBus) -> None:
        self.bus = bus
        self._check()
        self.thread = threading.Thread(target=self._watch, name="sgvis-midi", daemon=True)
        self.thread.start()

    def on_message(self, msg) -> None:
        if self.bus is not None:
            self.map.handle(msg, self.bus, self.source)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._check()

    def _check(self) -> None:
        """Close ports that vanished, open wanted ones that are there (again)."""
        try:
            present = list(self.list_inputs())
        except Exception:
            return
        if self.wanted == "all":
            self.names = sorted(set(self.names) | set(present))
        gone = [n for n in self.ports if n not in present]
        for name in gone:
            port = self.ports.pop(name)
            try:
                port.close()
            except Exception:
                pass
            self.lost += 1
        for name in self.names:
            if name in present and name not in self.ports:
                try:
                    self.ports[name] = self.open_input(name, self.on_message)
                except Exception:
                    continue
                if name in self._opened:
                    self.reconnects += 1
                self._opened.add(name)
        missing = self._missing()
        self.status = f"MIDI {missing[0][:30]} lost - reconnecting" if missing else ""

    def _missing(self) -> list[str]:
        return [n for n in self.names if n not in self.ports]

    def report(self) -> dict:
        return {"ports": sorted(self.ports), "lost": self.lost, "reconnects": self.reconnects}

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)
            self.thread = None
        for port in self.ports.values():
            try:
                port.close()
            except Exception:
                pass
        self.ports = {}


# -- midi-learn ------------------------------------------------------------------------------------------
LEARN_DEFAULT = ("intensity", "speed", "truncation", "groups.coarse", "groups.mid", "groups.fine", "motion.amount",
                 "crossfade", "freeze", "reseed", "tap")


def learn(targets: list[str], receive, say=print, wait_s: float = 10.0) -> MidiMap:
    """Build a map by asking for each target in turn (a control, or preset:NAME) and taking the first CC or note
    that arrives within `wait_s` (nothing: skipped).  `receive(timeout)` returns a mido message or None.
    A CC or note already taken is ignored (a knob keeps sending while it turns)."""
    controls = {c.name: c for c in standard_controls()}
    result, taken = MidiMap(), set()
    for target in targets:
        action, _, value = target.partition(":")
        control = controls.get(action)
        if control is None:
            raise UserError(f"midi-learn: no control {action!r} (controls: {', '.join(controls)})")
        numeric = control.kind in ("float", "int")
        if control.kind == "choice" and not value:
            raise UserError(f"midi-learn: {action} needs a value, e.g. {action}:calm")
        say(f"{target}: {'move a knob or fader' if numeric else 'press a pad or button'} ({wait_s:g} s)")
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            msg = receive(max(left, 0.0)) if left > 0 else None
            if msg is None:
                say(f"  {target}: skipped")
                break
            channel = getattr(msg, "channel", 0) + 1
            if msg.type == "control_change" and ("cc", msg.channel, msg.control) not in taken:
                taken.add(("cc", msg.channel, msg.control))
                result.cc.append(CCMap(msg.control, action, control.lo, control.hi, "linear", channel))
                say(f"  {target}: CC {msg.control} on channel {channel}")
                break
            if msg.type == "note_on" and msg.velocity > 0 and not numeric \
                    and ("note", msg.channel, msg.note) not in taken:
                taken.add(("note", msg.channel, msg.note))
                result.notes.append(NoteMap(msg.note, action, value or None, channel))
                say(f"  {target}: note {msg.note} on channel {channel}")
                break
    return result


def cmd_midi_learn(args) -> int:
    from sgvis.outputs.files import check_output_path
    list_inputs, _ = port_functions()
    names = list(list_inputs())
    if args.list:
        print("\n".join(names) if names else "no MIDI inputs")
        return 0
    check_output_path(args.out, args.overwrite)
    targets = [t.strip() for t in args.controls.split(",") if t.strip()] if args.controls else list(LEARN_DEFAULT)
    chosen = match_ports(args.port, names)
    if not chosen:
        raise UserError(f"no MIDI input matches {args.port!r}; inputs: {', '.join(names) or 'none'}")
    mido = _mido()
    with mido.open_input(chosen[0]) as port:
        def receive(timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                msg = port.poll()
                if msg is not None:
                    return msg
                time.sleep(0.005)
            return None
        print(f"learning from {chosen[0]}")
        midi_map = learn(targets, receive, wait_s=args.wait)
    midi_map.save(args.out)
    print(f"wrote {args.out}: {len(midi_map.cc)} CC and {len(midi_map.notes)} note mappings")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("midi-learn", help="write a MIDI map by moving each knob in turn",
                              description="Asks for each control in turn; move a knob (numbers) or press a pad "
                                          "(freeze, reseed, tap, preset:NAME) within --wait seconds, or wait to "
                                          "skip it.  The map is YAML for sgvis live --midi-map.")
    p.add_argument("--port", default="all", help="MIDI input (name or part of it; default: the first)")
    p.add_argument("--out", default="midi-map.yaml", help="map file to write (default midi-map.yaml)")
    p.add_argument("--controls", help="comma-separated controls to learn, e.g. intensity,freeze,preset:calm "
                                      f"(default: {','.join(LEARN_DEFAULT)})")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each (default 10)")
    p.add_argument("--list", action="store_true", help="list the MIDI inputs and exit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_midi_learn)
