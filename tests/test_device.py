"""Choosing CPU threads: the timed probe takes only counts whose results equal one thread's, and records its choice."""

from __future__ import annotations

import json
import time

import pytest
import torch

from mlp_cli.device import probe_threads, thread_candidates


def test_candidates_stop_at_the_usable_cores():
    assert thread_candidates(1) == [1]
    assert thread_candidates(2) == [1, 2]
    assert thread_candidates(6) == [1, 2, 4]
    assert thread_candidates(64) == [1, 2, 4, 8]


def test_a_count_whose_results_differ_is_never_chosen():
    """A step whose output depends on the thread count (as a GEMM that splits its sums could) keeps one thread,
    however fast more threads would be: the run's weights must not depend on how busy the machine was."""

    def step():
        n = torch.get_num_threads()
        time.sleep(0.02 if n == 1 else 0.0)
        return [torch.tensor(float(n))]

    chosen, record = probe_threads(step, [1, 2], reps=3)
    assert chosen == 1 and record["excluded_not_bit_identical"] == [2] and record["threads"] == 1


def test_the_faster_of_identical_counts_is_chosen_and_the_setting_restored():
    before = torch.get_num_threads()

    def step():
        time.sleep(0.05 if torch.get_num_threads() == 1 else 0.0)  # sleeps: the decision cannot hinge on load
        return [torch.ones(3)]

    chosen, record = probe_threads(step, [1, 2], reps=3)
    assert chosen == 2 and record["excluded_not_bit_identical"] == []
    assert float(record["median_step_seconds"]["1"]) >= 0.05
    assert torch.get_num_threads() == before  # the caller sets the chosen count


def test_a_step_too_short_for_threads_to_pay_tries_no_other_count():
    calls = []

    def step():
        calls.append(torch.get_num_threads())
        return [torch.ones(1)]

    chosen, record = probe_threads(step, [1, 2, 4], reps=3)
    assert chosen == 1 and calls == [1, 1]  # the warm-up and one timed step, both at one thread
    assert list(record["median_step_seconds"]) == ["1"]


@pytest.mark.skipif(len(thread_candidates()) < 2, reason="the probe runs only with two or more usable cores")
def test_training_records_the_probe_and_its_choice(invoke, tmp_path, multiclass_config):
    result = invoke("train", multiclass_config, f"output_dir={tmp_path / 'run'}", "train.epochs=2", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (probe,) = summary["thread_probes"]
    assert summary["threads"] == probe["threads"] and probe["epoch"] == 0
    assert "1" in probe["median_step_seconds"] and set(probe["median_step_seconds"]) <= {str(n) for n in thread_candidates()}
    fixed = invoke("train", multiclass_config, f"output_dir={tmp_path / 'fixed'}", "train.epochs=1", "train.threads=1",
                   "--quiet")
    assert fixed.exit_code == 0, fixed.output
    summary = json.loads((tmp_path / "fixed" / "summary.json").read_text())
    assert summary["threads"] == 1 and summary["thread_probes"] == []  # an explicit train.threads is not probed
