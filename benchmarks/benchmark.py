"""Benchmark every training config and the two baselines on both protocols, over several seeds.

    python -m benchmarks.benchmark [--dataset=NAME --data_dir=DIR ...] [--out=bench]
                                   [--seeds=3] [--configs=seed_bce,seed_triplet,...]
                                   [--configs_dir=configs]
                                   [--protocols=time_split,leave_last_one_out] [--reuse]
                                   [--jobs=1]

For each protocol, popularity and itemCF run in this process (they are deterministic: one run).
Each config `X` (``<configs_dir>/X.flags``) is trained once per seed by a subprocess::

    python -m dssm_tf.train --flagfile=<configs_dir>/X.flags <the data flags> --protocol=P
                            --seed=S --request_time=R --tie_shuffles=N
                            --model_dir=OUT/runs/X/P/seedS --verbose=false

whose ``metrics.json`` is read afterwards (its output goes to ``train.log`` beside it). Each
trained export is then evaluated again with lists of `--max_k` items for recall@K curves (at
the same `--request_time`, the mean curve of the `--tie_shuffles` passes).

Writes, each atomically:

- ``OUT/results.md``: one markdown table per protocol (also printed): metrics as mean ± std over
  seeds, the seed-protocol recall (``--exclude_seen=false``) next to the seed's published figure,
  training and wall time, epochs, peak memory, number of seeds;
- ``OUT/results.json``: the same numbers, every run, and the recall@K curves;
- ``OUT/recall_at_k.png``: recall@K for K = 1..max_k, one subplot per protocol.

A failed training run is reported (log tail on stderr, listed in results.md/json) and the
command exits 1 at the end, after writing the results of what ran. `--reuse` skips a run whose
``metrics.json`` exists and whose command, config text and data checksums are unchanged; a run
killed midway with an unchanged command resumes from its ``BackupAndRestore`` checkpoint;
without `--reuse` every run starts from an empty model folder. Each run's curve is cached in
``recall_at_k.json`` beside its ``metrics.json``, so a fully reused benchmark needs no
TensorFlow. `--jobs=N` trains N runs at once: faster on a big machine, but their times and
memory then interfere (the table's figures are for `--jobs=1`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.children import SOURCE_TREE, run_measured
from dssm_tf import config
from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.config import SplitConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.splits import Split, make_split
from dssm_tf.errors import InputError
from dssm_tf.evaluation import metrics, scoring
from dssm_tf.evaluation.baselines.itemcf import itemcf_scorer
from dssm_tf.evaluation.baselines.popularity import popularity_scorer
from dssm_tf.io import atomic_write, check_writable_folder, write_json, write_text

FLAGS = cli.FLAGS
DEFAULT_CONFIGS_DIR = os.path.join(SOURCE_TREE, "configs")
BASELINES = ("popularity", "itemcf")
RUN_RECORD = "benchmark_run.json"
LOG = "train.log"
CURVE = "recall_at_k.json"  # cached curve of a run's export, for --reuse
# The seed's published time_split recall@50 with --exclude_seen=false, by model/config name.
PUBLISHED_SEED = {"itemcf": 0.057, "seed_bce": 0.071, "seed_triplet": 0.071,
                  "seed_softmax": 0.052, "bce_features": 0.063}
PUBLISHED_DATASET, PUBLISHED_PROTOCOL, PUBLISHED_K = config.MOVIELENS_1M, config.TIME_SPLIT, 50


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --- configuration ---------------------------------------------------------------------------

def resolve_configs(names: list[str] | None, configs_dir: str | None) -> dict[str, str]:
    """{config name: absolute flagfile path}; all ``*.flags`` of the folder when no names."""
    folder = os.path.abspath(configs_dir or DEFAULT_CONFIGS_DIR)
    if not names:
        if not os.path.isdir(folder):
            raise InputError(f"--configs_dir: {folder}: folder not found")
        paths = sorted(glob.glob(os.path.join(folder, "*.flags")))
        return {os.path.basename(p)[:-len(".flags")]: p for p in paths}
    configs = {}
    for name in (n.strip() for n in names):
        if not name:
            continue
        path = name if (os.sep in name or name.endswith(".flags")) else os.path.join(
            folder, name + ".flags")
        path = os.path.abspath(path if path.endswith(".flags") else path + ".flags")
        key = os.path.basename(path)[:-len(".flags")]
        if not os.path.isfile(path):
            raise InputError(f"--configs: {path}: config file not found")
        if key in configs:
            raise InputError(f"--configs: {key} is listed twice")
        if key in BASELINES:
            raise InputError(f"--configs: {key} is the name of a baseline; rename {path}")
        configs[key] = path
    return configs


def resolve_protocols(names: list[str]) -> list[str]:
    chosen = []
    for name in (n.strip() for n in names or []):
        if name not in config.PROTOCOLS:
            raise InputError(f"--protocols: expected names from {', '.join(config.PROTOCOLS)}"
                             f", got {name!r}")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise InputError("--protocols: at least one protocol is needed")
    return chosen


# --- training runs ---------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One training subprocess: config x protocol x seed."""

    config: str
    flagfile: str
    protocol: str
    seed: int
    model_dir: str
    command: list[str]
    status: str = "pending"          # ok | reused | failed
    returncode: int | None = None
    wall_seconds: float | None = None
    child_peak_rss_mb: float | None = None
    metrics: dict | None = None
    error: str | None = None
    curve: np.ndarray | None = None

    @property
    def name(self) -> str:
        return f"{self.config}/{self.protocol}/seed{self.seed}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.model_dir, LOG)

    def record(self, checksums: dict) -> dict:
        """What must be unchanged for `--reuse` (the interpreter path may differ)."""
        with open(self.flagfile, encoding="utf-8") as f:
            text = f.read()
        return {"command": self.command[1:], "flagfile_text": text, "checksums": checksums}

    def summary(self) -> dict:
        return {"config": self.config, "protocol": self.protocol, "seed": self.seed,
                "model_dir": self.model_dir, "status": self.status,
                "returncode": self.returncode, "wall_seconds": self.wall_seconds,
                "child_peak_rss_mb": self.child_peak_rss_mb, "error": self.error,
                "log": self.log_path, "metrics": self.metrics}


