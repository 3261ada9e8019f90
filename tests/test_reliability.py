"""Failures a hostile but fair user meets, each ending in one line and nothing half-written:
operating-system errors, a full disk, kills during an export, two runs on one model folder,
TensorFlow's start-up noise, and the input cases the contract used to leave open."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dssm_tf import io
from dssm_tf.errors import InputError
from dssm_tf.serving import contract
from tests import synthetic
from tests.conftest import REPO_ROOT, command_env, load_ml
from tests.synthetic import TINY_RATINGS, write_movielens

TINY_TRAIN = ("--epochs=1", "--batch_size=64", "--embedding_dim=8", "--hidden_units=8",
              "--k=10", "--verbose=false", "--nobaselines")


def run(command: str, *args: str, tmp_path, prelude: str = "", timeout: float = 300):
    """`python -m dssm_tf.<command> args` in a subprocess; `prelude` runs first in the same
    process (to inject a fault the way the real program would meet it)."""
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["dssm_tf.{command}", *{list(args)!r}]
        runpy.run_module("dssm_tf.{command}", run_name="__main__", alter_sys=True)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                          env=command_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def after_tensorflow_starts(code: str) -> str:
    """A prelude that runs `code` once the command has started TensorFlow (quietly), so the
    injection does not itself print TensorFlow's start-up lines."""
    body = textwrap.indent(textwrap.dedent(code), "    ")
    return ("import dssm_tf.runtime as runtime\n"
            "real_start = runtime.start_tensorflow\n"
            "def start(show_logs=False):\n"
            "    real_start(show_logs)\n"
            f"{body}\n"
            "runtime.start_tensorflow = start\n")


def one_error_line(proc, status: int = 2) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def snapshot(folder) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return synthetic.make_dataset(tmp_path_factory.mktemp("data"), n_users=80, n_movies=60,
                                  seed=3).folder


# --- operating-system errors -------------------------------------------------------------------

UNREADABLE = """
    import builtins, errno
    real_open = builtins.open
    def open_(path, *args, **kwargs):
        if str(path).endswith({name!r}):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    builtins.open = open_
"""


@pytest.mark.parametrize("name", ["ratings.dat", "events.csv"])
def test_an_unreadable_input_file_is_one_line(tmp_path, data_dir, name):
    if name == "events.csv":
        path = tmp_path / name
        path.write_text("user,item,timestamp\na,x,1\na,y,2\nb,x,3\nb,y,4\n")
        args = ["--dataset=tabular", f"--interactions={path}", "--item_column=item",
                "--user_column=user", "--protocol=leave_last_one_out"]
    else:
        folder = str(tmp_path / "data")
        shutil.copytree(data_dir, folder)
        path = os.path.join(folder, name)
        args = [f"--data_dir={folder}"]
    if os.geteuid() != 0:  # a real unreadable file; root reads anything, so inject it there
        os.chmod(path, 0)
        proc = run("itemcf", *args, tmp_path=tmp_path)
    else:
        proc = run("itemcf", *args, tmp_path=tmp_path, prelude=UNREADABLE.format(name=name))
    line = one_error_line(proc)
    assert str(path) in line and "Permission denied" in line, line


def test_output_that_is_a_folder_is_refused_before_any_work(tmp_path, data_dir):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = run("itemcf", f"--data_dir={data_dir}", f"--output={folder}", tmp_path=tmp_path)
    assert one_error_line(proc) == f"error: --output: {folder} is a folder: give a file name"
    assert proc.stdout == "" and os.listdir(folder) == []


