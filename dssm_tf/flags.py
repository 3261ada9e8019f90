"""Every command-line flag of dssm_tf, defined once. Commands import this module.

All commands share one flag namespace, so one `--flagfile` works with `train`, `evaluate`,
`itemcf`, `benchmark` and `recommend`.
"""

from __future__ import annotations

from absl import flags

from dssm_tf import data, protocols

ACTIVATIONS = ["relu", "leaky_relu", "gelu", "elu", "selu", "swish", "tanh", "linear"]

# Data and protocol.
flags.DEFINE_string("data_dir", None, "Folder holding ratings.dat, users.dat, movies.dat. "
                    f"Default: ${data.DATA_DIR_ENV} or ~/.cache/dssm_tf/ml-1m (downloaded).")
flags.DEFINE_string("download_url", data.DOWNLOAD_URL, "Where the default data is fetched from.")
flags.DEFINE_enum("protocol", protocols.TIME_SPLIT, list(protocols.PROTOCOLS),
                  "Evaluation protocol.")
flags.DEFINE_integer("cutoff", protocols.DEFAULT_CUTOFF,
                     "time_split: ratings at or after this Unix time are test ratings.")

# Evaluation.
flags.DEFINE_integer("k", 50, "Length of the recommendation lists.", lower_bound=1)
flags.DEFINE_boolean("exclude_seen", True,
                     "Remove a user's training movies from their candidates (false = seed's).")
flags.DEFINE_string("output", None, "Write the metrics JSON here.")

# itemCF baseline.
flags.DEFINE_integer("neighbors", 50, "itemCF: neighbours each history movie contributes.",
                     lower_bound=1)

# Training (python -m dssm_tf.train).
flags.DEFINE_string("model_dir", "runs/model", "Checkpoints, TensorBoard logs, export/, metrics.json.")
flags.DEFINE_enum("loss", "bce", ["bce", "triplet", "softmax", "inbatch"], "Loss scheme.")
flags.DEFINE_enum("negative_sampler", "uniform", ["uniform", "frequency", "inbatch"],
                  "uniform: over training movies; frequency: the seed's count^power mix; "
                  "inbatch: the other positives of the batch (plus --num_negatives shared ones).")
flags.DEFINE_integer("num_negatives", 3, "Sampled negatives per positive (shared by the batch "
                     "for --loss=inbatch).", lower_bound=0)
flags.DEFINE_float("frequent_share", 0.3, "frequency sampler: share of negatives drawn from "
                   "frequent movies.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("frequent_min_count", 5, "frequency sampler: training ratings that make a "
                     "movie frequent.", lower_bound=1)
flags.DEFINE_float("frequency_power", 0.75, "frequency sampler: weight = count**power.")
flags.DEFINE_float("validation_share", 0.1, "Share of training interactions held out for early "
                   "stopping.", lower_bound=0.0, upper_bound=0.9)
flags.DEFINE_integer("validation_rows", 20000, "At most this many held-out interactions are "
                     "scored for val_recall.", lower_bound=1)
flags.DEFINE_enum("early_stopping_metric", "loss", ["loss", "recall"],
                  "Monitor val_loss (min) or val_recall@50 (max).")
flags.DEFINE_integer("patience", 3, "Early-stopping patience in epochs.", lower_bound=0)
flags.DEFINE_integer("epochs", 20, "Maximum epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 512, "Training batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.005, "Optimizer learning rate.", lower_bound=0.0)
flags.DEFINE_enum("optimizer", "adam", ["adam", "adagrad", "sgd"], "Optimizer.")
flags.DEFINE_integer("seed", 0, "Seed for shuffling, negatives, validation split, init.")
flags.DEFINE_boolean("mixed_precision", False, "Compute in float16 (mixed_float16 policy).")
flags.DEFINE_integer("steps_per_execution", 64, "Batches per tf.function call: fewer Python "
                     "round trips per step (3x faster at batch 128 on 2 CPU cores); the updates "
                     "are the same as with 1.", lower_bound=1)
flags.DEFINE_boolean("verbose", True, "Show the Keras progress bar.")
flags.DEFINE_boolean("baselines", True, "train: also evaluate popularity and itemCF on the same "
                     "split for the summary table.")

# Towers.
flags.DEFINE_integer("embedding_dim", 64, "Id embedding size.", lower_bound=1)
flags.DEFINE_list("hidden_units", ["128", "64"], "MLP layer sizes of both towers; the last is "
                  "the output size. Empty: the concatenated embeddings are the output.")
flags.DEFINE_enum("activation", "relu", ACTIVATIONS, "Hidden-layer activation.")
flags.DEFINE_enum("output_activation", "linear", ACTIVATIONS, "Last MLP layer activation.")
flags.DEFINE_float("dropout", 0.0, "Dropout after hidden layers.", lower_bound=0.0,
                   upper_bound=0.95)
flags.DEFINE_enum("similarity", "cosine", ["cosine", "dot"],
                  "cosine: towers L2-normalise their output.")
flags.DEFINE_float("embedding_l2", 0.0, "L2 regularisation of the embedding tables.",
                   lower_bound=0.0)
