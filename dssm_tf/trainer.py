"""Build and fit the configured two-tower model; everything `train` needs besides the CLI.

Reads the flags of `dssm_tf.flags`, so `train`, `speed` and `benchmark` build the very same model.

Usage::

    model = build_model(ml, split, sampler)       # compiled TwoTowerModel
    model, epochs_run, seconds = fit(ml, split)   # to early stop
"""

from __future__ import annotations

import math
import os
import time

import faiss
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

import dssm_tf
from dssm_tf import losses, sampling
from dssm_tf import flags as cli
from dssm_tf.data import MovieLens
from dssm_tf.model import TwoTowerModel, ValidationRecall
from dssm_tf.protocols import Split
from dssm_tf.towers import TowerConfig, build_towers

FLAGS = cli.FLAGS
TRAINING_FLAGS = (  # recorded in metadata.json and metrics.json
    "loss", "negative_sampler", "num_negatives", "frequent_share", "frequent_min_count",
    "frequency_power", "validation_share", "validation_rows", "early_stopping_metric", "patience",
    "epochs", "batch_size", "learning_rate", "optimizer", "seed", "mixed_precision",
    "steps_per_execution", "embedding_dim", "hidden_units", "activation", "output_activation",
    "dropout", "similarity", "embedding_l2", "initializer", "feature_dim", "user_features",
    "item_features", "history_length", "history_gap", "temperature", "margin", "triplet_distance",
    "gamma", "logq_weight", "sampling_correction", "protocol", "cutoff",)


def tower_config() -> TowerConfig:
    """The architecture the tower flags describe."""
    return TowerConfig(
        embedding_dim=FLAGS.embedding_dim,
        hidden_units=tuple(int(u) for u in FLAGS.hidden_units),
        activation=FLAGS.activation, output_activation=FLAGS.output_activation,
        dropout=FLAGS.dropout, similarity=FLAGS.similarity, embedding_l2=FLAGS.embedding_l2,
        initializer=FLAGS.initializer, feature_dim=FLAGS.feature_dim,
        user_features=FLAGS.user_features, item_features=FLAGS.item_features,
        history_length=FLAGS.history_length)


def _optimizer() -> keras.optimizers.Optimizer:
    kind = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad,
            "sgd": keras.optimizers.SGD}[FLAGS.optimizer]
    return kind(learning_rate=FLAGS.learning_rate)


def _loss_scheme(split: Split, ml: MovieLens, sampler: sampling.Sampler) -> losses.LossScheme:
    movie_ids = ml.movies.movie_id.to_numpy()
    if FLAGS.loss == "inbatch":
        counts = split.movie_counts
        return losses.make_loss(
            "inbatch", temperature=FLAGS.temperature, movie_ids=movie_ids,
            train_probabilities=counts / counts.sum(),
            negative_probabilities=sampler.probabilities(), batch_size=FLAGS.batch_size,
            num_negatives=FLAGS.num_negatives, logq_weight=FLAGS.logq_weight)
    correction = (losses.SamplingCorrection(movie_ids, sampler.probabilities())
                  if FLAGS.sampling_correction else None)
    return losses.make_loss(FLAGS.loss, temperature=FLAGS.temperature, margin=FLAGS.margin,
                            triplet_distance=FLAGS.triplet_distance, gamma=FLAGS.gamma,
                            correction=correction)


def build_model(ml: MovieLens, split: Split, sampler: sampling.Sampler) -> TwoTowerModel:
    """The compiled two-tower model the flags describe (seeded by `--seed`)."""
    keras.utils.set_random_seed(FLAGS.seed)
    # Set either way: the policy is global and must not leak into a later model.
    keras.mixed_precision.set_global_policy(
        "mixed_float16" if FLAGS.mixed_precision else "float32")
    user_tower, item_tower = build_towers(tower_config(), ml)
    model = TwoTowerModel(user_tower, item_tower, _loss_scheme(split, ml, sampler),
                          shared_negatives=FLAGS.loss == "inbatch")
    model.compile(optimizer=_optimizer(), steps_per_execution=FLAGS.steps_per_execution)
    return model


