"""Tasks with exact answers, made from TinyTales stories: questions and instructions.

The story generator knows everything about a story it can parse: who the hero is, what object
they had and where, whom they met, where each character went, and who holds the object at the
end. That makes two kinds of post-training data whose results can be scored exactly, with no
model as a judge:

- **Questions** about a story (`QATask`): "Whom did Mia meet?" -> "Leo". A question is asked only
  when the story determines one answer (for example "Where did Leo go?" only if Leo went to
  exactly one place).
- **Instructions** (`Instruction`): "Write a story about Mia and a red kite in the park." A reply
  passes when it is a valid TinyTales story and meets every constraint (`check_instruction`).

Train and held-out splits come from disjoint seed ranges, and no held-out story text appears in
the train split of the same size and seed, so held-out accuracy measures generalisation to new
stories, not memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .tinytales import _PLACE_PREPS, Story, TinyTales, Validity, _Mismatch, _Parser, _Person

__all__ = [
    "COLOURS",
    "QUESTION_KINDS",
    "SPLITS",
    "Instruction",
    "InstructionCheck",
    "QATask",
    "StoryFacts",
    "check_instruction",
    "exact_match",
    "instruction_for",
    "instruction_tasks",
    "normalise_answer",
    "qa_accuracy",
    "qa_tasks",
    "questions_for",
    "story_facts",
]

COLOURS = frozenset({
    "red", "blue", "green", "yellow", "purple", "pink", "orange", "white", "black", "brown",
    "golden", "silver",
})
"""Adjectives of the TinyTales world that name a colour: only these get a colour question."""

QUESTION_KINDS = ("colour", "who_had", "where_start", "whom_met", "where_went", "holder_at_end")
"""The kinds of question, in the order `questions_for` asks them."""

SPLITS = {"train": 3_000_000, "test": 4_000_000}
"""First seed of each split; far from the seeds that pre-training and validation draw from."""

NOBODY = "nobody"
"""The answer to "Who has the ... at the end?" when the object was lost and not found again."""


# ------------------------------------------------------------------------------- story facts


@dataclass(frozen=True)
class StoryFacts:
    """What a TinyTales story establishes, read off the generator's own parse of the text."""

    hero: str
    intro_verb: str  # "found", "made", "got" or "had"
    adjective: str
    noun: str
    start_place: str
    friend: str | None
    events: tuple[tuple[str, str], ...]  # (who, event) for every sentence with a person subject
    goes: tuple[tuple[str, str], ...]  # (who, place) for every "went/ran/walked to the ..."
    final_holder: str | None  # None: the object is lost at the end
    final_place: str


class _Recorder(_Parser):
    """The generator's parser, also writing down the choices that carry facts."""

    def __init__(self, tokens: list[str]) -> None:
        super().__init__(tokens)
        self.intro_verb = ""
        self.start_place = ""
        self.events: list[tuple[str, str]] = []
        self.goes: list[tuple[str, str]] = []

    def pick(self, table: Any, role: str) -> Any:
        start = self.pos
        value = super().pick(table, role)
        subject: _Person | None = self.subject
        if role == "intro verb":
            self.intro_verb = self.tokens[start]
        elif role == "place":
            self.start_place = value
        elif role == "event" and subject is not None:
            self.events.append((subject.name, value))
        elif role == "new place" and subject is not None:
            self.goes.append((subject.name, value))
        return value


def story_facts(text: str, tales: TinyTales | None = None) -> StoryFacts:
    """Parse one story and return what it establishes; ValueError if it is not a valid story."""
    tales = tales or TinyTales()
    tokens, reason = tales._tokenize(text)
    if tokens is None:
        raise ValueError(f"not a TinyTales story: {reason}")
    run = _Recorder(tokens)
    try:
        tales._tell(run)
    except _Mismatch:
        raise ValueError(f"not a TinyTales story: {tales.is_valid(text).reason}") from None
    w = run.world
    return StoryFacts(
        hero=w.hero.name,
        intro_verb=run.intro_verb,
        adjective=w.adj,
        noun=w.noun,
        start_place=run.start_place,
        friend=w.friend.name if w.friend else None,
        events=tuple(run.events),
        goes=tuple(run.goes),
        final_holder=w.holder.name if w.holder else None,
        final_place=w.place,
    )


# --------------------------------------------------------------------------------- questions


@dataclass(frozen=True)
class QATask:
    """A question about a story with its one right answer."""

    story: str
    question: str
    answer: str
    kind: str

    def messages(self) -> list[dict[str, str]]:
        """The task as a chat: the user gives the story and the question, the assistant answers."""
        return [
            {"role": "user", "content": f"{self.story}\n{self.question}"},
            {"role": "assistant", "content": self.answer},
        ]


def questions_for(story: str | Story, tales: TinyTales | None = None) -> list[QATask]:
    """Every question this story answers without ambiguity, in the order of QUESTION_KINDS."""
    text = story.text if isinstance(story, Story) else story
    f = story_facts(text, tales)
    out: list[QATask] = []

    def ask(kind: str, question: str, answer: str) -> None:
        out.append(QATask(text, question, answer, kind))

    if f.adjective in COLOURS:
        ask("colour", f"What colour was the {f.noun}?", f.adjective)
    # "at the start": later sentences may have someone find, get or hold the object again.
    ask("who_had", f"Who {f.intro_verb} the {f.noun} at the start of the story?", f.hero)
    ask("where_start", f"Where was {f.hero} at the start of the story?", f.start_place)
    if f.friend is not None:
        ask("whom_met", f"Whom did {f.hero} meet?", f.friend)
    went = Counter(who for who, _ in f.goes)
    for who in (f.hero, f.friend):
        if who is not None and went[who] == 1:
            place = next(p for w, p in f.goes if w == who)
            ask("where_went", f"Where did {who} go?", place)
    ask("holder_at_end", f"Who has the {f.noun} at the end?", f.final_holder or NOBODY)
    return out


