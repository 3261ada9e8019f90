"""Does the cost grow linearly with the data? Seconds and memory per interaction at several sizes.

    python -m benchmarks.scaling --out=DIR [--sizes=1000000,5000000,25000000]
                                 [--data_root=DIR] [--seed=0] [--verbose=false]

Why: 25M interactions should cost 25 times what 1M costs, not more. A step that is quadratic
somewhere (a dense users x items array, a Python loop over pairs) shows up here as a
per-interaction cost that grows with the size. The goal (issue): at 1M, 5M and 25M
interactions, the seconds and the memory per interaction of loading, itemCF, one training
epoch and evaluation within 1.5x of each other.

What: for each size n of `--sizes` (`k`/`M` suffixes allowed: `1M,5M,25M`), a synthetic data
set in the MovieLens-25M layout (`dssm_tf.data.synthetic`, the `movielens-25m` preset's shape
and `--seed`), with users and items in proportion to ML-25M's (users = round(162,541 n /
25,000,095), items likewise from its 59,047; below ~260k interactions items are raised to 4x
the mean interactions per user, which a user's ratings need room for). It is written into
`--data_root` (default `<out>/data`) and reused when a data set of the same spec is there
(its README.txt records the command that wrote it). Then four phases, each timed in its own
child process (``python -m benchmarks.scaling --phase=NAME ...``) so its peak memory is its
own:

- ``load``: `load_dataset` (``--dataset=movielens-25m``) and the leave-last-one-out split;
- ``itemcf``: `itemcf_scorer` (50 neighbours) + `evaluate_scorer`, top-50 of every test user
  (as `python -m benchmarks.speed` times it, one run);
- ``train``: one epoch of ``configs/bce.flags`` on leave-last-one-out, without validation
  (`dssm_tf.training.trainer.fit`: pipeline, model and the epoch), then `export_towers` into
  ``<out>/work/<n>/export`` (its seconds are in the JSON, not the table);
- ``evaluate``: `evaluate_export` of that export (SavedModel load, faiss retrieval, metrics),
  top-50 of every user, seen items excluded.

Each child times its phase itself (not the imports, not the set-up: loading the data for the
last three) and reports its RSS after its imports (TensorFlow's too for train and evaluate);
this process takes the child's peak RSS from `os.wait4`. "added" is peak minus that start: the
memory the data and the phase need, which TensorFlow's fixed ~0.5 GB would otherwise hide at
1M. (A child's peak is at least this process's RSS when it was started: this process stays
small, loads no data and generates none itself.)

Writes, each atomically, and prints the table:

- ``<out>/scaling.md``: per phase and size: seconds, µs per interaction, peak and added GB,
  added bytes per interaction; per phase the max/min ratio of the per-interaction seconds and
  added bytes across the sizes, "within 1.5x: yes/NO";
- ``<out>/scaling.json``: every number, each child's extras, the data sets, the machine
  (CPUs, memory, load average, versions);
- ``<out>/scaling.png``: log-log, interactions against seconds and against added memory, per
  phase, with the linear extrapolation from the smallest size dashed.

Children's output goes to ``<out>/work/<n>/<phase>.log``. A child that fails stops the command
with one line naming the phase, the size and the child's last stderr line (exit status 1).
Bad flags: one line, exit status 2. The timings are only meaningful on a quiet machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import sys
import time

from absl import flags
from tqdm import tqdm

import dssm_tf
from benchmarks.children import SOURCE_TREE, run_measured
from dssm_tf import config
from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.config import DataConfig, SplitConfig
from dssm_tf.data import synthetic
from dssm_tf.errors import ConfigError, InputError
from dssm_tf.io import atomic_write, check_writable_folder, write_json, write_text
from dssm_tf.progress import progress

FLAGS = cli.FLAGS
COMMAND = "benchmarks.scaling"  # this module, as its children and its reports name it
PHASES = ("load", "itemcf", "train", "evaluate")
GENERATE = "generate"          # the data set's own child (not a timed phase)
DEFAULT_SIZES = ("1000000", "5000000", "25000000")
PRESET = "movielens-25m"
K = 50
NEIGHBORS = 50
LIMIT = 1.5                    # the goal: per-interaction costs within 1.5x across sizes
MIN_ITEMS_PER_MEAN = 4         # items >= 4 x mean interactions per user (tiny sizes only)
MIN_SIZE = 1000                # fewer interactions make a degenerate data set
RESULT_PREFIX = "scaling-result: "  # the child's JSON line on stdout
TRAIN_FLAGFILE = os.path.join(SOURCE_TREE, "configs", "bce.flags")
# What the train child overrides in configs/bce.flags: one epoch, no validation (so no early
# stop and no validation pass), on leave-last-one-out.
TRAIN_OVERRIDES = ("--epochs=1", "--validation_share=0")
GB = 1e9

flags.DEFINE_list("sizes", list(DEFAULT_SIZES), "scaling: numbers of interactions to measure "
                  "at (k/M suffixes allowed, e.g. 1M,5M,25M).")
flags.DEFINE_string("data_root", None, "scaling: folder of the synthetic data sets, one "
                    "per size, reused when their spec matches (default: <out>/data).")
flags.DEFINE_enum("phase", None, [GENERATE, *PHASES], "scaling (internal): run this one "
                  "phase in this process and print its JSON line.")
flags.DEFINE_string("work", None, "scaling (internal): the phase's work folder (export, "
                    "model, logs).")


# --- sizes and data sets -----------------------------------------------------------------------

def parse_size(text: str) -> int:
    """'25000000', '25_000_000', '25M', '500k' -> int; ConfigError("sizes") otherwise."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip().replace("_", ""))
    if not found:
        raise ConfigError("sizes", f"expected positive numbers of interactions (e.g. "
                                   f"1000000,5000000 or 1M,5M), got {text!r}")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[found.group(2).lower()]
    value = float(found.group(1)) * scale
    if value != int(value) or int(value) < 1:
        raise ConfigError("sizes", f"expected a positive whole number of interactions, got "
                                   f"{text!r}")
    return int(value)