def test_model_dir_that_is_a_file_is_refused_before_any_work(tmp_path, data_dir):
    target = tmp_path / "model"
    target.write_text("not a folder")
    start = time.perf_counter()
    proc = run("train", f"--data_dir={data_dir}", f"--model_dir={target}", *TINY_TRAIN,
               tmp_path=tmp_path)
    line = one_error_line(proc)
    assert line == f"error: --model_dir: {target} is a file, not a folder"
    assert target.read_text() == "not a folder"
    assert time.perf_counter() - start < 60  # no TensorFlow, no training
    inside = tmp_path / "model" / "sub"
    proc = run("train", f"--data_dir={data_dir}", f"--model_dir={inside}", *TINY_TRAIN,
               tmp_path=tmp_path)
    assert "is a file, not a folder" in one_error_line(proc)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, where the machine lets us mount one (root on Linux); skips otherwise."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the injected ENOSPC test still runs)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder, leave: int) -> None:
    """Fill the file system of `folder` up to `leave` free bytes."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(os.path.join(folder, "filler"), "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def test_a_full_disk_is_one_line_and_keeps_the_previous_export(tmp_path, data_dir,
                                                               small_disk):
    model_dir = small_disk / "model"
    args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY_TRAIN]
    first = run("train", *args, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(model_dir)
    # Full at start-up (the run's config.json), then with room for the start but not the rest.
    for leave in (0, 48_000):
        os.remove(small_disk / "filler") if (small_disk / "filler").exists() else None
        _fill(small_disk, leave)
        proc = run("train", *args, "--epochs=2", "--overwrite", tmp_path=tmp_path)
        line = one_error_line(proc)
        assert "No space left on device" in line and "free some space" in line, line
        assert line.startswith(f"error: {model_dir}/") and "{{" not in line, line
        after = snapshot(model_dir)
        for name, content in before.items():  # the export and metrics.json are untouched
            if name.startswith(("export/", "metrics.json")):
                assert after.get(name) == content, name
        assert not [n for n in os.listdir(model_dir / "export") if n.startswith(".")]


ENOSPC_AT_EXPORT = after_tensorflow_starts("""
    import tensorflow as tf
    def save(module, path, *args, **kwargs):  # what TensorFlow 2.21 raises on a full disk
        raise tf.errors.ResourceExhaustedError(None, None, (
            "{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/replica:0/task:0/"
            "device:CPU:0}} " + path + "/variables/variables_temp/part-00000-of-00001.data-"
            "00000-of-00001.tempstate16066872254218334619; No space left on device [Op:SaveV2]"))
    tf.saved_model.save = save
