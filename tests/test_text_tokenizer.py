"""Tokenizer: BERT-style vocab.txt loading, WordPiece training on real easy-VQA questions, configs."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lxmert_repro.cli import CONFIG_DIR
from lxmert_repro.data.formats import read_easy_vqa
from lxmert_repro.text import load_tokenizer, train_wordpiece

BERT_LIKE = (
    ["[PAD]"]
    + [f"[unused{i}]" for i in range(99)]
    + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + ["the", "cat", "sat", "on", "mat", "##s", "what", "color", "is", "?", "t", "-", "shirt"]
)


def _write_vocab(tmp_path: Path) -> Path:
    p = tmp_path / "bert" / "vocab.txt"
    p.parent.mkdir()
    p.write_text("\n".join(BERT_LIKE) + "\n")
    return p


def test_load_bert_layout_vocab_from_file_and_dir(tmp_path):
    p = _write_vocab(tmp_path)
    for tok in (load_tokenizer(p), load_tokenizer(p.parent)):
        enc = tok("The CATS sat on the mat?")["input_ids"]
        # BERT's ids: [CLS]=101, [SEP]=102, [PAD]=0, [MASK]=103; lower-cased; "cats" -> cat ##s
        assert enc == [101, 104, 105, 109, 106, 107, 104, 108, 113, 102]
        assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 101, 102, 103)
        assert tok.model_max_length == 20


def test_missing_tokenizer_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_tokenizer(tmp_path / "nope")


def test_train_wordpiece_on_easy_vqa_and_reload(tmp_path):
    texts = [e.sentence for e in read_easy_vqa("train")]
    tok = train_wordpiece(texts, tmp_path / "tok", vocab_size=1000)
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert 30 < len(tok) <= 1000  # easy-VQA has a tiny vocabulary
    q = "What color is the TRIANGLE?"
    ids = tok(q)["input_ids"]
    assert tok.unk_token_id not in ids  # every easy-VQA word is in its own vocabulary
    assert tok.decode(ids, skip_special_tokens=True) == "what color is the triangle?"
    for again in (load_tokenizer(tmp_path / "tok"), load_tokenizer(tmp_path / "tok" / "vocab.txt")):
        assert again(q)["input_ids"] == ids


def test_max_length_truncation(tmp_path):
    tok = load_tokenizer(_write_vocab(tmp_path))
    ids = tok(" ".join(["cat"] * 50), truncation=True, max_length=tok.model_max_length)["input_ids"]
    assert len(ids) == 20 and ids[0] == 101 and ids[-1] == 102


@pytest.mark.parametrize("name", ["bert_base_uncased", "trained_wordpiece"])
def test_tokenizer_configs_build(tmp_path, name):
    cfg = OmegaConf.load(CONFIG_DIR / "tokenizer" / f"{name}.yaml")
    if name == "bert_base_uncased":
        cfg.path = str(_write_vocab(tmp_path))
    else:
        cfg.vocab_size = 200
    source = instantiate(cfg)
    tok = source.build(["is there a red circle?", "what shape is it?"] * 5, tmp_path / "out")
    assert tok.model_max_length == 20
    assert load_tokenizer(tmp_path / "out")("a red circle")["input_ids"] == tok("a red circle")["input_ids"]


def test_train_wordpiece_is_deterministic_across_processes(tmp_path):
    """Same sentences, same vocabulary (ids included) in separate processes, whose hash seeds differ:
    tokenizers alone numbers continuing pieces in hash-map order (huggingface/tokenizers#1794)."""
    import random
    import subprocess
    import sys

    rng = random.Random(0)
    words = [
        "red",
        "blue",
        "green",
        "circle",
        "square",
        "triangle",
        "what",
        "color",
        "is",
        "the",
        "shape",
        "there",
        "a",
        "yes",
        "no",
        "gray",
        "yellow",
        "teal",
        "brown",
        "rectangle",
        "image",
        "contain",
        "does",
    ]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) + "?" for _ in range(3000)))
    code = (
        "import sys; from pathlib import Path; from lxmert_repro.text import train_wordpiece; "
        "train_wordpiece(Path(sys.argv[1]).read_text().splitlines(), sys.argv[2], vocab_size=200)"
    )
    vocabs = []
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(corpus), str(tmp_path / f"tok{i}")], check=True)
        vocabs.append((tmp_path / f"tok{i}" / "vocab.txt").read_text())
    assert vocabs[0] == vocabs[1] == vocabs[2]
    tok = load_tokenizer(tmp_path / "tok0")
    pieces = tok.tokenize("Is there a teal triangle?")
    assert tok.convert_tokens_to_string(pieces) == "is there a teal triangle?"
    assert all(p in tok.get_vocab() for p in pieces) and "[UNK]" not in pieces
