#!/usr/bin/env python3
"""The data stage's speed against its ceiling and the reference, in one run; and at Wikipedia scale.

    python jobs/prepare_benchmark.py [--bert-dir /work/ext/bert] [--scale 8] [--repeats 3]
    python jobs/prepare_benchmark.py --wikipedia-scale [--size-gb 1.0] [--workdir DIR]

The first form prints one table, every figure from the same run and machine, each measurement in a
fresh process with imports done before the clock starts (process start and imports are reported on
their own), repeats interleaved and the fastest kept:

- ceiling: `tokenizers`' ``encode_batch`` calls alone (one thread) on the corpus's sentences, same
  vocabulary, in the batches prepare hands it (one call of all sentences at once is slower);
- reference: google-research/bert's ``create_training_instances`` (pure Python, one process, its own
  tokenizer and masking), run from a checkout as ``jobs/reference_pair_stats.py`` runs it;
- ``bertpre prepare`` with 1 and with 2 workers; peak resident memory (all its processes together)
  at 1× and at ``--memory-scale``× the corpus.

Every rate is corpus tokens (the sentences' tokens, as the ceiling counts them) per second. The
corpus is the reference's own format (a sentence per line, a blank line between documents) built by
tests/pair_reference.py from ../shared/data's 106 Wikipedia articles, ``--scale`` copies in shuffled
document order.

The second form writes a corpus of ``--size-gb`` (the shared text is ~22 MB: its paragraphs are
shuffled into `= Title =` articles with a different seed per file, so the text repeats; this is said
in the output), runs ``bertpre prepare`` and ``bertpre tokenizer train`` on it and reports time,
tokens/s, peak memory and disk, and a projection for English Wikipedia on a 128-core node.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pair_reference import MAX_SEQ_LENGTH, build_corpora  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
WIKIPEDIA_TOKENS = 3.0e9  # English Wikipedia, WordPiece tokens (BERT's own figure: 2,500 M words)


# ---- measurements, each in a fresh process -----------------------------------------------------


def _ceiling(corpus: str, tokenizer: str) -> dict[str, Any]:
    """``encode_batch`` alone on the corpus's sentences, in the batches prepare hands it (a single call of every
    sentence at once is slower: millions of encodings held at once), and ``encode_batch_fast`` likewise."""
    from tokenizers import Tokenizer

    from bertpre.data.tokenize_documents import CHARACTERS_PER_BATCH

    sentences = [line for line in Path(corpus).read_text(encoding="utf-8").split("\n") if line]
    batches, batch, size = [], [], 0
    for sentence in sentences:
        batch.append(sentence)
        size += len(sentence)
        if size >= CHARACTERS_PER_BATCH:
            batches.append(batch)
            batch, size = [], 0
    batches.append(batch)
    backend = Tokenizer.from_file(str(Path(tokenizer) / "tokenizer.json"))
    result: dict[str, Any] = {}
    for name in ("encode_batch", "encode_batch_fast"):
        seconds = cpu = 0.0
        tokens = 0
        for batch in batches:
            started, cpu_started = time.perf_counter(), time.process_time()
            encodings = getattr(backend, name)(batch, add_special_tokens=False)
            seconds, cpu = seconds + time.perf_counter() - started, cpu + time.process_time() - cpu_started
            tokens += sum(len(encoding.ids) for encoding in encodings)  # not timed: the call alone is the ceiling
        result[name] = {"seconds": seconds, "cpu": cpu}
        result["tokens"] = tokens
    return result


def _reference(corpus: str, tokenizer: str, bert_dir: str) -> dict[str, Any]:
    from jobs.reference_pair_stats import load_reference

    module, tokenization = load_reference(Path(bert_dir))
    full_tokenizer = tokenization.FullTokenizer(vocab_file=str(Path(tokenizer) / "vocab.txt"), do_lower_case=True)
    started, cpu = time.perf_counter(), time.process_time()
    instances = module.create_training_instances([corpus], full_tokenizer, MAX_SEQ_LENGTH, 1, 0.1, 0.15, 20,
                                                 random.Random(12345))
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "instances": len(instances)}


def _prepare(corpus: str, tokenizer: str, output: str, workers: int) -> dict[str, Any]:
    import resource

    from bertpre.core.configs import PrepareConfig
    from bertpre.data.prepare import prepare_pretraining_data

    config = PrepareConfig(inputs=[corpus], output=output, tokenizer=tokenizer, num_workers=workers,
                           max_seq_length=MAX_SEQ_LENGTH, overwrite=True)
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    summary = prepare_pretraining_data(config, show_progress=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
    return {"seconds": seconds, "cpu": cpu, "tokens": summary.corpus_tokens, "pairs": summary.train_pairs + summary.eval_pairs}


def _imports() -> dict[str, Any]:
    started = time.perf_counter()
    import bertpre.cli  # noqa: F401
    import bertpre.data.prepare  # noqa: F401
    import numpy  # noqa: F401
    import pyarrow  # noqa: F401
    import tokenizers  # noqa: F401
    return {"seconds": time.perf_counter() - started}


MEASUREMENTS = {"ceiling": _ceiling, "reference": _reference, "prepare": _prepare, "imports": _imports}
_PRELOAD = "import bertpre.data.prepare, bertpre.core.configs, numpy, pyarrow, tokenizers"


def measure(kind: str, *arguments: Any, preload: bool = True) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (imports first, not timed), sampling its processes' memory."""
    code = (f"import sys, json; sys.path.insert(0, {str(REPO)!r}); {_PRELOAD if preload else 'pass'}\n"
            f"from jobs.prepare_benchmark import MEASUREMENTS\n"
            f"print('RESULT', json.dumps(MEASUREMENTS[{kind!r}](*{json.dumps(arguments)})))")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV, cwd=REPO)
    peak = _PeakMemory(process.pid)
    stdout, stderr = process.communicate()
    peak.stop()
    if process.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.split("RESULT", 1)[1])
    return {**result, "process_seconds": time.perf_counter() - started, "peak_rss_mb": peak.total / 2**20,
            "largest_process_mb": peak.largest / 2**20}


