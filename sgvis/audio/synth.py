"""Synthesized music (numpy only): the demo / benchmark track and varied training tracks for the learned steering.

    y, sections = render_song(Song(), np.random.default_rng(0))    # the demo track (sgvis.demo.synth_track)
    y = synth_music(seed=3, seconds=30.0)                           # a random song, deterministic from seed
    write_synth_music("data/synth", 200)                            # track_000.wav ... (22050 Hz mono, 16-bit)

A `Song` is a 4/4 arrangement: tempo, sections (which parts play, a level, an optional stop on the last beat),
a chord progression (one chord per bar, cycled), rhythm patterns as (position in beats, ...) per bar, swing and
timbres.  Parts: kick, snare, hat, bass, chords, pad_bass (a slow sine), lead (a melody).  `random_song` draws
tempo (80-160 BPM), key, mode and progression, patterns (four-on-the-floor, half-time, breakbeat...), note
density, swing, timbres (additive, sine, saw, square, FM) and an arrangement with breakdowns and silences.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class Section:
    name: str
    bars: int
    parts: frozenset
    gain: float = 1.0
    stop: bool = False           # everything rests on the last beat of the section


def _section(name: str, bars: int, *parts: str) -> Section:
    return Section(name, bars, frozenset(parts))


_DRUMS_BASS = ("kick", "snare", "hat", "bass", "chords")
DEMO_SECTIONS = (_section("intro", 2, "hat", "chords"), _section("verse", 4, *_DRUMS_BASS),
                 _section("breakdown", 3, "chords", "pad_bass"), _section("silence", 1),
                 _section("drop", 4, *_DRUMS_BASS), _section("outro", 1, "chords"))
DEMO_HAT = tuple((k + h, 0.5 if h == 0 else 0.9) for k in range(4) for h in (0.0, 0.5))
DEMO_BASS_LINE = tuple((k + e / 2, 0.5, 12 if (k, e) == (3, 1) else 0) for k in range(4) for e in range(2))


@dataclass(frozen=True)
class Song:
    """Defaults are the demo track (120 BPM, Am F C G)."""
    bpm: float = 120.0
    sections: tuple = DEMO_SECTIONS
    chords: tuple = ((57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62))    # MIDI, one chord per bar
    bass: tuple = (45, 41, 36, 43)                                                # bass root per bar
    kick: tuple = ((0, 0.9), (1, 0.9), (2, 0.9), (3, 0.9))                        # (beat, gain)
    snare: tuple = ((1, 0.7), (3, 0.7))
    hat: tuple = DEMO_HAT
    bass_line: tuple = DEMO_BASS_LINE        # (beat, length in beats, semitones above the bar's root)
    chord_hits: tuple = ((0.0, 4.0),)        # (beat, length in beats)
    lead: tuple = ()                         # per bar (cycled with the chords): ((beat, length, MIDI), ...)
    swing: float = 0.0                       # 0 straight .. 1 triplet feel (off-beat eighths / sixteenths)
    chord_timbre: str = "additive"
    bass_timbre: str = "sine2"
    lead_timbre: str = "sine"
    kick_sweep: float = 110.0                # Hz above 50 at the start of the kick's pitch drop
    kick_decay: float = 0.18
    snare_tone: float = 190.0
    snare_decay: float = 0.07
    hat_decay: float = 0.018

    @property
    def seconds(self) -> float:
        return sum(s.bars for s in self.sections) * 240.0 / self.bpm


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _osc(timbre: str, f: float, t: np.ndarray, sr: int) -> np.ndarray:
    if timbre == "additive":
        return sum(np.sin(2 * np.pi * f * h * t) / h ** 1.5 for h in (1, 2, 3))
    if timbre == "sine2":
        return np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)
    if timbre in ("saw", "square"):
        hs = [h for h in range(1, 13, 1 if timbre == "saw" else 2) if f * h < 0.4 * sr]
        return 0.7 * sum(np.sin(2 * np.pi * f * h * t) / h for h in hs)
    if timbre == "fm":
        return np.sin(2 * np.pi * f * t + 2.0 * np.exp(-t / 0.4) * np.sin(2 * np.pi * 2 * f * t))
    return np.sin(2 * np.pi * f * t)


def render_song(song: Song, rng: np.random.Generator, sr: int = 22050, seconds: float | None = None):
    """(mono float32 peak 0.9, [(section, start s, end s)]); `seconds` cuts (or pads with silence) the song."""
    beat = 60.0 / song.bpm
    bar = 4 * beat
    total = song.seconds if seconds is None else seconds
    y = np.zeros(int(max(total, song.seconds) * sr) + sr, np.float64)

    def t_(dur):
        return np.arange(int(dur * sr)) / sr

    def add(start_s, x, gain):
        s = int(round(start_s * sr))
        if s < len(y):
            n = min(len(x), len(y) - s)
            y[s:s + n] += x[:n] * gain if gain != 1.0 else x[:n]

    t = t_(0.5)
    kick = np.sin(2 * np.pi * np.cumsum(50 + song.kick_sweep * np.exp(-t / 0.03)) / sr) * np.exp(-t / song.kick_decay)
    kick += 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.002)
    t = t_(0.3)
    noise = rng.standard_normal(len(t))
    snare = (0.45 * np.diff(noise, prepend=0) * np.exp(-t / song.snare_decay)
             + 0.35 * np.sin(2 * np.pi * song.snare_tone * t) * np.exp(-t / 0.05))
    t = t_(0.12)
    hat = np.diff(rng.standard_normal(len(t) + 2), 2) * np.exp(-t / song.hat_decay) * 0.12

    def when(t0, p):
        """Time of beat position p in the bar starting at t0, with swing on off-beat eighths / sixteenths."""
        k = int(np.floor(p))
        frac = p - k
        shift = song.swing / 6 if frac == 0.5 else song.swing / 12 if frac in (0.25, 0.75) else 0.0
        return t0 + k * beat + (frac + shift) * beat if frac or shift else t0 + k * beat

    sections, pos = [], 0.0
    for sec in song.sections:
        sections.append((sec.name, pos, pos + sec.bars * bar))
        parts, g = sec.parts, sec.gain
        for b in range(sec.bars):
            t0 = pos + b * bar
            ci = b % len(song.chords)
            end = 3.0 if sec.stop and b == sec.bars - 1 else 4.0         # beats that sound in this bar
            if "chords" in parts:
                for p, length in song.chord_hits:
                    if p >= end:
                        continue
                    d = min(length, end - p) * beat
                    t = t_(d + 0.4)
                    env = (np.minimum(t / 0.03, 1) * np.exp(-np.maximum(t - d, 0) / 0.1)
                           * (0.9 + 0.1 * np.cos(2 * np.pi * 0.5 * t)))
                    x = sum(_osc(song.chord_timbre, _hz(m), t, sr) for m in song.chords[ci])
                    add(when(t0, p), 0.06 * env * x, g)
            if "pad_bass" in parts:
                d = end * beat
                t = t_(d)
                env = np.minimum(t / 0.3, 1) * np.minimum((d - t) / 0.3, 1)
                add(t0, 0.15 * env * np.sin(2 * np.pi * _hz(song.bass[ci]) * t), g)
            for k in range(int(end)):
                def hits(pattern):
                    return [h for h in pattern if k <= h[0] < k + 1]
                if "kick" in parts:
                    for p, gain in hits(song.kick):
                        add(when(t0, p), gain * kick, g)
                if "snare" in parts:
                    for p, gain in hits(song.snare):
                        add(when(t0, p), gain * snare, g)
                if "hat" in parts:
                    for p, gain in hits(song.hat):
                        add(when(t0, p), gain * hat, g)
                if "bass" in parts:
                    for p, length, step in hits(song.bass_line):
                        t = t_(length * beat)
                        f = _hz(song.bass[ci] + step)
                        env = np.minimum(t / 0.005, 1) * np.exp(-t / 0.12)
                        add(when(t0, p), 0.3 * env * _osc(song.bass_timbre, f, t, sr), g)
                if "lead" in parts and song.lead:
                    for p, length, m in hits(song.lead[b % len(song.lead)]):
                        d = length * beat
                        t = t_(d + 0.05)
                        env = np.minimum(t / 0.005, 1) * np.exp(-2 * t / d) * np.minimum((d + 0.05 - t) / 0.05, 1)
                        add(when(t0, p), 0.12 * env * _osc(song.lead_timbre, _hz(m), t, sr), g)
        pos += sec.bars * bar
    y = y[: int(total * sr)]
    peak = np.abs(y).max() if len(y) else 0.0
    y = 0.9 * y / peak if peak > 0 else y
    return y.astype(np.float32), [(n, a, min(b, total)) for n, a, b in sections if a < total]


# ---------------------------------------------------------------------------------------------
# Random songs

MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = {MAJOR: [(0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 0, 4), (5, 3, 0, 4)],
                MINOR: [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)]}   # scale degrees
KICKS = [(0, 1, 2, 3), (0, 2, 2.5), (0, 2.75), (0, 0.75, 2.5), (0, 2), (0, 1.5, 2, 3.5)]
SNARES = [(1, 3), (2,), (1, 3, 3.75), (1, 2.5, 3)]
BASS_RHYTHMS = [tuple(k / 2 for k in range(8)), (0, 1, 2, 3), (0, 0.75, 1.5, 2.5, 3, 3.5), (0,), (0, 2),
                (0, 0.5, 1.5, 2, 2.75, 3.5)]
TIMBRES = ("additive", "sine", "saw", "square", "fm")


def _degree(scale, d: int) -> int:
    return scale[d % 7] + 12 * (d // 7)


def _fold(m: int, lo: int) -> int:
    return lo + (m - lo) % 12


def random_song(seed, seconds: float = 30.0) -> Song:
    """A random Song at least `seconds` long, deterministic from `seed` (int or tuple of ints)."""
    rng = np.random.default_rng(seed)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]         # noqa: E731
    bpm = float(np.round(rng.uniform(80, 160)))
    beat_s = 60 / bpm
    key = int(rng.integers(12))
    scale = MAJOR if rng.random() < 0.5 else MINOR
    prog = pick(PROGRESSIONS[scale])
    chords = tuple(tuple(sorted(_fold(48 + key + _degree(scale, d + 2 * i), 55) for i in range(3))) for d in prog)
    bass = tuple(_fold(36 + key + _degree(scale, d), 36) for d in prog)

    jitter = lambda g: float(np.round(g * rng.uniform(0.8, 1.0), 3))   # noqa: E731
    kick = tuple((p, jitter(0.9)) for p in pick(KICKS))
    snare = tuple((p, jitter(0.7 if p == int(p) else 0.3)) for p in pick(SNARES))
    division = pick((1, 2, 2, 4))
    keep = rng.uniform(0.6, 1.0)                                   # note density of the hats
    hat = tuple((k / division, jitter(0.9 if k % division == division // 2 else 0.5))
                for k in range(4 * division) if k % division == 0 or rng.random() < keep)
    octave_jumps = rng.random() < 0.5
    bass_line = []
    rhythm = pick(BASS_RHYTHMS)
    for i, p in enumerate(rhythm):
        length = (rhythm[i + 1] if i + 1 < len(rhythm) else 4) - p
        step = pick((0, 0, 7, 12)) if octave_jumps and i else 0
        bass_line.append((p, min(length, 1.0) if len(rhythm) > 2 else length, step))
    chord_hits = pick([((0.0, 4.0),), ((0.0, 2.0), (2.0, 2.0)), ((0.0, 0.5), (1.5, 0.5), (3.0, 0.5)),
                       ((0.0, 1.0), (0.75, 1.0), (2.5, 1.5)), tuple((k + 0.5, 0.4) for k in range(4))])

    notes_per_beat = pick((1, 2, 2, 4))
    lead = []
    for ci in range(len(chords)):
        tones = sorted({m + 12 for m in chords[ci]} | {m + 24 for m in chords[ci]})
        notes, m = [], pick(tones)
        for k in range(4 * notes_per_beat):
            if rng.random() < 0.3:
                continue
            if rng.random() < 0.6:
                m = pick(tones)
            else:
                m = int(np.clip(m + pick((-2, -1, 1, 2)), 64, 96))
            notes.append((k / notes_per_beat, rng.uniform(0.5, 1.0) / notes_per_beat, m))
        lead.append(tuple(notes))

    has_lead = rng.random() < 0.75
    drums = ("kick", "snare", "hat")
    maybe = lambda parts, p: [x for x in parts if rng.random() < p]     # noqa: E731
    intro = maybe(("hat", "chords", "pad_bass", "lead"), 0.5)
    sections = [Section("intro", int(rng.integers(1, 3)), frozenset(intro))]
    bars_needed = int(np.ceil(seconds / (4 * beat_s)))
    while sum(s.bars for s in sections) < bars_needed:
        kind = pick(("verse", "verse", "chorus", "chorus", "breakdown", "drop", "silence"))
        if kind in ("silence", "breakdown") and sections[-1].name == kind:
            continue
        if kind == "verse":
            parts = maybe(drums, 0.85) + maybe(("bass", "chords"), 0.9)
        elif kind == "chorus":
            parts = list(drums) + ["bass", "chords", "lead"] + maybe(("pad_bass",), 0.3)
        elif kind == "breakdown":
            parts = maybe(("chords", "pad_bass", "lead"), 0.6) or ["chords"]
        elif kind == "drop":
            parts = ["kick", "snare", "hat", "bass"] + maybe(("lead", "chords"), 0.6)
        else:
            parts = []
        bars = 1 if kind == "silence" else int(pick((2, 2, 4)))
        sections.append(Section(kind, bars, frozenset(p for p in parts if has_lead or p != "lead"),
                                gain=float(np.round(rng.uniform(0.55, 1.0), 2)), stop=bool(rng.random() < 0.2)))
    swing = 0.0 if rng.random() < 0.5 else float(np.round(rng.uniform(0.2, 0.7), 2))
    return Song(bpm=bpm, sections=tuple(sections), chords=chords, bass=bass, kick=kick, snare=snare, hat=hat,
                bass_line=tuple(bass_line), chord_hits=chord_hits, lead=tuple(lead), swing=swing,
                chord_timbre=pick(TIMBRES), bass_timbre=pick(("sine2", "sine", "saw", "square", "fm")),
                lead_timbre=pick(TIMBRES), kick_sweep=float(rng.uniform(60, 160)),
                kick_decay=float(rng.uniform(0.1, 0.3)), snare_tone=float(rng.uniform(150, 260)),
                snare_decay=float(rng.uniform(0.04, 0.12)), hat_decay=float(rng.uniform(0.01, 0.05)))


def synth_music(seed=0, seconds: float = 30.0, sr: int = 22050) -> np.ndarray:
    """`seconds` of a random song (mono float32 at `sr`), deterministic from `seed` (int or tuple of ints)."""
    song = random_song(seed, seconds)
    y, _ = render_song(song, np.random.default_rng(seed), sr, seconds)
    return y


def write_wav(path: str, y: np.ndarray, sr: int) -> None:
    """Mono float samples as a 16-bit wav, written atomically."""
    import av
    from stylegan.atomic import write_atomically

    def write(tmp):
        with av.open(tmp, "w", format="wav") as c:
            stream = c.add_stream("pcm_s16le", rate=sr, layout="mono")
            for i in range(0, len(y), 4096):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[None, i:i + 4096], np.float32),
                                                   format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
                for packet in stream.encode(frame):
                    c.mux(packet)
            for packet in stream.encode():
                c.mux(packet)
    write_atomically(path, write, suffix=".wav")


def write_synth_music(root: str, n_tracks: int, seconds: float = 30.0, seed: int = 0, progress=True) -> list[str]:
    """Write `n_tracks` different random songs to root/track_000.wav ... (22050 Hz mono 16-bit); returns paths.
    Track i is synth_music((seed, i), seconds)."""
    from tqdm import tqdm
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in tqdm(range(n_tracks), desc="synth music", unit="track", disable=None if progress else True):
        path = os.path.join(root, f"track_{i:03d}.wav")
        write_wav(path, synth_music((seed, i), seconds), 22050)
        paths.append(path)
    return paths
