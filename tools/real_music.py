"""Build the music sets for developing and evaluating sgvis: 20 s clips of freely licensed real recordings
from Debian game-data packages (a training set and a held-out set of other songs from other packages), and,
with --synth, the synthesized benchmark set (the songs of sgvis.audio.synth the older benchmarks used).

    python tools/real_music.py                        # real music: OUT/train, OUT/heldout, OUT/manifest.json
    python tools/real_music.py --synth                # also OUT/synth/train, OUT/synth/heldout (+ manifest)
    python tools/real_music.py --out DIR --cache DIR  # defaults /work/sgvis-runs/real-music, .../debcache

Sources are the Ogg Vorbis recordings below (no tracker modules), each pinned by its SHA-256, so the clips are
the same on every run and every machine: a file is taken from the installed package when it is there
(`apt-get install extremetuxracer-data xmoto-data frozen-bubble-data lincity-ng-data`), else the package is
fetched with `apt-get download` into --cache and unpacked there with `dpkg-deb -x` (no root needed, nothing
installed).  Only this script touches the network, and only through apt; sgvis itself never does.

Every clip is `CLIP_SECONDS` of the source from a fixed offset, decoded with PyAV, resampled to 44100 Hz
stereo and written as 16-bit PCM wav, with 20 ms fades at both ends (so the cut adds no click, which would be an
onset of its own).  manifest.json records for every clip its package and version, source file and its SHA-256,
title, author, licence, offset, and the clip's own SHA-256; the packages' copyright files are copied to
OUT/licences/.  No audio goes into git: the clips live only under --out.

Split: training songs come from extremetuxracer-data and xmoto-data, held-out songs from frozen-bubble-data and
lincity-ng-data, so no held-out clip shares a song, a composer or a game with a training clip.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgvis.errors import UserError  # noqa: E402

DEFAULT_OUT = "/work/sgvis-runs/real-music"
DEFAULT_CACHE = "/work/sgvis-runs/debcache"
CLIP_SECONDS = 20.0
SAMPLE_RATE = 44100
FADE_SECONDS = 0.02
SYNTH_TRAIN = (1, 24)      # (seed, tracks): the learned steering's training songs
SYNTH_HELDOUT = (2, 6)     # its held-out songs (the earlier BENCHMARKS tables used their first 20 s)
SYNTH_SONG_SECONDS = 30.0  # the songs are drawn as 30 s arrangements; the clips are their first CLIP_SECONDS


@dataclass(frozen=True)
class Source:
    package: str
    version: str               # the version the SHA-256 was taken from (Debian 12 "bookworm")
    path: str                  # installed path of the recording
    sha256: str
    title: str
    author: str
    licence: str               # as the package's debian/copyright gives it for these files
    split: str                 # train | heldout
    offsets: tuple             # clip starts in seconds


_ETR = ("extremetuxracer-data", "0.8.2-1", "/usr/share/games/etr/music/")
_XMOTO = ("xmoto-data", "0.6.1+repack-9", "/usr/share/games/xmoto/Textures/Musics/")
_FB = ("frozen-bubble-data", "2.212-11", "/usr/share/games/frozen-bubble/snd/")
_LC = ("lincity-ng-data", "2.9~git20150314-5", "/usr/share/games/lincity-ng/music/default/")


def _src(pkg, name, sha, title, author, licence, split, *offsets) -> Source:
    return Source(pkg[0], pkg[1], pkg[2] + name, sha, title, author, licence, split, tuple(offsets))


SOURCES = (
    # -- training: Extreme Tux Racer (authors from its music/readme) and X-Moto
    _src(_ETR, "calmrace-ks.ogg", "511a8f8b453ea952ea0145104ad2ce1b4603b9155748ee57d165208297da5906",
         "calmrace", "K. Schroeder", "GPL-2+", "train", 20.0, 70.0),
    _src(_ETR, "credits1-cp.ogg", "6a089f4318ffa9be759799f7908d3c8b9097ed3d2dd2d4a5e39825cdcef4e043",
         "credits1", "Christian Picon", "GPL-2+", "train", 10.0, 50.0),
    _src(_ETR, "freezingpoint.ogg", "3197b07979cd2d1b35eca882b1ffa61c436a31963277bd35339e083a38f3df35",
         "freezingpoint", "Grady O'Connell", "GPL-2+", "train", 20.0, 60.0),
    _src(_ETR, "race1-jt.ogg", "1597043297c086aa4c556b1a8c821344888b8e29b30614083a49eacac7b52106",
         "race1", "Joseph Toscano", "GPL-2+", "train", 15.0),
    _src(_ETR, "spunkyrace-ks.ogg", "1b448ebcde1200b85544b7e6daa17808d49593aad7bcd14c728f146678370cf5",
         "spunkyrace", "K. Schroeder", "GPL-2+", "train", 20.0, 65.0),
    _src(_ETR, "start1-jt.ogg", "a1487d880db00693792141cd4fdd2ee3a489ddd3b9da96b0e34ea81e0b516d82",
         "start1", "Joseph Toscano", "GPL-2+", "train", 10.0, 40.0),
    _src(_XMOTO, "MadeiraStew.ogg", "b2a0867a7cfce5c2f5de436fc71825278e5d8c51f0996ea69f3baa626a6f08dc",
         "MadeiraStew", "X-Moto Development Team", "GPL-2+", "train", 10.0, 45.0),
    _src(_XMOTO, "batcave.ogg", "c630e3ae40d9631c3fec25f439cf2b0bc152bfd215f79dbbc841a0cf0a971383",
         "batcave", "X-Moto Development Team", "GPL-2+", "train", 20.0, 90.0),
    _src(_XMOTO, "foxrun.ogg", "7373c7e0eaa470cbfa6954fcd879fcfe1f417079ca1ac687dee89c95e95e6883",
         "foxrun", "X-Moto Development Team", "GPL-2+", "train", 20.0, 60.0),
    _src(_XMOTO, "legolodio.ogg", "730fceae89ea48b8faf98dd9ab4fddfaa965f5b498bcd8e2b52b8c9ae65f7511",
         "legolodio", "X-Moto Development Team", "GPL-2+", "train", 10.0, 50.0),
    _src(_XMOTO, "menu.ogg", "7aab0897d095a20dea1c65f0a9d912c39b30cad3da6cf09ee259c0c53f68282b",
         "menu", "X-Moto Development Team", "GPL-2+", "train", 20.0, 80.0),
    _src(_XMOTO, "ridealong.ogg", "670b3bacc72e91f5a038d62a53f0dff4d792fa0eb1a9fde31297eda48f774317",
         "ridealong", "X-Moto Development Team", "GPL-2+", "train", 10.0, 50.0),
    _src(_XMOTO, "speeditup.ogg", "c862e975f5d239655428100889f9eae8774d43f46ff0fbf9e8b1c3bc2dd3e1e6",
         "speeditup", "X-Moto Development Team", "GPL-2+", "train", 20.0),
    # -- held out: Frozen Bubble and LinCity-NG (one clip per song, past each song's intro)
    _src(_FB, "frozen-mainzik-1p.ogg", "7704fcd44eda9f6fa47e6da4232ebf961c19919abf9964f07320ed7f21f5d7c2",
         "frozen-mainzik-1p", "The Frozen-Bubble Team", "GPL-2", "heldout", 100.0),
    _src(_FB, "frozen-mainzik-2p.ogg", "86aaeb6df03aca6d4d7eab2678a74527923b75e767ff9464674174f19870f71b",
         "frozen-mainzik-2p", "The Frozen-Bubble Team", "GPL-2", "heldout", 40.0),
    _src(_FB, "introzik.ogg", "7e8ac71c4d79f4625404ef4f9564ae70ec91056dd77f1a5cd10b908147aef7e0",
         "introzik", "The Frozen-Bubble Team", "GPL-2", "heldout", 40.0),
    _src(_LC, "01 - pronobozo - lincity.ogg", "5ae2f878032f2ce77565bc9c4f27db133b510312aad331d15d1a2a309df9d3a4",
         "Lincity", "Pronobozo", "GPL-2+", "heldout", 60.0),
    _src(_LC, "02 - Robert van Herk - City Blues.ogg",
         "16760321bc51b92b6bc07859b470002aaae879cb89317887718ab5ac5570599b",
         "City Blues", "Robert van Herk", "GPL-2+", "heldout", 30.0),
    _src(_LC, "03 - Robert van Herk - Architectural Contemplations.ogg",
         "472e87b40fdf7aecbb4203720560e3fddc1379822fb0958a041f2a7432ea648b",
         "Architectural Contemplations", "Robert van Herk", "GPL-2+", "heldout", 40.0),
)


# -- finding the recordings -----------------------------------------------------------------------------------
def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(cmd: list[str], cwd: str | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} is not available here; install the packages with apt-get instead") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"{' '.join(cmd)} failed: {lines[-1] if lines else 'exit ' + str(done.returncode)}")
    return done.stdout


def package_root(package: str, cache: str, download: bool) -> tuple[str, str]:
    """(root folder the package's files lie under, version): '/' when it is installed, else its unpacked copy
    in `cache` (downloaded with apt-get first when missing and `download` allows)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package], capture_output=True,
                             text=True, check=False).stdout
    except FileNotFoundError:
        out = ""
    if out.startswith("install ok installed\t"):
        return "/", out.split("\t", 1)[1]
    unpacked = os.path.join(cache, "x", package)
    debs = sorted(f for f in os.listdir(cache) if f.startswith(package + "_") and f.endswith(".deb")) \
        if os.path.isdir(cache) else []
    if not debs:
        if not download:
            raise UserError(f"{package} is neither installed nor in {cache}; run without --no-download, or "
                            f"apt-get install {package}")
        os.makedirs(cache, exist_ok=True)
        print(f"apt-get download {package} (into {cache})", file=sys.stderr)
        _run(["apt-get", "download", package], cwd=cache)
        debs = sorted(f for f in os.listdir(cache) if f.startswith(package + "_") and f.endswith(".deb"))
        if not debs:
            raise UserError(f"apt-get download {package} left no .deb in {cache}")
    deb = os.path.join(cache, debs[-1])
    if not os.path.isdir(unpacked):
        tmp = unpacked + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _run(["dpkg-deb", "-x", deb, tmp])
        os.replace(tmp, unpacked)
    version = _run(["dpkg-deb", "-f", deb, "Version"]).strip()
    return unpacked, version


