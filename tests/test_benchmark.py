"""`python -m benchmarks.benchmark` end to end on a synthetic data set.

One benchmark run (a tiny config, 2 seeds, both protocols: four training subprocesses) is
shared by the module's tests; the reuse/failure test runs last and reuses its runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import numpy as np
import pytest

from benchmarks import benchmark
from dssm_tf.config import PROTOCOLS
from tests.conftest import run_module
from tests.synthetic import make_dataset

TINY_CONFIG = """\
# Tiny and fast: the benchmark's plumbing is under test, not the model.
--loss=bce
--negative_sampler=uniform
--epochs=1
--embedding_dim=8
--hidden_units=8
--batch_size=256
--validation_share=0
"""
COMMAND = "benchmarks.benchmark"
MODELS = ["popularity", "itemcf", "tiny"]
MAX_K = 200


@dataclasses.dataclass
class Bench:
    root: object
    data_dir: str
    configs_dir: str
    out: str
    proc: subprocess.CompletedProcess

    def args(self, *extra):
        return (f"--data_dir={self.data_dir}", f"--configs_dir={self.configs_dir}",
                f"--out={self.out}", *extra)

    def results(self) -> dict:
        with open(os.path.join(self.out, "results.json")) as f:
            return json.load(f)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Bench:
    root = tmp_path_factory.mktemp("bench")
    synth = make_dataset(root / "data", n_users=60, n_movies=90, seed=0)
    configs_dir = root / "configs"
    configs_dir.mkdir()
    (configs_dir / "tiny.flags").write_text(TINY_CONFIG)
    result = Bench(root, synth.folder, str(configs_dir), str(root / "out"), None)
    result.proc = run_module(COMMAND, *result.args("--seeds=2", "--configs=tiny"),
                             tmp_path=root)
    return result


@pytest.mark.bench  # trains every config: `make bench`
def test_benchmark_writes_its_three_files(bench):
    assert bench.proc.returncode == 0, bench.proc.stderr[-3000:]
    assert sorted(os.listdir(bench.out)) == ["recall_at_k.png", "results.json", "results.md",
                                             "runs"]  # no temp file left
    for protocol in PROTOCOLS:
        for seed in (0, 1):
            model_dir = os.path.join(bench.out, "runs", "tiny", protocol, f"seed{seed}")
            assert os.path.isfile(os.path.join(model_dir, "metrics.json"))
            assert os.path.isfile(os.path.join(model_dir, benchmark.LOG))


@pytest.mark.bench  # trains every config: `make bench`
def test_results_json_has_every_model_and_protocol(bench):
    payload = bench.results()
    assert payload["k"] == 50 and payload["max_k"] == MAX_K and payload["seeds"] == [0, 1]
    assert payload["failures"] == []
    assert list(payload["results"]) == list(PROTOCOLS)
    for protocol, models in payload["results"].items():
        assert list(models) == MODELS
        for name, summary in models.items():
            expected_seeds = 2 if name == "tiny" else 1
            assert summary["n_seeds"] == expected_seeds
            m = summary["metrics"]
            for key in ("recall@50", "recall@50_user_mean", "hit@50", "ndcg@50",
                        "seed_protocol/recall@50"):
                assert set(m[key]) == {"mean", "std", "values"}, (protocol, name, key)
                assert len(m[key]["values"]) == expected_seeds
                assert 0.0 <= m[key]["mean"] <= 1.0
                assert m[key]["std"] >= 0.0
                assert m[key]["mean"] == pytest.approx(np.mean(m[key]["values"]))
            for key in ("train_seconds", "wall_seconds", "peak_rss_mb"):
                assert m[key]["mean"] > 0, (protocol, name, key)
            curve = np.asarray(summary["recall_at_k"]["mean"])
            assert curve.shape == (MAX_K,)
            assert np.all(np.diff(curve) >= -1e-12) and 0.0 <= curve[0] and curve[-1] <= 1.0
            assert summary["recall_at_k"]["n_runs"] == expected_seeds
        assert models["tiny"]["metrics"]["epochs_run"]["mean"] == 1.0
        assert models["tiny"]["metrics"]["recall@50"]["std"] == pytest.approx(
            np.std(models["tiny"]["metrics"]["recall@50"]["values"], ddof=1))
    published = payload["results"]["time_split"]["itemcf"]["published_seed_recall"]
    assert published == 0.057
    assert payload["results"]["leave_last_one_out"]["itemcf"]["published_seed_recall"] is None


@pytest.mark.bench  # trains every config: `make bench`
def test_results_match_each_runs_metrics_json(bench):
    models = bench.results()["results"]
    for protocol in PROTOCOLS:
        values = []
        for seed in (0, 1):
            path = os.path.join(bench.out, "runs", "tiny", protocol, f"seed{seed}",
                                "metrics.json")
            with open(path) as f:
                values.append(json.load(f)["recall@50"])
        assert models[protocol]["tiny"]["metrics"]["recall@50"]["values"] == values
        seed0 = os.path.join(bench.out, "runs", "tiny", protocol, "seed0")
        with open(os.path.join(seed0, benchmark.RUN_RECORD)) as f:
            command = json.load(f)["command"]
        assert "--request_time=none" in command and "--tie_shuffles=3" in command
        with open(os.path.join(seed0, benchmark.CURVE)) as f:
            assert {key: value for key, value in json.load(f).items() if key != "curve"} == {
                "k": 50, "max_k": MAX_K, "request_time": "none", "tie_shuffles": 3}
        with open(os.path.join(seed0, "metrics.json")) as f:
            run_metrics = json.load(f)
        # No history in the tiny config: one pass, whatever --tie_shuffles says.
        assert (run_metrics["request_time"], run_metrics["tie_shuffles"]) == ("none", 0)
        # The curve is evaluated from the export again: at K=50 it is the run's recall@50.
        curve = models[protocol]["tiny"]["recall_at_k"]["mean"]
        assert curve[49] == pytest.approx(np.mean(values), abs=1e-9)


@pytest.mark.bench  # trains every config: `make bench`
def test_results_md_is_printed_and_lists_every_model(bench):
    with open(os.path.join(bench.out, "results.md")) as f:
        table = f.read()
    assert table.strip() in bench.proc.stdout
    for protocol in PROTOCOLS:
        section = table.split(f"## {protocol}")[1].split("## ")[0]
        rows = [line for line in section.splitlines() if line.startswith("| ")]
        assert [row.split("|")[1].strip() for row in rows] == ["model"] + MODELS
        assert "±" in rows[-1]  # two seeds: mean ± std
        header = rows[0]
        for column in ("recall@50", "hit@50", "ndcg@50", "seed-protocol", "train s", "peak MB",
                       "seeds"):
            assert column in header
    assert "(0.057)" in table.split("## time_split")[1].split("## ")[0]


@pytest.mark.bench  # trains every config: `make bench`
def test_recall_png_is_an_image(bench):
    import matplotlib.image  # noqa: PLC0415  (only this test reads images)

    path = os.path.join(bench.out, "recall_at_k.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100  # two side-by-side plots


def test_bad_configs_and_protocols_exit_2(tmp_path):
    """Refused before any data is read: needs no data set and no trained benchmark."""
    configs_dir = tmp_path / "configs"
    configs_dir.mkdir()
    (configs_dir / "tiny.flags").write_text(TINY_CONFIG)
    args = (f"--data_dir={tmp_path / 'no-data'}", f"--configs_dir={configs_dir}",
            f"--out={tmp_path / 'out'}")
    proc = run_module(COMMAND, *args, "--configs=nope", tmp_path=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.flags" in lines[0] and "--configs" in lines[0]
    proc = run_module(COMMAND, *args, "--protocols=random", tmp_path=tmp_path, timeout=120)
    assert proc.returncode == 2 and "--protocols" in proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_markdown_shows_published_seed_figures():
    entry = {"metrics": {"recall@50": 0.07, "seed_protocol/recall@50": 0.069}, "curve": None,
             "seed": 0}
    results = {"time_split": {"seed_bce": benchmark.summarise([entry, entry], 50, "two_tower",
                                                             None)},
               "leave_last_one_out": {"seed_bce": benchmark.summarise([entry], 50,
                                                                      "two_tower", None)}}
    table = benchmark.markdown(results, 50, [])
    time_split, loo = table.split("## time_split")[1].split("## leave_last_one_out")
    assert "0.0690 ± 0.0000 (0.071)" in time_split
    assert "(0.071)" not in loo
    assert benchmark.aggregate([1.0, 2.0, None, 3.0]) == {"mean": 2.0, "std": 1.0,
                                                          "values": [1.0, 2.0, 3.0]}
    assert benchmark.aggregate([None]) is None


@pytest.mark.bench  # trains every config: `make bench`
def test_reuse_skips_finished_runs_and_failures_are_reported(bench):
    """Runs last (file order): it rewrites bench.out's results with a failing config."""
    with open(os.path.join(bench.configs_dir, "broken.flags"), "w") as f:
        f.write("--loss=no_such_loss\n")
    log = os.path.join(bench.out, "runs", "tiny", "time_split", "seed0", benchmark.LOG)
    before = os.stat(log).st_mtime_ns
    proc = run_module(COMMAND, *bench.args("--seeds=1", "--configs=tiny,broken",
                                           "--protocols=time_split", "--reuse"),
                      tmp_path=bench.root)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert os.stat(log).st_mtime_ns == before  # reused, not retrained
    assert "tiny/time_split/seed0: reused" in proc.stderr
    assert "broken/time_split/seed0: FAILED" in proc.stderr
    assert "1 of 2 training run(s) failed" in proc.stderr
    payload = bench.results()  # still written, for what ran
    assert list(payload["results"]) == ["time_split"]
    assert list(payload["results"]["time_split"]) == MODELS  # no row for the failed config
    assert payload["results"]["time_split"]["tiny"]["n_seeds"] == 1
    [failure] = payload["failures"]
    assert (failure["config"], failure["protocol"], failure["seed"]) == ("broken",
                                                                         "time_split", 0)
    assert failure["returncode"] == 2
    with open(failure["log"]) as f:
        assert "no_such_loss" in f.read()
    with open(os.path.join(bench.out, "results.md")) as f:
        assert "## Failed runs" in f.read()