def make_runs(configs: dict[str, str], protocol_names: list[str], seeds: int, out: str,
              data_args: list[str], k: int, request_time: str = "none",
              tie_shuffles: int = 3) -> list[Run]:
    """One run per config x protocol x seed; `data_args` select the data (and cutoff); each
    run's report asks at `request_time` and averages `tie_shuffles` passes."""
    runs = []
    for protocol in protocol_names:
        for name, flagfile in configs.items():
            for seed in range(seeds):
                model_dir = os.path.join(out, "runs", name, protocol, f"seed{seed}")
                command = [sys.executable, "-m", "dssm_tf.train", f"--flagfile={flagfile}",
                           *data_args, f"--protocol={protocol}", f"--k={k}", f"--seed={seed}",
                           f"--request_time={request_time}", f"--tie_shuffles={tie_shuffles}",
                           f"--model_dir={model_dir}", "--verbose=false", "--nobaselines"]
                runs.append(Run(name, flagfile, protocol, seed, model_dir, command))
    return runs


def cutoff_flag() -> list[str]:
    """`--cutoff=...` for the training runs, when one was given."""
    return [f"--cutoff={cli.cutoff()}"] if FLAGS.cutoff is not None else []


def _read_metrics(model_dir: str) -> dict:
    path = os.path.join(model_dir, "metrics.json")
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return result


def _read_record(model_dir: str) -> dict | None:
    try:
        with open(os.path.join(model_dir, RUN_RECORD), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tail = f.read().strip().splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in tail)


def execute(run: Run, checksums: dict, reuse: bool) -> Run:
    """Train (or reuse) one run; never raises for a failed training."""
    record = run.record(checksums)
    previous = _read_record(run.model_dir) or {}
    if reuse and {key: v for key, v in previous.items() if key != "wall_seconds"} == record:
        try:
            run.metrics = _read_metrics(run.model_dir)
            if os.path.isdir(run.metrics.get("export_dir", "")):
                run.status = "reused"
                run.wall_seconds = previous.get("wall_seconds")  # of the original run
                return run
        except (OSError, ValueError):
            pass  # unfinished: train again, resuming from the BackupAndRestore checkpoint
    elif os.path.exists(run.model_dir):
        shutil.rmtree(run.model_dir)  # a stale or different run: start afresh
    os.makedirs(run.model_dir, exist_ok=True)
    write_json(os.path.join(run.model_dir, RUN_RECORD), record)
    with open(run.log_path, "w", encoding="utf-8") as log:
        done = run_measured(run.command, stdout=log, stderr=subprocess.STDOUT)
    run.wall_seconds = done.wall_seconds
    run.child_peak_rss_mb = done.peak_rss_bytes / 2**20
    run.returncode = done.returncode
    if run.returncode != 0:
        run.status, run.error = "failed", f"exit status {run.returncode}"
        return run
    try:
        run.metrics = _read_metrics(run.model_dir)
    except (OSError, ValueError) as error:
        run.status, run.error = "failed", f"no readable metrics.json ({error})"
        return run
    run.status = "ok"
    write_json(os.path.join(run.model_dir, RUN_RECORD),
               dict(record, wall_seconds=run.wall_seconds))
    return run