def locate(sources, cache: str, download: bool, accept_changed: bool) -> dict:
    """Source -> (file path, package version, package root), every file checked against its pinned SHA-256."""
    roots: dict[str, tuple[str, str]] = {}
    found = {}
    for s in sources:
        if s.package not in roots:
            roots[s.package] = package_root(s.package, cache, download)
        root, version = roots[s.package]
        path = os.path.join(root, s.path.lstrip("/"))
        if not os.path.isfile(path):
            raise UserError(f"{s.package} {version} has no {s.path}")
        digest = sha256_of(path)
        if digest != s.sha256:
            message = (f"{path} is not the pinned recording (package {s.package} {version}, pinned {s.version}): "
                       f"the clips would differ from everyone else's")
            if not accept_changed:
                raise UserError(message + "; --accept-changed-sources takes it anyway")
            print("warning: " + message, file=sys.stderr)
        found[s] = (path, version, root, digest)
    return found


# -- writing clips -------------------------------------------------------------------------------------------
def read_clip(path: str, start: float, seconds: float) -> np.ndarray:
    """[2, n] float32 at SAMPLE_RATE: `seconds` of `path` from `start`, with FADE_SECONDS fades at both ends."""
    from sgvis.audio.decode import decode_blocks
    blocks = list(decode_blocks(path, SAMPLE_RATE, "stereo", start, start + seconds))
    y = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.float32)
    want = int(round(seconds * SAMPLE_RATE))
    if y.shape[1] < want:
        raise UserError(f"{path}: only {y.shape[1] / SAMPLE_RATE:.2f} s from {start:g} s; a clip needs {seconds:g} s")
    y = np.array(y[:, :want], np.float32)
    n = int(round(FADE_SECONDS * SAMPLE_RATE))
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    y[:, :n] *= ramp
    y[:, -n:] *= ramp[::-1]
    return y


