"""Loading never runs code from a file, and bad files get one clear line (exit code 2 from the CLI)."""
import os
import pickle
import subprocess
import sys

import pytest
import torch

import stylegan
from checkpoint_writers import write_nvidia_pickle, write_tf_pickle
from conftest import tiny_generator


class RunsCommand:
    """A pickle payload that calls os.system when unpickled by a naive loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Evaluates:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').write('x')",)


def run_cli(*args):
    """Run the CLI in-process, as the console script does; returns exit code and captured output."""
    import contextlib
    import io
    from sgvis.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_console_script_exit_code_and_message(tmp_path):
    """The real process: one line on stderr, exit status 2, no traceback."""
    path = tmp_path / "x.pkl"
    path.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "sgvis", "info", str(path)], capture_output=True, text=True,
                            timeout=300)
    _one_clear_line(result, "empty")


@pytest.mark.parametrize("payload", [RunsCommand, Evaluates])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, marker, payload):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": payload(marker), "G": None}, f, protocol=4)
    with pytest.raises(stylegan.CheckpointError, match="refused") as e:
        stylegan.load(path)
    assert ("posix.system" in str(e.value)) or ("builtins.eval" in str(e.value))
    assert not os.path.exists(marker)


def test_malicious_payload_inside_a_real_looking_network_pickle(tmp_path, marker):
    """Even nested deep inside a genuine persistent-object structure, the reduce is refused."""
    G = tiny_generator("stylegan2")
    G.synthesis.b4.evil = RunsCommand(marker)   # becomes a plain attribute in the pickled state
    G.synthesis.b4.__dict__["evil"] = RunsCommand(marker)
    path = tmp_path / "network.pkl"
    from checkpoint_writers import persistent, _fake_modules
    rec = persistent(G, {"": "Generator"}, "# src", {})
    rec.meta["state"]["_modules"]["synthesis"].meta["state"]["trap"] = RunsCommand(marker)
    with _fake_modules(), open(path, "wb") as f:
        pickle.dump({"G_ema": rec}, f, protocol=4)
    with pytest.raises(stylegan.CheckpointError, match="refused"):
        stylegan.load(path)
    assert not os.path.exists(marker)


def test_embedded_module_source_is_never_executed(tmp_path, marker):
    """Real NVIDIA pickles carry their source code; the fixture's source would create `marker` if run."""
    G = tiny_generator("stylegan2")
    nv, tf = tmp_path / "nv.pkl", tmp_path / "tf.pkl"
    write_nvidia_pickle(nv, G, "ada", marker, snapshot=True)
    write_tf_pickle(tf, G, marker)
    assert "pathlib" in open(nv, "rb").read().decode("latin1")   # the source really is in the file
    stylegan.load(nv)
    stylegan.load(tf)
    assert not os.path.exists(marker)


def test_legacy_storage_blob_cannot_smuggle_code(tmp_path, marker):
    """Tensor storages are nested torch.save blobs; they are read weights-only."""
    import io
    blob = io.BytesIO()
    pickle.dump(RunsCommand(marker), blob, protocol=2)

    class StorageLike:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (blob.getvalue(),)

    path = tmp_path / "storage.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": StorageLike()}, f, protocol=4)
    with pytest.raises(stylegan.CheckpointError):
        stylegan.load(path)
    assert not os.path.exists(marker)


def _one_clear_line(result, *expected):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_pickle(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "net.pkl"
    write_nvidia_pickle(path, tiny_generator("stylegan2"), "ada", str(path) + ".marker")
    return path


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "garbage", "zip-corrupt",
                                  "safetensors-foreign", "evil"])
def test_bad_files_give_one_clear_line_and_exit_2(tmp_path, good_pickle, case, marker):
    path = tmp_path / f"{case}.pkl"
    expected = {"missing": "no such file", "directory": "directory", "empty": "empty", "truncated": "truncated",
                "garbage": "not a StyleGAN checkpoint", "zip-corrupt": "corrupt",
                "safetensors-foreign": "sgvis convert", "evil": "refused"}[case]
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        data = good_pickle.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "garbage":
        path.write_bytes(b"GIF89a not a network at all")
    elif case == "zip-corrupt":
        path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    elif case == "safetensors-foreign":
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(3)}, str(path))
    elif case == "evil":
        with open(path, "wb") as f:
            pickle.dump({"G_ema": RunsCommand(marker)}, f, protocol=4)
    _one_clear_line(run_cli("info", str(path)), expected, str(path))


def test_info_reports_what_a_user_needs(good_pickle):
    result = run_cli("info", str(good_pickle))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for field in ("stylegan2-ada-pytorch", "StyleGAN2", "32x32", "num_ws", "8", "c_dim", "parameters", "load time"):
        assert field in out, out


def test_convert_writes_a_loadable_sgvis_file_and_refuses_to_overwrite(tmp_path, good_pickle):
    out = tmp_path / "net.safetensors"
    result = run_cli("convert", str(good_pickle), str(out))
    assert result.returncode == 0, result.stderr
    G, G_ref = stylegan.load(out), stylegan.load(good_pickle)
    z = torch.randn(2, G.z_dim)
    assert torch.equal(G(z), G_ref(z))
    before = out.read_bytes()
    _one_clear_line(run_cli("convert", str(good_pickle), str(out)), "already exists", "--overwrite")
    assert out.read_bytes() == before


def test_convert_bad_input_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    out = tmp_path / "out.safetensors"
    _one_clear_line(run_cli("convert", str(bad), str(out)), str(bad))
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_convert_to_unwritable_place(tmp_path, good_pickle):
    _one_clear_line(run_cli("convert", str(good_pickle), str(tmp_path / "nope" / "x.safetensors")), "cannot write")


def test_published_outputs_get_the_permissions_of_a_new_file(tmp_path):
    """Videos, frame folders and atomically written files are made as private temporaries (mkstemp / mkdtemp:
    0600 / 0700); once in place they have what the umask gives any new file (0644 / 0755 under umask 022)."""
    import stat

    import numpy as np

    from sgvis.outputs.files import VideoSink, PngSink
    from stylegan.atomic import write_atomically
    umask = os.umask(0o022)
    os.umask(umask)
    write_atomically(str(tmp_path / "a.bin"), lambda tmp: open(tmp, "wb").write(b"x"))
    video = VideoSink(str(tmp_path / "v.mp4"), 30, 16, 16)
    for _ in range(3):
        video.write(np.zeros((16, 16, 3), np.uint8))
    video.close()
    frames = PngSink(str(tmp_path / "frames"))
    frames.write(np.zeros((8, 8, 3), np.uint8))
    frames.close()
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)  # noqa: E731
    assert mode("a.bin") == mode("v.mp4") == 0o666 & ~umask
    assert mode("frames") == 0o777 & ~umask
