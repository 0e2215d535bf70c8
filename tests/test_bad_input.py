"""Bad input to every command, option by option: exactly one line on stderr, starting 'sgvis: error:', exit status
2, no traceback, and nothing written (the working folder holds only what the test put there).

Each case is (command line, text the line must contain).  Names in the command line: AUDIO (a 3 s click track),
MODEL (a tiny sgvis model), DATA (a tiny dataset), CLIPS (a folder with one audio file), FILE (an existing file),
FIFO (a named pipe), EMPTY (an empty file), JUNK (random bytes), BOMB (a 100-byte pickle asking numpy for an
8 TB array), PT (a torch .pt file holding an object that is not weights), NOPE (a path that does not exist).
"""
import os
import pickle

import numpy as np
import pytest
import torch

import stylegan
from audio_fixtures import click_track, write_audio
from conftest import tiny_generator
from test_safety_and_errors import run_cli

SR = 22050
TINY = ["--channel-base", "128", "--channel-max", "16", "--z-dim", "16", "--w-dim", "16", "--map-layers", "2",
        "--batch", "4", "--grid", "2x2", "--quiet", "--threads", "1"]


class Oversized:
    def __reduce__(self):
        return np.ndarray, ((10 ** 6, 10 ** 6),)


class NotWeights:
    """Pickled by reference to this test module: not a global a weights-only load allows."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-input-sources")
    stylegan.save(tiny_generator("stylegan2", resolution=32), d / "model.safetensors")
    samples, _ = click_track(3.0, SR)
    write_audio(d / "clicks.wav", samples, SR)
    (d / "clips").mkdir()
    write_audio(d / "clips" / "a.wav", samples, SR)
    (d / "file.txt").write_text("x")
    (d / "empty.wav").write_bytes(b"")
    # seeded: some random byte strings happen to probe as a container with no audio ("not an audio file")
    (d / "junk.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    with open(d / "bomb.pkl", "wb") as f:
        pickle.dump({"G_ema": Oversized()}, f, protocol=4)
    torch.save({"g_ema": NotWeights()}, d / "obj.pt")
    os.mkfifo(d / "fifo.wav")
    from sgvis.data import dataset as ds
    ds.build_dataset(d / "data.zip", resolution=16, procedural=4, seed=1, workers=1, progress=False)
    (d / "corrupt").mkdir()
    for k in range(3):
        (d / "corrupt" / f"img{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return d


NAMES = {"AUDIO": "clicks.wav", "MODEL": "model.safetensors", "DATA": "data.zip", "CLIPS": "clips",
         "FILE": "file.txt", "FIFO": "fifo.wav", "EMPTY": "empty.wav", "JUNK": "junk.bin", "BOMB": "bomb.pkl",
         "PT": "obj.pt", "PICS": "corrupt"}

R = ["render", "AUDIO", "--model", "MODEL", "--set", "render.beats=causal"]
LIVE = ["live", "--device", "file:AUDIO", "--model", "MODEL", "--headless"]
GAN = ["train-gan", "--data", "DATA", "--outdir", "run", *TINY, "--kimg", "0.004"]
GLO = ["train-glo", "--data", "DATA", "--outdir", "run", *TINY, "--epochs", "1"]
ENC = ["train-encoder", "--model", "MODEL", "--data", "CLIPS", "--out", "run", "--device", "cpu", "--steps", "1"]
CLIP = ["train-audio-clip", "--data", "CLIPS", "--out", "enc.safetensors", "--device", "cpu", "--steps", "1",
        "--clip-path", "NOPE-clip"]
DS = ["dataset", "ds.zip", "--procedural", "4", "--resolution", "8", "--quiet", "--workers", "1"]

CASES = [
    # render: the input
    (["render", "NOPE.wav", "--model", "MODEL"], "no such file"),
    (["render", "CLIPS", "--model", "MODEL"], "directory"),
    (["render", "FIFO", "--model", "MODEL"], "not a regular file"),
    (["render", "EMPTY", "--model", "MODEL"], "empty"),
    (["render", "JUNK", "--model", "MODEL"], "cannot read audio"),
    # render: each option
    (R + ["-o", "FILE"], "--overwrite"),
    (R + ["-o", "out.xyz"], "cannot write a .xyz video"),
    (R + ["-o", "CLIPS"], "directory"),
    (R + ["-o", "/proc/out.mp4"], "cannot write /proc/out.mp4"),
    (R + ["-o", "AUDIO", "--overwrite"], "also an input"),
    (R + ["-o", "no/such/dir/o.mp4"], "cannot write"),
    (["render", "AUDIO", "--model", "NOPE.pkl"], "no such file"),
    (["render", "AUDIO", "--model", "JUNK"], "not a StyleGAN checkpoint"),
    (["render", "AUDIO", "--model", "BOMB"], "more than the whole file"),
    (["render", "AUDIO", "--model", "PT"], "objects sgvis does not load"),
    (["render", "AUDIO", "--model", "FIFO"], "not a regular file"),
    (R + ["--fps", "abc"], "--fps"), (R + ["--fps", "0"], "--fps"), (R + ["--fps", "nan"], "--fps"),
    (R + ["--fps", "1000"], "--fps"),
    (R + ["--size", "abc"], "--size"), (R + ["--size", "0"], "--size"), (R + ["--size", "10x"], "--size"),
    (R + ["--seed", "abc"], "--seed"),
    (R + ["--start", "abc"], "--start"), (R + ["--start", "nan"], "--start"), (R + ["--start", "100"], "beyond"),
    (R + ["--end", "abc"], "--end"), (R + ["--end", "nan"], "--end"), (R + ["--start", "2", "--end", "1"], "--end"),
    (R + ["--crf", "99"], "--crf"), (R + ["--crf", "-1"], "--crf"), (R + ["--crf", "abc"], "--crf"),
    (R + ["--png-dir", "FILE"], "not a folder"),
    (R + ["--out", "nope"], "NAME:TARGET"), (R + ["--out", "foo:x"], "unknown output"),
    (R + ["--out", "video:x.xyz"], ".xyz"),
    (R + ["--stats", "CLIPS"], "directory"), (R + ["--stats", "FILE"], "--overwrite"),
    (R + ["--steer", "bogus"], "--steer"), (R + ["--steer", "learned", "--steering", "NOPE.safetensors"], "NOPE"),
    (R + ["--preset", "bogus"], "unknown preset"),
    (R + ["--config", "NOPE.yaml"], "no such config"), (R + ["--config", "JUNK"], "JUNK"),
    (R + ["--set", "novalue"], "KEY=VALUE"), (R + ["--set", "steer.no_such_knob=3"], "no_such_knob"),
    (R + ["--set", "steer=5"], "section"), (R + ["--set", "render.fps.x=1"], "not a section"),
    (R + ["--set", "render.fps=abc"], "render.fps"), (R + ["--set", "render.crf=99"], "render.crf"),
    (R + ["--set", "render.batch=0"], "render.batch"), (R + ["--set", "render.precision=x"], "render.precision"),
    (R + ["--set", "render.preset=x"], "render.preset"), (R + ["--set", "render.beats=x"], "render.beats"),
    (R + ["--set", "render.lookahead=-1"], "render.lookahead"),
    (R + ["--set", "render.threads=0"], "render.threads"), (R + ["--set", "render.batch=lots"], "render.batch"),
    (R + ["--set", "steer.intensity=abc"], "steer.intensity"),
    (R + ["--device", "tpu"], "--device tpu"), (R + ["--bogus"], "unrecognized"),
    # live: options that fail before any audio device opens
    (LIVE[:2] + ["file:NOPE.wav"] + LIVE[3:], "no such file"),
    (LIVE + ["--channels", "x"], "--channels"),
    (LIVE + ["--fps", "abc"], "--fps"), (LIVE + ["--duration", "abc"], "--duration"),
    (LIVE + ["--monitor", "abc"], "--monitor"), (LIVE + ["--latency-offset", "abc"], "--latency-offset"),
    (LIVE + ["--record", "FILE"], "--overwrite"), (LIVE + ["--record", "take.xyz"], ".xyz"),
    (LIVE + ["--out", "nope"], "NAME:TARGET"), (LIVE + ["--stats", "CLIPS"], "directory"),
    (LIVE + ["--compute", "tpu"], "--compute tpu"), (LIVE + ["--model", "JUNK"], "not a StyleGAN checkpoint"),
    (LIVE + ["--set", "live.threads=0"], "live.threads"), (LIVE + ["--set", "render.crf=99"], "render.crf"),
    (LIVE + ["--set", "live=1"], "section"), (LIVE + ["--preset", "bogus"], "unknown preset"),
    (LIVE + ["--config", "NOPE.yaml"], "no such config"), (LIVE + ["--steer", "bogus"], "--steer"),
    (LIVE + ["--steer", "learned", "--steering", "NOPE.safetensors"], "NOPE"),
    (LIVE + ["--control", "bogus"], "bogus"),
    # info and convert
    (["info"], "required"), (["info", "NOPE.pkl"], "no such file"), (["info", "EMPTY"], "empty"),
    (["info", "FIFO"], "not a regular file"), (["info", "JUNK"], "not a StyleGAN checkpoint"),
    (["info", "BOMB"], "more than the whole file"), (["info", "PT"], "objects sgvis does not load"),
    (["convert", "NOPE.pkl", "out.safetensors"], "no such file"),
    (["convert", "MODEL", "FILE"], "--overwrite"), (["convert", "MODEL", "MODEL", "--overwrite"], "also an input"),
    (["convert", "MODEL", "/proc/x.safetensors"], "cannot write"),
    (["convert", "MODEL", "no/dir/x.safetensors"], "cannot write"),
    (["convert", "JUNK", "out.safetensors"], "not a StyleGAN checkpoint"),
    # dataset
    (["dataset", "ds.zip"], "nothing to build from"), (DS + ["--resolution", "3"], "--resolution"),
    (DS + ["--procedural", "-1"], "--procedural"), (DS + ["--fps", "0"], "--fps"),
    (DS + ["--images", "NOPE"], "no such file"), (DS + ["--video", "NOPE"], "no such file"),
    (DS + ["--styles", "bogus"], "bogus"), (DS + ["--image-format", "x"], "--image-format"),
    (DS + ["--max-images", "abc"], "--max-images"), (DS + ["--workers", "abc"], "--workers"),
    (DS + ["--jpeg-quality", "500", "--image-format", "jpg"], "--jpeg-quality"),
    (DS + ["--max-images", "-1"], "--max-images"), (DS + ["--min-size", "-5"], "--min-size"),
    (["dataset", "FILE", "--procedural", "2", "--resolution", "8"], "--overwrite"),
    (["dataset", "ds", "--images", "PICS", "--resolution", "8", "--quiet", "--workers", "1"], "could be read"),
    # train-gan
    (["train-gan", "--data", "NOPE", "--outdir", "run", *TINY], "no such file"),
    (GAN + ["--batch", "6"], "--batch"), (GAN + ["--resolution", "20"], "power of two"),
    (GAN + ["--grid", "four"], "--grid"), (GAN + ["--device", "tpu"], "--device"),
    (GAN + ["--kimg", "0"], "--kimg"), (GAN + ["--augment-p", "2"], "--augment-p"),
    (GAN + ["--augment", "x"], "--augment"), (GAN + ["--lr", "abc"], "--lr"),
    (["train-gan", "--data", "DATA", "--outdir", "FILE", *TINY], "--outdir"),
    (GAN + ["--resume"], "--resume"),
    # train-glo
    (GLO + ["--epochs", "0"], "--epochs"), (GLO + ["--bank-focus", "1.5"], "--bank-focus"),
    (GLO + ["--device", "nonsense"], "--device"), (GLO + ["--resume", "sideways"], "--resume"),
    (GLO + ["--lr-rampdown", "2"], "--lr-rampdown"), (GLO + ["--grid", "x"], "--grid"),
    (["train-glo", "--data", "DATA", "--outdir", "FILE", *TINY], "--outdir"),
    # train-encoder
    (["train-encoder", "--data", "NOPE", "--out", "run"], "not a folder"),
    (ENC[:-4] + ["--device", "tpu"], "--device"), (ENC + ["--steps", "0"], "train_encoder.steps"),
    (ENC + ["--set", "train_encoder.weights.nonsense=1"], "unknown setting"),
    (ENC + ["--objective", "x"], "--objective"),
    (["train-encoder", "--model", "MODEL", "--data", "CLIPS", "--out", "FILE", "--device", "cpu"], "--out FILE"),
    (ENC + ["--model", "JUNK"], "not a StyleGAN checkpoint"),
    # train-audio-clip
    (["train-audio-clip", "--data", "CLIPS", "--out", "enc.safetensors"], "needs CLIP"),
    (CLIP[:2] + ["NOPE"] + CLIP[3:], "not a folder"), (CLIP + ["--clip-path", "NOPE"], "NOPE"),
    (CLIP + ["--steps", "abc"], "--steps"), (CLIP + ["--steps", "0"], "--steps"), (CLIP + ["--amp", "x"], "--amp"),
    (CLIP + ["--out", "FILE"], "--overwrite"),
]


def _expand(argv, root):
    out = []
    for a in argv:
        for name, file in NAMES.items():
            a = a.replace(name, str(root / file)) if name in a and not a.startswith("--") else a
        out.append(a)
    return out


def _listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in dirs + files)


@pytest.mark.parametrize("argv,expected", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, inputs, argv, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path.parent / "cache"))
    before = _listing(inputs)
    argv = _expand(argv, inputs)
    for name, file in NAMES.items():
        if name in expected:
            expected = expected.replace(name, str(inputs / file))
    result = run_cli(*argv)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("sgvis: error:"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "[Errno" not in result.stderr, result.stderr
    assert expected in lines[0], lines[0]
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
    assert _listing(inputs) == before