class _PeakMemory:
    """Samples the resident memory of a process and its descendants, every 50 ms, until stopped."""

    def __init__(self, pid: int) -> None:
        self.total = self.largest = 0
        self._pid, self._done = pid, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            try:
                sizes = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
            except psutil.Error:
                sizes = []
            if sizes:
                self.total, self.largest = max(self.total, sum(sizes)), max(self.largest, max(sizes))
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


# ---- the comparison table ------------------------------------------------------------------------


def replicated_corpus(source: Path, copies: int, path: Path) -> Path:
    """``copies`` copies of a sentence-per-line corpus, each in its own shuffled document order."""
    documents = [block for block in source.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    with path.open("w", encoding="utf-8") as handle:
        for copy in range(copies):
            order = list(documents)
            random.Random(copy).shuffle(order)
            handle.write("".join(block.strip("\n") + "\n\n" for block in order))
    return path


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at the start"


def comparison(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="prepare-benchmark-", dir=args.workdir))
    base = build_corpora(args.shared_data, work / "base")["wikipedia"]
    corpus = replicated_corpus(base, args.scale, work / f"wikipedia-x{args.scale}.txt")
    big = replicated_corpus(base, args.scale * args.memory_scale, work / f"wikipedia-x{args.scale * args.memory_scale}.txt")
    tokenizer = str(args.tokenizer)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {machine()}")
    print(f"# corpus: {corpus.stat().st_size / 1e6:.1f} MB ({args.scale} shuffled copies of the 106 shared Wikipedia "
          f"articles, a sentence per line), tokenizer {tokenizer}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for name, kind, arguments in (
                ("ceiling", "ceiling", (str(corpus), tokenizer)),
                ("prepare, 1 worker", "prepare", (str(corpus), tokenizer, str(work / "out1"), 1)),
                ("prepare, 2 workers", "prepare", (str(corpus), tokenizer, str(work / "out2"), 2)),
                *([("reference", "reference", (str(corpus), tokenizer, str(args.bert_dir)))] if args.bert_dir else [])):
            result = measure(kind, *arguments)
            runs.setdefault(name, []).append(result)
            seconds = result["seconds"] if "seconds" in result else result["encode_batch"]["seconds"]
            print(f"  repeat {repeat + 1}: {name} {seconds:.2f} s", file=sys.stderr, flush=True)
    startup = [measure("imports", preload=False) for _ in range(args.repeats)]
    help_seconds = min(_timed([sys.executable, "-m", "bertpre", "--help"]) for _ in range(args.repeats))
    memory = {"1x": min(runs["prepare, 2 workers"], key=lambda r: r["seconds"]),
              f"{args.memory_scale}x": measure("prepare", str(big), tokenizer, str(work / "out-big"), 2)}
    print(table(runs, startup, help_seconds, memory, args))
    shutil.rmtree(work, ignore_errors=True)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, env=ENV, cwd=REPO, check=True)
    return time.perf_counter() - started


