"""Training examples on disk: TFRecord shards written once (`prepare`), read by every worker.

What: `write_records` (``python -m dssm_tf.prepare``) streams the *fit* rows of a split — the
training interactions `validation_split` keeps for fitting — into `shards` TFRecord files of
`tf.train.Example`s, one per interaction, in a seeded random order, plus ``manifest.json``
saying what they hold. `RecordPipeline` (``train --train_files=GLOB``) reads them back as
batches with exactly the keys, shapes and dtypes of `InputPipeline`'s, so the model, the losses
and `fit` cannot tell the two apart.

Why: with files, each worker of a cluster reads its own files (file-level sharding) instead of
cutting its share out of a permutation of the whole split, the histories are gathered once
instead of at every step of every epoch, and the examples are plain TFRecords any tf.data code
reads. What stays in memory is what is small or needed whole: the item table (features of
positives and negatives), the sampler, and the validation rows, whose in-memory stream early
stopping reads exactly as without files. (The split itself is still loaded: the validation
rows, their histories and the manifest check need it.)

One example (`<...>` are the data set's schema names):

- ``user/<user key>``, ``user/<feature>`` for *every* user feature of the schema (one set of
  files serves runs with and without ``--user_features``), and ``user/history``: the
  `history_length` (+ `history_gap`) training items before the interaction, raw keys,
  right-aligned with the schema's padding — what `FeatureTables.interaction_features` gives
  (absent when `history_length` is 0);
- ``item/<item key>`` (the raw key) and ``positive_item`` (the item index; the positive's
  features come from the in-memory item table by it, as do the negatives');
- ``timestamp`` (Unix seconds).

Writing: the fit rows are permuted (seeded by ``--seed``), cut into chunks of `CHUNK_ROWS`,
and each chunk becomes features (`FeatureTables`) and serialised `Example`s in a few
vectorised `tf.io.encode_proto` calls (no per-example Python: ~3x faster than building
`tf.train.Example` protos one by one), chunks in parallel; example i of the permutation goes to
file i mod `shards`. Memory stays at a few chunks beyond the split. The folder is written under
a hidden temporary name beside `out` and renamed when complete: a killed `prepare` leaves
nothing at `out` (the next run removes its leftover).

Reading (`RecordPipeline.training`):

- the manifest must match the run — data checksums and data settings, split (protocol and
  cutoff), validation (kind, share, and the seed of a random one), history length and gap, and
  the fit rows themselves (count and digest) — else ConfigError("train_files") naming what
  differs: files of another split would leak test or validation rows into training;
- files: the matching shards, sorted; input pipeline i of P (a `tf.distribute.InputContext`)
  reads files i, i + P, ... (`Dataset.shard`'s rule), so workers read disjoint files;
- each epoch e: the files in a stateless order keyed by (seed, e), read `CYCLE` at a time
  (`interleave`), in blocks of up to `SHUFFLE_BYTES` of examples (a whole number of
  batches), each block permuted by a stateless shuffle keyed by (seed, e, block) — the
  reader's shuffle buffer (tf.data's `Dataset.shuffle` takes no per-epoch seed, and a buffer
  kept across epochs would mix them) — then cut into batches of the per-replica batch size
  (`Shard`) and parsed with `tf.io.parse_example`; the next block is read while one is cut
  (so two blocks are held: about 2.5x `shuffle_bytes` in memory, with tf.string overhead).
  When an epoch's files fit in one block (ML-1M:
  160-200 MB) every epoch is a fresh uniform permutation, as in memory. Smaller blocks mix
  less: on ML-1M, blocks of 50k examples (6% of an epoch) cost the in-batch softmax ~0.016
  of validation loss and ~0.007 of leave-last-one-out recall@50 over 3 seeds (pointwise BCE:
  no difference) — the files hold a random permutation, but examples near each other in a
  file share a block every epoch. For data larger than the block, raise `shuffle_bytes` as
  far as memory allows (more files per worker than `CYCLE` also vary which files share one);
- negatives: the run's sampler with the stateless seed (seed, key), key numbering (step,
  replica) as in `InputPipeline` (on one replica: the global step), history gaps likewise;
- `steps_per_epoch` comes from the manifest's row counts; on one replica an epoch is every
  example once (the last batch short), as in memory.

Usage::

    summary = write_records("/data/ml1m-records", dataset, split, run, shards=16)
    pipeline = RecordPipeline(dataset, split, sampler, tower, training)  # training.train_files
    model.fit(pipeline.training(), steps_per_epoch=pipeline.steps_per_epoch,
              validation_data=pipeline.validation())
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from dssm_tf.config import RunConfig, SamplerConfig, TowerConfig, TrainingConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.outputs import MANIFEST, PREPARED, RECORDS_FORMAT
from dssm_tf.data.pipeline import (FeatureTables, InputPipeline, Shard, check_even_shares,
                                   training_steps, validation_split, with_negatives)
from dssm_tf.data.pipeline import steps_per_epoch as _steps_per_epoch
from dssm_tf.data.schema import FLOAT32, HISTORY, INT64, STRING, Schema
from dssm_tf.data.splits import Split
from dssm_tf.errors import ConfigError
from dssm_tf.io import staged_folder
from dssm_tf.progress import progress

log = logging.getLogger("dssm_tf")

FORMAT, VERSION = RECORDS_FORMAT, 1   # the manifest's "format" and "version"
SUFFIX = ".tfrecord"
CHUNK_ROWS = 100_000    # examples built and serialised at once
SHUFFLE_BYTES = 256 * 2**20   # the reader's shuffle: blocks of this many bytes are permuted
CYCLE = 8               # files read at once by each input pipeline
USER, ITEM = "user/", "item/"
POSITIVE_ITEM, TIMESTAMP = "positive_item", "timestamp"
# Where the data lives may differ between prepare and train; what it holds may not.
_PATH_FIELDS = ("data_dir", "download_url", "interactions", "users", "items")
_TF_DTYPES = {INT64: tf.int64, FLOAT32: tf.float32, STRING: tf.string}
# tf.train.Feature's list fields, by dtype: (field of Feature, message type of the list).
_LISTS = {tf.int64: ("int64_list", "tensorflow.Int64List"),
          tf.float32: ("float_list", "tensorflow.FloatList"),
          tf.string: ("bytes_list", "tensorflow.BytesList")}


def shard_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}{SUFFIX}"


def history_window(tower: TowerConfig, training: TrainingConfig) -> int:
    """Items of history an example stores: `history_length` + `history_gap` (the reader cuts
    a window ending 0..gap items early), 0 without a history."""
    return tower.history_length + training.history_gap if tower.history_length else 0


def feature_spec(schema: Schema, window: int) -> dict[str, tuple[str, list[int]]]:
    """The features of one example: name -> (dtype, shape)."""
    spec = {USER + schema.user_key: (schema.user_key_dtype, [])}
    spec.update({USER + f.name: (f.dtype, []) for f in schema.user_features})
    if window:
        spec[USER + HISTORY] = (schema.item_key_dtype, [window])
    spec[ITEM + schema.item_key] = (schema.item_key_dtype, [])
    spec[POSITIVE_ITEM] = (INT64, [])
    spec[TIMESTAMP] = (INT64, [])
    return spec


def _rows_digest(split: Split, rows: np.ndarray) -> str:
    """md5 of the (user, item, time) of `rows` of `split.train`, in order."""
    digest = hashlib.md5()
    for column in ("user", "item", "timestamp"):
        digest.update(np.ascontiguousarray(
            split.train[column].to_numpy(np.int64)[rows]).tobytes())
    return digest.hexdigest()


def expectations(dataset: Dataset, split: Split, tower: TowerConfig,
                 training: TrainingConfig, fit_rows: np.ndarray) -> dict:
    """What the files of a run must hold, as the manifest records it (JSON types)."""
    data = {key: value for key, value in dataclasses.asdict(dataset.config).items()
            if key not in _PATH_FIELDS}
    validation = {"validation": training.validation}
    if training.validation in ("random", "temporal"):
        validation["validation_share"] = training.validation_share
    if training.validation == "random":   # the seed draws the validation rows
        validation["seed"] = training.seed
    expected = {"data": data, "checksums": dataset.checksums,
                "split": {"protocol": split.protocol, "cutoff": split.cutoff},
                "validation": validation, "history_length": tower.history_length,
                "history_gap": training.history_gap if tower.history_length else 0,
                "fit_rows": int(len(fit_rows)), "fit_rows_md5": _rows_digest(split, fit_rows)}
    return json.loads(json.dumps(expected))


# --- writing -----------------------------------------------------------------------------------

def _encode(message_type: str, fields: dict[str, tf.Tensor]) -> tf.Tensor:
    """[n] serialised `message_type` protos whose field f holds the k values of row i of
    `fields[f]` ([n, k])."""
    names = list(fields)
    values = [fields[name] for name in names]
    rows = tf.shape(values[0])[0]
    sizes = tf.stack([tf.fill([rows], tf.shape(value)[1]) for value in values], axis=1)
    return tf.io.encode_proto(sizes, values, names, message_type)


def encode_examples(columns: dict[str, tf.Tensor]) -> tf.Tensor:
    """[n] serialised `tf.train.Example`s of n rows of `columns` (name -> [n] or [n, k] int64,
    float32 or string), built by `tf.io.encode_proto` one message level at a time, vectorised
    over the rows: the list, the `Feature`, the map entry, `Features`, `Example`. They parse
    as the `tf.train.Example` of the same values (`tf.io.parse_example`, `FromString`)."""
    entries = []
    for name in sorted(columns):
        value = columns[name]
        if value.shape.rank == 1:
            value = value[:, None]
        field, message = _LISTS[value.dtype]
        listed = _encode(message, {"value": value})
        feature = _encode("tensorflow.Feature", {field: listed[:, None]})
        key = tf.fill([tf.shape(value)[0], 1], name)
        entries.append(_encode("tensorflow.Features.FeatureEntry",
                               {"key": key, "value": feature[:, None]}))
    features = _encode("tensorflow.Features", {"feature": tf.stack(entries, axis=1)})
    return _encode("tensorflow.Example", {"features": features[:, None]})


def _serializer(tables: FeatureTables, timestamps: np.ndarray, window: int):
    """rows -> serialised examples of those training rows (see the module docstring)."""
    item_key = tables.schema.item_key
    times = tf.constant(timestamps)

    def serialize(rows: tf.Tensor) -> tf.Tensor:
        features = tables.interaction_features(rows)
        columns = {USER + name: value for name, value in features["user"].items()}
        if not window:
            del columns[USER + HISTORY]
        columns[ITEM + item_key] = features["positive"][item_key]
        columns[POSITIVE_ITEM] = features["positive_item"]
        columns[TIMESTAMP] = tf.gather(times, rows)
        return encode_examples(columns)

    return serialize


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `write_records` wrote."""

    folder: str
    rows: int              # examples (fit rows) written
    validation_rows: int   # left out (they stay in memory for early stopping)
    shards: int
    bytes: int
    seconds: float
    manifest: dict


