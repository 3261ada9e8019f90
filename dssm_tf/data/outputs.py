"""The folders `prepare` and `synthetic` write, and the one check of `--out` before writing one.

A command may write into a new folder, an empty one, or one it wrote before (replaced): an
`Output` names the kind of folder and recognises one. No TensorFlow here, so that `prepare`
checks `--out` the way `dssm_tf.data.records` does before it reads the data and starts
TensorFlow.

Usage::

    PREPARED.check("/data/ml1m-records")   # ConfigError("out") unless new, empty or prepared
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

from dssm_tf.io import check_output_folder

# The manifest of `prepare`'s TFRecord files (`dssm_tf.data.records`): its name and "format".
MANIFEST = "manifest.json"
RECORDS_FORMAT = "dssm_tf.records"


@dataclasses.dataclass(frozen=True)
class Output:
    """A kind of folder a command writes: `what` names it in errors, `is_ours` recognises one
    (whose files the command may replace)."""

    what: str
    is_ours: Callable[[str], bool]

    def check(self, out: str) -> None:
        """ConfigError("out") unless `out` is new, an empty folder or a folder of this kind, in
        a folder this process can write."""
        check_output_folder(out, "out", self.is_ours, self.what)


def is_prepared(folder: str) -> bool:
    """Whether `folder` holds only files `records.write_records` wrote (so it may be replaced):
    a manifest of their format and the shards it lists."""
    try:
        names = set(os.listdir(folder))
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        shards = {shard["file"] for shard in manifest["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return manifest.get("format") == RECORDS_FORMAT and names <= shards | {MANIFEST}


PREPARED = Output("examples written by dssm_tf.prepare", is_prepared)
