"""Data sources: every reader ends in the same `Dataset` (`dssm_tf.data.dataset`).

- MovieLens releases (`movielens`): ``--dataset=movielens-100k|1m|10m|20m|25m|32m``, downloaded
  from GroupLens into a cache folder when missing;
- your own files (`tabular`): ``--dataset=tabular --interactions=FILE`` (.csv, .tsv, .parquet).

Usage::

    dataset = load_dataset(DataConfig(dataset="tabular", interactions="events.csv",
                                      user_column="customer", item_column="product",
                                      time_column="time"))
"""

from __future__ import annotations

from dssm_tf.config import TABULAR, DataConfig
from dssm_tf.data.dataset import Dataset


def load_dataset(config: DataConfig) -> Dataset:
    """Read and validate the data set `config` describes (InputError / ConfigError if bad)."""
    config.validate()
    if config.dataset == TABULAR:
        from dssm_tf.data.sources import tabular  # noqa: PLC0415
        return tabular.load(config)
    from dssm_tf.data.sources import movielens  # noqa: PLC0415
    return movielens.load(config)