flags.DEFINE_enum("initializer", "uniform", ["uniform", "glorot_uniform", "truncated_normal",
                                             "he_normal"], "Embedding initializer.")
flags.DEFINE_integer("feature_dim", 16, "Embedding size of gender/age/occupation/genres.",
                     lower_bound=1)
flags.DEFINE_boolean("user_features", False, "Add gender, age, occupation to the user tower.")
flags.DEFINE_boolean("item_features", False, "Add mean-pooled genres to the movie tower.")
flags.DEFINE_integer("history_length", 0, "Pool the user's last L movies (0 = no history).",
                     lower_bound=0)
flags.DEFINE_integer("history_gap", 0, "Training: a row's history ends 0..G rows before it "
                     "(uniform), to learn to predict further ahead than the next movie.",
                     lower_bound=0)

# Loss parameters.
flags.DEFINE_float("temperature", 1.0, "bce/inbatch: logits = score / temperature.",
                   lower_bound=1e-6)
flags.DEFINE_float("margin", 0.5, "triplet: margin.", lower_bound=0.0)
flags.DEFINE_enum("triplet_distance", "euclidean", ["euclidean", "cosine"],
                  "triplet: d = ||u - v|| or d = 1 - cos(u, v).")
flags.DEFINE_float("gamma", 20.0, "softmax: logits = gamma * score.", lower_bound=1e-6)
flags.DEFINE_boolean("sampling_correction", False, "bce/softmax: add -log(q(i)/q_uniform) to "
                     "each logit, so a frequency sampler does not teach the towers to demote "
                     "popular movies.")
flags.DEFINE_float("logq_weight", 1.0, "inbatch: weight of the logQ correction (1 = full, "
                   "0 = none).", lower_bound=0.0)


def _positive_ints(values: list[str]) -> bool:
    return all(v.strip().isdigit() and int(v) > 0 for v in values)


flags.register_validator("hidden_units", _positive_ints,
                         "--hidden_units: expected comma-separated positive integers, e.g. 128,64")

FLAGS = flags.FLAGS


def load_split() -> tuple[data.MovieLens, protocols.Split]:
    """The data set and split that `--data_dir`, `--protocol` and `--cutoff` select."""
    ml = data.load_movielens(data.resolve_data_dir(FLAGS.data_dir, FLAGS.download_url))
    return ml, protocols.make_split(ml, FLAGS.protocol, FLAGS.cutoff)


# --- Export-side evaluation and retrieval (evaluate, recommend; retrieval.py) -----------------
flags.DEFINE_string("export_dir", None,
                    "evaluate/recommend: export folder holding user_tower/, item_tower/ and "
                    "metadata.json.")
flags.DEFINE_enum("index", "flat", ["flat", "ivf", "hnsw"],
                  "faiss index for top-K retrieval (inner product): flat = exact.")
flags.DEFINE_integer("nlist", None, "ivf: number of inverted lists (default ~sqrt(#movies)).",
                     lower_bound=1)
flags.DEFINE_integer("nprobe", None, "ivf: lists probed per query (default nlist/4).",
                     lower_bound=1)
flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node (M).", lower_bound=2)
flags.DEFINE_integer("ef_search", 64, "hnsw: efSearch (raised to the search depth if lower).",
                     lower_bound=1)
flags.DEFINE_integer("user_id", None, "recommend: the raw MovieLens UserID to recommend for.")
flags.DEFINE_integer("embed_batch_size", 4096,
                     "evaluate/recommend: rows per call of a tower's serving signature.",
                     lower_bound=1)
# --- end export-side block ---------------------------------------------------------------------

# --- Benchmark and speed block (python -m dssm_tf.benchmark / dssm_tf.speed) -------------------
flags.DEFINE_string("out", "bench", "benchmark: output folder for results.md, results.json, "
                    "recall_at_k.png and runs/<config>/<protocol>/seed<S>/.")
flags.DEFINE_integer("seeds", 3, "benchmark: training runs per config and protocol "
                     "(seeds 0..N-1).", lower_bound=1)
flags.DEFINE_list("configs", None, "benchmark: config names X of <configs_dir>/X.flags "
                  "(default: every *.flags file there).")
flags.DEFINE_string("configs_dir", None, "benchmark: folder of the config flagfiles "
                    "(default: configs/ next to the dssm_tf package).")
flags.DEFINE_list("protocols", list(protocols.PROTOCOLS), "benchmark: protocols to run.")
flags.DEFINE_integer("max_k", 200, "benchmark: recall@K curves for K = 1..max_k.",
                     lower_bound=1)
flags.DEFINE_boolean("reuse", False, "benchmark: reuse a run whose metrics.json exists and "
                     "whose command and config are unchanged (resume a long benchmark).")
flags.DEFINE_integer("jobs", 1, "benchmark: training subprocesses run at once (>1 distorts "
                     "the time and memory figures).", lower_bound=1)
flags.DEFINE_integer("speed_batches", 200, "speed: input-pipeline batches timed.",
                     lower_bound=1)
flags.DEFINE_integer("speed_steps", 100, "speed: training steps timed.", lower_bound=1)
# --- end benchmark and speed block -------------------------------------------------------------
