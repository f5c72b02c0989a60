"""The `bertpre` command line: thin argument parsing around one Python function per command.

Every config field is an option (``--vocab-size 8000``; nested fields as ``--model.hidden-size``),
applied on top of ``--config FILE``. User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import os
import signal
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bertpre.core.config import is_group, load_config
from bertpre.core.configs import (BenchConfig, CompareConfig, ExportConfig, FinetuneConfig, GlueConfig, PredictConfig,
                             PrepareConfig, PretrainConfig, QuickstartConfig, TokenizerConfig)
from bertpre.core.errors import BertpreError
from bertpre.core.io import disk_error

EXIT_USER_ERROR = 2


def add_config_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one ``--option`` per dataclass field (recursing into nested configs), help from the field."""
    hints = typing.get_type_hints(cls)
    refused = getattr(cls, "refused_options", {})  # accepted only to be refused with the reason, so not shown
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if is_group(f):  # grouped options keep their flat spelling (--learning-rate), under a heading
            section = parser.add_argument_group(f"{f.name} options", f.metadata.get("help"))
            add_config_options(section, tp, prefix=prefix)  # type: ignore[arg-type]
            continue
        if dataclasses.is_dataclass(tp):
            parser.add_argument(f"--{prefix}{f.name}".replace("_", "-"), dest=f"cfg:{prefix}{f.name}",
                                default=None, metavar="FILE",
                                help=_literal(f"{f.metadata.get('help', '')} Its fields follow as --{f.name}.FIELD."))
            add_config_options(parser, tp, prefix=f"{prefix}{f.name}.")
            continue
        is_list = typing.get_origin(tp) is list
        is_flag = tp is bool or tp == "bool"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        parser.add_argument(
            f"--{prefix}{f.name}".replace("_", "-"), dest=f"cfg:{prefix}{f.name}",
            # a bare boolean flag means true (--cpu), as everywhere else; --cpu false still works
            nargs="+" if is_list else "?" if is_flag else None, const="true" if is_flag else None,
            default=None, metavar=_metavar(tp), help=argparse.SUPPRESS if f.name in refused
            else _literal(f"{f.metadata.get('help', '')} [default: {default}]"))


def _literal(text: str) -> str:
    """Help text as argparse shows it verbatim (it %-formats help strings: "10% warm-up" would crash)."""
    return text.replace("%", "%%")


