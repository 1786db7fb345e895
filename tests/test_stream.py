"""Streaming Parquet: every training row once per epoch (across ranks too), bounded memory, same tools after."""

from __future__ import annotations

import json
import tracemalloc
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mlp_cli.config import load_config
from mlp_cli.data import ROLES, load_dataset, uniform
from mlp_cli.distributed import World

from conftest import write_config


def make_parquet(path, n: int, row_group: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + 2 * (x[:, 2] > 1)
    table = pa.table({"row_id": np.arange(n, dtype=np.float64), "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": label})
    pq.write_table(table, path, row_group_size=row_group)
    return path


def stream_config(tmp_path, data_path, **train):
    return write_config(tmp_path / "s.yaml", {
        "task": "multiclass",
        "data": {"train": str(data_path), "target": "label", "streaming": True, "shuffle_buffer": 700, "standardize": False},
        "model": {"hidden": [8]},
        "train": {"epochs": 2, "batch_size": 64, "early_stopping": 0, **train},
        "output_dir": str(tmp_path / "run"),
    })


def expected_rows(n: int, config, role: str) -> list[int]:
    data = config.data
    test_share = data.test_fraction
    u = uniform(np.arange(n), config.train.seed)
    roles = np.where(u < test_share, 2, np.where(u < test_share + data.val_fraction * (1 - test_share), 1, 0))
    return np.flatnonzero(roles == ROLES.index(role)).tolist()


def streamed_ids(split, seed, batch, world) -> list[int]:
    counts, batches = split.epoch(seed, batch, world)
    ids = []
    for x, _ in batches:
        ids.extend(x[:, 0].long().tolist())
    return ids


def test_each_training_row_once_per_epoch_and_reshuffled(tmp_path):
    config = load_config(stream_config(tmp_path, make_parquet(tmp_path / "d.parquet", 5000)))
    data = load_dataset(config)
    want = expected_rows(5000, config, "train")
    first = streamed_ids(data.train, seed=1, batch=64, world=World())
    second = streamed_ids(data.train, seed=2, batch=64, world=World())
    assert sorted(first) == want and sorted(second) == want  # the same row set an in-memory epoch would use
    assert first != second  # shard order and buffer shuffle change every epoch
    assert len(data.train) == len(want)
    assert sorted(set(want) | set(expected_rows(5000, config, "val")) | set(expected_rows(5000, config, "test"))) == list(range(5000))


def test_ranks_share_the_rows_without_overlap(tmp_path):
    config = load_config(stream_config(tmp_path, make_parquet(tmp_path / "d.parquet", 4000, row_group=300)))
    data = load_dataset(config)
    parts = []
    step_counts = []
    for rank in range(2):
        counts, batches = data.train.epoch(7, 64, World(2, rank))
        step_counts.append(counts)
        ids = []
        for x, _ in batches:
            ids.extend(x[:, 0].long().tolist())
        parts.append(ids)
    assert step_counts[0] == step_counts[1]  # every rank knows every step's global size
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == expected_rows(4000, config, "train")


def test_scaler_and_labels_come_from_the_training_rows(tmp_path):
    path = make_parquet(tmp_path / "d.parquet", 3000)
    config = load_config(stream_config(tmp_path, path), ["data.standardize=true"])
    prep = load_dataset(config).prep
    table = pq.read_table(path)
    rows = expected_rows(3000, config, "train")
    a = table.column("a").to_numpy()[rows].astype(np.float64)
    assert prep.mean[1] == pytest.approx(a.mean(), rel=1e-6)
    assert prep.scale[1] == pytest.approx(a.std(), rel=1e-6)
    assert prep.labels == [0, 1, 2, 3]


def test_memory_is_bounded_by_buffer_not_dataset(tmp_path):
    small = load_dataset(load_config(stream_config(tmp_path, make_parquet(tmp_path / "s.parquet", 20_000))))
    large = load_dataset(load_config(stream_config(tmp_path, make_parquet(tmp_path / "l.parquet", 200_000))))
    peaks = []
    for data in (small, large):
        tracemalloc.start()
        counts, batches = data.train.epoch(0, 64, World())
        for _ in batches:
            pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks  # 10x the rows, about the same peak


def test_stream_train_then_eval_and_predict(tmp_path, invoke):
    path = make_parquet(tmp_path / "d.parquet", 3000)
    config = stream_config(tmp_path, path)
    result = invoke("train", config, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["baselines"] is None and summary["test"]["n"] == len(expected_rows(3000, load_config(config), "test"))
    evaluated = json.loads(invoke("eval", tmp_path / "run" / "best.pt", "--json").stdout)
    assert evaluated["confusion_matrix"] == summary["test"]["confusion_matrix"]
    predicted = invoke("predict", tmp_path / "run" / "best.pt", path)
    assert predicted.exit_code == 0 and len(predicted.stdout.splitlines()) == 3001


def test_stream_resume_is_bit_identical(tmp_path):
    from mlp_cli.errors import TrainingInterrupted
    from mlp_cli.train import StopFlag, Trainer

    path = make_parquet(tmp_path / "d.parquet", 3000)
    config = load_config(stream_config(tmp_path, path), ["train.epochs=3"])
    Trainer(config, tmp_path / "ref").run()

    class StopAfter(StopFlag):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def __bool__(self):
            self.n -= 1
            if self.n < 0 and self.signum is None:
                self.set(2)
            return super().__bool__()

    with pytest.raises(TrainingInterrupted):
        Trainer(config, tmp_path / "cut", stop=StopAfter(40)).run()
    Trainer(config, tmp_path / "cut", resume=True).run()
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_streaming_refuses_csv(tmp_path, invoke):
    (tmp_path / "d.csv").write_text("a,label\n1,0\n2,1\n")
    config = stream_config(tmp_path, tmp_path / "d.csv")
    result = invoke("train", config)
    assert result.exit_code == 2 and "data.streaming reads Parquet" in result.stderr


def test_folder_of_shards(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    make_parquet(folder / "part-0.parquet", 1000, seed=0)
    make_parquet(folder / "part-1.parquet", 1000, seed=1)
    config = load_config(stream_config(tmp_path, folder))
    data = load_dataset(config)
    ids = Counter(streamed_ids(data.train, 0, 64, World()))
    assert sum(ids.values()) == len(data.train) == len(expected_rows(2000, config, "train"))


def test_many_shards_do_not_hold_file_descriptors(tmp_path):
    import os

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        make_parquet(folder / f"part-{i:03d}.parquet", 100, seed=i)
    data = load_dataset(load_config(stream_config(tmp_path, folder)))
    before = len(os.listdir("/proc/self/fd"))
    for _ in data.train.epoch(0, 64, World())[1]:
        pass
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_streaming_refuses_batch_norm(tmp_path, invoke):
    config = stream_config(tmp_path, make_parquet(tmp_path / "d.parquet", 500))
    result = invoke("train", config, "model.batch_norm=true")
    assert result.exit_code == 2 and "batch_norm is not supported with data.streaming" in result.stderr
