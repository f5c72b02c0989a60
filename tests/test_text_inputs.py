"""Any text a user can feed in: linear time on lines of any length, every line ending read alike, and file
names that are names (not patterns), with pipes, devices and dangling links named for what they are."""

from __future__ import annotations

import gc
import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from bertpre.cli import main
from bertpre.core.configs import CorpusConfig
from bertpre.core.errors import BertpreError
from bertpre.data.pairs import create_next_sentence_pairs
from bertpre.readers.corpus import read_documents, resolve_inputs
from bertpre.readers.lines import decoded_lines
from bertpre.readers.sentences import split_sentences
from bertpre.readers.tables import read_table

from .conftest import english_articles


def growth(work: Callable[[int], object], n: int) -> float:
    """How many times longer ``work(4 * n)`` takes than ``work(n)``: about 4 for linear work, 16 for quadratic.
    Each side is repeated until it takes a measurable time and the fastest of three tries counts, so the ratio
    holds on a loaded machine; the bound the tests put on it (9) is far from both."""
    started = time.perf_counter()
    work(n)
    repeats = max(1, min(2000, int(0.03 / max(time.perf_counter() - started, 1e-7))))

    def seconds(size: int) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(repeats):
                work(size)
            best = min(best, time.perf_counter() - started)
        return best

    gc.disable()  # a collection landing in one side's measurement is not the work measured
    try:
        return seconds(4 * n) / seconds(n)
    finally:
        gc.enable()


LINEAR = 9.0


@pytest.mark.parametrize("unit, n", [(".", 4000), ("!?", 2000), ("Dr. X ", 800), ("J. ", 1500), (".      ", 800),
                                     ("word ", 2000)])
def test_sentence_splitting_is_linear_on_any_line(unit: str, n: int) -> None:
    assert growth(lambda size: split_sentences(unit * size), n) < LINEAR
    assert split_sentences("Dr. Smith came. He left.") == ["Dr. Smith came.", "He left."]  # the rules still hold


@pytest.mark.parametrize("line", ["= {}x", "= a {}b =", "={}"])
def test_heading_detection_is_linear_on_any_line(tmp_path: Path, line: str) -> None:
    def read(size: int) -> None:
        path = tmp_path / f"{size}.txt"
        if not path.exists():
            path.write_text(f"= Title =\n\n{line.format('= ' * size)}\nA sentence.\n", encoding="utf-8")
        list(read_documents(CorpusConfig(inputs=[str(path)])))

    assert growth(read, 100) < LINEAR


def test_pairs_of_a_sentence_of_any_length_take_linear_time() -> None:
    """A line without a sentence end is one sentence of every token of the line: truncating it to a pair's
    length took time quadratic in its length."""
    def pairs(size: int) -> None:
        documents = [[list(range(size)), [7, 8, 9]], [[1, 2, 3], [4, 5, 6]]]
        for pair in create_next_sentence_pairs(documents, 0, 128, 0.0, random.Random(0), random_next_prob=0.0):
            assert len(pair.tokens_a) + len(pair.tokens_b) <= 125

    assert growth(pairs, 50000) < LINEAR


@pytest.mark.parametrize("unit", ["x", "word ", "ab-"])
def test_what_tokenizer_training_does_to_a_line_is_linear(unit: str) -> None:
    """Before the trainer sees a paragraph, words longer than WordPiece reads are blanked and characters counted."""
    from bertpre.core.configs import TokenizerConfig
    from bertpre.readers.corpus import Document
    from bertpre.tokenizer.train import _count_alphabet, _without_overlong_words, build_wordpiece_tokenizer

    tokenizer = build_wordpiece_tokenizer(TokenizerConfig(inputs=["x"]))

    def prepare(size: int) -> None:
        documents = list(_without_overlong_words([Document("d", [unit * size])]))
        _count_alphabet(tokenizer, documents, 100)

    assert growth(prepare, 20000) < LINEAR


