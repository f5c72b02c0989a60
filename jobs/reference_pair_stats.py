#!/usr/bin/env python3
"""Run google-research/bert's `create_training_instances` as an oracle and record its pair statistics.

    python jobs/reference_pair_stats.py --bert-dir PATH/TO/google-research/bert \
        [--shared-data ../shared/data] [--output tests/assets/reference_pair_stats.json]

PATH/TO/google-research/bert is a checkout of https://github.com/google-research/bert (the reference's
code is run, never copied). It imports tensorflow only for file reading, flags and logging, so a
stand-in module with just those is put on the path for the run (and one for `six` where it is not
installed); nothing else of TensorFlow is used.
Corpora, passes and seeds are those of tests/pair_reference.py; the written figures are what
tests/test_pairs_reference.py compares bertpre with.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pair_reference import (DUPE_FACTOR, MAX_SEQ_LENGTH, SEED, build_corpora, mixture,  # noqa: E402
                                  pair_statistics)

TENSORFLOW_STAND_IN = '''
"""What create_pretraining_data.py and tokenization.py touch of TensorFlow 1, and nothing more."""
import glob, types
__version__ = "stand-in"
class gfile:
    GFile = staticmethod(lambda name, mode="r": open(name, mode) if "b" in mode else open(name, mode, encoding="utf-8"))
    Glob = staticmethod(lambda pattern: sorted(glob.glob(pattern)))
def _nothing(*args, **kwargs):
    return None
logging = types.SimpleNamespace(info=_nothing, warning=_nothing, set_verbosity=_nothing, INFO=20)
class _Flags:
    pass
def _define(name, default, *args, **kwargs):
    setattr(flags.FLAGS, name, default)
flags = types.SimpleNamespace(FLAGS=_Flags(), DEFINE_string=_define, DEFINE_integer=_define, DEFINE_bool=_define,
                              DEFINE_boolean=_define, DEFINE_float=_define, mark_flag_as_required=_nothing)
app = types.SimpleNamespace(run=None)
'''
SIX_STAND_IN = '''
"""The part of six that tokenization.py reads, for Python 3."""
PY2, PY3, text_type, binary_type = False, True, str, bytes
'''


def load_reference(bert_dir: Path):  # noqa: ANN201 - the reference's module
    stand_ins = Path(tempfile.mkdtemp(prefix="reference-stand-ins-"))
    (stand_ins / "tensorflow").mkdir()
    (stand_ins / "tensorflow" / "__init__.py").write_text(textwrap.dedent(TENSORFLOW_STAND_IN))
    if importlib.util.find_spec("six") is None:
        (stand_ins / "six.py").write_text(textwrap.dedent(SIX_STAND_IN))
    sys.path[:0] = [str(stand_ins), str(bert_dir)]
    return importlib.import_module("create_pretraining_data"), importlib.import_module("tokenization")


def reference_statistics(module, tokenization, corpus: Path, vocab: Path, short_seq_prob: float) -> dict:  # noqa: ANN001
    tokenizer = tokenization.FullTokenizer(vocab_file=str(vocab), do_lower_case=True)
    instances = module.create_training_instances([str(corpus)], tokenizer, MAX_SEQ_LENGTH, DUPE_FACTOR, short_seq_prob,
                                                 0.15, 20, random.Random(SEED))
    return pair_statistics([len(i.tokens) for i in instances], [not i.is_random_next for i in instances])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bert-dir", type=Path, required=True, help="checkout of google-research/bert")
    parser.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--vocab", type=Path, default=REPO / "tokenizer" / "vocab.txt")
    parser.add_argument("--output", type=Path, default=REPO / "tests" / "assets" / "reference_pair_stats.json")
    args = parser.parse_args()
    module, tokenization = load_reference(args.bert_dir)
    commit = subprocess.run(["git", "-C", str(args.bert_dir), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    corpora = build_corpora(args.shared_data, Path(tempfile.mkdtemp(prefix="reference-corpora-")))
    report: dict = {"reference": f"google-research/bert {commit}, create_pretraining_data.create_training_instances",
                    "command": "python jobs/reference_pair_stats.py --bert-dir PATH/TO/google-research/bert",
                    "date": time.strftime("%Y-%m-%d"), "max_seq_length": MAX_SEQ_LENGTH,
                    "dupe_factor": DUPE_FACTOR, "seed": SEED, "corpora": {}}
    for name, corpus in corpora.items():
        at = {p: reference_statistics(module, tokenization, corpus, args.vocab, p) for p in (0.0, 1.0)}
        report["corpora"][name] = {"short_seq_prob_0": at[0.0], "short_seq_prob_1": at[1.0],
                                   "short_seq_prob_0.1": mixture(at[0.0], at[1.0])}
        print(name, json.dumps(report["corpora"][name]), flush=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