def table(runs: dict[str, list[dict[str, Any]]], startup: list[dict], help_seconds: float,
          memory: dict[str, dict], args: argparse.Namespace) -> str:
    """The comparison: wall seconds (fastest and median of the repeats), rates per core by wall time and by
    CPU time (user + sys of every process: what a loaded machine does not inflate much), ratios."""
    tokens = runs["ceiling"][0]["tokens"]
    rows = {"ceiling": [r["encode_batch"] for r in runs["ceiling"]],
            "ceiling, encode_batch_fast": [r["encode_batch_fast"] for r in runs["ceiling"]],
            **{name: results for name, results in runs.items() if name != "ceiling"}}
    cores = {"prepare, 2 workers": 2}
    wall = {name: min(r["seconds"] for r in results) for name, results in rows.items()}
    cpu = {name: min(r["cpu"] for r in results) for name, results in rows.items()}
    per_core = {name: tokens / seconds / cores.get(name, 1) for name, seconds in wall.items()}
    per_cpu = {name: tokens / seconds for name, seconds in cpu.items()}
    lines = [f"corpus tokens: {tokens:,}; fastest of {args.repeats} runs (median in brackets); rates in corpus tokens/s",
             "", f"{'':27} {'wall s':>14} {'tokens/s':>10} {'per core':>9} {'/ceiling':>8} {'/reference':>10}"
             f"   {'CPU s':>6} {'per CPU s':>9} {'/ceiling':>8} {'/reference':>10}"]
    for name in rows:
        median = statistics.median(r["seconds"] for r in rows[name])
        versus = {key: f"{rate[name] / rate['reference']:.2f}×" if "reference" in rate else "n/a"
                  for key, rate in (("wall", per_core), ("cpu", per_cpu))}
        lines.append(f"{name:27} {wall[name]:6.2f} ({median:5.2f}) {tokens / wall[name]:10,.0f} {per_core[name]:9,.0f} "
                     f"{per_core[name] / per_core['ceiling']:8.0%} {versus['wall']:>10}   {cpu[name]:6.2f} "
                     f"{per_cpu[name]:9,.0f} {per_cpu[name] / per_cpu['ceiling']:8.0%} {versus['cpu']:>10}")
    lines += ["", f"2 workers / 1 worker: {wall['prepare, 1 worker'] / wall['prepare, 2 workers']:.2f}× the throughput "
              f"(wall); CPU seconds 2 workers / 1 worker {cpu['prepare, 2 workers'] / cpu['prepare, 1 worker']:.2f}",
              f"start-up (not in the figures above): interpreter + imports of bertpre, numpy, pyarrow, tokenizers "
              f"{min(r['process_seconds'] for r in startup):.2f} s (imports alone {min(r['seconds'] for r in startup):.2f} s); "
              f"`bertpre --help` {help_seconds:.2f} s", "",
              "peak resident memory of prepare, 2 workers (all processes together; the largest one):"]
    for scale, run in memory.items():
        lines.append(f"  {scale:>4} the corpus ({run['tokens']:>12,} tokens): {run['peak_rss_mb']:7.0f} MB; "
                     f"{run['largest_process_mb']:5.0f} MB")
    return "\n".join(lines)


