"""`python -m benchmarks.scaling`: end to end at tiny sizes, its flags, its data sets' reuse."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from benchmarks import scaling
from dssm_tf.data import synthetic
from tests.conftest import run_module

SIZES = (20000, 40000)


def run_scaling(*args: str, tmp_path, timeout: float = 300):
    return run_module("benchmarks.scaling", *args, tmp_path=tmp_path, timeout=timeout)


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.slow
@pytest.mark.bench  # the harness end to end: `make bench`
def test_scaling_end_to_end(tmp_path):
    """Every phase at two tiny sizes (8 child processes, 4 with TensorFlow: ~40-100 s)."""
    out = tmp_path / "out"
    proc = run_scaling(f"--out={out}", f"--sizes={','.join(map(str, SIZES))}",
                       tmp_path=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("scaling.md", "scaling.json", "scaling.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    with open(out / "scaling.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(out / "scaling.json") as f:
        payload = json.load(f)
    assert payload["sizes"] == list(SIZES)
    rows = payload["rows"]
    assert sorted((r["phase"], r["interactions"]) for r in rows) == sorted(
        (p, n) for p in scaling.PHASES for n in SIZES)
    for row in rows:
        assert row["seconds"] > 0, row
        assert row["peak_bytes"] > row["start_bytes"] > 0, row
        assert row["added_bytes"] == row["peak_bytes"] - row["start_bytes"]
        n = row["interactions"]
        assert row["us_per_interaction"] == pytest.approx(row["seconds"] / n * 1e6)
        assert row["bytes_per_interaction"] == pytest.approx(row["added_bytes"] / n)
    # The ratios, recomputed from the rows.
    table = (out / "scaling.md").read_text()
    for phase in scaling.PHASES:
        mine = [r for r in rows if r["phase"] == phase]
        seconds = [r["seconds"] / r["interactions"] for r in mine]
        memory = [r["added_bytes"] / r["interactions"] for r in mine]
        expected_s, expected_m = max(seconds) / min(seconds), max(memory) / min(memory)
        got = payload["ratios"][phase]
        assert got["seconds_ratio"] == pytest.approx(expected_s)
        assert got["memory_ratio"] == pytest.approx(expected_m)
        assert got["seconds_within"] == (expected_s <= 1.5)
        assert got["memory_within"] == (expected_m <= 1.5)
        line = (f"| {phase} | {len(SIZES)} | {expected_s:.2f} | "
                f"{'yes' if expected_s <= 1.5 else 'NO'} | {expected_m:.2f} | "
                f"{'yes' if expected_m <= 1.5 else 'NO'} |")
        assert line in table
        assert line in proc.stdout
    # Data sets in <out>/data, scaled from the ML-25M preset; the export of the train phase.
    for n in SIZES:
        data = payload["data"][str(n)]
        assert data["folder"] == str(out / "data" / f"synthetic-{n}-seed0")
        assert scaling.reusable(data["folder"], scaling.spec_for(n, 0))
        assert (out / "work" / str(n) / "export").is_dir()
    assert payload["machine"]["cpu_count"] >= 1


@pytest.mark.parametrize("sizes", ["abc", "0", "20000,20000", "500", "1.5"])
def test_bad_sizes_exit_2_with_one_line(tmp_path, sizes):
    proc = run_scaling(f"--out={tmp_path / 'out'}", f"--sizes={sizes}",
                       tmp_path=tmp_path)
    assert proc.returncode == 2
    assert _one_error_line(proc).startswith("error: --sizes: ")
    assert not (tmp_path / "out").exists()


def test_out_is_required_and_data_dir_refused(tmp_path):
    proc = run_scaling("--sizes=20000", tmp_path=tmp_path)
    assert proc.returncode == 2 and _one_error_line(proc).startswith("error: --out: ")
    proc = run_scaling(f"--out={tmp_path}", f"--data_dir={tmp_path}",
                       tmp_path=tmp_path)
    assert proc.returncode == 2 and _one_error_line(proc).startswith("error: --data_dir: ")


def test_a_failing_child_stops_with_one_line_naming_phase_and_size(tmp_path):
    """A reusable data set whose ratings.csv is broken: the load child fails (exit 2), the
    command stops with exit 1 and one line naming the phase, the size and the child's error."""
    n = 20000
    folder = scaling.data_folder(str(tmp_path / "data"), n, 0)
    spec = scaling.spec_for(n, 0)
    synthetic.write_dataset(folder, spec, command=scaling.generate_command(folder, spec))
    ratings = os.path.join(folder, synthetic.RATINGS)
    with open(ratings) as f:
        lines = f.readlines()
    lines[2] = "1,x,3.0,1000000000\n"
    with open(ratings, "w") as f:
        f.writelines(lines)
    proc = run_scaling(f"--out={tmp_path / 'out'}", f"--sizes={n}",
                       f"--data_root={tmp_path / 'data'}", "--verbose=false",
                       tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _one_error_line(proc)
    assert "phase load at 20,000 interactions failed" in line
    assert "ratings.csv" in line
    assert not (tmp_path / "out" / "scaling.md").exists()


def test_sizes_scale_the_ml25m_preset():
    preset = synthetic.PRESETS["movielens-25m"]
    full = scaling.spec_for(preset.interactions, 0)
    assert (full.users, full.items) == (preset.users, preset.items)
    spec = scaling.spec_for(1_000_000, 3)
    assert (spec.users, spec.items, spec.interactions, spec.seed) == (6502, 2362, 1_000_000, 3)
    assert (spec.zipf, spec.activity_sigma) == (preset.zipf, preset.activity_sigma)
    assert scaling.parse_size("25M") == 25_000_000
    assert scaling.parse_size("1_000_000") == scaling.parse_size("1000k") == 1_000_000
    assert scaling.parse_sizes(["5M", "1M"], 0) == [1_000_000, 5_000_000]


def test_data_sets_are_reused_only_when_their_spec_matches(tmp_path):
    n = 3000
    folder = scaling.data_folder(str(tmp_path), n, 0)
    spec = scaling.spec_for(n, 0)
    assert not scaling.reusable(folder, spec)  # not there
    synthetic.write_dataset(folder, spec, command=scaling.generate_command(folder, spec))
    assert scaling.reusable(folder, spec)
    assert not scaling.reusable(folder, dataclasses.replace(spec, seed=1))
    assert not scaling.reusable(folder, scaling.spec_for(4000, 0))
    moved = str(tmp_path / "moved")
    os.rename(folder, moved)
    assert scaling.reusable(moved, spec)  # the folder's path is not part of the spec
    os.remove(os.path.join(moved, synthetic.MOVIES))
    assert not scaling.reusable(moved, spec)
