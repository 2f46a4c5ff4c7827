"""Answer normalisation exactly as the official VQA evaluation does it (docs/faithful.md §7).

Two steps, applied in this order: ``process_punctuation`` then ``process_digit_article``.
Quirks kept on purpose (they change scores):
- the punctuation rule looks at the *original* text to decide between deleting a character and
  replacing it by a space, and one digit,digit comma anywhere deletes every listed character;
- the period rule is a regex whose look-behind is mistyped (``(?!<=\\d)``), so every "." not followed
  by a digit goes, and it is called with ``re.UNICODE`` in the *count* slot: at most 32 removals;
- number words only from "none"/"zero" to "ten"; articles a/an/the dropped; contractions fixed by a
  table whose capitalised keys ("Im", "Ive", ...) can never match (the text is lower-cased first).
"""
from __future__ import annotations

import re

# Characters handled by the punctuation rule (note: no ":" and no "'" in the official list).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_PERIOD_MAX_REMOVALS = int(re.UNICODE)  # 32: the official code passes re.UNICODE as sub()'s count

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# The official contraction table, grouped by the form each key is rewritten to.
_CONTRACTION_GROUPS: dict[str, tuple[str, ...]] = {
    "ain't": ("aint",), "aren't": ("arent",), "can't": ("cant",), "could've": ("couldve",),
    "couldn't": ("couldnt",), "couldn't've": ("couldn'tve", "couldnt've"), "didn't": ("didnt",),
    "doesn't": ("doesnt",), "don't": ("dont",), "hadn't": ("hadnt",), "hadn't've": ("hadnt've", "hadn'tve"),
    "hasn't": ("hasnt",), "haven't": ("havent",), "he'd": ("hed",), "he'd've": ("hed've", "he'dve"),
    "he's": ("hes",), "how'd": ("howd",), "how'll": ("howll",), "how's": ("hows",),
    "I'd've": ("Id've", "I'dve"), "I'm": ("Im",), "I've": ("Ive",), "isn't": ("isnt",), "it'd": ("itd",),
    "it'd've": ("itd've", "it'dve"), "it'll": ("itll",), "let's": ("let's",), "ma'am": ("maam",),
    "mightn't": ("mightnt",), "mightn't've": ("mightnt've", "mightn'tve"), "might've": ("mightve",),
    "mustn't": ("mustnt",), "must've": ("mustve",), "needn't": ("neednt",), "not've": ("notve",),
    "o'clock": ("oclock",), "oughtn't": ("oughtnt",), "'ow's'at": ("ow's'at", "'ows'at", "'ow'sat"),
    "shan't": ("shant",), "she'd've": ("shed've", "she'dve"), "she's": ("she's",),
    "should've": ("shouldve",), "shouldn't": ("shouldnt",), "shouldn't've": ("shouldnt've", "shouldn'tve"),
    "somebodyd": ("somebody'd",),  # sic: the official table maps this one the wrong way round
    "somebody'd've": ("somebodyd've", "somebody'dve"), "somebody'll": ("somebodyll",),
    "somebody's": ("somebodys",), "someone'd": ("someoned",), "someone'd've": ("someoned've", "someone'dve"),
    "someone'll": ("someonell",), "someone's": ("someones",), "something'd": ("somethingd",),
    "something'd've": ("somethingd've", "something'dve"), "something'll": ("somethingll",),
    "that's": ("thats",), "there'd": ("thered",), "there'd've": ("thered've", "there'dve"),
    "there're": ("therere",), "there's": ("theres",), "they'd": ("theyd",),
    "they'd've": ("theyd've", "they'dve"), "they'll": ("theyll",), "they're": ("theyre",),
    "they've": ("theyve",), "'twas": ("twas",), "wasn't": ("wasnt",), "we'd've": ("wed've", "we'dve"),
    "we've": ("weve",), "weren't": ("werent",), "what'll": ("whatll",), "what're": ("whatre",),
    "what's": ("whats",), "what've": ("whatve",), "when's": ("whens",), "where'd": ("whered",),
    "where's": ("wheres",), "where've": ("whereve",), "who'd": ("whod",), "who'd've": ("whod've", "who'dve"),
    "who'll": ("wholl",), "who's": ("whos",), "who've": ("whove",), "why'll": ("whyll",),
    "why're": ("whyre",), "why's": ("whys",), "won't": ("wont",), "would've": ("wouldve",),
    "wouldn't": ("wouldnt",), "wouldn't've": ("wouldnt've", "wouldn'tve"), "y'all": ("yall",),
    "y'all'll": ("yall'll", "y'allll"), "y'all'd've": ("yall'd've", "y'alld've", "y'all'dve"),
    "you'd": ("youd",), "you'd've": ("youd've", "you'dve"), "you'll": ("youll",), "you're": ("youre",),
    "you've": ("youve",),
}
CONTRACTIONS: dict[str, str] = {key: full for full, keys in _CONTRACTION_GROUPS.items() for key in keys}


def clean_whitespace(text: str) -> str:
    """Newlines and tabs become spaces, then strip: applied to every answer before anything else."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    out = text
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_MAX_REMOVALS)


def process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """The official normalisation of one answer (whitespace, punctuation, digits/articles/contractions)."""
    return process_digit_article(process_punctuation(clean_whitespace(answer)))


# LXMERT's pretraining answer table uses its own, lighter conversion (AnswerTable.convert_ans).
_LXMERT_ANSWER_MAP = {
    "a man": "man", "the man": "man", "a woman": "woman", "the woman": "woman",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "grey": "gray",
}


def lxmert_convert_answer(answer: str) -> str:
    """LXMERT's answer conversion for the pretraining QA table: lower-case, drop a final ".",
    a leading article, and map a few synonyms / number words."""
    if not answer:
        return ""
    ans = answer.lower()
    if ans[-1] == ".":
        ans = ans[:-1].strip()
    for article in ("a ", "an ", "the "):
        if ans.startswith(article):
            ans = ans[len(article):].strip()
    return _LXMERT_ANSWER_MAP.get(ans, ans)
