"""A seeded generator of short product reviews labelled negative, neutral or positive.

Reviews are built from sentiment phrases, adjectives about a product's parts (some negated:
"the battery is not great"), neutral filler and shouting or punctuation noise. Some reviews
mix signals (a complaint inside a positive review, praise and blame in a neutral one) and a few
labels are wrong, so a bag-of-words model reaches an accuracy near 0.9, not 1.0, and needs
bigrams for the negations. No downloads: everything comes from the lists below and the seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ferry.errors import DataError

DEFAULT_ROWS = 4_000
TARGET = "target"
LABELS = ("negative", "neutral", "positive")
NEGATIVE, NEUTRAL, POSITIVE = range(3)
LABEL_NOISE = 0.06  # share of rows whose label is redrawn at random
MIXED = 0.3  # share of reviews that also carry a phrase of another sentiment
EMPTY = 0.01  # share of reviews left empty (a rating without words): an empty string is valid

PARTS = {
    "electronics": ("battery", "screen", "charger", "sound", "app", "remote"),
    "kitchen": ("blade", "lid", "handle", "pan", "coating", "kettle"),
    "books": ("story", "pages", "ending", "characters", "print", "cover"),
    "toys": ("pieces", "colours", "instructions", "wheels", "box", "puzzle"),
    "garden": ("hose", "nozzle", "seeds", "frame", "pump", "gloves"),
    "clothing": ("fabric", "fit", "stitching", "size", "zip", "collar"),
}
PRODUCTS = tuple(PARTS)

ADJECTIVES = (
    ("terrible", "awful", "flimsy", "cheap", "poor", "useless", "horrible", "disappointing",
     "broken", "bad", "weak", "noisy"),
    ("okay", "fine", "average", "decent", "acceptable", "standard", "alright", "ordinary",
     "adequate", "normal", "plain", "fair"),
    ("great", "excellent", "perfect", "solid", "sturdy", "lovely", "fantastic", "amazing",
     "superb", "brilliant", "good", "comfortable"),
)  # fmt: skip
PHRASES = (
    ("waste of money", "stopped working after a week", "would not recommend", "returned it",
     "very disappointed", "one star", "fell apart", "don't buy this", "broke on day two",
     "customer service never replied", "regret buying it", "cheaply made junk"),
    ("it does the job", "nothing special", "as described", "fine for the price",
     "arrived on time", "it's okay i guess", "average at best", "neither good nor bad",
     "exactly what you'd expect", "no strong feelings", "middle of the road", "it works"),
    ("love it", "highly recommend", "works perfectly", "worth every penny", "five stars",
     "exceeded my expectations", "would buy again", "my kids love it", "very happy with it",
     "best purchase this year", "does exactly what i wanted", "really well made"),
)  # fmt: skip
FILLER = (
    "honestly", "well", "so", "overall", "to be fair", "i think", "after two weeks",
    "for what it's worth", "bought this for my mum", "second one i've ordered",
    "delivery was quick", "the box was a bit dented", "used it every day", "got it on sale",
)  # fmt: skip
ENDINGS = (".", ".", ".", "!", "!!", "...", "")


def reviews(rows: int = DEFAULT_ROWS, seed: int = 0) -> pd.DataFrame:
    """``rows`` reviews with columns ``review`` (text), ``product`` and ``target`` (the label)."""
    if rows < 1:
        raise DataError(f"rows must be at least 1 for builtin:reviews; received {rows}")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(LABELS), size=rows)
    products = rng.integers(0, len(PRODUCTS), size=rows)
    texts = [_review(rng, int(t), PRODUCTS[int(p)]) for t, p in zip(truth, products, strict=True)]
    empty = np.flatnonzero(rng.random(rows) < EMPTY)
    for i in empty:
        texts[i] = ""
    noisy = rng.random(rows) < LABEL_NOISE
    labels = np.where(noisy, rng.integers(0, len(LABELS), size=rows), truth)
    return pd.DataFrame(
        {
            "review": texts,
            "product": [PRODUCTS[int(p)] for p in products],
            TARGET: [LABELS[int(label)] for label in labels],
        }
    )


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(0, len(options)))]


def _about_part(rng: np.random.Generator, sentiment: int, part: str) -> str:
    """A part's quality, or a negation that means the same: "the lid is not flimsy"."""
    verb = "are" if part.endswith("s") else "is"
    if sentiment != NEUTRAL and rng.random() < 0.3:
        opposite = POSITIVE if sentiment == NEGATIVE else NEGATIVE
        return f"the {part} {verb} not {_pick(rng, ADJECTIVES[opposite])}"
    return f"the {part} {verb} {_pick(rng, ADJECTIVES[sentiment])}"


def _clause(rng: np.random.Generator, sentiment: int, product: str) -> str:
    if rng.random() < 0.5:
        return _about_part(rng, sentiment, _pick(rng, PARTS[product]))
    return _pick(rng, PHRASES[sentiment])


def _review(rng: np.random.Generator, sentiment: int, product: str) -> str:
    clauses = [_clause(rng, sentiment, product) for _ in range(int(rng.integers(1, 3)))]
    if rng.random() < MIXED:
        other = int(rng.choice([s for s in range(len(LABELS)) if s != sentiment]))
        clauses.insert(int(rng.integers(0, len(clauses) + 1)), _clause(rng, other, product))
    if rng.random() < 0.6:
        clauses.insert(int(rng.integers(0, len(clauses) + 1)), _pick(rng, FILLER))
    return " ".join(_sentence(rng, clause) for clause in clauses)


def _sentence(rng: np.random.Generator, clause: str) -> str:
    words = clause.split(" ")
    if rng.random() < 0.08:  # shouting one word: case must not matter to the model
        i = int(rng.integers(0, len(words)))
        words[i] = words[i].upper()
    text = " ".join(words)
    return text[:1].upper() + text[1:] + _pick(rng, ENDINGS)
