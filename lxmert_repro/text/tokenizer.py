"""WordPiece tokenizers: BERT uncased from a local copy, or one trained on the corpus.

Both are returned as transformers' fast ``BertTokenizer`` (lower-casing, BERT pre-tokenisation,
``[CLS] ... [SEP]`` template) so every later stage treats them the same way. Nothing is fetched
from a hub: ``load_tokenizer`` only reads local files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerFast

from lxmert_repro.io_utils import atomic_write_text

# BERT's special tokens; [PAD] first so its id is 0 (LXMERT's embeddings use padding_idx=0).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_LENGTH = 20  # LXMERT's max sequence length in every run (docs/faithful.md §2)


def load_tokenizer(path: str | os.PathLike, max_length: int = MAX_LENGTH) -> PreTrainedTokenizerFast:
    """Load a fast WordPiece tokenizer from a directory (tokenizer.json or vocab.txt) or a vocab.txt file.

    Raises FileNotFoundError naming the path when nothing usable is there.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.name.endswith(".json"):
            tok = PreTrainedTokenizerFast(tokenizer_file=str(p))
        else:
            tok = BertTokenizer(vocab=str(p), do_lower_case=True)
    elif (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    elif (p / "vocab.txt").is_file():
        tok = BertTokenizer(vocab=str(p / "vocab.txt"), do_lower_case=True)
    else:
        raise FileNotFoundError(
            f"No tokenizer at '{p}': expected a vocab.txt file, or a directory with tokenizer.json or "
            f"vocab.txt (for BERT uncased, put your local copy of bert-base-uncased's vocab.txt there)."
        )
    tok.model_max_length = max_length
    return tok


def train_wordpiece(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    vocab_size: int = 30522,
    min_frequency: int = 1,
    lowercase: bool = True,
    max_length: int = MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a WordPiece vocabulary on ``texts`` with `tokenizers` and save it to ``out_dir``.

    The result uses BERT's normaliser, pre-tokeniser and special tokens, so it is a drop-in
    replacement for BERT uncased when no local copy exists (e.g. the shipped easy-VQA run).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=lowercase, clean_text=True, handle_chinese_chars=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = list(texts)  # two passes: the characters, then training
    # tokenizers numbers the continuing pieces ("##e") in hash-map order and breaks ties between equally
    # frequent merges by those numbers, so the same sentences could give different vocabularies from run to
    # run (huggingface/tokenizers#1794). Declared up front, in sorted order, they get fixed ids instead.
    chars: set[str] = set()
    for t in texts:
        chars.update(raw.normalizer.normalize_str(t))
    continuing = ["##" + c for c in sorted(chars) if not c.isspace()]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS) + continuing,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    vocab = raw.get_vocab()  # token -> id, specials first
    tok = BertTokenizer(vocab=vocab, do_lower_case=lowercase)
    tok.model_max_length = max_length
    save_tokenizer(tok, out_dir)
    return tok


def save_tokenizer(tok: PreTrainedTokenizerFast, out_dir: str | os.PathLike) -> None:
    """Save in transformers' format plus a plain vocab.txt (the format BERT/LXMERT ship)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    vocab = tok.get_vocab()
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    atomic_write_text(out / "vocab.txt", "".join(t + "\n" for t, _ in ordered))


class PretrainedTokenizerSource:
    """Config node for a tokenizer that already exists on disk (BERT uncased, vocab 30522)."""

    def __init__(self, path: str, max_length: int = MAX_LENGTH) -> None:
        self.path = path
        self.max_length = max_length

    def build(self, texts: Iterable[str], out_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
        tok = load_tokenizer(self.path, self.max_length)
        save_tokenizer(tok, out_dir)
        return tok


class TrainedWordPieceSource:
    """Config node for a WordPiece vocabulary trained on the training sentences."""

    def __init__(
        self, vocab_size: int = 30522, min_frequency: int = 1, lowercase: bool = True, max_length: int = MAX_LENGTH
    ) -> None:
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.lowercase = lowercase
        self.max_length = max_length

    def build(self, texts: Iterable[str], out_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
        return train_wordpiece(texts, out_dir, self.vocab_size, self.min_frequency, self.lowercase, self.max_length)