def test_reading_a_line_of_any_length_or_any_run_of_line_endings_is_linear(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import bertpre.readers.lines as lines

    monkeypatch.setattr(lines, "CHUNK_BYTES", 4096)  # many chunks per line, as a 5 MB line has of 1 MiB ones
    for name, unit in (("long", "word "), ("cr", "\r"), ("separators", "\u2028")):
        def read(size: int, name: str = name, unit: str = unit) -> None:
            path = tmp_path / f"{name}-{size}.txt"
            if not path.exists():
                path.write_text("start " + unit * size + "end\n", encoding="utf-8", newline="")
            assert sum(1 for _ in decoded_lines(str(path), "strict")) in (1, size + 1)

        assert growth(read, 20000) < LINEAR, name


# ---- line endings --------------------------------------------------------------------------------

TEXT = ("= First =\n\nThe first paragraph has two sentences. It goes on here.\nA second paragraph follows it.\n\n"
        "= Second =\n\nAnother article starts. It has words.\nAnd a last line.\n")


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\u0085", "\u2028", "\u2029", "\r\r\n"])
def test_every_line_ending_reads_as_the_same_lines_and_documents(tmp_path: Path, ending: str) -> None:
    lf = tmp_path / "lf.txt"
    lf.write_text(TEXT, encoding="utf-8", newline="")
    other = tmp_path / "other.txt"
    other.write_text(TEXT.replace("\n", ending), encoding="utf-8", newline="")
    assert list(decoded_lines(str(other), "strict")) == list(decoded_lines(str(lf), "strict"))
    documents = [(d.paragraphs, d.sentences) for d in read_documents(CorpusConfig(inputs=[str(other)]))]
    assert documents == [(d.paragraphs, d.sentences) for d in read_documents(CorpusConfig(inputs=[str(lf)]))]
    assert len(documents) == 2


def test_a_form_feed_is_whitespace_inside_a_line_not_a_line_ending(tmp_path: Path) -> None:
    path = tmp_path / "pages.txt"
    path.write_text("The page ends here\fand the sentence goes on.\n", encoding="utf-8")
    assert list(decoded_lines(str(path), "strict")) == ["The page ends here\fand the sentence goes on."]


def test_jsonl_lines_end_at_lf_only_and_keep_unicode_separators_in_their_text(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "one\u2028two"}\r\n{"text": "three"}\n', encoding="utf-8", newline="")
    lines = list(decoded_lines(str(path), "strict", endings="jsonl"))
    assert lines == ['{"text": "one\u2028two"}', '{"text": "three"}']
    paragraphs = [d.paragraphs for d in read_documents(CorpusConfig(inputs=[str(path)]))]
    assert paragraphs == [["one", "two"], ["three"]]  # inside the text, U+2028 ends a line as in a text file


def test_prepare_counts_the_same_for_a_corpus_saved_with_lone_cr(tmp_path: Path) -> None:
    articles = re.split(r"(?m)^(?== [^=].* =$)", english_articles().read_text(encoding="utf-8"))
    text = "".join(article[:article.rfind("\n", 0, 5000) + 1] for article in articles if article.strip())
    for name, ending in (("lf", "\n"), ("cr", "\r")):
        (tmp_path / f"{name}.txt").write_text(text.replace("\n", ending), encoding="utf-8", newline="")
        assert main(["prepare", "--inputs", str(tmp_path / f"{name}.txt"), "--output", str(tmp_path / name),
                     "--max-seq-length", "64", "--num-workers", "1", "--eval-fraction", "0"]) == 0
    import json

    def counts(name: str) -> dict:
        summary = json.loads((tmp_path / name / "prepare.json").read_text())["summary"]
        return {key: summary[key] for key in ("documents", "sentences", "train_pairs", "tokens")}

    assert counts("cr") == counts("lf") and counts("lf")["documents"] > 1


# ---- file names are names ------------------------------------------------------------------------


def test_an_existing_name_with_pattern_characters_is_read_as_that_file(tmp_path: Path) -> None:
    named = tmp_path / "corpus[1].txt"
    named.write_text("One sentence here.\nAnother one.\n")
    (tmp_path / "corpus1.txt").write_text("The pattern would match me.\n")
    assert resolve_inputs([str(named)]) == [str(named)]
    assert resolve_inputs([str(tmp_path / "corpus[1]*.txt")]) == [str(tmp_path / "corpus1.txt")]  # a pattern still
    table = tmp_path / "rows[v2].csv"
    table.write_text("text,label\nfine,1\n")
    assert read_table(str(table)) == [{"text": "fine", "label": "1"}]


def test_pipes_sockets_and_devices_are_refused_by_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "stream.txt"
    os.mkfifo(fifo)
    for reader in (lambda p: resolve_inputs([p]), read_table):
        with pytest.raises(BertpreError, match=r"stream.txt: is a named pipe \(FIFO\), not a file"):
            reader(str(fifo))
    with pytest.raises(BertpreError, match="is a character device"):
        resolve_inputs(["/dev/null"])
    directory = tmp_path / "corpus"
    directory.mkdir()
    (directory / "a.txt").write_text("A sentence.\n")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(directory / "live.txt"))
        with pytest.raises(BertpreError, match="live.txt: is a socket"):
            resolve_inputs([str(directory)])
        with pytest.raises(BertpreError, match="is a named pipe"):
            resolve_inputs([str(tmp_path / "*.txt")])
    finally:
        server.close()


def test_dangling_links_are_reported_and_linked_directories_are_read(tmp_path: Path) -> None:
    directory = tmp_path / "corpus"
    (directory / "part1").mkdir(parents=True)
    (directory / "part1" / "a.txt").write_text("A sentence.\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.txt").write_text("B sentence.\n")
    (directory / "part2").symlink_to(elsewhere, target_is_directory=True)
    (directory / "part1" / "loop").symlink_to(directory, target_is_directory=True)
    assert [Path(p).name for p in resolve_inputs([str(directory)])] == ["a.txt", "b.txt"]
    (directory / "lost.txt").symlink_to(tmp_path / "moved-away.txt")
    for spec in (str(directory), str(directory / "lost.txt"), str(directory / "*.txt")):
        with pytest.raises(BertpreError, match=f"lost.txt: a symbolic link to {tmp_path / 'moved-away.txt'}, which "
                                               "does not exist"):
            resolve_inputs([spec])
    with pytest.raises(BertpreError, match="lost.txt: a symbolic link"):
        read_table(str(directory / "lost.txt"))
    with pytest.raises(BertpreError, match="is a directory, not a file"):
        read_table(str(directory))
