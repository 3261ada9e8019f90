"""Build and fit the configured two-tower model: the one training loop of every scheme.

Takes configs (`dssm_tf.config`), never flags, so `train`, `speed` and `benchmark` build the
very same model from the same `RunConfig`.

Usage::

    result = fit(run, dataset, split, model_dir="runs/bce")
    result.model.user_tower, result.epochs_run, result.seconds
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tf_keras as keras

from dssm_tf.config import RunConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.pipeline import InputPipeline, steps_per_epoch
from dssm_tf.data.sequences import SequencePipeline
from dssm_tf.data.splits import Split
from dssm_tf.models.losses import make_loss
from dssm_tf.models.towers import build_towers
from dssm_tf.models.two_tower import TwoTowerModel
from dssm_tf.training import distribute, resume
from dssm_tf.training.callbacks import ValidationRecall
from dssm_tf.training.optimizers import make_optimizer


@dataclasses.dataclass
class FitResult:
    model: TwoTowerModel
    epochs_run: int    # counted from the start of the run, across resumes
    seconds: float     # of this process's `fit`


def build_model(run: RunConfig, dataset: Dataset, split: Split,
                pipeline: InputPipeline | SequencePipeline) -> TwoTowerModel:
    """The compiled two-tower model `run` describes (seeded by `run.training.seed`)."""
    keras.utils.set_random_seed(run.training.seed)
    # Set either way: the policy is global and must not leak into a later model.
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if run.training.mixed_precision else "float32")
    user_tower, item_tower = build_towers(run.tower, dataset)
    counts = split.item_counts
    sequences = run.training.examples == "sequences"
    scheme = make_loss(run.loss, sampler_probabilities=pipeline.sampler.probabilities(),
                       train_probabilities=counts / counts.sum(),
                       batch_size=(pipeline.positions_per_batch if sequences
                                   else run.training.batch_size),
                       num_negatives=run.sampler.num_negatives, sequences=sequences,
                       candidates=run.sampler.negative_sampler)
    model = TwoTowerModel(user_tower, item_tower, scheme)
    # One step per call, with the same updates, where Keras' loop of several steps per call
    # fails: it does not trace under MultiWorkerMirrored ("destinations can not be empty"),
    # and sequences on several replicas gather tensors whose shapes change from step to step,
    # while the loop's iterations reuse each collective, which must keep its first shape.
    replicas = model.distribute_strategy.num_replicas_in_sync
    one_step = run.training.distribution == "multi_worker" or (sequences and replicas > 1)
    steps = 1 if one_step else run.training.steps_per_execution
    model.compile(optimizer=make_optimizer(run.training, pipeline.steps_per_epoch),
                  steps_per_execution=steps)
    return model


def make_pipeline(run: RunConfig, dataset: Dataset, split: Split,
                  replicas: int = 1) -> InputPipeline | SequencePipeline:
    """The input pipeline `run` describes: one example per interaction, or per user window;
    `replicas` in sync share each global batch."""
    if run.training.train_files:
        from dssm_tf.data.records import RecordPipeline  # noqa: PLC0415
        kind = RecordPipeline
    else:
        kind = SequencePipeline if run.training.examples == "sequences" else InputPipeline
    return kind(dataset, split, run.sampler, run.tower, run.training,
                shared_negatives=run.loss.shares_negatives, replicas=replicas)


def fit(run: RunConfig, dataset: Dataset, split: Split, model_dir: str) -> FitResult:
    """Fit the model `run` describes to early stop, resuming a killed run in `model_dir`.

    `model_dir` receives TensorBoard logs (``logs/``) and, while training, the
    `BackupAndRestore` checkpoint (``backup/``) a rerun resumes from; the caller checks that
    the backup belongs to this run (`dssm_tf.training.resume`). Under
    ``--distribution=mirrored|multi_worker`` the model lives in the strategy's scope and each
    replica reads its share of every global batch (`dssm_tf.training.distribute`).
    """
    training = run.training
    strategy = distribute.make_strategy(training.distribution)  # before any other TF op
    replicas = strategy.num_replicas_in_sync
    pipeline = make_pipeline(run, dataset, split, replicas)
    with strategy.scope():
        model = build_model(run, dataset, split, pipeline)
    backup_dir = os.path.join(model_dir, resume.BACKUP)
    start_step = resume.backed_up_steps(backup_dir)
    # Early stopping on recall needs no validation loss: the pass that computes it (a third of
    # an epoch's work for sequences) is skipped.
    by_recall = training.early_stopping_metric == "recall" and len(pipeline.val_rows) > 0
    if replicas > 1:
        train_ds = strategy.distribute_datasets_from_function(
            lambda context: pipeline.training(start_step, context))
        val_ds = (strategy.distribute_datasets_from_function(pipeline.validation)
                  if len(pipeline.val_rows) and not by_recall else None)
    else:
        train_ds = pipeline.training(start_step=start_step)
        val_ds = None if by_recall else pipeline.validation()
    with strategy.scope():
        model(pipeline.first_batch())  # build, so BackupAndRestore can restore into them
    callbacks = [keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
                 keras.callbacks.BackupAndRestore(backup_dir)]
    if val_ds is not None or by_recall:
        monitor, mode = "val_loss", "min"
        if by_recall:
            rng = np.random.default_rng(training.seed)
            val_rows = pipeline.val_rows
            picked = np.sort(rng.choice(val_rows, min(training.validation_rows, len(val_rows)),
                                        replace=False))
            recall = ValidationRecall(pipeline.tables, picked, split.seen_rows(pipeline.fit_rows),
                                      split.candidates, history_ends=pipeline.val_history_ends)
            callbacks.append(recall)
            monitor, mode = recall.name, "max"
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=training.patience, restore_best_weights=True))
    start = time.perf_counter()
    # A distributed stream has no end Keras can see: say how many whole global batches.
    validation_steps = None
    if replicas > 1 and val_ds is not None:
        validation_steps = getattr(pipeline, "validation_steps", None) or steps_per_epoch(
            len(pipeline.val_rows), training.batch_size, replicas)
    history = model.fit(train_ds, epochs=training.epochs, steps_per_epoch=pipeline.steps_per_epoch,
                        validation_data=val_ds, validation_steps=validation_steps,
                        callbacks=callbacks, verbose=1 if training.verbose else 2)
    # After a resume, `history.epoch` holds only this process's epochs; count from the start.
    epochs_run = history.epoch[-1] + 1 if history.epoch else 0
    return FitResult(model, epochs_run, time.perf_counter() - start)


def versions() -> dict:
    """Versions of the libraries a model was trained with (recorded in metadata.json)."""
    import faiss  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    import dssm_tf  # noqa: PLC0415

    return {"dssm_tf": dssm_tf.__version__, "tensorflow": tf.__version__,
            "tf_keras": keras.__version__,
            "faiss": faiss.__version__, "numpy": np.__version__}
