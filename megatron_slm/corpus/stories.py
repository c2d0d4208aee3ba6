"""A small grammar of children's stories: fixed lexicon, five plots, consistent characters.

Every story is drawn from its own RNG, seeded by (seed, index), so story i is the same whatever
else is generated (a corpus of 0.2 h is a prefix of the 3 h one). A story names its hero in the
first sentence and again in the last; the last sentence resolves what the plot set up (the lost
toy is found, the hungry animal is fed, the gift is given), so "which ending belongs to this
story" is decidable from the story alone: what a StoryCloze-style benchmark needs.

The lexicon is small on purpose (a few hundred words): the synthesiser speaks each word once
per voice, and a tiny LM can learn the language in minutes on a CPU.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

# Bump when the grammar or lexicon changes: corpora record it and are rebuilt.
GENERATOR_VERSION = 1

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Hero:
    name: str
    he: str  # subject pronoun
    him: str  # object pronoun
    his: str  # possessive


_GIRLS = ("Lily", "Mia", "Anna", "Zoe", "Lucy", "Emma", "Rosa", "Nina")
_BOYS = ("Tom", "Ben", "Sam", "Max", "Jack", "Leo", "Finn", "Omar")
HEROES = tuple(Hero(n, "she", "her", "her") for n in _GIRLS) + tuple(Hero(n, "he", "him", "his") for n in _BOYS)

# (indefinite description, short name)
FRIENDS = (("a kind old dog", "dog"), ("a wise owl", "owl"), ("a little bird", "bird"), ("a friendly frog", "frog"),
           ("a small gray cat", "cat"), ("a happy duck", "duck"), ("a big brown bear", "bear"),
           ("a tiny mouse", "mouse"))
FAMILY = ("mom", "dad", "grandma", "grandpa")
TOYS = (("red", "ball"), ("blue", "kite"), ("little", "boat"), ("yellow", "hat"), ("shiny", "key"),
        ("green", "book"), ("new", "drum"), ("pink", "shoe"))
PLACES = ("park", "garden", "beach", "forest", "river", "farm", "hill", "lake")
TIMES = ("morning", "afternoon", "evening")
HIDING = ("under a big tree", "behind a rock", "near the water", "in the tall grass", "under a bench")
# problem of an animal -> (what helps, how it is given)
PROBLEMS = (("hungry", "some bread", "gave the bread to"), ("cold", "a warm blanket", "put the blanket on"),
            ("stuck in a hole", "a long rope", "pulled out"), ("lost", "a bright lamp", "showed the way home to"))
GIFTS = ("cake", "card", "picture", "song", "scarf")
FEARS = (("the dark", "the stars are friendly"), ("the water", "the water is warm"),
         ("the big waves", "the waves want to play"), ("the thunder", "thunder is the sky singing"))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


@dataclass
class Story:
    index: int
    plot: str
    hero: str
    sentences: list[str]
    split: str = "train"
    meta: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"story{self.index:06d}"

    @property
    def text(self) -> str:
        return " ".join(self.sentences)

    @property
    def prompt(self) -> list[str]:
        return self.sentences[:-1]

    @property
    def ending(self) -> str:
        return self.sentences[-1]


def _lost(rng, h: Hero) -> tuple[list[str], dict]:
    adj, toy = _pick(rng, TOYS)
    friend, short = _pick(rng, FRIENDS)
    place, when = _pick(rng, PLACES), _pick(rng, TIMES)
    s = [_pick(rng, (f"{h.name} had a {adj} {toy}.", f"Once upon a time, {h.name} had a {adj} {toy}.")),
         _pick(rng, (f"One {when}, the {toy} was lost at the {place}.",
                     f"One {when}, the wind took the {toy} away.")),
         _pick(rng, (f"{h.name} looked everywhere, and then {friend} came to help.",
                     f"{h.name} was sad, but {friend} came to help.")),
         _pick(rng, (f"The {short} found the {toy} {_pick(rng, HIDING)}, and {h.name} was happy.",
                     f"{h.name} thanked the {short} and took the {toy} home."))]
    return s, {"toy": toy, "friend": short, "place": place}


def _help(rng, h: Hero) -> tuple[list[str], dict]:
    friend, short = _pick(rng, FRIENDS)
    problem, item, verb = _pick(rng, PROBLEMS)
    place = _pick(rng, PLACES)
    s = [f"{h.name} was walking near the {place}.",
         f"{_cap(h.he)} saw {friend} that was {problem}.",
         _pick(rng, (f"{h.name} ran home to get {item}, and {h.he} {verb} the {short}.",
                     f"{_cap(h.he)} thought of {item}, so {h.he} {verb} the {short}.")),
         _pick(rng, (f"The {short} was happy, and {h.name} had a new friend.",
                     f"From that day on, {h.name} and the {short} played together."))]
    return s, {"friend": short, "problem": problem, "place": place}


def _make(rng, h: Hero) -> tuple[list[str], dict]:
    gift, who, when = _pick(rng, GIFTS), _pick(rng, FAMILY), _pick(rng, TIMES)
    s = [f"{h.name} wanted to make a {gift} for {h.his} {who}.",
         _pick(rng, (f"{_cap(h.he)} worked all {when}, and it was hard.", f"{_cap(h.he)} made a big mess.")),
         f"But {h.name} did not stop, and the {gift} was ready.",
         _pick(rng, (f"{_cap(h.his)} {who} told {h.name} it was the best {gift} in the world.",
                     f"{_cap(h.his)} {who} loved the {gift} and gave {h.name} a hug."))]
    return s, {"gift": gift, "family": who}


def _afraid(rng, h: Hero) -> tuple[list[str], dict]:
    (fear, truth), (friend, short) = _pick(rng, FEARS), _pick(rng, FRIENDS)
    s = [f"{h.name} was afraid of {fear}.",
         f"One day {friend} sat down next to {h.him}.",
         f"The {short} said that {truth}.",
         _pick(rng, (f"Now {h.name} is not afraid of {fear} anymore.",
                     f"{h.name} smiled, and {h.he} was brave from that day on."))]
    return s, {"fear": fear, "friend": short}


def _trip(rng, h: Hero) -> tuple[list[str], dict]:
    who, place = _pick(rng, FAMILY), _pick(rng, PLACES)
    adj, toy = _pick(rng, TOYS)
    s = [f"{h.name} and {h.his} {who} went to the {place}.",
         f"They took some apples and a {adj} {toy}.",
         _pick(rng, (f"{h.name} played with the {toy} all day.", "Then they sat down and ate the apples.")),
         _pick(rng, (f"When the sun went down, {h.name} and {h.his} {who} walked home.",
                     f"{h.name} said it was the best day at the {place} ever."))]
    return s, {"toy": toy, "family": who, "place": place}


PLOTS = {"lost": _lost, "help": _help, "make": _make, "afraid": _afraid, "trip": _trip}


def generate_story(seed: int, index: int) -> Story:
    """Story `index` of the stream `seed` (pure function of both)."""
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    plot = _pick(rng, sorted(PLOTS))
    hero = _pick(rng, HEROES)
    sentences, meta = PLOTS[plot](rng, hero)
    return Story(index, plot, hero.name, sentences, meta=meta)


def uniform(key: str) -> float:
    """A uniform number in [0, 1) from a string (sha256: sequential keys give independent values)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") / 2**64


def split_of(seed: int, index: int, valid: float, test: float) -> str:
    """Held-out assignment by a hash of (seed, index): stable under any corpus size."""
    u = uniform(f"split:{seed}:{index}")
    return "test" if u < test else "valid" if u < test + valid else "train"


def distractor_ending(story: Story, pool: list[Story], rng: np.random.Generator) -> Story:
    """Another story of `pool` whose ending cannot belong to `story`: a different hero and plot."""
    others = [s for s in pool if s.hero != story.hero and s.plot != story.plot]
    if not others:
        raise ValueError(f"{story.id}: no story with another hero and plot among {len(pool)} to take an ending from")
    return others[int(rng.integers(len(others)))]


def lexicon() -> list[str]:
    """Every word the grammar can produce (lower case, no punctuation): what a corpus synthesises."""
    words: set[str] = set()
    for index in range(4000):  # the grammar's choices are covered many times over
        for sentence in generate_story(0, index).sentences:
            words.update(w.strip(".,!?").lower() for w in sentence.split())
    return sorted(words)
