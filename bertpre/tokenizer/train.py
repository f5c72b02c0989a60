"""Stage 1: train a WordPiece tokenizer from scratch and save it in Hugging Face format.

The saved directory holds ``tokenizer.json`` (fast tokenizer), ``vocab.txt`` (classic
``BertTokenizer``), ``tokenizer_config.json`` and ``special_tokens_map.json``, so
``transformers.AutoTokenizer.from_pretrained(dir)`` loads it. Special tokens have fixed ids:
``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``, then any extra special tokens, then the pieces.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bertpre.core.config import save_config
from bertpre.core.configs import SPECIAL_TOKENS, TokenizerConfig
from bertpre.readers.corpus import (CorpusStats, Document, iter_paragraph_batches, read_documents, resolve_inputs,
                            warn_about_replaced_bytes)
from bertpre.core.errors import BertpreError
from bertpre.core.io import atomic_directory, check_apart_from_inputs, check_writable_output, disk_errors_named
from bertpre.core.locking import output_lock

PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS


@dataclass
class TokenizerSummary:
    """What `train_tokenizer` did, printed at the end of the command."""

    output: str
    vocab_size: int
    requested_vocab_size: int
    documents: int
    paragraphs: int
    characters: int
    seconds: float

    def table(self) -> str:
        """A short human-readable summary."""
        rate = self.characters / max(self.seconds, 1e-9)
        short = (f" ({self.requested_vocab_size:,} requested: the corpus has no more pieces at this "
                 "min_frequency)" if self.vocab_size < self.requested_vocab_size else "")
        return "\n".join([
            f"tokenizer      {self.output}",
            f"vocabulary     {self.vocab_size:,} tokens{short}",
            f"documents      {self.documents:,}",
            f"paragraphs     {self.paragraphs:,}",
            f"characters     {self.characters:,}",
            f"wall time      {self.seconds:.1f} s ({rate / 1e6:.2f} M chars/s)",
        ])


def build_wordpiece_tokenizer(config: TokenizerConfig, vocab: dict[str, int] | None = None) -> Tokenizer:
    """A tokenizer with BERT's normaliser, pre-tokeniser and decoder; untrained when ``vocab`` is None."""
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix="##",
                                           max_input_chars_per_word=MAX_WORD_CHARACTERS))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=config.accents_stripped,
        lowercase=config.lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def train_tokenizer(config: TokenizerConfig, show_progress: bool = True) -> TokenizerSummary:
    """Train a WordPiece vocabulary on ``config.inputs`` and save it to ``config.output``.

    The corpus is streamed twice in batches (never held in memory): once to fix the alphabet,
    once to learn the pieces. The output directory is written only after training succeeded:
    files go to a temporary sibling directory that is renamed at the end, under the output's lock.
    """
    with output_lock(config.output):
        return _train_tokenizer(config, show_progress)


def _train_tokenizer(config: TokenizerConfig, show_progress: bool) -> TokenizerSummary:
    output = Path(config.output)
    sources = resolve_inputs(config.inputs)
    check_apart_from_inputs(output, {"--inputs": [*config.inputs, *sources]})
    check_writable_output(output, config.overwrite, kind="tokenizer", keeps_other_files=True)
    started = time.perf_counter()
    stats = CorpusStats()
    tokenizer = build_wordpiece_tokenizer(config)
    alphabet = _count_alphabet(tokenizer, _without_overlong_words(read_documents(config, sources, stats)),
                               config.limit_alphabet)
    if stats.paragraphs == 0:
        raise BertpreError(f"{', '.join(config.inputs)}: the corpus is empty (no text after cleaning)")
    special_tokens = list(SPECIAL_TOKENS) + list(config.extra_special_tokens)
    # `tokenizers` numbers the "##" forms of characters in hash-map order, and breaks ties between
    # equally frequent merges by those numbers, so the same corpus can give different vocabularies.
    # Handing it the alphabet and its "##" forms in a fixed order makes every id deterministic.
    pinned = special_tokens + [f"##{char}" for char in alphabet]
    trainer = trainers.WordPieceTrainer(
        vocab_size=config.vocab_size, min_frequency=config.min_frequency,
        show_progress=show_progress, special_tokens=pinned, initial_alphabet=alphabet,
        limit_alphabet=len(alphabet), continuing_subword_prefix="##")
    tokenizer.train_from_iterator(iter_paragraph_batches(_without_overlong_words(read_documents(config, sources))),
                                  trainer=trainer)
    warn_about_replaced_bytes(stats)
    vocab = _canonical_vocabulary(tokenizer.get_vocab(), special_tokens, alphabet, config.vocab_size)
    tokenizer = build_wordpiece_tokenizer(config, vocab)
    tokenizer.add_special_tokens(special_tokens)
    tokenizer.post_processor = bert_post_processor(tokenizer)
    with disk_errors_named(output), atomic_directory(output, overwrite=True, keep_other_files=True) as staging:
        save_tokenizer_files(tokenizer, config, staging)
    return TokenizerSummary(str(output), tokenizer.get_vocab_size(), config.vocab_size, stats.documents,
                            stats.paragraphs, stats.characters, time.perf_counter() - started)


