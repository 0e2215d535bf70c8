"""The VJ flags of `sgvis live` (--osc-port, --osc-bind, --osc-out, --midi, --midi-map, --link) and the producers
they start; kept here so live.py only calls two hooks."""
from __future__ import annotations

from sgvis.errors import UserError


def add_live_arguments(p) -> None:
    g = p.add_argument_group("remote control and tempo (OSC, MIDI, Ableton Link)")
    g.add_argument("--osc-port", type=int, metavar="PORT",
                   help="listen for OSC on this UDP port: /sgvis/<control> (e.g. /sgvis/intensity 1.5); 0: any free")
    g.add_argument("--osc-bind", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    g.add_argument("--osc-out", metavar="HOST:PORT",
                   help="send the audio analysis (levels, onsets, beat phase, BPM) as OSC to HOST:PORT every frame")
    g.add_argument("--midi", metavar="NAME|all", help="MIDI input port (name or part of it), or all")
    g.add_argument("--midi-map", metavar="FILE",
                   help="YAML MIDI mapping (CC -> control, note -> action); write one with sgvis midi-learn")
    g.add_argument("--link", action="store_true",
                   help="follow the tempo and beat of an Ableton Link session on the local network (needs aalink); "
                        "without other peers, taps and the audio set the beat")


def producer_options(args, controls: list[str]) -> tuple[list[str], dict]:
    """(producer names, name -> keyword arguments) for LiveJob from the parsed flags."""
    controls, options = list(controls), {}
    if args.osc_port is not None or args.osc_out:
        options["osc"] = {"port": args.osc_port, "bind": args.osc_bind, "out": args.osc_out}
    elif args.osc_bind != "127.0.0.1":
        raise UserError("--osc-bind needs --osc-port")
    if args.midi or args.midi_map:
        options["midi"] = {"port": args.midi or "all", "map_path": args.midi_map}
    if getattr(args, "link", False):
        from sgvis.control.link import check_available
        check_available()              # before the show loads anything: one line when aalink is missing
        options["link"] = {}
    for name in options:
        if name not in controls:
            controls.append(name)
    return controls, options
