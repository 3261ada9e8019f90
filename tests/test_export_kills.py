"""A process killed at any step of an export never leaves a half version under a number.

`dssm_tf.io.publish_version` is what `serving.export.export_towers` runs (staging, the
publishing rename, pruning). A child process is SIGKILLed before its first, second, ... file
system step (every mkdir, file write, chmod, rename, unlink and rmdir) until one run completes;
after each kill the readers' view (`contract.versions`, `resolve_export`, TF Serving's highest
number) holds only complete versions, and the next export leaves exactly `keep` complete
versions and nothing hidden. The children are forked from one launcher that has imported
dssm_tf once, so the whole drill takes a few seconds; one more child kills a real TensorFlow
export while it prunes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import traceback

import pytest

from dssm_tf import io
from dssm_tf.errors import InputError
from dssm_tf.serving import contract
from tests.conftest import REPO_ROOT, command_env

STEPS = ("mkdir", "rename", "unlink", "rmdir", "chmod")   # the os calls that change folders
_step = None   # set in a child: called before each step, kills the child at the chosen one


def write_version(folder: str, tag: str) -> None:
    """A fake version: the files `contract.is_complete` checks, a variables file per tower and
    the `tag` in its metadata; each file written is a step."""
    for tower in contract.TOWERS:
        os.makedirs(os.path.join(folder, tower, "variables"))
        for name in ("variables/variables.index", "saved_model.pb"):
            if _step:
                _step(f"write {tower}/{name}")
            with open(os.path.join(folder, tower, name), "w") as f:
                f.write(tag)
    if _step:
        _step("write metadata.json")
    with open(os.path.join(folder, contract.METADATA), "w") as f:
        json.dump({"tag": tag}, f)


def tag(folder: str) -> str:
    with open(os.path.join(folder, contract.METADATA)) as f:
        return json.load(f)["tag"]


def _killed_at(root: str, keep: int, kill_at: int, log: str) -> None:
    """In a forked child: publish a version tagged "killed" into `root`, SIGKILLed before its
    step number `kill_at`, whose description goes to `log`. Exits 0 if it gets through."""
    global _step
    seen = []

    def step(what: str) -> None:
        if len(seen) == kill_at:
            with open(log, "w") as f:
                f.write(what)
            os.kill(os.getpid(), signal.SIGKILL)
        seen.append(what)

    for name in STEPS:
        def hooked(*args, _real=getattr(os, name), _name=name, **kwargs):
            step(f"{_name} {' -> '.join(os.path.basename(str(a)) for a in args[:2])}")
            return _real(*args, **kwargs)
        setattr(os, name, hooked)
    _step = step
    try:
        io.publish_version(root, lambda folder: write_version(folder, "killed"), keep,
                           contract.is_complete)
    except BaseException:  # noqa: BLE001  (a forked child must never return to the launcher)
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def launch(base: str, versions: int, keep: int) -> int:
    """Kill a child before each step in turn until one completes; returns the number of kills.
    Root ``base/<k>/export`` starts with `versions` complete versions and holds what kill k
    left; ``base/<k>.step`` says which step that was."""
    template = os.path.join(base, "template")
    for number in range(versions):
        write_version(os.path.join(template, str(100 + number)), f"old{number}")
    kills = 0
    while True:
        root = os.path.join(base, str(kills), "export")
        shutil.copytree(template, root)
        pid = os.fork()
        if pid == 0:
            _killed_at(root, keep, kills, os.path.join(base, f"{kills}.step"))
        _, status = os.waitpid(pid, 0)
        if not os.WIFSIGNALED(status):
            assert os.WEXITSTATUS(status) == 0, status
            return kills
        assert os.WTERMSIG(status) == signal.SIGKILL
        kills += 1


SCENARIOS = ((3, 2), (1, 1))   # (complete versions before, keep): prunes two, and one
LAUNCH = """
import sys
from tests import test_export_kills
for versions, keep in test_export_kills.SCENARIOS:
    print(test_export_kills.launch(f"{sys.argv[1]}/{versions}-{keep}", versions, keep))