# ---- Wikipedia scale ---------------------------------------------------------------------------------


def wikipedia_scale(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="prepare-wikipedia-scale-", dir=args.workdir))
    corpus = work / "corpus"
    started = time.perf_counter()
    size = write_large_corpus(args.shared_data / "pretrain", corpus, int(args.size_gb * 1e9))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {machine()}")
    source = _size(args.shared_data / "pretrain")
    print(f"# corpus: {size / 1e9:.2f} GB in {len(list(corpus.iterdir()))} files, written in "
          f"{time.perf_counter() - started:.0f} s: the paragraphs of {args.shared_data / 'pretrain'} "
          f"({source / 1e6:.0f} MB) shuffled into `= Title =` articles with another seed per file, so the text "
          f"repeats ~{size / source:.0f} times", flush=True)
    workers = args.workers or os.cpu_count() or 1
    prepared = run_command(["prepare", "--inputs", str(corpus), "--output", str(work / "prepared"),
                            "--num-workers", str(workers)], work / "prepared")
    summary = json.loads((work / "prepared" / "prepare.json").read_text())["summary"]
    print(f"\nbertpre prepare, {workers} workers: {prepared['seconds']:.0f} s, {summary['corpus_tokens']:,} corpus tokens "
          f"({summary['corpus_tokens'] / prepared['seconds']:,.0f} tokens/s, "
          f"{summary['corpus_tokens'] / prepared['seconds'] / workers:,.0f} per worker), "
          f"{summary['train_pairs'] + summary['eval_pairs']:,} pairs; {prepared['cpu']:.0f} CPU seconds "
          f"({summary['corpus_tokens'] / prepared['cpu']:,.0f} tokens per CPU second)")
    print(f"  peak resident memory {prepared['peak_rss_mb']:.0f} MB (all processes; largest "
          f"{prepared['largest_process_mb']:.0f} MB); disk: output {_size(work / 'prepared') / 1e9:.2f} GB, "
          f"at most {prepared['peak_disk'] / 1e9:.2f} GB while it ran (scratch included)")
    as_users_run_it = {key: value for key, value in ENV.items() if key != "TOKENIZERS_PARALLELISM"}  # all threads
    tokenizer = run_command(["tokenizer", "train", "--inputs", str(corpus), "--output", str(work / "tokenizer"),
                             "--vocab-size", "30522"], work / "tokenizer", as_users_run_it)
    print(f"bertpre tokenizer train (30,522 pieces): {tokenizer['seconds']:.0f} s ({tokenizer['cpu']:.0f} CPU seconds), "
          f"{size / tokenizer['seconds'] / 1e6:.1f} MB/s, peak resident memory {tokenizer['peak_rss_mb']:.0f} MB")
    print(projection({"wall time of this run / workers": summary["corpus_tokens"] / prepared["seconds"] / workers,
                      "per CPU second of this run": summary["corpus_tokens"] / prepared["cpu"]}, args.scaling))
    shutil.rmtree(work, ignore_errors=True)


