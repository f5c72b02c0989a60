"""Documents and paragraphs found right in the formats users have, without flags; and said so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bertpre.core.configs import BUILTIN_PYTHON_DOCS, CorpusConfig, PrepareConfig
from bertpre.readers.corpus import CorpusStats, detect_text_layout, read_documents
from bertpre.core.errors import BertpreError
from bertpre.data.prepare import prepare_pretraining_data
from bertpre.readers.sentences import split_sentences

from .conftest import REPO, SHARED_DATA, shared_path

SENTENCES = [
    "The river rose after three days of rain.", "Farmers moved their animals to the hills.",
    "By Friday the water reached the old mill.", "Nobody in the village had seen such a flood.",
    "The mayor asked the army for help.", "Boats carried families from the lowest streets.",
    "When the rain stopped, the cleaning began.", "It took the whole summer to repair the bridge.",
]


def documents(path: Path, **options: object) -> list:
    return list(read_documents(CorpusConfig(inputs=[str(path)], **options)))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def wrapped(text: str, width: int = 60) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def test_sentence_per_line_with_blank_lines_between_documents_is_the_original_bert_format(tmp_path: Path) -> None:
    blocks = ["\n".join(SENTENCES[i:i + 4]) for i in range(0, 8, 4)] * 3
    path = write(tmp_path / "bert.txt", "\n\n".join(blocks) + "\n")
    assert detect_text_layout(str(path)).lines == "sentence"
    found = documents(path)
    assert len(found) == 6 and all(d.sentences and len(d.paragraphs) == 4 for d in found)
    assert found[0].paragraphs == SENTENCES[:4]


def test_hard_wrapped_prose_is_joined_into_paragraphs_and_the_file_is_one_document(tmp_path: Path) -> None:
    paragraphs = [" ".join(SENTENCES[i:i + 4]) + " " + " ".join(SENTENCES[:3]) for i in range(0, 8, 2)] * 5
    path = write(tmp_path / "book.txt", "CHAPTER I\n\n" + "\n\n".join(wrapped(p) for p in paragraphs) + "\n")
    layout = detect_text_layout(str(path))
    assert (layout.lines, layout.documents) == ("wrapped", "file")
    (document,) = documents(path)
    assert document.paragraphs[1:] == paragraphs and not document.sentences
    # every sentence of the book is whole: none ends at a line wrap
    sentences = [s for p in document.paragraphs[1:] for s in split_sentences(p)]
    assert set(sentences) <= set(SENTENCES)


def test_one_paragraph_per_line_single_file_and_headings(tmp_path: Path) -> None:
    paragraphs = [" ".join(SENTENCES[i:i + 3]) for i in range(6)]
    speech = write(tmp_path / "speech.txt", "ADDRESS TO THE NATION\n \n" + "\n".join(paragraphs * 3) + "\n")
    assert detect_text_layout(str(speech)).lines == "paragraph"
    (document,) = documents(speech)
    assert document.paragraphs[1:] == paragraphs * 3
    wiki = write(tmp_path / "wiki.txt", "".join(f"= Article {i} =\n\n" + "\n\n".join(paragraphs) + "\n\n" for i in range(3)))
    layout = detect_text_layout(str(wiki))
    assert (layout.lines, layout.documents) == ("paragraph", "heading")
    assert [d.id.split("#")[1] for d in documents(wiki)] == ["Article 0", "Article 1", "Article 2"]


def test_explicit_options_override_what_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path / "bert.txt", "\n\n".join("\n".join(SENTENCES[i:i + 4]) for i in (0, 4)) + "\n")
    assert len(documents(path, document_boundary="file")) == 1
    (joined,) = documents(path, document_boundary="file", line_format="wrapped")
    assert joined.paragraphs == [" ".join(SENTENCES[:4]), " ".join(SENTENCES[4:])]


@pytest.mark.parametrize("book", sorted(p.name for p in (SHARED_DATA / "pretrain" / "gutenberg").glob("*.txt"))
                         or ["austen-emma.txt"])
def test_no_sentence_of_a_gutenberg_book_ends_at_a_line_wrap(book: str) -> None:
    path = shared_path(f"pretrain/gutenberg/{book}")
    text = path.read_text(encoding="utf-8")
    blocks = [" ".join(line.strip() for line in block.split("\n") if line.strip())
              for block in re.split(r"\n[ \t]*\n", text)]
    open_blocks = sum(1 for block in blocks if block and not re.search(r"[.!?…:;][\"'”’)\]_]*$", block))
    (document,) = documents(path)
    sentences = [s for paragraph in document.paragraphs for s in split_sentences(paragraph)]
    open_sentences = sum(1 for s in sentences if not re.search(r"[.!?…:;][\"'”’)\]_]*$", s))
    # a sentence may end without punctuation only where a blank-line block does (titles, verse, headings)
    assert open_sentences <= open_blocks
    assert len(sentences) > 200


# ---- table rows ------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def test_sentence_rows_are_grouped_by_a_document_column(tmp_path: Path) -> None:
    rows = [{"text": s, "book_id": f"b{i // 8}"} for i, s in enumerate(SENTENCES * 4)]
    stats = CorpusStats()
    found = list(read_documents(CorpusConfig(inputs=[str(write_jsonl(tmp_path / "rows.jsonl", rows))]), stats=stats))
    assert [len(d.paragraphs) for d in found] == [8, 8, 8, 8] and found[0].paragraphs == SENTENCES
    assert "'book_id' column" in next(iter(stats.layouts.values()))


def test_sentence_rows_are_grouped_at_empty_rows_or_in_runs(tmp_path: Path) -> None:
    rows = []
    for _ in range(5):
        rows += [{"text": s} for s in SENTENCES] + [{"text": ""}]
    stats = CorpusStats()
    found = list(read_documents(CorpusConfig(inputs=[str(write_jsonl(tmp_path / "empty.jsonl", rows))]), stats=stats))
    assert [len(d.paragraphs) for d in found] == [8] * 5
    assert "empty rows" in next(iter(stats.layouts.values()))
    stats = CorpusStats()
    found = list(read_documents(CorpusConfig(inputs=[str(write_jsonl(tmp_path / "runs.jsonl", [{"text": s} for s in SENTENCES * 300]))]), stats=stats))
    assert [len(d.paragraphs) for d in found] == [1000, 1000, 400]
    assert "without document boundaries" in next(iter(stats.layouts.values()))


def test_document_rows_stay_documents_and_the_row_layout_can_be_fixed(tmp_path: Path) -> None:
    rows = [{"text": " ".join(SENTENCES[i % 5:i % 5 + 3])} for i in range(40)]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    assert len(documents(path)) == 40
    assert len(documents(path, rows="sentences")) == 1
    with pytest.raises(BertpreError, match="no document column 'book'"):
        documents(path, document_column="book")


# ---- what prepare says -----------------------------------------------------------------------


def test_prepare_says_how_each_input_was_read_and_warns_about_single_sentence_documents(tmp_path: Path) -> None:
    good = write(tmp_path / "inputs" / "bert.txt", "\n\n".join("\n".join(SENTENCES[i % 5:i % 5 + 4]) for i in range(30)))
    lonely = write(tmp_path / "inputs" / "lonely.txt", "\n\n".join(SENTENCES * 20) + "\n")
    summary = prepare_pretraining_data(PrepareConfig(inputs=[str(good.parent)], output=str(tmp_path / "out"),
                                                     tokenizer=str(REPO / "tokenizer"), num_workers=1,
                                                     eval_fraction=0, max_seq_length=32), show_progress=False)
    table = summary.table()
    assert "one sentence per line; documents separated by blank lines: bert.txt" in table
    assert summary.layouts[str(lonely)].startswith("one sentence per line; one document per file")
    assert not summary.warnings
    rows = [{"text": s} for s in SENTENCES * 10]
    tweets = write_jsonl(tmp_path / "tweets.jsonl", rows)
    summary = prepare_pretraining_data(PrepareConfig(inputs=[str(tweets), str(good)], output=str(tmp_path / "out2"),
                                                     tokenizer=str(REPO / "tokenizer"), num_workers=1, rows="documents",
                                                     eval_fraction=0, max_seq_length=32), show_progress=False)
    assert summary.single_sentence_documents > 0.5
    assert any("single sentence" in w and "--rows sentences" in w for w in summary.warnings)
    assert "warning:" in summary.table()
    with pytest.raises(BertpreError, match="no next-sentence pairs"):
        prepare_pretraining_data(PrepareConfig(inputs=[str(tweets)], output=str(tmp_path / "out3"), rows="documents",
                                               tokenizer=str(REPO / "tokenizer"), num_workers=1, eval_fraction=0),
                                 show_progress=False)


@pytest.mark.slow
def test_the_shared_corpus_with_default_options_has_little_padding_and_balanced_is_next(tmp_path: Path) -> None:
    corpus = shared_path("pretrain")
    summary = prepare_pretraining_data(PrepareConfig(inputs=[str(corpus)], output=str(tmp_path / "out"),
                                                     tokenizer=str(REPO / "tokenizer"), num_workers=2),
                                       show_progress=False)
    assert summary.padding_fraction <= 0.12, summary.padding_fraction
    assert abs(summary.is_next_ratio - 0.5) <= 0.01, summary.is_next_ratio
    assert not summary.warnings


def test_builtin_corpus_as_the_quickstart_prepares_it_has_balanced_is_next(tmp_path: Path) -> None:
    from bertpre.runners.quickstart import QUICKSTART_DUPE_FACTOR

    summary = prepare_pretraining_data(PrepareConfig(inputs=[BUILTIN_PYTHON_DOCS], output=str(tmp_path / "out"),
                                                     tokenizer=str(REPO / "tokenizer"), num_workers=1,
                                                     dupe_factor=QUICKSTART_DUPE_FACTOR, eval_fraction=0.05),
                                       show_progress=False)
    assert abs(summary.is_next_ratio - 0.5) <= 0.01, summary.is_next_ratio
    assert np.isclose(sum(summary.length_histogram.values()), summary.train_pairs + summary.eval_pairs)
