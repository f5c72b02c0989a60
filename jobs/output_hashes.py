"""The byte-identity check of a change: run the pipeline small, with fixed seeds, and hash what it wrote.

    python jobs/output_hashes.py /tmp/bertpre-hashes > after.txt   # on the change
    git stash; python jobs/output_hashes.py /tmp/bertpre-hashes > before.txt; git stash pop
    diff before.txt after.txt                                      # nothing: outputs byte-identical

A tiny quickstart (tokenizer → prepare → pretrain → export → finetune → predict) is run into OUTPUT
(replaced; use the same OUTPUT for both runs, since files record their paths) and every file it wrote is
listed with its SHA-256, except those that record wall-clock time (listed in TIMED).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import shutil
import sys
from pathlib import Path

TIMED = re.compile(r"(^|/)(metrics\.jsonl|trainer_state\.json|manifest\.json|prepare\.json|report\.html|training\.png|"
                   r"README\.md|comparison\.json|state\.json)$|(^|/)tensorboard/")
"""Files that hold times (seconds, dates, throughput) or a hash of such a file: not compared."""


def main() -> int:
    """Run the tiny pipeline into OUTPUT and print the SHA-256 of every file it wrote."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    # module paths rather than the public API, so that the check also runs on the code before a change
    from bertpre.core.configs import QuickstartConfig
    from bertpre.runners.quickstart import run_quickstart

    shutil.rmtree(args.output, ignore_errors=True)
    with contextlib.redirect_stdout(sys.stderr):  # the stages' summaries hold times: only the hashes on stdout
        run_quickstart(QuickstartConfig(output=str(args.output), vocab_size=3000, pretrain_steps=20, batch_size=16,
                                        finetune_epochs=1, max_seq_length=64), show_progress=False)
    files = sorted(path for path in args.output.rglob("*") if path.is_file())
    for path in files:
        name = path.relative_to(args.output).as_posix()
        if not TIMED.search(name):
            print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