def write_wav(path: str, y: np.ndarray, sample_rate: int) -> str:
    """Write [channels, n] float samples as 16-bit PCM wav (atomically); returns the file's SHA-256."""
    import soundfile
    pcm = np.clip(np.rint(np.asarray(y, np.float64).T * 32767.0), -32768, 32767).astype(np.int16)
    tmp = path + ".tmp"
    soundfile.write(tmp, pcm, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return sha256_of(path)


def clip_name(s: Source, offset: float) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", s.title.lower()).strip("-")
    return f"{s.package.replace('-data', '')}__{slug}__{int(offset):03d}s.wav"


def _write_manifest(path: str, manifest: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def build_real(out: str, cache: str, download: bool = True, accept_changed: bool = False,
               progress: bool | None = None) -> dict:
    from tqdm import tqdm
    found = locate(SOURCES, cache, download, accept_changed)
    clips = []
    jobs = [(s, offset) for s in SOURCES for offset in s.offsets]
    for split in ("train", "heldout"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
    for s, offset in tqdm(jobs, desc="clips", unit="clip", disable=None if progress is None else not progress):
        path, version, root, digest = found[s]
        rel = os.path.join(s.split, clip_name(s, offset))
        clip_sha = write_wav(os.path.join(out, rel), read_clip(path, offset, CLIP_SECONDS), SAMPLE_RATE)
        clips.append({"file": rel, "split": s.split, "package": s.package, "package_version": version,
                      "source": s.path, "source_sha256": digest, "title": s.title, "author": s.author,
                      "licence": s.licence, "copyright": f"/usr/share/doc/{s.package}/copyright",
                      "start_seconds": offset, "seconds": CLIP_SECONDS, "sample_rate": SAMPLE_RATE,
                      "channels": 2, "sha256": clip_sha})
    os.makedirs(os.path.join(out, "licences"), exist_ok=True)
    for package in sorted({s.package for s in SOURCES}):
        root = found[next(s for s in SOURCES if s.package == package)][2]
        copyright_file = os.path.join(root, "usr/share/doc", package, "copyright")
        if os.path.isfile(copyright_file):
            shutil.copyfile(copyright_file, os.path.join(out, "licences", f"{package}.copyright"))
    manifest = {"set": "real-music", "clip_seconds": CLIP_SECONDS, "sample_rate": SAMPLE_RATE,
                "built_by": "tools/real_music.py",
                "splits": {split: sorted({c["package"] for c in clips if c["split"] == split})
                           for split in ("train", "heldout")},
                "clips": clips}
    _write_manifest(os.path.join(out, "manifest.json"), manifest)
    return manifest


def build_synth(out: str, progress: bool | None = None) -> dict:
    """OUT/train and OUT/heldout: the first CLIP_SECONDS of sgvis.audio.synth songs (seed, i), 22050 Hz mono."""
    from tqdm import tqdm

    from sgvis.audio.synth import synth_music
    sr = 22050
    clips = []
    jobs = [("train", SYNTH_TRAIN[0], i) for i in range(SYNTH_TRAIN[1])] + \
           [("heldout", SYNTH_HELDOUT[0], i) for i in range(SYNTH_HELDOUT[1])]
    for split in ("train", "heldout"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
    for split, seed, i in tqdm(jobs, desc="synth", unit="track", disable=None if progress is None else not progress):
        y = synth_music((seed, i), SYNTH_SONG_SECONDS, sr)[:int(round(CLIP_SECONDS * sr))]
        rel = os.path.join(split, f"track_{i:03d}.wav")
        clips.append({"file": rel, "split": split, "source": f"sgvis.audio.synth.synth_music(({seed}, {i}), "
                      f"{SYNTH_SONG_SECONDS:g}), first {CLIP_SECONDS:g} s", "licence": "generated by sgvis",
                      "seconds": CLIP_SECONDS, "sample_rate": sr, "channels": 1,
                      "sha256": write_wav(os.path.join(out, rel), y[None], sr)})
    manifest = {"set": "synth", "clip_seconds": CLIP_SECONDS, "sample_rate": sr,
                "built_by": "tools/real_music.py --synth", "clips": clips}
    _write_manifest(os.path.join(out, "manifest.json"), manifest)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="real_music.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--cache", default=DEFAULT_CACHE,
                   help=f"where packages that are not installed are downloaded and unpacked (default {DEFAULT_CACHE})")
    p.add_argument("--synth", action="store_true", help="also write the synthesized set into OUT/synth/")
    p.add_argument("--synth-only", action="store_true", help="write only the synthesized set (no apt, no network)")
    p.add_argument("--no-download", action="store_true", help="never call apt-get: use installed or cached packages")
    p.add_argument("--accept-changed-sources", action="store_true",
                   help="go on (with a warning) when a package's recording differs from the pinned one")
    args = p.parse_args(argv)
    try:
        if not args.synth_only:
            m = build_real(args.out, args.cache, download=not args.no_download,
                           accept_changed=args.accept_changed_sources)
            for split in ("train", "heldout"):
                n = sum(1 for c in m["clips"] if c["split"] == split)
                songs = len({c["source"] for c in m["clips"] if c["split"] == split})
                print(f"{split}: {n} clips of {songs} songs ({', '.join(m['splits'][split])}) in "
                      f"{os.path.join(args.out, split)}")
        if args.synth or args.synth_only:
            m = build_synth(os.path.join(args.out, "synth"))
            for split in ("train", "heldout"):
                n = sum(1 for c in m["clips"] if c["split"] == split)
                print(f"synth {split}: {n} tracks in {os.path.join(args.out, 'synth', split)}")
    except UserError as e:
        print(f"real_music.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