MAX_WORD_CHARACTERS = 100
"""BERT's WordPiece reads a longer word as [UNK] (``max_input_chars_per_word``), so it never learns from one."""
# A run of characters that BERT's pre-tokenizer keeps as one word: no whitespace, no ASCII punctuation.
_OVERLONG_WORD = re.compile(r"[^\s!-/:-@\[-`{-~]{%d,}" % (MAX_WORD_CHARACTERS + 1))


def _without_overlong_words(documents: Iterable[Document]) -> Iterator[Document]:
    """Documents with words longer than WordPiece reads blanked out: the trainer's cost grows with the
    square of a word's length (a 1 MB line without spaces took minutes), and such a word is [UNK]."""
    for document in documents:
        document.paragraphs = [_OVERLONG_WORD.sub(" ", paragraph) for paragraph in document.paragraphs]
        yield document


def _count_alphabet(tokenizer: Tokenizer, documents: Iterable[Document], limit: int) -> list[str]:
    """The ``limit`` most frequent characters of the normalised corpus, sorted by code point."""
    raw: Counter[str] = Counter()
    for document in documents:
        for paragraph in document.paragraphs:
            raw.update(paragraph)
    normalized: Counter[str] = Counter()
    for char, count in raw.items():
        for piece in tokenizer.normalizer.normalize_str(char):
            if not piece.isspace():
                normalized[piece] += count
    kept = sorted(normalized.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return sorted(char for char, _ in kept)


def _canonical_vocabulary(trained: dict[str, int], special_tokens: list[str], alphabet: list[str],
                          vocab_size: int) -> dict[str, int]:
    """Specials, characters, "##" characters, then learned pieces in the order they were learned."""
    fixed = special_tokens + alphabet + [f"##{char}" for char in alphabet]
    fixed = [token for token in dict.fromkeys(fixed) if token in trained or token in special_tokens]
    fixed_set = set(fixed)
    learned = [token for token, _ in sorted(trained.items(), key=lambda item: item[1])
               if token not in fixed_set]
    tokens = (fixed + learned)[:vocab_size]
    if len(tokens) < len(fixed) or len(fixed) > vocab_size:
        raise BertpreError(
            f"vocab_size: {vocab_size} is smaller than the corpus alphabet, its ## forms and the special "
            f"tokens ({len(fixed)}); raise vocab_size or lower limit_alphabet")
    return {token: index for index, token in enumerate(tokens)}


def bert_post_processor(tokenizer: Tokenizer) -> processors.TemplateProcessing:
    """``[CLS] A [SEP]`` for one segment, ``[CLS] A [SEP] B [SEP]`` with type ids 0…0 1…1 for two."""
    return processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, tokenizer.token_to_id(CLS)), (SEP, tokenizer.token_to_id(SEP))],
    )


def save_tokenizer_files(tokenizer: Tokenizer, config: TokenizerConfig, directory: Path) -> None:
    """Write the Hugging Face tokenizer files, ``vocab.txt`` and the recipe into ``directory``."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token=UNK, sep_token=SEP, pad_token=PAD, cls_token=CLS,
        mask_token=MASK, additional_special_tokens=list(config.extra_special_tokens) or None,
        model_max_length=512, padding_side="right")
    fast.save_pretrained(str(directory))
    _rewrite_as_bert_tokenizer_config(directory, config.lowercase, config.accents_stripped)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (directory / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    save_config(config, directory / "bertpre_tokenizer.yaml")


def _rewrite_as_bert_tokenizer_config(directory: Path, lowercase: bool, strip_accents: bool) -> None:
    """Name the class ``BertTokenizer`` so every transformers version picks BERT's tokenizer."""
    path = directory / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(tokenizer_class="BertTokenizer", do_lower_case=lowercase, strip_accents=strip_accents,
                tokenize_chinese_chars=True, model_max_length=512)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