""")


def test_an_injected_full_disk_at_export_keeps_everything(tmp_path, data_dir):
    model_dir = tmp_path / "model"
    args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY_TRAIN]
    assert run("train", *args, tmp_path=tmp_path).returncode == 0
    before = snapshot(model_dir / "export")
    metrics = (model_dir / "metrics.json").read_bytes()
    proc = run("train", *args, tmp_path=tmp_path, prelude=ENOSPC_AT_EXPORT)
    assert one_error_line(proc) == (f"error: {model_dir / 'export'}: No space left on device "
                                    f"(free some space there or write elsewhere)")
    assert snapshot(model_dir / "export") == before
    assert (model_dir / "metrics.json").read_bytes() == metrics


ENOSPC_IN_LOCK = """
    import builtins, errno
    real_open = builtins.open
    class Full:  # a file on a full disk: the pid written into it never reaches the disk
        def __init__(self, handle):
            self.handle = handle
        def __getattr__(self, name):
            return getattr(self.handle, name)
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")
    def open_(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        return Full(handle) if str(path).endswith(".lock") else handle
    builtins.open = open_
"""


def test_a_full_disk_at_the_start_of_train_names_the_lock_file(tmp_path, data_dir):
    model_dir = tmp_path / "model"
    proc = run("train", f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY_TRAIN,
               tmp_path=tmp_path, prelude=ENOSPC_IN_LOCK)
    assert one_error_line(proc) == (f"error: {model_dir / '.lock'}: No space left on device "
                                    f"(free some space there or write elsewhere)")
    assert proc.stdout == ""


# --- kills during an export --------------------------------------------------------------------

KILL_AT = after_tensorflow_starts("""
    import os, signal
    import tensorflow as tf
    real_save, real_rename = tf.saved_model.save, os.rename
    calls = []
    def save(*args, **kwargs):
        calls.append(1)
        if WHERE == "staging" and len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(*args, **kwargs)
    def rename(source, target, *args, **kwargs):  # the publishing rename: to a number
        publishing = os.path.basename(target).isdigit()
        if WHERE == "before_publish" and publishing:
            os.kill(os.getpid(), signal.SIGKILL)
        real_rename(source, target, *args, **kwargs)
        if WHERE == "after_publish" and publishing:
            os.kill(os.getpid(), signal.SIGKILL)
    tf.saved_model.save = save
    os.rename = rename
""")


@pytest.mark.parametrize("where", ["staging", "before_publish", "after_publish"])
def test_a_kill_during_an_export_never_leaves_the_export_without_a_complete_latest(
        tmp_path, data_dir, where):
    model_dir = tmp_path / "model"
    root = model_dir / "export"
    args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY_TRAIN]
    assert run("train", *args, tmp_path=tmp_path).returncode == 0
    first = contract.versions(str(root))
    killed = run("train", *args, tmp_path=tmp_path, prelude=f"WHERE = {where!r}\n" + KILL_AT)
    assert killed.returncode == -signal.SIGKILL
    latest = contract.resolve_export(str(root))
    assert contract.is_complete(latest)
    versions = contract.versions(str(root))
    assert versions == (first if where != "after_publish" else first + versions[-1:])
    staging = [n for n in os.listdir(root) if n.startswith(f".{io.VERSION}{io.PARTIAL}")]
    assert len(staging) == (0 if where == "after_publish" else 1)
    # The next export clears what the killed one left and publishes a higher version.
    again = run("train", *args, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [n for n in os.listdir(root) if n.startswith(".")]
    assert contract.versions(str(root))[-1] > versions[-1]


def fake_version(folder, metadata: dict, towers=("user_tower", "item_tower")) -> None:
    """The layout `evaluate` checks before TensorFlow starts (the SavedModels are empty)."""
    for tower in towers:
        os.makedirs(os.path.join(folder, tower))
        open(os.path.join(folder, tower, "saved_model.pb"), "wb").close()
    with open(os.path.join(folder, "metadata.json"), "w") as f:
        json.dump(metadata, f)


TRAINED = {"similarity": "dot", "embedding_dim": 4, "history_length": 0,
           "protocol": "time_split", "cutoff": 975000000}


def test_an_export_whose_only_version_is_incomplete_names_it(tmp_path):
    root = tmp_path / "export"
    fake_version(root / "1764354000", TRAINED, towers=("item_tower",))
    proc = run("evaluate", f"--export_dir={root}", tmp_path=tmp_path)
    assert one_error_line(proc) == (f"error: {root}/1764354000: incomplete version (no "
                                    f"user_tower/saved_model.pb); {root} holds no complete "
                                    f"version (--export_dir)")


def test_evaluate_with_a_cutoff_past_the_data_is_one_line_and_no_warning(tmp_path, data_dir):
    root = tmp_path / "export"
    fake_version(root / "1764354000", TRAINED)
    proc = run("evaluate", f"--export_dir={root}", f"--data_dir={data_dir}",
               "--cutoff=2100-01-01", tmp_path=tmp_path)
    assert one_error_line(proc).startswith("error: --cutoff: 4102444800 (2100-01-01 00:00:00 "
                                           "UTC) leaves no test interaction")


# --- one run per model folder ------------------------------------------------------------------

def test_a_second_run_on_a_busy_model_dir_is_refused_naming_the_first(tmp_path, data_dir):
    model_dir = tmp_path / "model"
    args = [sys.executable, "-m", "dssm_tf.train", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", "--epochs=200", "--batch_size=8",
            "--embedding_dim=8", "--hidden_units=8", "--k=10", "--verbose=false",
            "--nobaselines"]
    first = subprocess.Popen(args, cwd=REPO_ROOT, env=command_env(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        marker = model_dir / "backup" / "chief" / "checkpoint"
        deadline = time.monotonic() + 240
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists() and first.poll() is None
        second = subprocess.run(args, cwd=REPO_ROOT, env=command_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        line = one_error_line(second)
        assert line == (f"error: --model_dir: {model_dir} is in use by another run (pid "
                        f"{first.pid}); wait for it to finish, or use another --model_dir")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The dead run's lock file is still there, but its lock died with it: a rerun proceeds
    # (and resumes the killed run's backup, its settings being the same).
    assert (model_dir / ".lock").read_text().strip() == str(first.pid)
    rerun = subprocess.run(args[:5] + ["--epochs=1"] + args[6:], cwd=REPO_ROOT,
                           env=command_env(tmp_path), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]


# --- stderr ------------------------------------------------------------------------------------

TF_NOISE = ("absl::InitializeLog", "oneDNN", "cuInit", "cuda")


def test_a_failure_after_tensorflow_started_is_the_only_line(tmp_path, data_dir):
    model_dir = tmp_path / "model"
    train = run("train", f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY_TRAIN,
                tmp_path=tmp_path)
    assert train.returncode == 0 and not any(word in train.stderr for word in TF_NOISE), \
        train.stderr
    # Break the export so that loading it fails after TensorFlow has started.
    version = json.loads((model_dir / "metrics.json").read_text())["export_dir"]
    os.rename(os.path.join(version, "user_tower"), os.path.join(version, "spare"))
    os.rename(os.path.join(version, "item_tower"), os.path.join(version, "user_tower"))
    os.rename(os.path.join(version, "spare"), os.path.join(version, "item_tower"))
    proc = run("evaluate", f"--export_dir={model_dir / 'export'}", tmp_path=tmp_path)
    assert "inputs are" in one_error_line(proc)
    # A bug (here an injected one) is one line too, with exit status 1.
    proc = run("train", f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'bug'}",
               *TINY_TRAIN, tmp_path=tmp_path, prelude=after_tensorflow_starts("""
        import dssm_tf.training.trainer as trainer
        def broken(*args, **kwargs):
            raise ZeroDivisionError("injected")
        trainer.fit = broken
    """))
    line = one_error_line(proc, status=1)
    assert line.startswith("error: internal error, please report it: ZeroDivisionError: "
                           "injected"), line


# --- input the contract used to leave open -----------------------------------------------------

def test_byte_order_mark_windows_line_ends_and_trailing_blank_lines_are_accepted(tmp_path):
    folder = write_movielens(tmp_path)
    path = os.path.join(folder, "ratings.dat")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n") + b"\r\n\n\n")
    ml = load_ml(folder)
    got = list(zip(ml.user_keys[ml.interactions.user], ml.item_keys[ml.interactions.item],
                   ml.interactions.rating, ml.interactions.timestamp))
    assert [tuple(int(v) for v in row) for row in got] == TINY_RATINGS
    # A blank line inside the file is still an error, naming it.
    with open(path, "wb") as f:
        f.write(raw.replace(b"\n", b"\n\n", 1))
    with pytest.raises(InputError, match=r"ratings\.dat:2: expected 4 "):
        load_ml(folder)


def test_exact_repeats_are_dropped_and_counted(tmp_path, caplog):
    ratings = list(TINY_RATINGS) + [TINY_RATINGS[1], TINY_RATINGS[4], TINY_RATINGS[1]]
    ratings.append((1, 10, 4, TINY_RATINGS[1][3]))  # same time, another rating: kept
    ml = load_ml(write_movielens(tmp_path, ratings=ratings))
    assert len(ml.interactions) == len(TINY_RATINGS) + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith("dropped 3 exact repeat(s) of an interaction")
    assert warnings[0].endswith(f"ratings.dat:{len(TINY_RATINGS) + 1}")


def test_times_before_1970_are_refused_and_future_ones_kept_with_a_warning(tmp_path, caplog):
    ratings = list(TINY_RATINGS)
    ratings[3] = (2, 2, 4, -1)
    with pytest.raises(InputError, match=r"ratings\.dat:4: expected a time at or after "
                                         r"1970-01-01 .*got '-1'"):
        load_ml(write_movielens(tmp_path / "a", ratings=ratings))
    ratings[3] = (2, 2, 4, int(time.time()) + 86400 * 400)
    ml = load_ml(write_movielens(tmp_path / "b", ratings=ratings))
    assert len(ml.interactions) == len(ratings)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "1 interaction(s)" in warnings[0] and "future" in warnings[0]


def test_a_cutoff_that_leaves_no_training_says_so(tmp_path, data_dir):
    proc = run("itemcf", f"--data_dir={data_dir}", "--cutoff=1990-01-01", tmp_path=tmp_path)
    line = one_error_line(proc)
    assert line.startswith("error: --cutoff: 631152000 (1990-01-01 00:00:00 UTC) leaves no "
                           "training interaction"), line


def test_repeats_count_on_stderr_from_the_command(tmp_path):
    ratings = list(TINY_RATINGS) * 2
    folder = write_movielens(tmp_path / "data", ratings=ratings)
    proc = run("itemcf", f"--data_dir={folder}", "--k=2", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"warning: dropped {len(TINY_RATINGS)} exact repeat(s) of an interaction (same user, "
        f"item, time and rating) in {os.path.join(folder, 'ratings.dat')}, the first at "
        f"{os.path.join(folder, 'ratings.dat')}:{len(TINY_RATINGS) + 1}"]
    once = run("itemcf", f"--data_dir={write_movielens(tmp_path / 'once')}", "--k=2",
               tmp_path=tmp_path)
    twice, single = json.loads(proc.stdout), json.loads(once.stdout)
    for result in (twice, single):
        del result["seconds"]
    assert twice == single  # as if each line were there once
