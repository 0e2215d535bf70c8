"""Ableton Link as a tempo source: `sgvis live --link` joins the Link session on the local network (Ableton Live,
Bitwig, Traktor, Resolume, TouchDesigner, phone apps...) through aalink, and the show's beat clock follows the
session's tempo and beat phase, as it follows tap tempo: the steering's slow motions glide once per beat and
pulses land on the shared beat, in step with every other peer.

    link = LinkTempo()                # producer "link"; one line naming `pip install aalink` when it is missing
    link.start(bus)                   # joins the session (Link announces itself by multicast: never in tests)
    link.tempo_and_beat()             # (bpm, beats on the session's timeline), or None without other peers
    clock.follow(link)                # TempoClock: the session's beat first, then taps / a set BPM, then audio

Alone (no other peer in the session) there is no shared tempo to follow: the show keeps its tapped or set tempo,
else the audio's beat tracker, and the HUD says so.  sgvis only reads the session: it never sets its tempo.
"""
from __future__ import annotations

from sgvis.errors import UserError, first_line

INSTALL = "pip install aalink"
START_BPM = 120.0       # the tempo this peer offers until it meets a session (the session's tempo wins)
QUANTUM = 4.0           # beats in a bar: Link lines up bars, and so beats, with the other peers
NO_PEERS = "Link: no peers - taps/audio set the beat"      # the HUD line while the session is this peer alone


class AbletonLink:
    """The OS boundary: one Link peer (aalink.Link), read for the session's tempo, beat and number of peers.

    aalink ties a Link to an asyncio loop (for its sync() futures and callbacks, neither used here), so the Link
    is made inside a coroutine on a loop of its own; reading its properties needs no running loop."""

    def __init__(self, bpm: float, quantum: float):
        import asyncio
        import aalink

        async def join():
            return aalink.Link(bpm)
        self.loop = asyncio.new_event_loop()
        try:
            self.link = self.loop.run_until_complete(join())
            self.link.quantum = quantum
            self.link.enabled = True
        except BaseException:
            self.link = None
            self.loop.close()
            raise

    @staticmethod
    def available() -> bool:
        try:
            import aalink  # noqa: F401  (importing only loads the module: no Link, no network)
        except ImportError:
            return False
        return True

    def read(self) -> tuple[float, float, int]:
        """(tempo in BPM, beats on the session's timeline now, other peers)."""
        return float(self.link.tempo), float(self.link.beat), int(self.link.num_peers)

    def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.enabled = False
        del link                       # the last reference: aalink stops its scheduler thread
        self.loop.close()


def make_link(bpm: float, quantum: float):
    return AbletonLink(bpm, quantum)


def check_available() -> None:
    """One line (exit 2) when aalink is missing, before a show spends time loading."""
    if not AbletonLink.available():
        raise UserError(f"--link (Ableton Link) needs aalink: {INSTALL}")


class LinkTempo:
    """Producer "link" (`--link`): a Link peer whose session tempo and beat the show's TempoClock follows."""

    source = "link"

    def __init__(self, bpm: float = START_BPM, quantum: float = QUANTUM):
        check_available()
        self.start_bpm, self.quantum = float(bpm), float(quantum)
        self.link = None
        self.status = ""                # for the HUD: alone in the session, or Link failing
        self.peers = self.most_peers = 0
        self.tempo = 0.0                # the last session tempo followed
        self.followed = 0               # frames that took their beat from the session

    def start(self, bus) -> None:
        try:
            self.link = make_link(self.start_bpm, self.quantum)
        except ImportError:
            raise UserError(f"--link (Ableton Link) needs aalink: {INSTALL}") from None
        except Exception as e:
            raise UserError(f"--link: could not join an Ableton Link session ({first_line(e, 80)})") from None
        self.status = NO_PEERS

    def tempo_and_beat(self) -> tuple[float, float] | None:
        """(tempo, beats on the session's timeline) while the session has other peers; None otherwise."""
        if self.link is None:
            return None
        try:
            tempo, beat, peers = self.link.read()
        except Exception as e:
            self.status = f"Link error ({first_line(e, 30)})"
            return None
        self.peers, self.most_peers = peers, max(self.most_peers, peers)
        if peers < 1 or not tempo > 0:
            self.status = NO_PEERS
            return None
        self.status = ""
        self.tempo = tempo
        self.followed += 1
        return tempo, beat

    def report(self) -> dict:
        return {"peers": self.peers, "most_peers": self.most_peers, "tempo": round(self.tempo, 3),
                "frames_followed": self.followed}

    def stop(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            try:
                link.close()
            except Exception:
                pass