"""


def hidden(root) -> list[str]:
    return [name for name in os.listdir(root) if not name.isdigit()]


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> dict[tuple[int, int], tuple[str, int]]:
    """The kills of every scenario, run by one launcher: (versions, keep) -> (base, kills)."""
    base = tmp_path_factory.mktemp("drill")
    proc = subprocess.run([sys.executable, "-c", LAUNCH, str(base)], cwd=REPO_ROOT,
                          env=command_env(base), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {scenario: (f"{base}/{scenario[0]}-{scenario[1]}", int(kills))
            for scenario, kills in zip(SCENARIOS, proc.stdout.split())}


@pytest.mark.parametrize("versions, keep", SCENARIOS)
def test_a_kill_at_any_step_of_an_export_leaves_only_complete_versions(drill, versions, keep):
    base, kills = drill[versions, keep]
    steps = []
    for k in range(kills):
        with open(os.path.join(base, f"{k}.step")) as f:
            steps.append(f.read())
        root = os.path.join(base, str(k), "export")
        # What a reader sees after the kill: every numbered folder is a complete version, the
        # latest is one of the old ones or the killed run's, whole.
        numbered = io.numbered(root)
        assert numbered and contract.versions(root) == numbered, (steps[-1], os.listdir(root))
        latest = contract.resolve_export(root)
        assert tag(latest) in {"killed", f"old{versions - 1}"}, steps[-1]
        # The next export clears what the killed one left and keeps exactly `keep`.
        new = io.publish_version(root, lambda folder: write_version(folder, "next"), keep,
                                 contract.is_complete)
        assert contract.versions(root) == io.numbered(root), steps[-1]
        assert len(io.numbered(root)) == keep and hidden(root) == [], (steps[-1],
                                                                         os.listdir(root))
        assert contract.resolve_export(root) == new and tag(new) == "next"
    # Every kind of step was a kill point: staging, writing, the publishing rename, and each
    # removal while pruning (the rename out of the numbers, then the deletes).
    kinds = {step.split()[0] for step in steps}
    assert kinds == {"mkdir", "write", "chmod", "rename", "unlink", "rmdir"}, steps
    publish = [s for s in steps if s.startswith("rename") and s.split()[-1].isdigit()]
    prunes = [s for s in steps if s.startswith("rename") and s.split()[1].isdigit()]
    assert len(publish) == 1 and len(prunes) == versions + 1 - keep, steps
    # The run that got through: `keep` versions, the newest its own.
    root = os.path.join(base, str(kills), "export")
    assert len(contract.versions(root)) == keep and hidden(root) == []
    assert tag(contract.resolve_export(root)) == "killed"


def test_a_half_removed_version_is_no_version_and_the_next_export_removes_it(tmp_path):
    """What an export of an older dssm_tf, killed while it pruned, left: numbered folders
    with parts missing. No reader takes them, the error says which and what is missing, and
    the next export with keep=1 leaves one version."""
    root = str(tmp_path / "export")
    write_version(os.path.join(root, "100"), "old")
    shutil.rmtree(os.path.join(root, "100", contract.USER_TOWER))
    with pytest.raises(InputError) as raised:
        contract.resolve_export(root)
    assert str(raised.value) == (f"{root}/100: incomplete version (no user_tower/saved_model.pb)"
                                 f"; {root} holds no complete version (--export_dir)")
    with pytest.raises(InputError, match=r"/100: incomplete version \(no user_tower/saved_"
                                         r"model.pb\) \(--version; complete versions: none\)"):
        contract.resolve_export(root, 100)
    write_version(os.path.join(root, "200"), "complete")
    write_version(os.path.join(root, "300"), "half")
    os.remove(os.path.join(root, "300", contract.METADATA))
    assert contract.versions(root) == [200]
    assert contract.resolve_export(root) == os.path.join(root, "200")
    new = io.publish_version(root, lambda folder: write_version(folder, "next"), 1,
                             contract.is_complete)
    assert os.listdir(root) == [os.path.basename(new)] and tag(new) == "next"


KILL_WHILE_PRUNING = """
import os, signal, sys
from tests.test_export_kills import export_tiny
real_unlink = os.unlink
def unlink(path, *args, **kwargs):
    if kwargs.get("dir_fd") is not None:   # inside shutil.rmtree: the pruning's deletes
        os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(path, *args, **kwargs)
os.unlink = unlink
export_tiny(sys.argv[1], "tensorflow", keep=1)
"""


def export_tiny(root: str, name: str, keep: int) -> str:
    """`export_towers` of two one-layer towers (one int64 input each), `name` in metadata."""
    import dssm_tf  # noqa: F401, PLC0415  (sets TF_USE_LEGACY_KERAS before TensorFlow)
    import tensorflow as tf  # noqa: PLC0415
    import tf_keras as keras  # noqa: PLC0415

    from dssm_tf.serving import export  # noqa: PLC0415

    class Tower(keras.Model):
        def __init__(self, key: str):
            super().__init__()
            self.key, self.dense = key, keras.layers.Dense(2)

        def call(self, features, training=False):
            return self.dense(tf.cast(tf.reshape(features[self.key], [-1, 1]), tf.float32))

    inputs = {tower: {"inputs": [{"name": key, "dtype": "int64", "rank": 1}]}
              for tower, key in ((contract.USER_TOWER, "user_id"),
                                 (contract.ITEM_TOWER, "item_id"))}
    return export.export_towers(Tower("user_id"), Tower("item_id"), root,
                                {"signatures": inputs, "name": name}, keep_versions=keep)


def test_a_tensorflow_export_killed_while_pruning_leaves_its_version_and_no_half(tmp_path):
    root = str(tmp_path / "export")
    write_version(os.path.join(root, "100"), "old")
    proc = subprocess.run([sys.executable, "-c", KILL_WHILE_PRUNING, root], cwd=REPO_ROOT,
                          env=command_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # Killed after publishing its version, while deleting the old one: that is out of the
    # numbers, in a hidden folder of a dead process.
    (number,) = io.numbered(root)
    assert contract.versions(root) == [number] and number > 100
    with open(os.path.join(root, str(number), contract.METADATA)) as f:
        assert json.load(f)["name"] == "tensorflow"
    assert [name for name in hidden(root) if name.startswith(f".{io.VERSION}{io.OLD}")]
    new = io.publish_version(root, lambda folder: write_version(folder, "next"), 1,
                             contract.is_complete)
    assert os.listdir(root) == [os.path.basename(new)]