def write_records(out: str, dataset: Dataset, split: Split, run: RunConfig, shards: int = 16,
                  chunk_rows: int = CHUNK_ROWS, command: str | None = None) -> Summary:
    """Write the fit rows of `split` (as `run.training` splits off its validation rows) as
    `shards` TFRecord files and ``manifest.json`` into folder `out` (see the module
    docstring). `out` must be new, empty or written here before (replaced); else
    ConfigError("out"). `run.split` should be resolved (`splits.resolve`); `command` is
    recorded in the manifest."""
    started = time.perf_counter()
    out = os.path.abspath(out)
    PREPARED.check(out)
    training = run.training
    fit_rows, val_rows = validation_split(split, training)
    if not len(fit_rows):
        raise ConfigError("validation_share", "leaves no training interaction to write")
    if shards > len(fit_rows):
        raise ConfigError("shards", f"{shards} files for {len(fit_rows)} examples: give at "
                                    f"most one file per example")
    window = history_window(run.tower, training)
    tables = FeatureTables(dataset, split, window, user_features=True, item_features=False)
    serialize = _serializer(tables, split.train.timestamp.to_numpy(np.int64), window)
    # Its own stream of the seed: not the permutation that drew the validation rows.
    order = np.random.default_rng([training.seed, 0x7265636F7264]).permutation(fit_rows)
    with staged_folder(out) as tmp:
        names = [shard_name(i, shards) for i in range(shards)]
        chunks = (tf.data.Dataset.from_tensor_slices(order).batch(chunk_rows)
                  .map(serialize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(1))
        writers = [tf.io.TFRecordWriter(os.path.join(tmp, n)) for n in names]
        try:
            position = 0
            with progress(total=len(order), what="writing", unit="examples") as bar:
                for chunk in chunks:
                    records = chunk.numpy()
                    for offset in range(min(shards, len(records))):
                        write = writers[(position + offset) % shards].write
                        for record in records[offset::shards]:
                            write(record)
                    position += len(records)
                    bar.update(len(records))
        finally:
            for writer in writers:
                writer.close()
        counts = np.bincount(np.arange(len(order)) % shards, minlength=shards)
        sizes = [os.path.getsize(os.path.join(tmp, n)) for n in names]
        manifest = {
            "format": FORMAT, "version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "command": command, "dataset": dataset.name, "data_dir": dataset.data_dir,
            **expectations(dataset, split, run.tower, training, fit_rows),
            "validation_rows": int(len(val_rows)), "shuffle_seed": training.seed,
            "schema": dataset.schema.to_dict(),
            "features": {key: {"dtype": dtype, "shape": shape}
                         for key, (dtype, shape) in feature_spec(dataset.schema,
                                                                 window).items()},
            "rows": int(len(order)), "bytes": int(sum(sizes)),
            "shards": [{"file": n, "rows": int(c), "bytes": int(s)}
                       for n, c, s in zip(names, counts, sizes)]}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Summary(folder=out, rows=int(len(order)), validation_rows=int(len(val_rows)),
                   shards=shards, bytes=int(sum(sizes)),
                   seconds=round(time.perf_counter() - started, 2), manifest=manifest)


# --- reading -----------------------------------------------------------------------------------

def _read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            manifest = json.load(f)
    except tf.errors.NotFoundError:
        raise ConfigError("train_files", f"{path} not found: the files must be a folder "
                                         f"written by python -m dssm_tf.prepare") from None
    except (tf.errors.OpError, ValueError) as error:
        raise ConfigError("train_files", f"{path}: not readable as JSON "
                                         f"({str(error).splitlines()[0]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError("train_files", f"{path} is not a manifest of dssm_tf.prepare")
    if manifest.get("version", 0) > VERSION:
        raise ConfigError("train_files", f"{path}: written by a newer dssm_tf (format "
                                         f"version {manifest.get('version')}); update dssm_tf "
                                         f"or prepare the files again")
    return manifest


def find_files(pattern: str) -> tuple[str, dict, list[str], list[int]]:
    """(folder, manifest, files, rows of each file) of `--train_files`: a glob of shards of
    one prepared folder (the manifest itself is ignored when it matches), or the folder.
    ConfigError("train_files") when nothing matches, the files span several folders, a file
    is not one of the manifest's, or its size is not the one written."""
    if tf.io.gfile.isdir(pattern):
        pattern = os.path.join(pattern, "*" + SUFFIX)
    try:
        matched = tf.io.gfile.glob(pattern)
    except tf.errors.OpError:
        matched = []
    matched = sorted(p for p in matched
                     if os.path.basename(p) != MANIFEST and not tf.io.gfile.isdir(p))
    if not matched:
        raise ConfigError("train_files", f"{pattern}: no file matches (write the files with "
                                         f"python -m dssm_tf.prepare --out=DIR, then pass "
                                         f"--train_files='DIR/*{SUFFIX}')")
    folders = sorted({os.path.dirname(p) for p in matched})
    if len(folders) > 1:
        raise ConfigError("train_files", f"{pattern} matches files of {len(folders)} folders "
                                         f"({folders[0]}, {folders[1]}...): give the shards of "
                                         f"one prepared folder")
    folder = folders[0]
    manifest = _read_manifest(folder)
    shards = {shard["file"]: shard for shard in manifest.get("shards", [])}
    rows = []
    for path in matched:
        shard = shards.get(os.path.basename(path))
        if shard is None:
            raise ConfigError("train_files", f"{path} is not one of the files of "
                                             f"{os.path.join(folder, MANIFEST)}")
        size = tf.io.gfile.stat(path).length
        if size != shard["bytes"]:
            raise ConfigError("train_files", f"{path}: {size} bytes, {shard['bytes']} when "
                                             f"written (changed or cut short): prepare the "
                                             f"files again")
        rows.append(int(shard["rows"]))
    if len(matched) < len(shards):
        log.warning("--train_files matches %d of the %d files of %s: training on %s of its "
                    "%s examples", len(matched), len(shards), folder, f"{sum(rows):,}",
                    f"{int(manifest.get('rows', 0)):,}")
    return folder, manifest, matched, rows


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_manifest(folder: str, manifest: dict, expected: dict) -> None:
    """ConfigError("train_files") naming what differs between the run (`expected`, from
    `expectations`) and the files (`manifest`). The fit rows are compared last: they differ
    whenever a setting does, and the setting is the useful thing to name."""
    recorded = _flat({key: manifest.get(key) for key in expected})
    wanted = _flat(expected)
    differences = []
    for key in sorted(set(recorded) | set(wanted),
                      key=lambda k: (k.startswith("fit_rows"), k)):
        old, new = recorded.get(key), wanted.get(key)
        if old == new:
            continue
        if key.startswith("checksums."):
            differences.append(f"{key[len('checksums.'):]} (another file: checksum "
                               f"{str(old)[:8]} in the files, {str(new)[:8]} in this run)")
        elif key.startswith("fit_rows"):
            if not differences:
                differences.append(f"the fit rows ({old} in the files, {new} in this run)")
            break
        else:
            differences.append(f"{key} {old!r} in the files, {new!r} in this run")
    if differences:
        shown = "; ".join(differences[:3])
        more = f" (+{len(differences) - 3} more)" if len(differences) > 3 else ""
        raise ConfigError("train_files", f"{folder} holds examples prepared for other "
                                         f"settings: {shown}{more}; prepare them again with "
                                         f"this run's flags (python -m dssm_tf.prepare "
                                         f"--out=DIR ...)")


class RecordPipeline(InputPipeline):
    """`InputPipeline` whose training stream reads the TFRecord files of
    ``training.train_files`` (see the module docstring); validation, `first_batch`, the
    feature tables and the sampler are the in-memory pipeline's."""

    def __init__(self, dataset: Dataset, split: Split, sampler: SamplerConfig,
                 tower: TowerConfig, training: TrainingConfig, shared_negatives: bool = False,
                 replicas: int = 1, shuffle_bytes: int = SHUFFLE_BYTES):
        if not training.train_files:
            raise ConfigError("train_files", "required: a glob of the files of "
                                             "python -m dssm_tf.prepare")
        super().__init__(dataset, split, sampler, tower, training,
                         shared_negatives=shared_negatives, replicas=replicas)
        self.folder, self.manifest, self.files, self.file_rows = find_files(
            training.train_files)
        check_manifest(self.folder, self.manifest,
                       expectations(dataset, split, tower, training, self.fit_rows))
        self.rows = int(sum(self.file_rows))
        self.history_length = tower.history_length
        self.history_gap = training.history_gap if tower.history_length else 0
        self.window = history_window(tower, training)
        self.shuffle_bytes = shuffle_bytes
        shards = {shard["file"]: shard for shard in self.manifest["shards"]}
        read = sum(shards[os.path.basename(path)]["bytes"] for path in self.files)
        self.example_bytes = read / max(self.rows, 1)   # mean serialised size
        names = [USER + name for name in self.tables.user_columns] + [POSITIVE_ITEM]
        if self.window:
            names.append(USER + HISTORY)
        written = self.manifest.get("features", {})
        self._spec = {}
        for name in names:
            if name not in written:
                raise ConfigError("train_files", f"{self.folder} holds no feature {name!r}: "
                                                 f"prepare the files again")
            dtype, shape = written[name]["dtype"], written[name]["shape"]
            self._spec[name] = tf.io.FixedLenFeature(shape, _TF_DTYPES[dtype])

    @property
    def steps_per_epoch(self) -> int:
        """From the rows of the files read (the manifest's counts)."""
        return _steps_per_epoch(self.rows, self.batch_size, self.replicas)

    def files_of(self, context=None) -> tuple[list[str], int]:
        """(files, examples in them) input pipeline `context.input_pipeline_id` reads: every
        `num_input_pipelines`-th of the sorted files, as `Dataset.shard` takes them."""
        if context is None or context.num_input_pipelines == 1:
            return list(self.files), self.rows
        count, index = context.num_input_pipelines, context.input_pipeline_id
        if len(self.files) < count:
            raise ConfigError("train_files", f"{len(self.files)} files for {count} input "
                                             f"pipelines (workers): prepare at least {count} "
                                             f"--shards")
        return self.files[index::count], int(sum(self.file_rows[index::count]))

    def training(self, start_step: int = 0, context=None) -> tf.data.Dataset:
        """The endless training stream from the files, from step `start_step`; `context` is
        the `tf.distribute.InputContext` of a distributed run.

        Resuming skips `start_step` batches of the same epoch-keyed stream: exact on one input
        pipeline (file order and shuffles are keyed by (seed, epoch), reading is
        deterministic); approximate across workers, whose files may hold slightly more or
        fewer examples than an epoch of global steps takes (an epoch there is cut at
        `steps_per_epoch` whole per-replica batches, or ends early)."""
        shard = Shard.of(context)
        check_even_shares(self.batch_size, shard.replicas)
        steps = training_steps(self.rows, self.batch_size, shard.replicas)
        files, rows = self.files_of(context)
        if rows == 0:
            raise ConfigError("train_files", f"the files of input pipeline "
                                             f"{getattr(context, 'input_pipeline_id', 0)} hold "
                                             f"no example: prepare fewer --shards")
        share = self.batch_size // shard.replicas
        whole = shard.replicas == 1
        per_epoch = steps * shard.count     # elements (per-replica batches) of an epoch here
        # Whole batches per block, at most `shuffle_bytes` (at least one batch).
        per_block = max(1, min(-(-rows // share),
                               int(self.shuffle_bytes // (self.example_bytes * share))))
        names = tf.constant(files)
        cycle = min(len(files), CYCLE)
        seed = self.seed

        def epoch_blocks(epoch: tf.Tensor) -> tf.data.Dataset:
            """(epoch, block index, block) of epoch `epoch`: its examples as read, in blocks
            of `per_block` batches, each in a permutation keyed by (seed, epoch, block)."""
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            order = tf.random.experimental.stateless_shuffle(names, key)
            # Sequential: a parallel interleave costs ~1.6x the CPU per example (ML-1M, local
            # files); parsing, the costly part, runs in parallel below.
            records = tf.data.Dataset.from_tensor_slices(order).interleave(
                tf.data.TFRecordDataset, cycle_length=cycle, block_length=1)
            # The permutation is of positions: batches gather from the block as read (one
            # copy of it held, not two).
            return records.batch(per_block * share).enumerate().map(
                lambda index, block: (epoch, index, block, tf.random.experimental.
                                      stateless_shuffle(tf.range(tf.size(block, tf.int64)),
                                                        tf.random.experimental.
                                                        stateless_fold_in(key, index))))

        def block_batches(epoch, index, block, permutation) -> tf.data.Dataset:
            """(key, batch) of one block: its whole batches, and on one replica the short
            last batch of the epoch; across replicas, no more than an epoch's elements."""
            size = tf.size(block, tf.int64)
            first = index * per_block            # the epoch's element number of its first
            count = (size + share - 1) // share if whole else tf.minimum(
                size // share, tf.maximum(per_epoch - first, 0))

            def batch(j):
                key = shard.locate(epoch, steps, first + j)[2]
                return key, tf.gather(block, permutation[j * share:(j + 1) * share])

            return tf.data.Dataset.range(count).map(batch)

        first_epoch, offset = divmod(start_step, steps)
        stream = (tf.data.Dataset.counter(first_epoch).flat_map(epoch_blocks).prefetch(1)
                  .flat_map(block_batches))
        if offset:
            stream = stream.skip(offset * shard.count)
        return stream.map(self._to_features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE)

    def parse(self, serialized: tf.Tensor) -> dict:
        """The features of a batch of serialised examples this run reads."""
        return tf.io.parse_example(serialized, self._spec)

    def _history(self, parsed: dict, rows: tf.Tensor, step_seed: tf.Tensor) -> tf.Tensor:
        """The [n, history_length] histories: the stored window, or with a gap, its part
        ending a random 0..gap items early (as `FeatureTables.interaction_features` draws
        it)."""
        if not self.window:
            return tf.fill(tf.stack([rows, 0]), self.tables.padding)
        window = parsed[USER + HISTORY]
        if not self.history_gap:
            return window
        gap = tf.random.stateless_uniform(
            tf.reshape(rows, [1]), tf.random.experimental.stateless_fold_in(step_seed, 1), 0,
            self.history_gap + 1, dtype=tf.int64)
        positions = (self.history_gap - gap)[:, None] + tf.range(self.history_length,
                                                                 dtype=tf.int64)[None, :]
        return tf.gather(window, positions, batch_dims=1)

    def _to_features(self, key: tf.Tensor, serialized: tf.Tensor) -> dict:
        """A batch of the in-memory pipeline's structure from serialised examples."""
        parsed = self.parse(serialized)
        step_seed = tf.stack([tf.cast(self.seed, tf.int64), key])
        items = parsed[POSITIVE_ITEM]
        rows = tf.shape(items, out_type=tf.int64)[0]
        user = {name: parsed[USER + name] for name in self.tables.user_columns}
        user[HISTORY] = self._history(parsed, rows, step_seed)
        features = {"user": user, "positive": self.tables.item_features(items),
                    "positive_item": items}
        return with_negatives(features, self.tables, self.sampler, self.num_negatives,
                              self.shared_negatives, step_seed)
