"""`python -m benchmarks.speed` on the real ML-1M (skipped without DSSM_TF_DATA_DIR)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_module


@pytest.mark.slow
@pytest.mark.bench  # the harness end to end: `make bench`
def test_speed_on_real_data(real_data_dir, tmp_path):
    output = tmp_path / "speed.json"
    proc = run_module("benchmarks.speed", f"--data_dir={real_data_dir}", f"--output={output}",
                      "--speed_batches=20", "--speed_steps=10", "--steps_per_execution=5",
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(output) as f:
        rows = json.load(f)["rows"]
    whats = " | ".join(row["what"] for row in rows)
    for needle in ("movielens-1m load", "itemCF", "pipeline", "train step", "evaluate_export",
                   "retrieval model latency, batch 1", "retrieval model throughput"):
        assert needle in whats
    assert all(row["value"] > 0 for row in rows)
    assert "ok?" in proc.stdout
