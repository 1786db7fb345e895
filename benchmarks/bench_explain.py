"""Time `mlp explain` on one checkpoint: stacked permutation importance against one forward per repeat (the same
code with stacking off) and against scikit-learn's permutation_importance on the same model; integrated gradients."""

# Usage:  python benchmarks/bench_explain.py CHECKPOINT [--rows 2000] [--repeats 5] [--rounds 3]
# e.g.    mlp train configs/satimage.yaml && python benchmarks/bench_explain.py runs/satimage/best.pt
# Rounds are interleaved (each round runs every variant once) and medians are reported, so a machine shared with
# other work slows all variants alike; the ratios are the figures to quote. Model loading is not timed.

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from sklearn.base import BaseEstimator
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    import mlp_cli.explain as ex
    from mlp_cli.evaluate import load_checkpoint_model

    _, config, model, prep = load_checkpoint_model(args.checkpoint)
    split, _ = ex.explain_split(config, prep, None, args.rows, 0)
    blocks = ex.column_blocks(prep)
    n = len(split)

    class Wrapped(BaseEstimator):
        def __init__(self, model=None):
            self.model = model

        def fit(self, x, y):
            return self

        def predict(self, x):
            with torch.inference_mode():
                out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return out.squeeze(-1).numpy() if config.task == "regression" else ((out.squeeze(-1) > 0).long().numpy() if config.task == "binary" else out.argmax(1).numpy())

    scoring = "r2" if config.task == "regression" else "accuracy"

    def stacked():
        ex.permutation_importance(model, config.task, config.loss_name, split, blocks, args.repeats, 0)

    def one_per_repeat():
        saved = ex.STACK_ROWS
        ex.STACK_ROWS = n  # one repeat per forward pass: the loop a hand-written version would run
        try:
            ex.permutation_importance(model, config.task, config.loss_name, split, blocks, args.repeats, 0)
        finally:
            ex.STACK_ROWS = saved

    def sklearn():
        sk_permutation_importance(Wrapped(model), split.x.numpy(), split.y.numpy(), scoring=scoring, n_repeats=args.repeats, random_state=0)

    steps = {}

    def ig():
        _features, steps["n"], steps["p99"], *_ = ex.ig_importance(model, config.task, prep, split, blocks)

    variants = {"permutation (stacked)": stacked, "permutation (one forward per repeat)": one_per_repeat,
                "sklearn permutation_importance (score only)": sklearn, "integrated gradients": ig}
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"{args.checkpoint}: {n} rows, {len(blocks)} columns, {args.repeats} repeats, torch threads {torch.get_num_threads()}, "
          f"median of {args.rounds} interleaved rounds")
    base = statistics.median(times["permutation (stacked)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:45s} {median:7.3f} s   {median / base:5.2f}x the stacked permutation")
    print(f"  integrated gradients used {steps['n']} Gauss-Legendre steps, completeness error p99 {100 * steps['p99']:.3g} %")


if __name__ == "__main__":
    main()