def _at(place: str) -> str:
    return f"{_PLACE_PREPS[place]} the {place}"


def _split_seed(split: str, seed: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if not isinstance(seed, int) or not 0 <= seed < 1_000_000:
        raise ValueError(f"seed must be an integer in [0, 1000000), got {seed!r}")
    return SPLITS[split] + seed


def _stories(n: int, split: str, seed: int, tales: TinyTales) -> list[Story]:
    """n stories of a split; the test split leaves out any text of the same-size train split."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    stories = tales.sample(n, seed=_split_seed(split, seed))
    if split == "test":
        seen = {s.text for s in tales.sample(n, seed=_split_seed("train", seed))}
        stories = [s for s in stories if s.text not in seen]
    return stories


def qa_tasks(n_stories: int, split: str = "train", seed: int = 0,
             kinds: Iterable[str] | None = None, tales: TinyTales | None = None) -> list[QATask]:
    """Questions about n_stories stories of a split ("train" or "test"), optionally some kinds."""
    tales = tales or TinyTales()
    wanted = set(QUESTION_KINDS if kinds is None else kinds)
    unknown = wanted - set(QUESTION_KINDS)
    if unknown:
        raise ValueError(f"unknown question kinds {sorted(unknown)}; choose from {QUESTION_KINDS}")
    return [q for s in _stories(n_stories, split, seed, tales)
            for q in questions_for(s, tales) if q.kind in wanted]


def normalise_answer(text: str) -> str:
    """The comparable form of an answer: surrounding spaces and one final full stop removed."""
    if not isinstance(text, str):
        raise TypeError(f"an answer must be a str, got {type(text).__name__}")
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def exact_match(prediction: str, answer: str) -> bool:
    """Whether a predicted answer is exactly the right one (case counts; see normalise_answer)."""
    return normalise_answer(prediction) == normalise_answer(answer)


def qa_accuracy(predictions: Sequence[str], tasks: Sequence[QATask]) -> dict[str, float]:
    """Exact-match accuracy overall ("all") and for each kind of question present."""
    if len(predictions) != len(tasks):
        raise ValueError(f"{len(predictions)} predictions for {len(tasks)} tasks; give one each")
    if not tasks:
        raise ValueError("no tasks to score")
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for pred, task in zip(predictions, tasks, strict=True):
        for key in ("all", task.kind):
            total[key] += 1
            right[key] += exact_match(pred, task.answer)
    return {k: right[k] / total[k] for k in total}


# ------------------------------------------------------------------------------ instructions


@dataclass(frozen=True)
class Instruction:
    """A request for a story with constraints; `reference` is one story that meets them."""

    hero: str
    adjective: str
    noun: str
    place: str
    friend: str | None = None
    reference: str = field(default="", compare=False)

    @property
    def text(self) -> str:
        """The instruction as the user writes it."""
        article = "an" if self.adjective[0] in "aeiou" else "a"
        out = f"Write a story about {self.hero} and {article} {self.adjective} {self.noun} " \
              f"{_at(self.place)}"
        if self.friend:
            out += f" in which {self.hero} meets {self.friend}"
        return out + "."

    def messages(self, reply: str | None = None) -> list[dict[str, str]]:
        """The chat: the instruction, then the reply (the reference story if none is given)."""
        return [{"role": "user", "content": self.text},
                {"role": "assistant", "content": self.reference if reply is None else reply}]


@dataclass(frozen=True)
class InstructionCheck:
    """The verdict on a reply: valid story, each constraint met, and both together (`ok`)."""

    validity: Validity
    constraints: dict[str, bool]

    @property
    def ok(self) -> bool:
        """True when the reply is a valid story that meets every constraint."""
        return bool(self.validity) and all(self.constraints.values())

    def __bool__(self) -> bool:
        return self.ok


def instruction_for(story: str | Story, with_friend: bool | None = None,
                    tales: TinyTales | None = None) -> Instruction:
    """The instruction this story answers: its hero, object and first place (and friend)."""
    text = story.text if isinstance(story, Story) else story
    f = story_facts(text, tales)
    if with_friend and f.friend is None:
        raise ValueError("this story has no friend to ask for; use with_friend=False or None")
    friend = f.friend if with_friend is not False else None
    return Instruction(f.hero, f.adjective, f.noun, f.start_place, friend, reference=text)


def instruction_tasks(n: int, split: str = "train", seed: int = 0,
                      tales: TinyTales | None = None) -> list[Instruction]:
    """One instruction per story of a split, each with its story as the reference reply."""
    tales = tales or TinyTales()
    return [instruction_for(s, tales=tales) for s in _stories(n, split, seed, tales)]


def check_instruction(instruction: Instruction, reply: str,
                      tales: TinyTales | None = None) -> InstructionCheck:
    """Score a reply exactly: a valid story whose hero, object, place (and friend) are asked for."""
    tales = tales or TinyTales()
    names = ("hero", "adjective", "noun", "place") + (("friend",) if instruction.friend else ())
    validity = tales.is_valid(reply) if isinstance(reply, str) else Validity(
        False, f"a reply must be a str, got {type(reply).__name__}")
    if not validity:
        return InstructionCheck(validity, dict.fromkeys(names, False))
    f = story_facts(reply, tales)
    got = {"hero": f.hero, "adjective": f.adjective, "noun": f.noun, "place": f.start_place,
           "friend": f.friend}
    return InstructionCheck(validity, {k: got[k] == getattr(instruction, k) for k in names})
