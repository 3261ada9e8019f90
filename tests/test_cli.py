"""`python -m dssm_tf.itemcf` end to end, in a subprocess: output, exit codes, stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.synthetic import TINY_RATINGS, write_movielens

CONTRACT_KEYS = {"recall@50", "recall@50_user_mean", "hit@50", "ndcg@50", "n_test_users",
                 "n_test_items", "protocol", "k", "exclude_seen"}


def run_itemcf(*args, tmp_path):
    """Run the command with PYTHONPATH = repo root, an offline default data folder and HOME."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, HOME=str(tmp_path / "home"),
               DSSM_TF_DATA_DIR=str(tmp_path / "default-data"),
               DSSM_TF_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "dssm_tf.itemcf", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_itemcf_cli_writes_contract_json(synthetic_data, tmp_path):
    output = tmp_path / "out" / "itemcf.json"
    proc = run_itemcf(f"--data_dir={synthetic_data.folder}", f"--output={output}",
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert CONTRACT_KEYS <= set(printed)
    assert (printed["protocol"], printed["k"], printed["exclude_seen"]) == ("time_split", 50,
                                                                           True)
    for key in ("recall@50", "recall@50_user_mean", "hit@50", "ndcg@50"):
        assert 0.0 <= printed[key] <= 1.0, key
    test_users = {r[0] for r in synthetic_data.ratings if r[3] >= synthetic_data.cutoff}
    assert 0 < printed["n_test_users"] <= len(test_users)
    assert printed["n_test_items"] == sum(r[3] >= synthetic_data.cutoff
                                          for r in synthetic_data.ratings)
    with open(output) as f:
        assert json.load(f) == printed
    assert os.listdir(output.parent) == ["itemcf.json"]  # no temp file left


def test_itemcf_cli_options_and_flagfile(synthetic_data, tmp_path):
    flagfile = tmp_path / "itemcf.flags"
    flagfile.write_text(f"--data_dir={synthetic_data.folder}\n--protocol=leave_last_one_out\n")
    proc = run_itemcf(f"--flagfile={flagfile}", "--k=5", "--exclude_seen=false",
                      "--neighbors=10", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert (printed["protocol"], printed["k"], printed["exclude_seen"]) == (
        "leave_last_one_out", 5, False)
    assert {"recall@5", "recall@5_user_mean", "hit@5", "ndcg@5"} <= set(printed)
    # The literature's K = 10 and the seed's K = 50 are always reported too.
    assert {"hit@10", "ndcg@10", "hit@50", "ndcg@50"} <= set(printed)
    assert "hit@20" not in printed
    assert printed["n_test_users"] == printed["n_test_items"] == len(synthetic_data.users)
    assert printed["hit@5"] == printed["recall@5"]


def test_itemcf_cli_bad_data(tmp_path):
    bad = list(TINY_RATINGS)
    bad[4] = "2::32::seven::978300500"
    folder = write_movielens(tmp_path / "bad", ratings=bad)
    output = tmp_path / "out.json"
    proc = run_itemcf(f"--data_dir={folder}", f"--output={output}", tmp_path=tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert f"{os.path.join(folder, 'ratings.dat')}:5:" in line and "rating" in line
    assert proc.stdout == ""
    assert not output.exists()


def test_itemcf_cli_no_test_ratings(tmp_path):
    folder = write_movielens(tmp_path / "d")
    output = tmp_path / "out.json"
    proc = run_itemcf(f"--data_dir={folder}", "--cutoff=4000000000", f"--output={output}",
                      tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "--cutoff" in _one_error_line(proc)
    assert not output.exists()


@pytest.mark.parametrize("flag, words", [
    ("--no_such_flag=1", ["no_such_flag"]),
    ("--protocol=random", ["--protocol", "random"]),
    ("--k=0", ["--k"]),
    ("--k=ten", ["--k"]),
    ("--neighbors=0", ["--neighbors"]),
    ("stray_positional", ["stray_positional"]),
])
def test_itemcf_cli_bad_flags(tiny_data_dir, tmp_path, flag, words):
    output = tmp_path / "out.json"
    proc = run_itemcf(f"--data_dir={tiny_data_dir}", f"--output={output}", flag,
                      tmp_path=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = _one_error_line(proc)
    for word in words:
        assert word in line, line
    assert not output.exists()


def test_itemcf_cli_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    proc = run_itemcf(f"--data_dir={missing}", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert str(missing) in _one_error_line(proc)
    assert not missing.exists()  # an explicit folder is never created or downloaded into


def test_itemcf_cli_offline_default(tmp_path):
    url = "file://" + str(tmp_path / "no-such.zip")
    proc = run_itemcf(f"--download_url={url}", tmp_path=tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert str(tmp_path / "default-data") in line and "ratings.dat" in line
    assert not os.path.exists(tmp_path / "default-data" / "ratings.dat")


def test_itemcf_cli_cutoff_takes_a_date_or_seconds(synthetic_data, tmp_path):
    results = []
    for cutoff in ("2003-01-01", "1041379200", "2003-01-01T00:00:00Z"):
        proc = run_itemcf(f"--data_dir={synthetic_data.folder}", f"--cutoff={cutoff}",
                          tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stderr
        results.append({k: v for k, v in json.loads(proc.stdout).items() if k != "seconds"})
    assert results[0] == results[1] == results[2]
    proc = run_itemcf(f"--data_dir={synthetic_data.folder}", "--cutoff=2002-12-01",
                      tmp_path=tmp_path)
    assert json.loads(proc.stdout)["n_test_items"] > results[0]["n_test_items"]
    proc = run_itemcf(f"--data_dir={synthetic_data.folder}", "--cutoff=yesterday",
                      tmp_path=tmp_path)
    assert proc.returncode == 2
    assert _one_error_line(proc).startswith("error: --cutoff: expected Unix seconds or a date")