def run_all(runs: list[Run], checksums: dict, reuse: bool, jobs: int, k: int) -> None:
    lock = threading.Lock()
    done = [0]

    def one(run: Run) -> Run:
        execute(run, checksums, reuse)
        with lock:
            done[0] += 1
            prefix = f"[{done[0]}/{len(runs)}] {run.name}:"
            if run.status == "failed":
                _log(f"{prefix} FAILED ({run.error}); log {run.log_path}:\n"
                     f"{_log_tail(run.log_path)}")
            else:
                key = f"recall@{k}"
                wall = f" in {run.wall_seconds:.0f} s" if run.wall_seconds is not None else ""
                value = run.metrics.get(key, float("nan"))
                _log(f"{prefix} {run.status}{wall}, {key} {value:.4f}")
        return run

    if jobs <= 1:
        for run in runs:
            one(run)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, runs))


def _curve_settings(k: int, max_k: int, request_time: str, tie_shuffles: int) -> dict:
    return {"k": k, "max_k": max_k, "request_time": request_time, "tie_shuffles": tie_shuffles}


def _cached_curve(run: Run, k: int, max_k: int, request_time: str = "none",
                  tie_shuffles: int = 3) -> np.ndarray | None:
    """The curve an earlier benchmark computed for a reused run's export, if it matches."""
    settings = _curve_settings(k, max_k, request_time, tie_shuffles)
    try:
        with open(os.path.join(run.model_dir, CURVE), encoding="utf-8") as f:
            cached = json.load(f)
        if ({key: cached.get(key) for key in settings} == settings
                and len(cached["curve"]) == max_k):
            return np.asarray(cached["curve"], np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def add_curves(runs: list[Run], dataset: Dataset, splits: dict, k: int, max_k: int,
               request_time: str = "none", tie_shuffles: int = 3) -> None:
    """recall@1..max_k of each finished run's export (seen excluded), cached beside it: asked
    at `request_time`, the mean curve of the `tie_shuffles` passes (as the run's metrics)."""
    key = f"recall@{k}"
    for run in runs:
        if run.status == "failed":
            continue
        if run.status == "reused":
            run.curve = _cached_curve(run, k, max_k, request_time, tie_shuffles)
            if run.curve is not None:
                continue
        app.start_tensorflow()
        from dssm_tf.evaluation.exports import evaluate_export_passes  # noqa: PLC0415

        split = splits[run.protocol]
        try:
            result, tops = evaluate_export_passes(
                run.metrics["export_dir"], dataset, split, k=k, exclude_seen=True, max_k=max_k,
                request_time=request_time, tie_shuffles=tie_shuffles)
        except (InputError, KeyError, OSError) as error:
            run.status, run.error = "failed", f"export not evaluable for curves ({error})"
            _log(f"{run.name}: FAILED: {run.error}")
            continue
        # Each pass has the same test rows (only the history order differs): the mean curve.
        run.curve = np.mean([metrics.recall_curve(scoring.test_ranks(split, top), max_k)
                             for top in tops], axis=0)
        write_json(os.path.join(run.model_dir, CURVE),
                   dict(_curve_settings(k, max_k, request_time, tie_shuffles),
                        curve=run.curve.tolist()))
        if key in run.metrics and abs(result[key] - run.metrics[key]) > 1e-6:
            _log(f"warning: {run.name}: {key} of the export is {result[key]:.6f}, "
                 f"metrics.json says {run.metrics[key]:.6f}")


# --- baselines -------------------------------------------------------------------------------

def run_baseline(name: str, split: Split, k: int, max_k: int, neighbors: int) -> dict:
    """One in-process run of a baseline: timed fit + recommendations, metrics, curve."""
    start = time.perf_counter()
    scorer = popularity_scorer(split) if name == "popularity" else itemcf_scorer(
        split, neighbors)
    result = scoring.evaluate_scorer(split, scorer, k, exclude_seen=True)
    seconds = time.perf_counter() - start
    seed = scoring.evaluate_scorer(split, scorer, k, exclude_seen=False)
    top = scoring.top_k_for_users(split, scorer, split.test_users, max(k, max_k),
                                  exclude_seen=True)
    curve = metrics.recall_curve(scoring.test_ranks(split, top), max_k)
    result.update({f"seed_protocol/{key}": value for key, value in seed.items() if "@" in key})
    result.update(train_seconds=seconds, wall_seconds=seconds, epochs_run=None,
                  peak_rss_mb=_peak_rss_mb())
    return {"metrics": result, "curve": curve}


# --- aggregation and reports -----------------------------------------------------------------

def metric_keys(k: int) -> list[str]:
    base = [f"recall@{k}", f"recall@{k}_user_mean", f"hit@{k}", f"ndcg@{k}"]
    return scoring.headline_keys(k) + [f"seed_protocol/{key}" for key in base] + [
        "train_seconds", "wall_seconds", "epochs_run", "peak_rss_mb", "n_test_users",
        "n_test_items"]


def aggregate(values: list) -> dict | None:
    """mean and std (sample std, ddof=1; 0 for one value) of the non-missing values."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    array = np.asarray(values)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "values": values}


def summarise(entries: list[dict], k: int, kind: str, source: str | None) -> dict:
    """Aggregate one model's per-seed entries ({"metrics", "curve", "seed"})."""
    curves = np.stack([e["curve"] for e in entries if e.get("curve") is not None]) \
        if any(e.get("curve") is not None for e in entries) else None
    return {
        "kind": kind, "source": source, "n_seeds": len(entries),
        "seeds": [e.get("seed") for e in entries],
        "metrics": {key: agg for key in metric_keys(k)
                    if (agg := aggregate([e["metrics"].get(key) for e in entries]))},
        "recall_at_k": None if curves is None else {
            "mean": curves.mean(axis=0).tolist(),
            "std": (curves.std(axis=0, ddof=1) if len(curves) > 1
                    else np.zeros(curves.shape[1])).tolist(),
            "n_runs": len(curves)},
    }


def published(model: str, protocol: str, k: int,
              dataset: str = PUBLISHED_DATASET) -> float | None:
    """The seed's published figure for `model`, where the seed measured one."""
    if (dataset, protocol, k) == (PUBLISHED_DATASET, PUBLISHED_PROTOCOL, PUBLISHED_K):
        return PUBLISHED_SEED.get(model)
    return None


def _fmt(agg: dict | None, digits: int, n: int) -> str:
    if agg is None:
        return "–"
    mean = f"{agg['mean']:.{digits}f}"
    return mean if n <= 1 else f"{mean} ± {agg['std']:.{digits}f}"


def markdown(results: dict, k: int, failures: list[dict],
             dataset: str = PUBLISHED_DATASET) -> str:
    lines = ["# dssm_tf benchmark", "",
             f"Data: {dataset}. Seen items excluded unless marked *seed protocol* "
             f"(`--exclude_seen=false`, the "
             f"seed's published figures in parentheses: time_split, recall@{PUBLISHED_K}). "
             f"Mean ± sample std over seeds; popularity and itemCF are deterministic (one run).",
             "", "*train s*: fit time (baselines: similarity + recommendations for all test "
             "users, in process); *wall s*: the whole training subprocess (TensorFlow start-up, "
             "fit, export, evaluation). *peak MB*: peak RSS of the training process "
             "(baselines: of the benchmark process so far, measured before TensorFlow is "
             "imported).", ""]
    shown = scoring.headline_keys(k)
    header = ["model", *(key.replace("_user_mean", " user-mean") for key in shown),
              f"seed-protocol recall@{k} (published)", "train s", "wall s", "epochs",
              "peak MB", "seeds"]
    for protocol, models in results.items():
        lines += [f"## {protocol}", ""]
        first = next(iter(models.values()), None)
        if first:
            users = first["metrics"].get("n_test_users")
            items = first["metrics"].get("n_test_items")
            if users and items:
                lines += [f"{users['mean']:.0f} test users, {items['mean']:.0f} test "
                          f"interactions.", ""]
        lines += ["| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for model, summary in models.items():
            m, n = summary["metrics"], summary["n_seeds"]
            seed_cell = _fmt(m.get(f"seed_protocol/recall@{k}"), 4, n)
            if (figure := published(model, protocol, k, dataset)) is not None:
                seed_cell += f" ({figure:.3f})"
            cells = [model, *(_fmt(m.get(key), 4, n) for key in shown), seed_cell,
                     _fmt(m.get("train_seconds"), 1, n), _fmt(m.get("wall_seconds"), 1, n),
                     _fmt(m.get("epochs_run"), 1, n), _fmt(m.get("peak_rss_mb"), 0, n), str(n)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if failures:
        lines += ["## Failed runs", ""]
        lines += [f"- {f['config']}/{f['protocol']}/seed{f['seed']}: {f['error']} "
                  f"(log: `{f['log']}`)" for f in failures]
        lines.append("")
    return "\n".join(lines)


def plot_curves(path: str, results: dict, max_k: int) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.8), squeeze=False)
    ks = np.arange(1, max_k + 1)
    for ax, (protocol, models) in zip(axes[0], results.items()):
        for model, summary in models.items():
            curve = summary.get("recall_at_k")
            if not curve:
                continue
            mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
            style = "--" if summary["kind"] == "baseline" else "-"
            line, = ax.plot(ks, mean, style, label=f"{model} (n={curve['n_runs']})")
            if curve["n_runs"] > 1:
                ax.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_title(protocol)
        ax.set_xlabel("K")
        ax.set_ylabel("recall@K (seen excluded)")
        ax.set_xlim(1, max_k)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


# --- main ------------------------------------------------------------------------------------

def main(argv: list[str]) -> None:
    del argv
    check_writable_folder(FLAGS.out, "out")
    configs = resolve_configs(FLAGS.configs, FLAGS.configs_dir)
    protocol_names = resolve_protocols(FLAGS.protocols)
    k, max_k, out = FLAGS.k, FLAGS.max_k, os.path.abspath(FLAGS.out)
    if not configs:
        _log(f"warning: no config found in {FLAGS.configs_dir or DEFAULT_CONFIGS_DIR}: "
             f"baselines only")
    dataset = cli.load_data()
    splits = {p: make_split(dataset, SplitConfig(protocol=p, cutoff=cli.cutoff()))
              for p in protocol_names}

    baselines = {}
    for protocol in protocol_names:
        for name in BASELINES:
            baselines[protocol, name] = outcome = run_baseline(name, splits[protocol], k, max_k,
                                                               FLAGS.neighbors)
            _log(f"{name}/{protocol}: recall@{k} {outcome['metrics'][f'recall@{k}']:.4f} "
                 f"in {outcome['metrics']['train_seconds']:.2f} s")

    runs = make_runs(configs, protocol_names, FLAGS.seeds, out,
                     cli.data_flags(dataset.config) + cutoff_flag(), k, FLAGS.request_time,
                     FLAGS.tie_shuffles)
    run_all(runs, dataset.checksums, FLAGS.reuse, FLAGS.jobs, k)
    if any(run.status != "failed" for run in runs):
        add_curves(runs, dataset, splits, k, max_k, FLAGS.request_time, FLAGS.tie_shuffles)

    results: dict = {}
    for protocol in protocol_names:
        models = results[protocol] = {}
        for name in BASELINES:
            models[name] = summarise([dict(baselines[protocol, name], seed=None)], k,
                                     "baseline", None)
            models[name]["seeds"] = []
        for name, flagfile in configs.items():
            entries = []
            for run in runs:
                if (run.config, run.protocol) == (name, protocol) and run.status != "failed":
                    run_metrics = dict(run.metrics, wall_seconds=run.wall_seconds)
                    if run_metrics.get("peak_rss_mb") is None:
                        run_metrics["peak_rss_mb"] = run.child_peak_rss_mb
                    entries.append({"metrics": run_metrics, "curve": run.curve,
                                    "seed": run.seed})
            if entries:
                models[name] = summarise(entries, k, "two_tower", flagfile)
        for model, summary in models.items():
            summary["published_seed_recall"] = published(model, protocol, k, dataset.name)

    failures = [run.summary() for run in runs if run.status == "failed"]
    payload = {
        "k": k, "max_k": max_k, "seeds": list(range(FLAGS.seeds)), "dataset": dataset.name,
        "data_dir": dataset.data_dir, "checksums": dataset.checksums,
        "protocols": protocol_names, "configs": configs,
        "results": results,
        "runs": [{key: value for key, value in run.summary().items() if key != "metrics"}
                 for run in runs],
        "failures": failures,
    }
    table = markdown(results, k, failures, dataset.name)
    os.makedirs(out, exist_ok=True)
    write_text(os.path.join(out, "results.json"), json.dumps(payload, indent=2) + "\n")
    write_text(os.path.join(out, "results.md"), table)
    plot_curves(os.path.join(out, "recall_at_k.png"), results, max_k)
    print(table)
    _log(f"wrote {os.path.join(out, 'results.md')}, results.json and recall_at_k.png")
    if failures:
        _log(f"{len(failures)} of {len(runs)} training run(s) failed:")
        for failure in failures:
            _log(f"  {failure['config']}/{failure['protocol']}/seed{failure['seed']}: "
                 f"{failure['error']} (log: {failure['log']})")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
