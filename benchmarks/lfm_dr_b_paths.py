"""Where b's hypergradient in `lfm_dr` points: eq. 9's mistake path vs the direct W2 path.

Trains `lfm_dr` with its defaults (b_path=w2) on digits with label noise and, at chosen epochs,
takes the exact hypergradient of b on fresh batches twice at the *same* parameters: with
b_path=w2 (direct + mistake path) and with b_path=mistakes (eq. 9 as written); direct = the
difference. Prints, per path, the ROC-AUC of the descent direction -g as a score for "clean"
over the batch's examples (above 0.5: a step raises clean examples' b more than noisy ones') and
the norm of g. Reproduces the figures in README's `lfm_dr` section:

    python -m benchmarks.lfm_dr_b_paths --seed 0 --epochs 0 5 20
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from skillearn.data import BatchStream, load_data
from skillearn.reweighting.metrics import weight_auc
from skillearn.trainables import get_skill, resolve_config
from skillearn.trainables.runner import data_spec, seed_everything
from skillearn.trainables.setup import Setup

PROBE_BATCHES = 5


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-rate", type=float, default=0.4)
    parser.add_argument("--epochs", type=int, nargs="+", default=[0, 5, 20],
                        help="probe after these many training epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    skill, cpu = get_skill("lfm_dr"), torch.device("cpu")
    base = {"dataset": "digits", "noise_rate": args.noise_rate, "seed": args.seed,
            "device": "cpu"}
    cfgs = {p: resolve_config(skill, {**base, "b_path": p}) for p in ("w2", "mistakes")}
    data = load_data(data_spec(cfgs["w2"]))  # the split a trial of these knobs trains on
    built = {}
    for path, cfg in cfgs.items():
        seed_everything(args.seed)
        built[path] = skill.build(Setup(config=cfg, data=data, device=cpu, space=None))
    row_of = torch.full((int(data.train.index.max()) + 1,), -1, dtype=torch.long)
    row_of[data.train.index] = torch.arange(len(data.train))
    batch = cfgs["w2"]["batch_size"]

    def streams(seed: int):
        return {"train": iter(BatchStream(data.train, batch, seed=seed, device=cpu)),
                "meta": iter(BatchStream(data.meta, batch, seed=seed + 1, device=cpu))}

    def probe(epoch: int) -> None:
        for name, level in built["w2"].program.levels.items():  # mistakes := w2's state
            for key, value in level.params.items():
                built["mistakes"].program.levels[name].params[key].data.copy_(value.data)
        for key, value in built["w2"].state.items():
            built["mistakes"].state[key].copy_(value)
        source, rows = streams(10_000 + epoch), []
        for _ in range(PROBE_BATCHES):
            batches = {k: next(v) for k, v in source.items()}
            grads = {p: b.program.gradient("upper", batches, method="exact")[0]["b"]
                     for p, b in built.items()}
            row = row_of[batches["train"][2]]
            noisy = data.train.is_noisy[row]
            mistakes, total = grads["mistakes"][row], grads["w2"][row]
            direct = total - mistakes
            rows.append([weight_auc(-mistakes, noisy), weight_auc(-direct, noisy),
                         float(mistakes.norm()), float(direct.norm())])
        m = torch.tensor(rows).mean(0).tolist()
        print(f"epoch {epoch:3d}: AUC(-g) mistake path {m[0]:.3f}, direct W2 path {m[1]:.3f}; "
              f"|g| mistake {m[2]:.2e}, direct {m[3]:.2e} (ratio {m[3] / m[2]:.0f})", flush=True)

    train = built["w2"]
    steps = BatchStream(data.train, batch, seed=0, device=cpu).steps_per_epoch
    for epoch in range(max(args.epochs) + 1):
        if epoch in args.epochs:
            probe(epoch)
        if epoch < max(args.epochs):
            for module in train.modules:
                module.train()
            source = streams(args.seed * 100_003 + epoch)
            for _ in range(steps):
                train.program.step({k: next(v) for k, v in source.items()})
            train.program.end_epoch()


if __name__ == "__main__":
    main()