def feature_tables(ml: MovieLens, split: Split) -> sampling.FeatureTables:
    """Input tables gathering only the fields the configured towers read."""
    return sampling.FeatureTables.from_split(
        ml, split, FLAGS.history_length, FLAGS.history_gap,
        user_fields=FLAGS.user_features, genres=FLAGS.item_features)


def make_sampler(split: Split) -> sampling.Sampler:
    """The negative sampler `--negative_sampler` and its parameters describe."""
    return sampling.make_sampler(FLAGS.negative_sampler, split.movie_counts,
                                 FLAGS.frequent_share, FLAGS.frequent_min_count,
                                 FLAGS.frequency_power)


def _backed_up_steps(backup_dir: str) -> int:
    """Training steps saved in `BackupAndRestore`'s checkpoint (0 when there is none), so a
    resumed run continues the killed run's shuffles and negatives instead of replaying them."""
    path = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if path is None:
        return 0
    return int(tf.train.load_variable(path, "model/optimizer/_iterations/.ATTRIBUTES/"
                                            "VARIABLE_VALUE"))


def fit(ml: MovieLens, split: Split) -> tuple[TwoTowerModel, int, float]:
    """Fit the configured model to early stop; returns (model, epochs run, seconds)."""
    fit_rows, val_rows = sampling.split_validation(len(split.train), FLAGS.validation_share,
                                                   FLAGS.seed)
    tables = feature_tables(ml, split)
    sampler = make_sampler(split)
    model = build_model(ml, split, sampler)
    shared = model.shared_negatives

    datasets = dict(tables=tables, sampler=sampler, num_negatives=FLAGS.num_negatives,
                    batch_size=FLAGS.batch_size, seed=FLAGS.seed, shared_negatives=shared)
    backup_dir = os.path.join(FLAGS.model_dir, "backup")
    train_ds = sampling.training_dataset(rows=fit_rows, start_step=_backed_up_steps(backup_dir),
                                         **datasets)
    val_ds = sampling.validation_dataset(rows=val_rows, **datasets) if len(val_rows) else None
    # Build, so BackupAndRestore can restore into the variables. Any batch would do: the
    # training stream is stateless, so building does not shift the batches `fit` sees.
    model(next(iter(sampling.validation_dataset(rows=fit_rows[:FLAGS.batch_size], **datasets))))
    callbacks = [keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.TensorBoard(os.path.join(FLAGS.model_dir, "logs")),
                 keras.callbacks.BackupAndRestore(backup_dir)]
    if val_ds is not None:
        monitor, mode = "val_loss", "min"
        if FLAGS.early_stopping_metric == "recall":
            rng = np.random.default_rng(FLAGS.seed)
            picked = np.sort(rng.choice(val_rows, min(FLAGS.validation_rows, len(val_rows)),
                                        replace=False))
            recall = ValidationRecall(tables, picked, split.seen_rows(fit_rows),
                                      split.candidates)
            callbacks.append(recall)
            monitor, mode = recall.name, "max"
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=FLAGS.patience, restore_best_weights=True))
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=FLAGS.epochs,
                        steps_per_epoch=math.ceil(len(fit_rows) / FLAGS.batch_size),
                        validation_data=val_ds, callbacks=callbacks,
                        verbose=1 if FLAGS.verbose else 2)
    # After a resume, `history.epoch` holds only this process's epochs; count from the start.
    epochs_run = history.epoch[-1] + 1 if history.epoch else 0
    return model, epochs_run, time.perf_counter() - start


def metadata(ml: MovieLens, split: Split) -> dict:
    """What `evaluate` and serving need to know about an export (CONTRACT.md)."""
    return {
        "similarity": FLAGS.similarity,
        "embedding_dim": tower_config().output_dim,
        "history_length": FLAGS.history_length,
        "protocol": split.protocol,
        "train_cutoff": split.cutoff,
        "flags": {name: FLAGS[name].value for name in TRAINING_FLAGS},
        "checksums": ml.checksums,
        "versions": {"dssm_tf": dssm_tf.__version__, "tensorflow": tf.__version__,
                     "tf_keras": keras.__version__, "tensorflow_recommenders": tfrs.__version__,
                     "faiss": faiss.__version__, "numpy": np.__version__},
    }