def spec_for(n: int, seed: int) -> synthetic.Spec:
    """The `movielens-25m` preset scaled to `n` interactions (see the module doc)."""
    preset = synthetic.PRESETS[PRESET]
    users = max(1, round(preset.users * n / preset.interactions))
    items = max(1, round(preset.items * n / preset.interactions),
                math.ceil(MIN_ITEMS_PER_MEAN * n / users))
    return dataclasses.replace(preset, users=users, items=items, interactions=n, seed=seed)


def parse_sizes(values: list[str], seed: int) -> list[int]:
    """--sizes as increasing distinct sizes whose data sets can be generated."""
    if not values or not any(v.strip() for v in values):
        raise ConfigError("sizes", "expected at least one number of interactions")
    sizes = [parse_size(v) for v in values if v.strip()]
    if len(set(sizes)) != len(sizes):
        raise ConfigError("sizes", f"a size is listed twice: {','.join(map(str, sizes))}")
    for n in sizes:
        if n < MIN_SIZE:
            raise ConfigError("sizes", f"{n}: too small (at least {MIN_SIZE:,} interactions)")
        spec = spec_for(n, seed)
        try:
            spec.validate()
        except ConfigError as error:
            raise ConfigError("sizes", f"{n}: no data set of this shape ({spec.users} users, "
                                       f"{spec.items} items): {error.message}") from None
    return sorted(sizes)


def data_folder(root: str, n: int, seed: int) -> str:
    return os.path.join(root, f"synthetic-{n}-seed{seed}")


def generate_command(folder: str, spec: synthetic.Spec) -> str:
    """The `python -m dssm_tf.synthetic` command that writes `spec` (recorded in README.txt)."""
    return (f"python -m dssm_tf.synthetic --out={folder} --preset={PRESET} "
            f"--users={spec.users} --items={spec.items} --interactions={spec.interactions} "
            f"--seed={spec.seed}")


def _made_by(folder: str) -> list[str] | None:
    """The arguments of the command README.txt says wrote `folder`, without --out."""
    try:
        with open(os.path.join(folder, synthetic.README), encoding="utf-8") as f:
            for line in f:
                if line.startswith("Made by:"):
                    words = line[len("Made by:"):].split()
                    return [w for w in words if not w.startswith("--out=")]
    except OSError:
        return None
    return None


def reusable(folder: str, spec: synthetic.Spec) -> bool:
    """Whether `folder` holds the data set `spec` describes, written by dssm_tf.synthetic."""
    if not (synthetic.is_synthetic(folder)
            and all(os.path.isfile(os.path.join(folder, name)) for name in synthetic.FILES)):
        return False
    expected = [w for w in generate_command(folder, spec).split() if not w.startswith("--out=")]
    return _made_by(folder) == expected


