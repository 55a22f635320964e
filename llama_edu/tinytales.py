"""TinyTales: a synthetic story world whose every story has an exact, known probability.

``TinyTales`` writes short stories in a tiny world: a hero finds an object at a place, may meet
a friend, gives the object away, loses it, finds it again, goes somewhere else... Later sentences
refer back to what earlier sentences introduced ("Mia found a red kite in the park. ... Mia
played with the red kite in the park."), so predicting them needs the earlier text, not just the
previous character or two.

Every story comes with its exact natural-log probability under the generator. The text alone
determines every random choice made while writing it (each choice picks one of several token
sequences, none of which is a prefix of another), so this is the probability of the text itself,
and ``TinyTales.log_prob`` recomputes it by parsing. The machinery that samples, parses and
enumerates a story program is in ``llama_edu.storyworld``; this module holds the English world
(and the plot that ``llama_edu.tinytales_zh`` tells in Chinese), and re-exports the public names
of ``storyworld`` so that ``from llama_edu.tinytales import Story`` keeps working.

Character accounting (used by the entropy floor and by both count-based baselines in
``llama_edu.data``): a corpus is the stories one after the other, each followed by one newline
``"\\n"``, so a story of ``len(text)`` characters costs ``len(text) + 1`` characters. The newline
is also how a reader knows the story has ended, and the probability of ending there is part of
``log_prob``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .storyworld import (
    _END,
    EntropyEstimate,
    Story,
    StoryWorld,
    Validity,
    _Branch,  # noqa: F401 (importable from here, as before storyworld.py existed)
    _Enumerator,
    _Mismatch,
    _Parser,
    _Run,
    _Sampler,  # noqa: F401 (the same)
    _Table,
    ratio_estimate,
)

__all__ = [
    "EntropyEstimate",
    "Story",
    "TinyTales",
    "Validity",
    "ratio_estimate",
    "tiny_tales_text",
]

# --------------------------------------------------------------------------------------------
# The TinyTales world: word lists and sentence pieces
# --------------------------------------------------------------------------------------------

_GIRLS = (
    "Mia", "Lily", "Emma", "Zoe", "Ava", "Ella", "Nora", "Ruby", "Lucy", "Anna", "Rosa", "Ivy",
    "Maya", "Chloe", "Hana", "Sara", "Nina", "Tess", "Clara", "Leah", "Amy", "Iris", "Fay", "Bea",
    "Alma", "June", "Lena", "Mara", "Pia", "Rina",
)
_BOYS = (
    "Leo", "Max", "Sam", "Ben", "Tom", "Jack", "Noah", "Liam", "Owen", "Finn", "Eli", "Theo",
    "Omar", "Ravi", "Kai", "Hugo", "Ezra", "Milo", "Luca", "Oscar", "Jonas", "Felix", "Arlo",
    "Ian", "Adam", "Dev", "Gus", "Jon", "Nico", "Rex",
)
_ADJECTIVES = (
    "red", "blue", "green", "yellow", "purple", "pink", "orange", "white", "black", "brown",
    "golden", "silver", "little", "big", "tiny", "shiny", "old", "new", "soft", "striped",
    "spotted", "wooden", "magic", "fluffy", "round", "bright", "heavy", "small", "lucky",
    "sparkly",
)
# Each object belongs to a kind, and the kind decides what the object can do on its own.
_NOUN_KINDS = {
    "kite": "fly", "balloon": "fly", "feather": "fly", "ribbon": "fly",
    "ball": "roll", "marble": "roll", "wheel": "roll", "car": "roll", "train": "roll",
    "coin": "roll", "hoop": "roll", "top": "roll",
    "bell": "sound", "drum": "sound", "flute": "sound", "whistle": "sound", "horn": "sound",
    "clock": "sound",
    "lamp": "shine", "star": "shine", "crystal": "shine", "lantern": "shine", "candle": "shine",
    "hat": "plain", "book": "plain", "cup": "plain", "doll": "plain", "robot": "plain",
    "map": "plain", "shell": "plain", "stone": "plain", "scarf": "plain", "spoon": "plain",
    "key": "plain", "bucket": "plain", "pebble": "plain",
}
# (tokens, weight, the object ends up lost)
_ACTIONS: dict[str, tuple[tuple[tuple[str, ...], float, bool], ...]] = {
    "fly": (
        (("flew", "high", "in", "the", "sky", "."), 1.0, False),
        (("danced", "in", "the", "wind", "."), 1.0, False),
        (("flew", "away", "."), 1.0, True),
    ),
    "roll": (
        (("rolled", "down", "the", "hill", "."), 1.0, False),
        (("spun", "around", "."), 1.0, False),
        (("rolled", "away", "."), 1.0, True),
    ),
    "sound": (
        (("made", "a", "funny", "sound", "."), 1.0, False),
        (("was", "very", "loud", "."), 1.0, False),
        (("fell", "into", "a", "hole", "."), 0.5, True),
    ),
    "shine": (
        (("glowed", "in", "the", "dark", "."), 1.0, False),
        (("sparkled", "in", "the", "sun", "."), 1.0, False),
        (("fell", "into", "a", "hole", "."), 0.5, True),
    ),
    "plain": (
        (("looked", "very", "nice", "."), 1.0, False),
        (("was", "very", "special", "."), 1.0, False),
        (("fell", "into", "a", "hole", "."), 0.5, True),
    ),
}
_PLACE_PREPS = {
    "park": "in", "beach": "at", "forest": "in", "river": "by", "garden": "in", "school": "at",
    "farm": "on", "meadow": "in", "lake": "by", "zoo": "at", "woods": "in", "market": "at",
    "library": "in", "playground": "at", "kitchen": "in", "harbor": "at",
    "cave": "in", "island": "on", "village": "in", "castle": "at",
}
_OPENERS = (
    (("Once", "upon", "a", "time", ","), 3.0),
    (("One", "day", ","), 3.0),
    (("Long", "ago", ","), 1.0),
    (("One", "morning", ","), 1.0),
    (("One", "sunny", "day", ","), 1.0),
)
_INTRO_VERBS = ((("found",), 2.0), (("made",), 1.0), (("got",), 1.0), (("had",), 1.0))
_CONNECTIVES = (
    (("Then",), 2.0), (("Later", ","), 1.0), (("After", "that", ","), 1.0), (("Soon", ","), 1.0),
)
_SPOTS = (
    ("under", "a", "bench", "."), ("behind", "a", "tree", "."), ("near", "a", "rock", "."),
    ("in", "the", "grass", "."), ("under", "a", "leaf", "."), ("next", "to", "a", "flower", "."),
)
_EMOTIONS = {
    "calm": ("happy", "calm", "sleepy", "curious", "excited"),
    "happy": ("happy", "glad", "excited", "proud"),
    "sad": ("sad", "upset", "worried"),
}
# The event that a person does in a sentence, chosen by the word(s) right after the subject.
# (event, tokens, weight) - the weight is relative within the events allowed at that moment.
_EVENTS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("meet", ("met", "a"), 4.0),
    ("give", ("gave",), 2.0),
    ("show", ("showed",), 1.0),
    ("share", ("shared",), 1.0),
    ("play", ("played", "with"), 2.0),
    ("lose", ("lost",), 1.5),
    ("ask", ("asked", "$OTHER", "for"), 2.0),
    ("thank", ("thanked", "$OTHER", "."), 3.0),
    ("look", ("looked", "for"), 2.0),
    ("find", ("found",), 3.0),
    ("go", ("went", "to", "the"), 0.5),
    ("go", ("ran", "to", "the"), 0.3),
    ("go", ("walked", "to", "the"), 0.2),
    ("feel", ("was", "very"), 0.7),
    ("feel", ("felt",), 0.5),
    ("smile", ("smiled", "."), 0.4),
    ("smile", ("laughed", "."), 0.4),
)
_HOLDER_EVENTS = frozenset({"give", "show", "share", "play", "lose"})
_PAIR_EVENTS = frozenset({"give", "show", "share", "ask", "thank"})
_MENTIONS = (
    (("the", "$ADJ", "$NOUN"), 0.5),
    (("the", "$NOUN"), 0.3),
    (("$POS", "$ADJ", "$NOUN"), 0.1),  # only when the subject holds the object
    (("$POS", "$NOUN"), 0.1),
)
_SUBJECT_WEIGHTS = {"hero": 3.0, "friend": 2.5, "thing": 1.0}
_PRONOUN_SHARE = 0.5  # how often the previous sentence's subject is called "she"/"he"
_CONNECTIVE_PROB = 0.3
_OPPOSITE_GENDER_FRIEND = 0.6

_TOKEN_RE = re.compile(r"[A-Za-z]+|[.,]|\S")


def _render(tokens: Sequence[str]) -> str:
    """Join tokens into text: one space between words, none before '.' or ','."""
    return " ".join(tokens).replace(" .", ".").replace(" ,", ",")



# --------------------------------------------------------------------------------------------
# The plot: who is in the story, and what may happen next (shared with tinytales_zh)
# --------------------------------------------------------------------------------------------


class _Person:
    __slots__ = ("name", "girl", "mood")

    def __init__(self, name: str, girl: bool) -> None:
        self.name = name
        self.girl = girl
        self.mood = "calm"


class _World:
    """What the story has established so far."""

    __slots__ = ("hero", "friend", "adj", "noun", "place", "holder", "last", "owes")

    def __init__(self) -> None:
        self.hero: _Person | None = None
        self.friend: _Person | None = None
        self.adj = ""
        self.noun = ""
        self.place = ""
        self.holder: _Person | None = None  # None: the object is lost
        self.last: _Person | None = None  # subject of the previous sentence, if a person
        self.owes: set[str] = set()  # people who were given the object and have not thanked

    def other(self, person: _Person) -> _Person | None:
        """The other character, if there is one."""
        if self.friend is None:
            return None
        return self.friend if person is self.hero else self.hero



@dataclass(frozen=True)
class _StartWords:
    """How a sentence may start in one language; each pair is (story's own, after a connective)."""

    pron: tuple[tuple[str, ...], tuple[str, ...]]
    thing_adj: tuple[tuple[str, ...], tuple[str, ...]]  # the object named with its adjective
    thing: tuple[tuple[str, ...], tuple[str, ...]]  # the object named without it
    connectives: tuple[tuple[tuple[str, ...], float], ...]


_START_WORDS = _StartWords(
    pron=(("$PRON",), ("$pron",)),
    thing_adj=(("The", "$ADJ", "$NOUN"), ("the", "$ADJ", "$NOUN")),
    thing=(("The", "$NOUN"), ("the", "$NOUN")),
    connectives=_CONNECTIVES,
)


def _start_entries(stop: float | None, has_friend: bool, pron_for: str | None, thing_ok: bool,
                   words: _StartWords) -> list[tuple[tuple[str, ...], float, Any]]:
    """The options for how the next sentence starts (or the story ends), with their weights.

    stop is the probability of ending here; None means right after a connective. pron_for is
    "hero" or "friend" when that person may be called by a pronoun, and thing_ok says whether
    the object may be the subject (it is not lost).
    """
    capital = stop is not None
    own = 0 if capital else 1
    people = {"hero": _SUBJECT_WEIGHTS["hero"]}
    if has_friend:
        people["friend"] = _SUBJECT_WEIGHTS["friend"]
    total = math.fsum([*people.values(), _SUBJECT_WEIGHTS["thing"] if thing_ok else 0.0])
    subjects: list[tuple[tuple[str, ...], float, Any]] = []
    for who, weight in people.items():
        share = _PRONOUN_SHARE if who == pron_for else 0.0
        name = "$HERO" if who == "hero" else "$FRIEND"
        subjects.append(((name,), weight * (1 - share) / total, who))
        if share:
            subjects.append((words.pron[own], weight * share / total, who))
    if thing_ok:
        p_thing = _SUBJECT_WEIGHTS["thing"] / total
        subjects.append((words.thing_adj[own], p_thing * 0.6, "thing"))
        subjects.append((words.thing[own], p_thing * 0.4, "thing"))
    if not capital:
        return subjects
    if stop >= 1.0:
        return [((_END,), 1.0, "end")]
    go_on = 1.0 - stop
    conn_total = math.fsum(w for _, w in words.connectives)
    entries = [((_END,), stop, "end")]
    entries += [(t, go_on * _CONNECTIVE_PROB * w / conn_total, "connective")
                for t, w in words.connectives]
    entries += [(t, go_on * (1 - _CONNECTIVE_PROB) * p, who) for t, p, who in subjects]
    return entries


def _pronoun_for(w: _World) -> str | None:
    """Who the next sentence may call "she"/"he": the last subject, unless that is ambiguous."""
    if w.last is not None and not (w.friend is not None and w.friend.girl == w.hero.girl):
        return "hero" if w.last is w.hero else "friend"
    return None


def _allowed_events(is_hero: bool, has_friend: bool, holder: str, owes: bool) -> dict[str, bool]:
    """Which events a person may do now; holder is "self", "other" or "lost" (the object)."""
    return {
        "meet": is_hero and not has_friend,
        "give": holder == "self" and has_friend,
        "show": holder == "self" and has_friend,
        "share": holder == "self" and has_friend,
        "play": holder == "self",
        "lose": holder == "self",
        "ask": holder == "other",
        "thank": owes,
        "look": holder == "lost",
        "find": holder == "lost",
        "go": True,
        "feel": True,
        "smile": True,
    }


# --------------------------------------------------------------------------------------------
# TinyTales
# --------------------------------------------------------------------------------------------

def _check_words(words: Sequence[str] | None, default: Sequence[str], what: str,
                 capitalised: bool) -> tuple[str, ...]:
    """Validate a user word list: unique single alphabetic words of the right case."""
    if words is None:
        return tuple(default)
    if isinstance(words, str):
        raise TypeError(f"{what} must be a list of words, not a single string: {words!r}")
    out = tuple(words)
    for w in out:
        if not isinstance(w, str):
            raise TypeError(f"{what} must contain str words, found {type(w).__name__}")
        ok_case = (w[:1].isupper() and w[1:].islower()) if capitalised else w.islower()
        if not (w.isascii() and w.isalpha() and ok_case):
            case = "a capital letter then lowercase" if capitalised else "lowercase"
            raise ValueError(f"{what}: {w!r} is not a single ASCII word in {case} letters")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} contains duplicates: {sorted(out)}")
    return out