def write_large_corpus(source: Path, directory: Path, size: int, file_size: int = 16 * 10**6) -> int:
    """Files of ``= Title =`` articles (a paragraph per line) from ``source``'s paragraphs, until ``size`` bytes."""
    sys.path.insert(0, str(REPO))
    from bertpre.core.configs import CorpusConfig
    from bertpre.readers.corpus import read_documents

    paragraphs = [p for document in read_documents(CorpusConfig(inputs=[str(source)])) for p in document.paragraphs]
    directory.mkdir(parents=True)
    written, number = 0, 0
    while written < size:
        rng = random.Random(number)
        order = list(paragraphs)
        rng.shuffle(order)
        parts, length, article = [], 0, 0
        while order and length < file_size:
            count = rng.randint(5, 40)
            text = f"= Article {number}-{article} =\n\n" + "\n\n".join(order[:count]) + "\n\n"
            del order[:count]
            parts.append(text)
            length += len(text.encode("utf-8"))
            article += 1
        (directory / f"part-{number:05d}.txt").write_text("".join(parts), encoding="utf-8")
        written += length
        number += 1
    return written


def run_command(arguments: list[str], output: Path, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """`bertpre ARGUMENTS` in a process of its own: wall time, CPU time, peak memory, and peak disk under
    output's parent."""
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bertpre", *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env or ENV, cwd=REPO)
    peak = _PeakMemory(process.pid)
    disk, stop = [0], threading.Event()

    def sample_disk() -> None:
        while not stop.is_set():
            disk[0] = max(disk[0], sum(_size(p) for p in output.parent.iterdir() if p.name.startswith(
                (output.name, f".{output.name}."))))
            stop.wait(2)

    sampler = threading.Thread(target=sample_disk, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    stop.set()
    sampler.join()
    peak.stop()
    if process.returncode != 0:
        raise SystemExit(f"bertpre {' '.join(arguments)} failed:\n{stderr[-3000:]}")
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    return {"seconds": time.perf_counter() - started, "cpu": cpu, "peak_rss_mb": peak.total / 2**20,
            "largest_process_mb": peak.largest / 2**20, "peak_disk": disk[0], "stdout": stdout}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass  # a scratch file removed while it was counted
    return total


def projection(rates: dict[str, float], scaling: Optional[float]) -> str:
    """English Wikipedia on one 128-core node, from rates per core measured here and the 1 → 2 worker scaling."""
    lines = ["", f"projection, English Wikipedia (~{WIKIPEDIA_TOKENS / 1e9:.0f} B tokens) on one 128-core node:"]
    for basis, per_core in rates.items():
        for name, efficiency in (("perfect scaling", 1.0), *([(f"the 1 → 2 worker efficiency ({scaling / 2:.0%}) "
                                                                "kept to 128 workers", scaling / 2)] if scaling else [])):
            rate = per_core * 128 * efficiency
            lines.append(f"  {per_core:,.0f} tokens/s per core ({basis}), {name}: {rate / 1e6:.1f} M tokens/s, "
                         f"{WIKIPEDIA_TOKENS / rate / 60:.1f} minutes")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bert-dir", type=lambda value: Path(value) if value else None, default=Path("/work/ext/bert") if Path("/work/ext/bert").is_dir()
                        else None, help="checkout of google-research/bert (the reference row is left out without it)")
    parser.add_argument("--shared-data", type=Path,
                        default=Path(os.environ.get("BERTPRE_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--tokenizer", type=Path, default=REPO / "tokenizer")
    parser.add_argument("--scale", type=int, default=8, help="copies of the 106 articles in the corpus")
    parser.add_argument("--memory-scale", type=int, default=10, help="the larger corpus for the memory figure, × --scale")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where corpora and outputs go (default: the temp dir)")
    parser.add_argument("--wikipedia-scale", action="store_true", help="the ≥ 1 GB run instead of the table")
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=0, help="workers of the large run (0: all cores)")
    parser.add_argument("--scaling", type=float, default=None,
                        help="the 2-worker / 1-worker throughput of the table, for the projection")
    args = parser.parse_args()
    (wikipedia_scale if args.wikipedia_scale else comparison)(args)


if __name__ == "__main__":
    main()
