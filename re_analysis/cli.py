"""The ``re-analysis`` command. Thin: every command calls the public Python API.

Bad input (unknown name, bad value, missing file) exits with code 2 and one line on
stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import ReAnalysisError


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse's own convention)
        self.exit(2, f"re-analysis: error: {message}\n")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="re-analysis", description="Random Erasing vs model inversion: train, attack, measure.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    t = sub.add_parser("train", help="train a target or evaluation classifier under a defense")
    t.add_argument("--dataset", default="mnist5k")
    t.add_argument("--root", default=None, help="folder holding the dataset (not needed for mnist5k)")
    t.add_argument("--image-size", type=int, default=None)
    t.add_argument("--arch", default=None, help="model name (default by role and image size)")
    t.add_argument("--role", default="target", choices=["target", "eval"])
    t.add_argument("--defense", default="none")
    t.add_argument("--defense-param", action="append", default=[], metavar="KEY=VALUE",
                   help="defense parameter, repeatable (e.g. scale=0.1,0.8)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--optimizer", default=None, choices=["adam", "sgd"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--out", required=True, help="run directory (metrics.json, model.safetensors)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    for name, what in (("datasets", "dataset"), ("models", "model"), ("defenses", "defense")):
        sub.add_parser(name, help=f"list the registered {what}s")
    return p


def cmd_train(args) -> int:
    from .config import TrainConfig, parse_params
    from .training import train

    opts = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                              "optimizer": args.optimizer}.items() if v is not None}
    cfg = TrainConfig(dataset=args.dataset, root=args.root, image_size=args.image_size, arch=args.arch,
                      role=args.role, defense=args.defense, defense_params=parse_params(args.defense_param),
                      seed=args.seed, device=args.device, **opts)
    result = train(cfg, args.out, progress=not args.quiet)
    m = result.metrics
    print(json.dumps({"run_dir": str(result.run_dir), "natural_accuracy": m["natural_accuracy"],
                      "arch": m["arch"], "defense": m["defense"], "seed": m["seed"]}))
    return 0


def cmd_list(kind: str) -> int:
    if kind == "datasets":
        from .data import dataset_info as info
    elif kind == "models":
        from .models import model_info as info
    else:
        from .defenses import defense_info as info
    for name, desc in info().items():
        print(f"{name:18s} {desc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        return cmd_list(args.command)
    except ReAnalysisError as exc:
        print(f"re-analysis: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
