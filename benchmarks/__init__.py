"""The measurement harness of dssm_tf: what `make bench` runs, kept out of the library.

It lives in the source tree only (the wheel ships `dssm_tf` alone) and uses the library as a
user would, through its public modules; it shares their one absl flag namespace
(`dssm_tf.cli.flags`), so one flagfile serves the commands and the harness.

- `benchmarks.benchmark`: every config of `configs/` and both baselines on both protocols,
  over seeds (`results.md`, `results.json`, `recall_at_k.png`);
- `benchmarks.speed`: load, itemCF, pipeline, training-step, evaluation and serving timings
  against their targets;
- `benchmarks.scaling`: seconds and peak memory per interaction at several data sizes
  (`scaling.md`, `scaling.json`, `scaling.png`);
- `benchmarks.children`: the measured child processes the first and the last run.

Usage, from the source tree's root::

    python -m benchmarks.speed --data_dir=$ML
    python -m benchmarks.scaling --out=bench/scaling
    python -m benchmarks.benchmark --data_dir=$ML --out=bench
"""