# --- memory ----------------------------------------------------------------------------------

def _status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int:
    """This process's resident memory now."""
    value = _status_bytes("VmRSS")
    if value is None:
        import resource  # noqa: PLC0415
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return value


def machine() -> dict:
    """What the timings depend on (as `speed` records, plus memory and load)."""
    versions = {"dssm_tf": dssm_tf.__version__}
    for package in ("tensorflow", "tensorflow-cpu", "tf-keras", "numpy", "pandas", "scipy",
                    "faiss-cpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions}
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            info["memory_total_gb"] = round(int(f.readline().split()[1]) * 1024 / GB, 1)
    with contextlib.suppress(OSError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


# --- the child: one phase ----------------------------------------------------------------------

def _data_config(data_dir: str) -> DataConfig:
    return DataConfig(dataset=PRESET, data_dir=data_dir)


def _split_config() -> SplitConfig:
    return SplitConfig(protocol=config.LEAVE_LAST_ONE_OUT)


def _load(data_dir: str):
    from dssm_tf.data.sources import load_dataset  # noqa: PLC0415
    from dssm_tf.data.splits import make_split  # noqa: PLC0415

    dataset = load_dataset(_data_config(data_dir))
    return dataset, make_split(dataset, _split_config())


def phase_generate(data_dir: str, n: int, seed: int) -> dict:
    spec = spec_for(n, seed)
    start_rss = rss_bytes()
    start = time.perf_counter()
    summary = synthetic.write_dataset(data_dir, spec, command=generate_command(data_dir, spec))
    return dict(seconds=time.perf_counter() - start, start_rss_bytes=start_rss,
                users=summary.users, items=summary.items, rated_items=summary.rated_items,
                clusters=summary.clusters)


def phase_load(data_dir: str) -> dict:
    start_rss = rss_bytes()
    start = time.perf_counter()
    dataset, split = _load(data_dir)
    seconds = time.perf_counter() - start
    return dict(seconds=seconds, start_rss_bytes=start_rss,
                rows=len(dataset.interactions), users=len(dataset.users),
                items=len(dataset.items), train_rows=len(split.train),
                test_users=len(split.test_users))


def phase_itemcf(data_dir: str) -> dict:
    from dssm_tf.evaluation.baselines.itemcf import itemcf_scorer  # noqa: PLC0415
    from dssm_tf.evaluation.scoring import evaluate_scorer  # noqa: PLC0415

    start_rss = rss_bytes()
    _, split = _load(data_dir)
    start = time.perf_counter()
    scorer = itemcf_scorer(split, NEIGHBORS)
    result = evaluate_scorer(split, scorer, K, exclude_seen=True)
    return dict(seconds=time.perf_counter() - start, start_rss_bytes=start_rss,
                test_users=result["n_test_users"], **{f"hit@{K}": result[f"hit@{K}"]})


def _start_tensorflow() -> None:
    app.start_tensorflow()


def phase_train(data_dir: str, work: str) -> dict:
    _start_tensorflow()
    from dssm_tf.data import splits  # noqa: PLC0415
    from dssm_tf.serving import contract, export  # noqa: PLC0415
    from dssm_tf.training import trainer  # noqa: PLC0415

    start_rss = rss_bytes()
    run = cli.run_config()  # configs/bce.flags and the overrides, as `train` reads them
    dataset, split = _load(data_dir)
    run = dataclasses.replace(run, data=dataset.config, split=splits.resolve(dataset, run.split))
    model_dir, export_root = os.path.join(work, "model"), os.path.join(work, "export")
    for folder in (model_dir, export_root):  # a leftover backup/ would resume, not train
        shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch line: stdout is for the result
        result = trainer.fit(run, dataset, split, model_dir)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    export_dir = export.export_towers(result.model.user_tower, result.model.item_tower,
                                      export_root,
                                      contract.build_metadata(run, dataset, split,
                                                              trainer.versions()))
    return dict(seconds=seconds, start_rss_bytes=start_rss, fit_seconds=result.seconds,
                export_seconds=time.perf_counter() - start, epochs_run=result.epochs_run,
                export_dir=export_dir, batch_size=run.training.batch_size,
                steps=-(-len(split.train) // run.training.batch_size))


def phase_evaluate(data_dir: str, work: str) -> dict:
    _start_tensorflow()
    from dssm_tf.evaluation.exports import evaluate_export  # noqa: PLC0415
    from dssm_tf.serving import contract  # noqa: PLC0415

    start_rss = rss_bytes()
    dataset, split = _load(data_dir)
    export_dir = contract.resolve_export(os.path.join(work, "export"))
    start = time.perf_counter()
    result, _ = evaluate_export(export_dir, dataset, split, k=K, exclude_seen=True)
    return dict(seconds=time.perf_counter() - start, start_rss_bytes=start_rss,
                retrieval_seconds=result.get("seconds"), test_users=result["n_test_users"],
                **{f"hit@{K}": result[f"hit@{K}"]})


def run_phase(phase: str) -> None:
    """The child: one phase, its JSON line on stdout."""
    if not FLAGS.data_dir:
        raise ConfigError("data_dir", f"--phase={phase} needs the data set's folder")
    if phase in ("train", "evaluate") and not FLAGS.work:
        raise ConfigError("work", f"--phase={phase} needs a work folder")
    if phase == GENERATE:
        [size] = FLAGS.sizes
        result = phase_generate(FLAGS.data_dir, parse_size(size), FLAGS.seed)
    elif phase == "load":
        result = phase_load(FLAGS.data_dir)
    elif phase == "itemcf":
        result = phase_itemcf(FLAGS.data_dir)
    elif phase == "train":
        result = phase_train(FLAGS.data_dir, FLAGS.work)
    else:
        result = phase_evaluate(FLAGS.data_dir, FLAGS.work)
    result.update(phase=phase, hwm_bytes=_status_bytes("VmHWM"))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


# --- the parent: every phase at every size -----------------------------------------------------

class ChildFailed(Exception):
    pass


def child_command(phase: str, n: int, data_dir: str, work: str, seed: int) -> list[str]:
    command = [sys.executable, "-m", COMMAND]
    if phase == "train":  # the config first: the flags after it override it
        command += [f"--flagfile={TRAIN_FLAGFILE}", f"--dataset={PRESET}",
                    f"--protocol={config.LEAVE_LAST_ONE_OUT}", *TRAIN_OVERRIDES]
    command += [f"--phase={phase}", f"--data_dir={data_dir}", f"--work={work}",
                f"--sizes={n}", f"--seed={seed}", "--verbose=false"]
    if FLAGS["verbosity"].present:
        command.append(f"--verbosity={FLAGS.verbosity}")
    return command


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_child(phase: str, n: int, data_dir: str, work: str, seed: int) -> dict:
    """Run one phase's child; its result with `peak_rss_bytes` (from wait4) and `wall_seconds`.
    ChildFailed with the one line to show when it fails."""
    os.makedirs(work, exist_ok=True)
    log_path = os.path.join(work, f"{phase}.log")
    with open(log_path, "w", encoding="utf-8") as log:
        done = run_measured(child_command(phase, n, data_dir, work, seed), stderr=log,
                            capture_stdout=True)
    out, wall = done.stdout, done.wall_seconds
    where = f"phase {phase} at {n:,} interactions"
    if done.returncode != 0:
        said = _last_line(log_path)
        said = said[len("error: "):] if said.startswith("error: ") else said
        if done.returncode < 0:
            said = said or f"killed by signal {-done.returncode}"
            if -done.returncode == 9:
                said += " (signal 9: out of memory?)"
        raise ChildFailed(f"error: {where} failed (exit status {done.returncode}): "
                          f"{said or 'no message'} (log: {log_path})")
    lines = [line[len(RESULT_PREFIX):] for line in out.splitlines()
             if line.startswith(RESULT_PREFIX)]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ChildFailed(f"error: {where} printed no result (log: {log_path})") from None
    result.update(peak_rss_bytes=done.peak_rss_bytes, wall_seconds=wall, log=log_path)
    return result


def row_of(phase: str, n: int, result: dict) -> dict:
    """One table row: the child's figures per interaction."""
    peak, start = result["peak_rss_bytes"], result["start_rss_bytes"]
    added = peak - start
    return dict(phase=phase, interactions=n, seconds=result["seconds"],
                us_per_interaction=result["seconds"] / n * 1e6, peak_bytes=peak,
                start_bytes=start, added_bytes=added, bytes_per_interaction=added / n,
                child=result)


def ratio(values: list[float]) -> float | None:
    """max/min of positive per-interaction costs (None for fewer than two sizes, or when one
    is not positive)."""
    if len(values) < 2 or min(values) <= 0:
        return None
    return max(values) / min(values)


def ratios(rows: list[dict]) -> dict:
    """Per phase: max/min across sizes of µs and added bytes per interaction."""
    out = {}
    for phase in PHASES:
        mine = [r for r in rows if r["phase"] == phase]
        if not mine:
            continue
        seconds = ratio([r["us_per_interaction"] for r in mine])
        memory = ratio([r["bytes_per_interaction"] for r in mine])
        out[phase] = dict(seconds_ratio=seconds, memory_ratio=memory,
                          seconds_within=seconds is not None and seconds <= LIMIT,
                          memory_within=memory is not None and memory <= LIMIT,
                          sizes=[r["interactions"] for r in mine])
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _yes(ok: bool, value: float | None) -> str:
    return "n/a" if value is None else ("yes" if ok else "NO")


def render(rows: list[dict], summary: dict, data: dict) -> str:
    lines = ["| phase | interactions | users | items | seconds | µs / interaction | peak GB "
             "| added GB | bytes / interaction |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = data[r["interactions"]]
        lines.append(f"| {r['phase']} | {r['interactions']:,} | {d['users']:,} | "
                     f"{d['items']:,} | {r['seconds']:.2f} | {r['us_per_interaction']:.2f} | "
                     f"{r['peak_bytes'] / GB:.2f} | {r['added_bytes'] / GB:.3f} | "
                     f"{r['bytes_per_interaction']:.0f} |")
    lines += ["", f"Per-interaction cost, max / min across the sizes (goal: within "
                  f"{LIMIT:g}x):", "",
              "| phase | sizes | seconds ratio | within 1.5x | added-memory ratio "
              "| within 1.5x |", "|---|---:|---:|---|---:|---|"]
    for phase, s in summary.items():
        lines.append(f"| {phase} | {len(s['sizes'])} | {_fmt(s['seconds_ratio'])} | "
                     f"{_yes(s['seconds_within'], s['seconds_ratio'])} | "
                     f"{_fmt(s['memory_ratio'])} | "
                     f"{_yes(s['memory_within'], s['memory_ratio'])} |")
    return "\n".join(lines)


def markdown(table: str, info: dict, sizes: list[int], seed: int) -> str:
    return "\n".join([
        f"# Cost per interaction against the data size (`python -m {COMMAND}`)", "",
        f"Synthetic data sets in the MovieLens-25M layout (`{PRESET}` preset scaled to each "
        f"size, seed {seed}); sizes {', '.join(f'{n:,}' for n in sizes)}. Each phase runs in "
        f"its own process: seconds are the phase's own (no imports, no data loading except in "
        f"`load`); peak is the process's maximum RSS, added = peak - RSS after its imports. "
        f"A ratio is n/a with one size.",
        "", table, "",
        f"Machine: {info.get('cpu_count')} CPUs, {info.get('memory_total_gb', '?')} GB, "
        f"{info.get('platform')}; load average at the start "
        f"{info.get('load_average_start', '?')}, at the end {info.get('load_average', '?')}. "
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""])


def plot(path: str, rows: list[dict]) -> None:
    """Log-log: interactions vs seconds and vs added memory, per phase; dashed: linear."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, scale, label in ((axes[0], "seconds", 1.0, "seconds"),
                                  (axes[1], "added_bytes", GB, "added memory (GB)")):
        for phase in PHASES:
            mine = [r for r in rows if r["phase"] == phase and r[key] > 0]
            if not mine:
                continue
            x = [r["interactions"] for r in mine]
            y = [r[key] / scale for r in mine]
            line, = ax.plot(x, y, "o-", label=phase)
            if len(x) > 1:  # linear growth from the smallest size
                ax.plot([x[0], x[-1]], [y[0], y[0] * x[-1] / x[0]], "--",
                        color=line.get_color(), alpha=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    axes[0].set_title("seconds per phase (dashed: linear from the smallest size)")
    axes[1].set_title("peak - start RSS per phase")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _say(message: str) -> None:
    if FLAGS.verbose:
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()


def measure(out: str, data_root: str, sizes: list[int], seed: int) -> tuple[list, dict]:
    """Every phase at every size: (rows, data sets by size). ChildFailed stops it."""
    rows, data = [], {}
    with progress(total=len(sizes) * len(PHASES), what="scaling", unit="phases") as bar:
        for n in sizes:
            spec = spec_for(n, seed)
            folder = data_folder(data_root, n, seed)
            work = os.path.join(out, "work", str(n))
            entry = dict(folder=folder, users=spec.users, items=spec.items, reused=True)
            if not reusable(folder, spec):
                _say(f"scaling: writing {n:,} interactions ({spec.users:,} users, "
                     f"{spec.items:,} items) into {folder}")
                made = run_child(GENERATE, n, folder, work, seed)
                entry.update(reused=False, generate_seconds=round(made["seconds"], 2),
                             generate_peak_gb=round(made["peak_rss_bytes"] / GB, 3))
            else:
                _say(f"scaling: reusing {folder}")
            data[n] = entry
            for phase in PHASES:
                result = run_child(phase, n, folder, work, seed)
                row = row_of(phase, n, result)
                rows.append(row)
                _say(f"scaling: {n:,} interactions, {phase}: {row['seconds']:.2f} s "
                     f"({row['us_per_interaction']:.2f} µs each), peak "
                     f"{row['peak_bytes'] / GB:.2f} GB, added {row['added_bytes'] / GB:.3f} GB")
                bar.update(1)
    return rows, data


def check_flags() -> tuple[str, str, list[int]]:
    if not FLAGS["out"].present:
        raise ConfigError("out", "required: the folder for scaling.md, scaling.json, "
                                 "scaling.png")
    if FLAGS["data_dir"].present:
        raise ConfigError("data_dir", "scaling writes its own synthetic data sets: give "
                                      "--data_root=DIR for where they go")
    if FLAGS["work"].present:
        raise ConfigError("work", "internal (with --phase): the work folders are under --out")
    sizes = parse_sizes(FLAGS.sizes, FLAGS.seed)
    out = os.path.abspath(FLAGS.out)
    check_writable_folder(out, "out")
    data_root = os.path.abspath(FLAGS.data_root or os.path.join(out, "data"))
    check_writable_folder(data_root, "data_root")
    for n in sizes:
        folder = data_folder(data_root, n, FLAGS.seed)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ConfigError("data_root", f"{folder} is a file, not a folder")
        if os.path.isdir(folder) and os.listdir(folder) and not synthetic.is_synthetic(folder):
            raise ConfigError("data_root", f"{folder} holds other files (not a data set of "
                                           f"dssm_tf.synthetic): move them or give another "
                                           f"--data_root")
    if not os.path.isfile(TRAIN_FLAGFILE):
        raise InputError(f"{TRAIN_FLAGFILE}: file not found (the train phase's config; "
                         f"run from a checkout of dssm_tf)")
    return out, data_root, sizes


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.phase:
        run_phase(FLAGS.phase)
        return
    out, data_root, sizes = check_flags()
    info = machine()
    info["load_average_start"] = info.pop("load_average", None)
    started = time.perf_counter()
    try:
        rows, data = measure(out, data_root, sizes, FLAGS.seed)
    except ChildFailed as failure:
        sys.stderr.write(f"{failure}\n")
        sys.exit(1)
    info.update({k: v for k, v in machine().items() if k == "load_average"})
    summary = ratios(rows)
    table = render(rows, summary, data)
    md_path, json_path, png_path = (os.path.join(out, f"scaling.{ext}")
                                    for ext in ("md", "json", "png"))
    write_text(md_path, markdown(table, info, sizes, FLAGS.seed))
    write_json(json_path, {
        "sizes": sizes, "seed": FLAGS.seed, "preset": PRESET, "k": K, "neighbors": NEIGHBORS,
        "train_config": TRAIN_FLAGFILE, "train_overrides": list(TRAIN_OVERRIDES),
        "protocol": config.LEAVE_LAST_ONE_OUT, "limit": LIMIT,
        "data": {str(n): d for n, d in data.items()}, "rows": rows, "ratios": summary,
        "machine": info, "wall_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join([f"python -m {COMMAND}", *sys.argv[1:]])})
    plot(png_path, rows)
    print(table)
    _say(f"wrote {md_path}, {json_path} and {png_path}")


if __name__ == "__main__":
    app.run(main)
