"""``mmtlab`` command line. Each area adds its subcommands through ``register(subparsers)`` in its own module;
errors the user can fix (:class:`~mmtlab.errors.MmtlabError`: bad config, bad data, missing or damaged files,
and a full disk or a missing permission) print one line and exit 2 (``--debug`` shows the traceback); any other
exception is a bug and keeps its traceback. The CPU threading policy (:mod:`mmtlab.cpu`) is applied before the
command runs, so before torch starts."""

from __future__ import annotations

import argparse
import importlib
import sys

from .cpu import apply_cpu_policy
from .errors import MmtlabError, one_line, user_fixable

# Modules contributing subcommands: each defines ``register(subparsers)`` and keeps torch out of its imports.
COMMAND_MODULES: tuple[str, ...] = (
    "mmtlab.data.cli",
    "mmtlab.train.cli",
    "mmtlab.eval.cli",
    "mmtlab.study.cli",
    "mmtlab.features.cli",
    "mmtlab.bench.cli",
)
# Subcommands that live outside their group's package: ``data emoji``, ``data real`` and ``data pool`` extract or
# pool image features, so they are :mod:`mmtlab.features.emoji` and :mod:`mmtlab.features.real`, and the data layer
# below them does not import them. (group, module)
GROUP_COMMANDS: tuple[tuple[str, str], ...] = (("data", "mmtlab.features.emoji"), ("data", "mmtlab.features.real"))


def _cmd_presets(args: argparse.Namespace) -> int:
    from .data import STYLES
    from .model.catalog import preset_table
    from .presets import SCALES, list_loss_sets, loss_set, scale_recipe

    print(preset_table(markdown=args.markdown))
    if not args.markdown:
        print("\nloss sets:")
        for name in list_loss_sets():
            print(f"  {name:<16} {loss_set(name)['description']}")
        print("\ntraining recipe of each scale (defaults under your key=value overrides):")
        for scale in SCALES:
            recipe = " ".join(f"{k}={v}" for k, v in scale_recipe(scale).items()) or "the paper's settings"
            print(f"  {scale:<16} {recipe}")
        print("\ndata styles (synthetic world):")
        for name, description in STYLES.items():
            print(f"  {name:<16} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmtlab", description="Pretrain, evaluate and study multimodal transformers.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("presets", help="list architectures, loss sets and data styles")
    p.add_argument("--markdown", action="store_true", help="print the preset table as Markdown (as in the README)")
    p.set_defaults(func=_cmd_presets)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for group, name in GROUP_COMMANDS:
        importlib.import_module(name).register(_subcommands(sub.choices[group]))
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The subcommand action of a command group's parser (``mmtlab data`` -> its ``synth``, ``import``, ...)."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m mmtlab.cli -- eval ...` copied without torchrun: the same command
        argv = argv[1:]
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides in several groups (`train a=1 --data D b=2`): argparse takes only the first
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        # before any command imports torch; commands that run models (they take --threads) look at the machine
        apply_cpu_policy(getattr(args, "threads", None), probe=hasattr(args, "threads"))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mmtlab: interrupted", file=sys.stderr)
        return 130
    except (MmtlabError, OSError) as e:
        if args.debug or not user_fixable(e):
            raise
        print(f"mmtlab: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