def _metavar(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return "{" + ",".join(map(str, args)) + "}"
    inner = [a for a in args if a is not type(None)] or [tp]
    if inner[0] is not tp and typing.get_origin(inner[0]) is typing.Literal:  # Optional[Literal[…]]: unset allowed
        return _metavar(inner[0])
    return getattr(inner[0], "__name__", "VALUE").upper()


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line, as dotted keys."""
    return {key[4:]: value for key, value in vars(args).items()
            if key.startswith("cfg:") and value is not None}


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Load ``cls`` from ``--config`` plus the command-line overrides."""
    return load_config(cls, args.config, overrides_from_args(args))


def _add_command(subparsers: Any, name: str, help: str, cls: type | None,
                 run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=_literal(help), description=help,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if cls is not None:
        parser.add_argument("--config", metavar="FILE", help="YAML config; options below override its keys")
        add_config_options(parser, cls)
    parser.set_defaults(run=run, command_parser=parser)
    return parser


def _run_tokenizer_train(args: argparse.Namespace) -> int:
    config = config_from_args(TokenizerConfig, args)  # before the stage's imports: a wrong option costs none
    from bertpre.tokenizer.train import train_tokenizer

    summary = train_tokenizer(config, show_progress=sys.stderr.isatty())
    print(summary.table())
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    config = config_from_args(PrepareConfig, args)
    from bertpre.data.prepare import prepare_pretraining_data

    summary = prepare_pretraining_data(config, show_progress=sys.stderr.isatty())
    print(summary.table())
    return 0


def _run_pretrain(args: argparse.Namespace) -> int:
    from bertpre.training.preemption import StopRequests, exit_status

    config = config_from_args(PretrainConfig, args)
    with StopRequests() as stop_requests:  # before torch loads (seconds): a preemption signal meanwhile is kept
        from bertpre.training.pretrain import pretrain

        summary = pretrain(config, show_progress=sys.stderr.isatty(), stop_requests=stop_requests)
    if summary.main_process:  # one summary per run, not one per rank
        print(summary.table())
    return exit_status(summary.stop_signal, summary.requeued)  # 75 (EXIT_PREEMPTED): stopped by a signal, resumable


def _run_export(args: argparse.Namespace) -> int:
    config = config_from_args(ExportConfig, args)
    from bertpre.export.export import export_checkpoint

    print(f"exported to {export_checkpoint(config)}")
    return 0


def _run_finetune(args: argparse.Namespace) -> int:
    config = config_from_args(FinetuneConfig, args)
    from bertpre.tasks.comparison import compare_finetunes, wants_several_runs
    from bertpre.tasks.finetune import finetune

    run = compare_finetunes if wants_several_runs(config) else finetune
    print(run(config, show_progress=sys.stderr.isatty()).table())
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from bertpre.tasks.comparison import compare_saved_runs

    print(compare_saved_runs(config_from_args(CompareConfig, args)).table())
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    config = config_from_args(PredictConfig, args)
    from bertpre.tasks.predict import predict

    metrics = predict(config)
    for key, value in metrics.items():
        print(f"{key:<16} {value:.4f}" if isinstance(value, float) else f"{key:<16} {value}")
    return 0


def _run_glue(args: argparse.Namespace) -> int:
    config = config_from_args(GlueConfig, args)
    from bertpre.tasks.glue import RESULTS_FILE, glue_table, run_glue

    print(glue_table(run_glue(config, show_progress=sys.stderr.isatty())))
    print(f"saved {config.output}/{RESULTS_FILE}")
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from bertpre.runners.report import run_status, write_report

    print(run_status(args.run_dir).table())
    if args.report:
        print(f"report           {write_report(args.run_dir)}")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    config = config_from_args(BenchConfig, args)
    from bertpre.runners.bench import bench_json, bench_table, curve_table, run_bench, run_loss_curves

    config = config_from_args(BenchConfig, args)
    if config.workload == "finetune":
        from bertpre.runners.finetune_bench import finetune_bench_table, run_finetune_bench

        report, table = run_finetune_bench(config), finetune_bench_table
    else:
        report = run_loss_curves(config) if config.curve_steps else run_bench(config)
        table = curve_table if config.curve_steps else bench_table
    print(bench_json(report) if config.json else table(report))
    if config.save_json:
        Path(config.save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(config.save_json).write_text(bench_json(report) + "\n", encoding="utf-8")
    if config.curve_steps and not all(c["within_noise"] for c in report["comparisons"].values()):
        return 1
    return 0


def _run_quickstart(args: argparse.Namespace) -> int:
    config = config_from_args(QuickstartConfig, args)
    from bertpre.runners.quickstart import PretrainingStopped, run_quickstart

    try:
        run_quickstart(config, show_progress=sys.stderr.isatty())
    except PretrainingStopped as stopped:
        print(f"bertpre: {stopped}", file=sys.stderr)
        return stopped.exit_status  # as `bertpre pretrain` stopped by that signal: 75, or 0 when requeued
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full `bertpre` argument parser."""
    parser = argparse.ArgumentParser(
        prog="bertpre", description="BERT pretraining pipeline: tokenizer → prepare → pretrain → "
        "export → finetune. Run `bertpre COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"bertpre {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    tokenizer = commands.add_parser("tokenizer", help="Train a WordPiece tokenizer from scratch.",
                                    description="Tokenizer commands.")
    tokenizer_commands = tokenizer.add_subparsers(title="actions", metavar="ACTION")
    _add_command(tokenizer_commands, "train", "Train a WordPiece vocabulary on text files, JSONL, "
                 "Parquet, datasets or builtin:python-docs and save it in Hugging Face format.",
                 TokenizerConfig, _run_tokenizer_train)
    tokenizer.set_defaults(run=lambda _args: _print_help(tokenizer))

    _add_command(commands, "prepare", "Turn raw corpora into tokenized next-sentence pairs (or MLM-only segments: "
                 "--examples segments) saved as sharded, memory-mapped Arrow data (train and held-out eval splits).",
                 PrepareConfig, _run_prepare)

    _add_command(commands, "pretrain", "Pretrain BERT (masked-LM + next-sentence) on prepared data with "
                 "Accelerate: one CPU/GPU, or many GPUs and nodes under `accelerate launch`.",
                 PretrainConfig, _run_pretrain)

    _add_command(commands, "export", "Export a pretraining checkpoint as a Hugging Face BERT directory "
                 "(config.json, model.safetensors, tokenizer, model card).", ExportConfig, _run_export)
    _add_command(commands, "finetune", "Fine-tune a classification or regression head (single sentences or "
                 "pairs, GLUE presets) and export it for transformers.", FinetuneConfig, _run_finetune)
    _add_command(commands, "predict", "Run an exported classifier over a file; write predictions and metrics.",
                 PredictConfig, _run_predict)
    _add_command(commands, "glue", "Fine-tune one model on several GLUE tasks and print a leaderboard table.",
                 GlueConfig, _run_glue)
    _add_command(commands, "compare", "Compare two fine-tuning recipes' saved runs, paired by seed: per-seed "
                 "differences, a 95% interval over seeds and evaluation rows, the verdict.", CompareConfig, _run_compare)

    _add_command(commands, "bench", "Time full training steps of bertpre's model against transformers' "
                 "BertForPreTraining on this GPU and print throughput, MFU, memory and ratios.", BenchConfig, _run_bench)
    status = _add_command(commands, "status", "Show a pretraining run: checkpoints, latest metrics, whether it "
                          "can resume; --report writes training.png and report.html.", None, _run_status)
    status.add_argument("run_dir", metavar="RUN", help="pretraining run directory")
    status.add_argument("--report", action="store_true", help="also write training.png and report.html")

    _add_command(commands, "quickstart", "Run the whole pipeline on the built-in corpus (offline, CPU is fine).",
                 QuickstartConfig, _run_quickstart)
    return parser


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USER_ERROR


def _refuse_unknown_options(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    known = [option for option in parser._option_string_actions if option.startswith("--")]
    name = unknown[0].split("=")[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    parser.exit(EXIT_USER_ERROR, f"{parser.prog}: error: unknown option {name}{hint}\n")


def _dashed(arg: str) -> str:
    """``--vocab_size=8`` as ``--vocab-size=8``: the spelling of transformers' scripts is accepted too."""
    if not arg.startswith("--"):
        return arg
    name, equals, value = arg.partition("=")
    return name.replace("_", "-") + equals + value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bertpre")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bertpre` console script."""
    parser = build_parser()
    args, unknown = parser.parse_known_args([_dashed(arg) for arg in (sys.argv[1:] if argv is None else argv)])
    if unknown:
        _refuse_unknown_options(getattr(args, "command_parser", parser), unknown)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        with _sigterm_unwinds():
            return args.run(args)
    except Terminated:
        print("bertpre: terminated (SIGTERM); nothing half-written is left, run the command again", file=sys.stderr)
        return EXIT_TERMINATED
    except BertpreError as error:
        print(f"bertpre: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        named = disk_error(error.filename or "(a file)", error, "nothing half-written is left")
        if named is None:
            raise  # anything else is a bug: keep the traceback
        print(f"bertpre: error: {named}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("bertpre: interrupted", file=sys.stderr)
        return 130
    finally:
        _end_process_group()


EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived: unwound like Ctrl-C, so that staging directories are removed and locks given back
    (pretraining catches SIGTERM itself, to save a checkpoint first)."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    def terminate(_signum: int, _frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _end_process_group() -> None:
    """Destroy a multi-process command's process group once, at its end: the runs inside one command
    (seeds, GLUE tasks, the quickstart's stages) share it, as Accelerate cannot set it up twice."""
    distributed = sys.modules.get("torch.distributed")  # a command that never loaded torch has none
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    sys.exit(main())
