"""Tokenizer loading (BERT uncased WordPiece from a local copy) and WordPiece training."""

from lxmert_repro.text.tokenizer import (
    MAX_LENGTH,
    PretrainedTokenizerSource,
    TrainedWordPieceSource,
    load_tokenizer,
    save_tokenizer,
    train_wordpiece,
)

__all__ = [
    "MAX_LENGTH",
    "PretrainedTokenizerSource",
    "TrainedWordPieceSource",
    "load_tokenizer",
    "save_tokenizer",
    "train_wordpiece",
]