class TinyTales(StoryWorld):
    """A seeded generator of short stories whose exact probabilities are known.

    The constructor only sets up the world (its words and story length); randomness comes from
    the seed given to ``sample``. Smaller worlds (fewer names, objects, places, sentences) give
    lower-entropy text and make ``enumerate_stories`` feasible.
    """

    def __init__(
        self,
        *,
        girls: Sequence[str] | None = None,
        boys: Sequence[str] | None = None,
        adjectives: Sequence[str] | None = None,
        nouns: Sequence[str] | None = None,
        places: Sequence[str] | None = None,
        min_sentences: int = 3,
        max_sentences: int = 6,
    ) -> None:
        self.girls = _check_words(girls, _GIRLS, "girls", capitalised=True)
        self.boys = _check_words(boys, _BOYS, "boys", capitalised=True)
        self.adjectives = _check_words(adjectives, _ADJECTIVES, "adjectives", capitalised=False)
        self.nouns = _check_words(nouns, tuple(_NOUN_KINDS), "nouns", capitalised=False)
        self.places = _check_words(places, tuple(_PLACE_PREPS), "places", capitalised=False)
        if not self.girls or not self.boys:
            raise ValueError("the world needs at least one girl's name and one boy's name")
        if not self.adjectives or not self.nouns:
            raise ValueError("the world needs at least one adjective and one noun")
        if len(self.places) < 2:
            raise ValueError(f"the world needs at least 2 places to go between, got {self.places}")
        for noun in self.nouns:
            if noun not in _NOUN_KINDS:
                raise ValueError(f"unknown noun {noun!r}: nouns must be chosen from {_NOUN_KINDS}")
        for place in self.places:
            if place not in _PLACE_PREPS:
                raise ValueError(f"unknown place {place!r}: choose from {sorted(_PLACE_PREPS)}")
        self._set_length(min_sentences, max_sentences)
        self._girl_of = {n: True for n in self.girls} | {n: False for n in self.boys}
        self._cache: dict[tuple[Any, ...], _Table] = {}

        self._openers = _Table((t, w, None) for t, w in _OPENERS)
        self._heroes = _Table(((n,), 1.0, n) for n in self._girl_of)
        self._intro_verbs = _Table((t, w, None) for t, w in _INTRO_VERBS)
        self._adjs = _Table(
            (("an" if a[0] in "aeiou" else "a", a), 1.0, a) for a in self.adjectives
        )
        self._nouns = _Table(((n,), 1.0, n) for n in self.nouns)
        self._places_at = _Table(((_PLACE_PREPS[p], "the", p), 1.0, p) for p in self.places)
        self._mention_tables = {
            holds: _Table((t, w if holds or not t[0].startswith("$") else 0.0, None)
                          for t, w in _MENTIONS)
            for holds in (False, True)
        }
        self._spots = _Table((t, 1.0, None) for t in _SPOTS)
        self._everywhere = _Table(((("everywhere", "."), 0.4, None), ((".",), 0.6, None)))
        self._place_ending = _Table(
            ((("$PREP", "the", "$PLACE", "."), 0.4, None), ((".",), 0.6, None))
        )
        self._genders = {
            girl: _Table((("girl" if g else "boy", "named"),
                          _OPPOSITE_GENDER_FRIEND if g != girl else 1.0 - _OPPOSITE_GENDER_FRIEND,
                          g) for g in (True, False))
            for girl in (True, False)
        }
        self._emotions = {m: _Table(((w, "."), 1.0, None) for w in ws)
                          for m, ws in _EMOTIONS.items()}
        self._actions = {k: _Table((t, w, lost) for t, w, lost in acts)
                         for k, acts in _ACTIONS.items()}
        self._names = frozenset(self._girl_of)
        self._adj_set = frozenset(self.adjectives)
        self._noun_set = frozenset(self.nouns)
        self._place_set = frozenset(self.places)
        self.vocabulary = self._build_vocabulary()

    # ---- the story program -----------------------------------------------------------------

    def _start_table(self, stop: float | None, w: _World) -> _Table:
        """How the next sentence starts (or the story ends). stop=None: after a connective."""
        pron_for = _pronoun_for(w)
        key = ("start", stop, w.friend is not None, pron_for, w.holder is not None)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = _Table(_start_entries(
                stop, w.friend is not None, pron_for, w.holder is not None, _START_WORDS))
        return table

    def _event_table(self, key: tuple[Any, ...]) -> _Table:
        table = self._cache.get(key)
        if table is None:
            allowed = _allowed_events(*key[1:])
            table = self._cache[key] = _Table((t, w if allowed[e] else 0.0, e)
                                              for e, t, w in _EVENTS)
        return table

    def _name_table(self, girl: bool, hero: str) -> _Table:
        key = ("name", girl, hero)
        table = self._cache.get(key)
        if table is None:
            names = self.girls if girl else self.boys
            table = self._cache[key] = _Table(((n,), 1.0 if n != hero else 0.0, n) for n in names)
        return table

    def _gender_table(self, hero: _Person) -> _Table:
        same = self.girls if hero.girl else self.boys
        if len(same) > 1:
            return self._genders[hero.girl]
        key = ("gender-only-opposite", hero.girl)
        table = self._cache.get(key)
        if table is None:
            word = "boy" if hero.girl else "girl"
            table = self._cache[key] = _Table([((word, "named"), 1.0, not hero.girl)])
        return table

    def _new_place_table(self, current: str) -> _Table:
        key = ("go", current)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = _Table(((p, "."), 1.0 if p != current else 0.0, p)
                                              for p in self.places)
        return table

    def _set_place(self, run: _Run, place: str) -> None:
        run.world.place = place
        run.vars["$PREP"] = _PLACE_PREPS[place]
        run.vars["$PLACE"] = place

    def _tell(self, run: _Run) -> None:
        """The story program. Every random choice goes through run.pick, all text through run."""
        w = run.world = _World()
        v = run.vars
        run.pick(self._openers, "opener")
        name = run.pick(self._heroes, "hero")
        hero = w.hero = _Person(name, self._girl_of[name])
        v["$HERO"] = name
        run.pick(self._intro_verbs, "intro verb")
        w.adj = v["$ADJ"] = run.pick(self._adjs, "adjective")
        w.noun = v["$NOUN"] = run.pick(self._nouns, "noun")
        self._set_place(run, run.pick(self._places_at, "place"))
        run.say((".",), "full stop")
        w.holder = w.last = hero
        n = 1
        while True:
            if w.last is not None:
                v["$PRON"], v["$pron"] = ("She", "she") if w.last.girl else ("He", "he")
            run.sentence = n + 1
            run.subject = None
            who = run.pick(self._start_table(self._stop_prob(n), w), "sentence start")
            if who == "end":
                return
            n += 1
            if who == "connective":
                who = run.pick(self._start_table(None, w), "subject")
            if who == "thing":
                self._thing_sentence(run, w)
                w.last = None
            else:
                person = w.hero if who == "hero" else w.friend
                self._person_sentence(run, w, person)
                w.last = person

    def _thing_sentence(self, run: _Run, w: _World) -> None:
        lost = run.pick(self._actions[_NOUN_KINDS[w.noun]], "object action")
        if lost:
            w.holder.mood = "sad"
            w.holder = None

    def _person_sentence(self, run: _Run, w: _World, s: _Person) -> None:
        v = run.vars
        run.subject = s
        other = w.other(s)
        v["$POS"] = "her" if s.girl else "his"
        if other is None:
            v.pop("$OTHER", None)
        else:
            v["$OTHER"] = other.name
        holder = "lost" if w.holder is None else "self" if w.holder is s else "other"
        key = ("event", s is w.hero, other is not None, holder, s.name in w.owes)
        event = run.pick(self._event_table(key), "event")
        mention = self._mention_tables[holder == "self"]
        if event == "meet":
            girl = run.pick(self._gender_table(s), "friend gender")
            name = run.pick(self._name_table(girl, w.hero.name), "friend name")
            run.say((".",), "full stop")
            w.friend = _Person(name, girl)
            v["$FRIEND"] = name
        elif event in ("give", "show"):
            run.pick(mention, "object")
            run.say(("to", "$OTHER", "."), "other")
            if event == "give":
                w.holder = other
                other.mood = "happy"
                w.owes.add(other.name)
        elif event == "share":
            run.pick(mention, "object")
            run.say(("with", "$OTHER", "."), "other")
        elif event == "play":
            run.pick(mention, "object")
            run.pick(self._place_ending, "place ending")
        elif event == "lose":
            run.pick(mention, "object")
            run.say((".",), "full stop")
            w.holder = None
            s.mood = "sad"
        elif event == "ask":
            run.pick(mention, "object")
            run.say((".",), "full stop")
        elif event == "thank":
            w.owes.discard(s.name)
        elif event == "look":
            run.pick(mention, "object")
            run.pick(self._everywhere, "ending")
        elif event == "find":
            run.pick(mention, "object")
            run.pick(self._spots, "hiding spot")
            w.holder = s
            s.mood = "happy"
        elif event == "go":
            self._set_place(run, run.pick(self._new_place_table(w.place), "new place"))
        elif event == "feel":
            run.pick(self._emotions[s.mood], "feeling")

    # ---- what StoryWorld needs (sample, log_prob, is_valid and the rest live there) --------

    def _render(self, tokens: Sequence[str]) -> str:
        return _render(tokens)

    def _tokenize(self, text: str) -> tuple[list[str] | None, str]:
        """Split a story into tokens, or explain why its characters or spacing are not standard."""
        if not isinstance(text, str):
            raise TypeError(f"a story must be a str, got {type(text).__name__}")
        if not text.strip():
            return None, "the text is empty; a story has at least one sentence"
        nl = text.find("\n")
        if nl >= 0:
            return None, (f"a story is a single line, but there is a newline at offset {nl}; "
                          "split a corpus into stories with text.splitlines() first")
        tokens = _TOKEN_RE.findall(text)
        for tok in tokens:
            if len(tok) == 1 and not tok.isalpha() and tok not in ".,":
                return None, (f"unexpected character {tok!r} at offset {text.find(tok)}; "
                              "stories use only letters, spaces, '.' and ','")
        canonical = _render(tokens)
        if canonical != text:
            pairs = zip(canonical, text, strict=False)
            at = next((i for i, (a, b) in enumerate(pairs) if a != b),
                      min(len(canonical), len(text)))
            return None, (f"unexpected spacing at offset {at}: words are separated by one space "
                          "and '.' or ',' follow the word before them directly")
        sentence = 1
        for tok in tokens:
            if tok not in self.vocabulary:
                return None, f"sentence {sentence}: unknown word {tok!r} (not in this world)"
            sentence += tok == "."
        return tokens + [_END], ""

    def _parser_for(self, text: str) -> tuple[_Parser | None, str]:
        tokens, reason = self._tokenize(text)
        return (None if tokens is None else _Parser(tokens)), reason

    def _check_prefix(self, prefix: str) -> list[str]:
        if not prefix:
            return []
        toks, reason = self._tokenize(prefix)
        if toks is None:
            raise ValueError(f"prefix is not the start of a story: {reason}")
        return toks[:-1]

    def _prefix_enumerator(self, script: tuple[int, ...], prefix: list[str]) -> _Enumerator:
        return _Enumerator(script, prefix)

    def enumerate_stories(self, max_stories: int = 100_000, prefix: str = "") -> list[Story]:
        """Every story of this world with its probability, optionally only those with a prefix.

        The prefix is compared word by word, so it must end at a word boundary. Raises
        ValueError if there are more than max_stories such stories.
        """
        return super().enumerate_stories(max_stories, prefix)

    # ---- explanations for is_valid -----------------------------------------------------------

    def _build_vocabulary(self) -> frozenset[str]:
        # Words written by _tell itself rather than taken from a table.
        literal: set[str] = {"named", "boy", "girl", "She", "He", "she", "he", "her", "his",
                             "a", "an", "the", "The", "to", "with", "everywhere", "."}
        groups: list[Iterable[tuple[str, ...]]] = [
            (t for t, _ in _OPENERS), (t for t, _ in _INTRO_VERBS),
            (t for t, _ in _CONNECTIVES), _SPOTS, (t for _, t, _ in _EVENTS),
            (t for acts in _ACTIONS.values() for t, _, _ in acts),
            ((w,) for ws in _EMOTIONS.values() for w in ws),
        ]
        for group in groups:
            literal.update(t for toks in group for t in toks if not t.startswith("$"))
        literal.update(_PLACE_PREPS.values())
        classes = {"names": self._names, "adjectives": self._adj_set, "nouns": self._noun_set,
                   "places": self._place_set}
        seen: set[str] = set(literal)
        for what, words in classes.items():
            clash = seen & words
            if clash:
                raise ValueError(f"{what} {sorted(clash)} are also used as other words; "
                                 "every word may play only one part, or stories become ambiguous")
            seen |= words
        return frozenset(seen)

    def _explain(self, run: _Parser, err: _Mismatch) -> str:
        """Turn a parse failure into a sentence saying what is wrong."""
        w, toks, start, k = run.world, run.tokens, run.pos, run.sentence
        # Point at the first token that no option can explain, not at the start of the choice.
        depths = []
        for option in err.expected:
            d = 0
            while d < len(option) and start + d < len(toks) and toks[start + d] == option[d]:
                d += 1
            depths.append(d)
        depth = max(depths)
        closest = [e for e, d in zip(err.expected, depths, strict=True) if d == depth]
        pos = min(start + depth, len(toks) - 1)
        found = toks[pos]
        at = f"sentence {k}"
        expected = ", ".join(repr(_render(e)) for e in closest[:6])
        if len(closest) > 6:
            expected += ", ..."
        if found == _END:
            if err.role == "sentence start":
                return (f"the story has only {k - 1} sentence(s); a story needs at least "
                        f"{self.min_sentences}")
            return f"{at} is unfinished: expected {expected} but the story ends"
        if err.role == "sentence start" and err.expected == [(_END,)]:
            return (f"the story goes on after sentence {self.max_sentences}; a story has at most "
                    f"{self.max_sentences} sentences")
        if err.role == "opener":
            return (f"sentence 1 must open the story, e.g. 'Once upon a time,' or 'One day,'; "
                    f"found {found!r}")
        introduced = {p.name for p in (w.hero, w.friend) if p is not None}
        if found in self._names and found not in introduced and err.role not in (
                "hero", "friend name"):
            return f"{at} mentions {found!r}, who was never introduced"
        s = run.subject
        if s is not None and found == s.name and err.role in ("event", "other"):
            return f"{at}: {s.name} cannot do that with {s.name}; expected {expected}"
        if err.role == "feeling" and s is not None:
            return (f"{at}: {s.name} feels {found!r}, which does not fit what happened to "
                    f"{s.name} so far; expected one of {expected}")
        thing = ""
        if err.role in ("sentence start", "subject", "object") and w.noun:
            thing = self._thing_problem(run, start + 1)
        if err.role in ("sentence start", "subject"):
            if found.lower() in ("she", "he"):
                girl = found.lower() == "she"
                if w.last is None:
                    return (f"{at} starts with {found!r}, but the sentence before is not about a "
                            "person, so it is unclear who that is")
                if w.friend is not None and w.friend.girl == w.hero.girl:
                    kind = "girls" if w.hero.girl else "boys"
                    return (f"{at} uses {found!r}, which is ambiguous: {w.hero.name} and "
                            f"{w.friend.name} are both {kind}; use a name")
                if girl != w.last.girl:
                    return (f"{at} uses {found!r} for {w.last.name}, who is a "
                            f"{'girl' if w.last.girl else 'boy'}")
            if toks[start] in ("The", "the"):
                if thing:
                    return f"{at} {thing}"
                if w.holder is None:
                    return f"{at} makes the {w.noun} do something, but the {w.noun} is lost"
        if err.role == "event" and s is not None:
            problem = self._event_problem(w, s, found)
            if problem:
                return f"{at}: {problem}"
        if err.role == "object":
            if thing:
                return f"{at} {thing}"
            if found in ("her", "his") and s is not None:
                if (found == "her") != s.girl:
                    return (f"{at} says {found!r} for {s.name}, who is a "
                            f"{'girl' if s.girl else 'boy'}")
                return f"{at} calls the {w.noun} {found!r}, but it is not {s.name}'s right now"
        if err.role == "new place" and found == w.place:
            return f"{at}: they go to the {found}, but they are already there"
        if (err.role == "place ending" and start + 2 < len(toks)
                and toks[start + 2] in self._place_set):
            said = f"{toks[start]} the {toks[start + 2]}"
            if toks[start + 2] == w.place:
                right = f"{_PLACE_PREPS[w.place]} the {w.place}"
                return f"{at} says {said!r}, but in this world it is {right!r}"
            return (f"{at} says {said!r}, but the story is {_PLACE_PREPS[w.place]} the "
                    f"{w.place} now")
        if err.role == "friend name":
            if w.hero is not None and found == w.hero.name:
                return f"{at}: the friend cannot have the hero's name ({found})"
            if found in self._names:
                return (f"{at}: {found!r} is not a "
                        f"{'boy' if toks[pos - 2] == 'boy' else 'girl'}'s name in this world")
        return f"{at}: expected {expected}, found {found!r}"

    def _thing_problem(self, run: _Parser, pos: int) -> str:
        """If the words at pos name the object wrongly, say how; '' otherwise."""
        w, toks = run.world, run.tokens
        article = "an" if w.adj[:1] in "aeiou" else "a"
        intro = f"{article} {w.adj} {w.noun}"
        for tok in toks[pos : pos + 2]:
            if tok in self._adj_set and tok != w.adj:
                return f"calls the {w.noun} {tok!r}, but it was introduced as {intro!r}"
            if tok in self._noun_set and tok != w.noun:
                return f"mentions a {tok}, but the story is about {intro!r}"
        return ""

    def _event_problem(self, w: _World, s: _Person, verb: str) -> str:
        """Why person s cannot do what the verb says at this point of the story; '' if unknown."""
        noun = w.noun
        event = next((e for e, t, _ in _EVENTS if t[0] == verb), None)
        if event is None:
            return ""
        if event in _PAIR_EVENTS and w.friend is None:
            return f"{s.name} {verb} ..., but {s.name} has not met anyone yet"
        if event in _HOLDER_EVENTS:
            if w.holder is None:
                return f"{s.name} {verb} the {noun}, but the {noun} is lost"
            if w.holder is not s:
                return f"{s.name} {verb} the {noun}, but {w.holder.name} has it"
        if event in ("look", "find") and w.holder is not None:
            return f"{s.name} {verb} ... the {noun}, but the {noun} is not lost"
        if event == "meet":
            if w.friend is not None:
                return (f"{s.name} meets someone new, but {w.friend.name} was already met; a "
                        "story has one friend")
            return f"only the hero meets new people, not {s.name}"
        if event == "thank":
            return f"{s.name} thanks someone, but nobody gave {s.name} anything"
        if event == "ask":
            if w.holder is None:
                return f"{s.name} asks for the {noun}, but the {noun} is lost"
            return f"{s.name} asks for the {noun}, but already has it"
        return ""


def tiny_tales_text(n_stories: int, seed: int) -> str:
    """A TinyTales corpus: n stories from the default world, each followed by one newline."""
    return "".join(s.text + "\n" for s in TinyTales().sample(n_stories, seed))
