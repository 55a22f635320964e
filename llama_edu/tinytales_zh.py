"""TinyTales in Chinese: the same story world, told in Simplified Chinese, with exact probabilities.

``TinyTalesZh`` tells the plot of ``llama_edu.tinytales`` (a hero finds an object at a place, may
meet one friend, gives, shows, shares, plays with, loses, looks for and finds the object, asks
for it, says thank you, goes elsewhere and feels something that fits what happened) in Chinese:
"从前，小美在公园里找到了一只红色的风筝。然后，小美遇到了一个男孩，名叫小明。小美把自己那只红色的
风筝送给了小明。小明向小美道了谢。他很开心。" Later sentences name the object with its measure word
and adjective again ("那只红色的风筝"), and use 她/他 only where that cannot be ambiguous.

Chinese puts the place before the verb (小美在公园里找到了…) and a measure word between the number
and the noun; the measure word depends on the noun but comes first, before the adjective. So the
story program chooses the measure word first, with a weight proportional to the number of nouns
that take it, and then the noun among those nouns: every noun keeps the probability it would have
if it were chosen directly, and the text still decides every choice.

The text has no spaces, so it is parsed as a string (``llama_edu.storyworld._TextParser``): an
option matches when its text comes next, and the world's tables are built so that no option's
text is a prefix of another's. The probabilities, the entropy floor, ``is_valid`` (whose reasons
are in Chinese) and ``enumerate_stories`` work as for the English world; characters are counted
the same way (each story plus the newline that ends it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .storyworld import (
    _END,
    Story,
    StoryWorld,
    _Mismatch,
    _Run,
    _Table,
    _TextEnumerator,
    _TextParser,
)
from .tinytales import (
    _HOLDER_EVENTS,
    _NOUN_KINDS,
    _OPPOSITE_GENDER_FRIEND,
    _PAIR_EVENTS,
    _allowed_events,
    _Person,
    _pronoun_for,
    _start_entries,
    _StartWords,
    _World,
)

__all__ = ["TinyTalesZh", "tiny_tales_zh_text"]

# --------------------------------------------------------------------------------------------
# The words of the Chinese world
# --------------------------------------------------------------------------------------------

_GIRLS = (
    "小美", "小丽", "小红", "小雨", "小雪", "小花", "小月", "小云", "小玉", "小兰", "小芳", "小静",
    "小婷", "小琪", "小燕", "小梅", "小霞", "小娟", "小萍", "小慧", "小琳", "小倩", "小薇", "小敏",
    "小悦", "小晴", "小蕾", "小妮", "小桃", "小菊",
)
_BOYS = (
    "小明", "小刚", "小强", "小军", "小亮", "小龙", "小虎", "小杰", "小伟", "小东", "小宇", "小涛",
    "小峰", "小磊", "小斌", "小勇", "小超", "小飞", "小鹏", "小林", "小松", "小波", "小浩", "小凯",
    "小俊", "小辉", "小阳", "小豪", "小江", "小川",
)
# Adjectives are written with their 的, as they stand before a noun.
_ADJECTIVES = (
    "红色的", "蓝色的", "绿色的", "黄色的", "紫色的", "粉色的", "橙色的", "白色的", "黑色的",
    "棕色的", "金色的", "银色的", "小小的", "大大的", "小巧的", "闪亮的", "旧旧的", "崭新的",
    "软软的", "带条纹的", "带斑点的", "木头做的", "神奇的", "毛茸茸的", "圆圆的", "明亮的",
    "沉甸甸的", "迷你的", "幸运的", "亮晶晶的",
)
# noun: (its measure word, the English noun whose kind decides what the object can do)
_NOUNS = {
    "风筝": ("只", "kite"), "气球": ("个", "balloon"), "羽毛": ("根", "feather"),
    "丝带": ("条", "ribbon"), "皮球": ("个", "ball"), "弹珠": ("颗", "marble"),
    "轮子": ("个", "wheel"), "小汽车": ("辆", "car"), "小火车": ("列", "train"),
    "硬币": ("枚", "coin"), "呼啦圈": ("个", "hoop"), "陀螺": ("个", "top"),
    "铃铛": ("个", "bell"), "鼓": ("面", "drum"), "笛子": ("支", "flute"),
    "哨子": ("个", "whistle"), "喇叭": ("个", "horn"), "闹钟": ("个", "clock"),
    "台灯": ("盏", "lamp"), "星星": ("颗", "star"), "水晶": ("块", "crystal"),
    "灯笼": ("盏", "lantern"), "蜡烛": ("根", "candle"), "帽子": ("顶", "hat"),
    "书": ("本", "book"), "杯子": ("个", "cup"), "娃娃": ("个", "doll"),
    "机器人": ("个", "robot"), "地图": ("张", "map"), "贝壳": ("个", "shell"),
    "石头": ("块", "stone"), "围巾": ("条", "scarf"), "勺子": ("把", "spoon"),
    "钥匙": ("把", "key"), "水桶": ("个", "bucket"), "鹅卵石": ("颗", "pebble"),
}
# What an object does on its own, by kind: (text, weight, the object ends up lost)
_ACTIONS: dict[str, tuple[tuple[str, float, bool], ...]] = {
    "fly": (("飞上了天空。", 1.0, False), ("在风中飞舞。", 1.0, False), ("飞走了。", 1.0, True)),
    "roll": (("滚下了山坡。", 1.0, False), ("转了好几圈。", 1.0, False), ("滚走了。", 1.0, True)),
    "sound": (("发出了好玩的声音。", 1.0, False), ("响个不停。", 1.0, False),
              ("掉进了一个洞里。", 0.5, True)),
    "shine": (("在黑暗中发着光。", 1.0, False), ("在阳光下闪闪发亮。", 1.0, False),
              ("掉进了一个洞里。", 0.5, True)),
    "plain": (("看起来很漂亮。", 1.0, False), ("非常特别。", 1.0, False),
              ("掉进了一个洞里。", 0.5, True)),
}
# place: how "at the place" ends (在公园里, 在海边, 在草地上)
_PLACES = {
    "公园": "公园里", "海边": "海边", "森林": "森林里", "河边": "河边", "花园": "花园里",
    "学校": "学校里", "农场": "农场里", "草地": "草地上", "湖边": "湖边",
    "动物园": "动物园里", "树林": "树林里", "市场": "市场上", "图书馆": "图书馆里",
    "游乐场": "游乐场里", "厨房": "厨房里", "港口": "港口", "山洞": "山洞里", "小岛": "小岛上",
    "村子": "村子里", "城堡": "城堡里",
}
_OPENERS = (("从前，", 3.0), ("有一天，", 3.0), ("很久以前，", 1.0), ("一天早上，", 1.0),
            ("在一个晴朗的日子里，", 1.0))
_INTRO_VERBS = (("找到了", 2.0), ("捡到了", 1.0), ("发现了", 1.0), ("得到了", 1.0))
_CONNECTIVES = ((("然后，",), 2.0), (("后来，",), 1.0), (("接着，",), 1.0), (("不久，",), 1.0))
_SPOTS = ("长椅下面", "大树后面", "石头旁边", "草丛里", "树叶下面", "花丛旁边")
_EMOTIONS = {
    "calm": ("开心", "平静", "困", "好奇", "兴奋"),
    "happy": ("开心", "高兴", "兴奋", "自豪"),
    "sad": ("难过", "伤心", "担心"),
}
# (event, tokens, weight): the English weights; "look" and "find" carry the choice that the
# English story makes after the object ("everywhere", the hiding spot), since Chinese says it
# before the verb, so their weights are split over those options.
_EVENTS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("meet", ("遇到了一个",), 4.0),
    ("give", ("把",), 2.0),
    ("show", ("给", "$OTHER", "看了"), 1.0),
    ("share", ("和", "$OTHER", "分享了"), 1.0),
    ("play", ("拿着",), 2.0),
    ("lose", ("弄丢了",), 1.5),
    ("ask", ("问", "$OTHER", "能不能借"), 2.0),
    ("thank", ("向", "$OTHER", "道了谢。"), 3.0),
    ("look", ("到处找",), 2.0 * 0.4),
    ("look", ("在找",), 2.0 * 0.6),
    *(("find", ("在", spot, "找到了"), 3.0 / len(_SPOTS)) for spot in _SPOTS),
    ("go", ("去了",), 0.5),
    ("go to", ("跑到了",), 0.3),  # "go to": the place is said as where one arrives (草地上)
    ("go to", ("走到了",), 0.2),
    ("feel", ("很",), 0.7),
    ("feel", ("觉得很",), 0.5),
    ("smile", ("笑了。",), 0.4),
    ("smile", ("哈哈大笑。",), 0.4),
)
# What an event needs, said in Chinese for is_valid's reasons.
_PAIR_NEEDS = {"give": "把东西送给别人", "show": "给别人看东西", "share": "和别人分享东西",
               "ask": "向别人借东西", "thank": "向别人道谢"}
_MENTIONS = (
    (("那", "$MW", "$ADJ", "$NOUN"), 0.5, False),
    (("那", "$MW", "$NOUN"), 0.3, False),
    (("自己那", "$MW", "$ADJ", "$NOUN"), 0.1, True),  # only when the subject holds the object
    (("自己的", "$NOUN"), 0.1, True),
)
_START_WORDS = _StartWords(
    pron=(("$PRON",), ("$PRON",)),
    thing_adj=(("那", "$MW", "$ADJ", "$NOUN"), ("那", "$MW", "$ADJ", "$NOUN")),
    thing=(("那", "$MW", "$NOUN"), ("那", "$MW", "$NOUN")),
    connectives=_CONNECTIVES,
)
_NOUNS_LONGEST_FIRST = sorted(_NOUNS, key=len, reverse=True)
_STOP = "。"
_CJK = re.compile(r"[\u4e00-\u9fff]+")


def _check_words(words: Sequence[str] | None, default: Sequence[str], what: str,
                 known: Any = None) -> tuple[str, ...]:
    """Validate a user word list: unique words of Chinese characters (from `known` if given)."""
    if words is None:
        return tuple(default)
    if isinstance(words, str):
        raise TypeError(f"{what} must be a list of words, not a single string: {words!r}")
    out = tuple(words)
    for w in out:
        if not isinstance(w, str):
            raise TypeError(f"{what} must contain str words, found {type(w).__name__}")
        if not _CJK.fullmatch(w):
            raise ValueError(f"{what}: {w!r} is not a word of Chinese characters (no spaces, "
                             "letters or punctuation)")
        if known is not None and w not in known:
            raise ValueError(f"unknown {what[:-1]} {w!r}: choose from {sorted(known)}")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} contains duplicates: {sorted(out)}")
    return out


def _prefix_clashes(words: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs (a, b) of different words where a is a prefix of b."""
    return [(a, b) for a in words for b in words if a != b and b.startswith(a)]


class TinyTalesZh(StoryWorld):
    """TinyTales told in Simplified Chinese: seeded stories whose exact probabilities are known.

    The constructor only sets up the world (its words and story length); randomness comes from
    the seed given to ``sample``. Nouns and places are chosen from the built-in ones (a noun
    brings its measure word and what it can do); adjectives are written with their 的.
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
        self.girls = _check_words(girls, _GIRLS, "girls")
        self.boys = _check_words(boys, _BOYS, "boys")
        self.adjectives = _check_words(adjectives, _ADJECTIVES, "adjectives")
        self.nouns = _check_words(nouns, tuple(_NOUNS), "nouns", known=_NOUNS)
        self.places = _check_words(places, tuple(_PLACES), "places", known=_PLACES)
        if not self.girls or not self.boys:
            raise ValueError("the world needs at least one girl's name and one boy's name")
        if not self.adjectives or not self.nouns:
            raise ValueError("the world needs at least one adjective and one noun")
        if len(self.places) < 2:
            raise ValueError(f"the world needs at least 2 places to go between, got {self.places}")
        for a in self.adjectives:
            if not a.endswith("的") or len(a) < 2:
                raise ValueError(f"adjectives are written with their 的, e.g. '红色的'; got {a!r}")
        self._set_length(min_sentences, max_sentences)
        self._girl_of = {n: True for n in self.girls} | {n: False for n in self.boys}
        if len(self._girl_of) != len(self.girls) + len(self.boys):
            raise ValueError("a name cannot be both a girl's and a boy's name")
        starts = ["她", "他", "那", *(t[0] for t, _ in _CONNECTIVES)]
        clash = _prefix_clashes([*self._girl_of, *starts]) + [
            (a, n) for a in self.adjectives for n in self.nouns if a.startswith(n)]
        if clash:
            raise ValueError(f"{clash[0][0]!r} is the start of {clash[0][1]!r}: in text without "
                             "spaces a reader could not tell them apart; choose other words")
        self._cache: dict[tuple[Any, ...], _Table] = {}
        self._measure_of = {n: _NOUNS[n][0] for n in self.nouns}
        by_measure: dict[str, list[str]] = {}
        for noun, mw in self._measure_of.items():
            by_measure.setdefault(mw, []).append(noun)

        def table(entries: Any) -> _Table:
            return _Table(entries, joined=True)

        self._openers = table(((t,), w, None) for t, w in _OPENERS)
        self._heroes = table(((n,), 1.0, n) for n in self._girl_of)
        self._places_at = table((("在", _PLACES[p]), 1.0, p) for p in self.places)
        self._intro_verbs = table(((t,), w, None) for t, w in _INTRO_VERBS)
        # The measure word first, weighted by its nouns; then the noun among them (below).
        self._measures = table((("一", mw), float(len(ns)), mw) for mw, ns in by_measure.items())
        self._adjs = table(((a,), 1.0, a) for a in self.adjectives)
        self._nouns_by_measure = {mw: table(((n,), 1.0, n) for n in ns)
                                  for mw, ns in by_measure.items()}
        self._mention_tables = {
            holds: table((t, w if holds or not own else 0.0, None) for t, w, own in _MENTIONS)
            for holds in (False, True)
        }
        self._place_ending = table(((("在", "$AT", "玩。"), 0.4, None),
                                    (("玩了起来。",), 0.6, None)))
        self._genders = {
            girl: table(((("女孩，名叫" if g else "男孩，名叫"),),
                         _OPPOSITE_GENDER_FRIEND if g != girl else 1.0 - _OPPOSITE_GENDER_FRIEND,
                         g) for g in (True, False))
            for girl in (True, False)
        }
        self._emotions = {m: table(((e + _STOP,), 1.0, None) for e in es)
                          for m, es in _EMOTIONS.items()}
        kinds = {_NOUN_KINDS[_NOUNS[n][1]] for n in self.nouns}
        self._actions = {k: table(((t,), w, lost) for t, w, lost in _ACTIONS[k]) for k in kinds}
        self._names = frozenset(self._girl_of)
        self.vocabulary = self._build_vocabulary()
        self._alphabet = frozenset("".join(self.vocabulary))
        self._words_longest_first = sorted(self.vocabulary, key=len, reverse=True)
        self._adjs_longest_first = sorted(self.adjectives, key=len, reverse=True)

    # ---- the story program -----------------------------------------------------------------

    def _start_table(self, stop: float | None, w: _World) -> _Table:
        """How the next sentence starts (or the story ends). stop=None: after a connective."""
        pron_for = _pronoun_for(w)
        key = ("start", stop, w.friend is not None, pron_for, w.holder is not None)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = _Table(_start_entries(
                stop, w.friend is not None, pron_for, w.holder is not None, _START_WORDS),
                joined=True)
        return table

    def _event_table(self, key: tuple[Any, ...]) -> _Table:
        table = self._cache.get(key)
        if table is None:
            allowed = _allowed_events(*key[1:])
            allowed["go to"] = allowed["go"]
            table = self._cache[key] = _Table(((t, w if allowed[e] else 0.0, e)
                                               for e, t, w in _EVENTS), joined=True)
        return table

    def _name_table(self, girl: bool, hero: str) -> _Table:
        key = ("name", girl, hero)
        table = self._cache.get(key)
        if table is None:
            names = self.girls if girl else self.boys
            table = self._cache[key] = _Table(
                (((n,), 1.0 if n != hero else 0.0, n) for n in names), joined=True)
        return table

    def _gender_table(self, hero: _Person) -> _Table:
        same = self.girls if hero.girl else self.boys
        if len(same) > 1:
            return self._genders[hero.girl]
        key = ("gender-only-opposite", hero.girl)
        table = self._cache.get(key)
        if table is None:
            word = "男孩，名叫" if hero.girl else "女孩，名叫"
            table = self._cache[key] = _Table([((word,), 1.0, not hero.girl)], joined=True)
        return table

    def _new_place_table(self, current: str, arrive: bool) -> _Table:
        """Where to go next: 去了公园 (arrive=False) or 跑到了公园里 (arrive=True)."""
        key = ("go", current, arrive)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = _Table(
                (((_PLACES[p] if arrive else p, _STOP), 1.0 if p != current else 0.0, p)
                 for p in self.places), joined=True)
        return table

    def _set_place(self, run: _Run, place: str) -> None:
        run.world.place = place
        run.vars["$AT"] = _PLACES[place]

    def _tell(self, run: _Run) -> None:
        """The story program. Every random choice goes through run.pick, all text through run."""
        w = run.world = _World()
        v = run.vars
        run.pick(self._openers, "opener")
        name = run.pick(self._heroes, "hero")
        hero = w.hero = _Person(name, self._girl_of[name])
        v["$HERO"] = name
        self._set_place(run, run.pick(self._places_at, "place"))
        run.pick(self._intro_verbs, "intro verb")
        measure = v["$MW"] = run.pick(self._measures, "measure word")
        w.adj = v["$ADJ"] = run.pick(self._adjs, "adjective")
        w.noun = v["$NOUN"] = run.pick(self._nouns_by_measure[measure], "noun")
        run.say((_STOP,), "full stop")
        w.holder = w.last = hero
        n = 1
        while True:
            if w.last is not None:
                v["$PRON"] = "她" if w.last.girl else "他"
            run.sentence = n + 1
            run.subject = None
            who = run.pick(self._start_table(self._stop_prob(n), w), "sentence start")
            if who == "end":
                return
            n += 1
            if who == "connective":
                who = run.pick(self._start_table(None, w), "subject")
            if who == "thing":
                kind = _NOUN_KINDS[_NOUNS[w.noun][1]]
                if run.pick(self._actions[kind], "object action"):
                    w.holder.mood = "sad"
                    w.holder = None
                w.last = None
            else:
                person = w.hero if who == "hero" else w.friend
                self._person_sentence(run, w, person)
                w.last = person

    def _person_sentence(self, run: _Run, w: _World, s: _Person) -> None:
        v = run.vars
        run.subject = s
        other = w.other(s)
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
            run.say((_STOP,), "full stop")
            w.friend = _Person(name, girl)
            v["$FRIEND"] = name
        elif event == "give":
            run.pick(mention, "object")
            run.say(("送给了", "$OTHER", _STOP), "other")
            w.holder = other
            other.mood = "happy"
            w.owes.add(other.name)
        elif event == "play":
            run.pick(mention, "object")
            run.pick(self._place_ending, "place ending")
        elif event in ("show", "share", "lose", "ask", "look", "find"):
            run.pick(mention, "object")
            run.say((_STOP,), "full stop")
            if event == "lose":
                w.holder = None
                s.mood = "sad"
            elif event == "find":
                w.holder = s
                s.mood = "happy"
        elif event == "thank":
            w.owes.discard(s.name)
        elif event in ("go", "go to"):
            table = self._new_place_table(w.place, event == "go to")
            self._set_place(run, run.pick(table, "new place"))
        elif event == "feel":
            run.pick(self._emotions[s.mood], "feeling")

    # ---- what StoryWorld needs ---------------------------------------------------------------

    def _render(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def _check_text(self, text: str) -> str:
        """'' if the text uses only this world's characters, else the reason (in Chinese)."""
        if not isinstance(text, str):
            raise TypeError(f"a story must be a str, got {type(text).__name__}")
        if not text.strip():
            return "文本是空的；一个故事至少要有一句话"
        if self._alphabet.issuperset(text):
            return ""
        for i, ch in enumerate(text):
            where = f"第{i + 1}个字符"
            if ch == "\n":
                return (f"一个故事只占一行，但{where}是换行符；请先用 text.splitlines() "
                        "把语料分成一个个故事")
            if ch.isspace():
                return f"{where}是空格；中文故事的字与字之间不加空格"
            if ch.isascii() and ch.isalpha():
                return f"{where}是英文字母“{ch}”；这个世界的故事只用中文书写"
            if ch in ",.":
                return f"{where}是半角标点“{ch}”；中文故事用全角的“，”和“。”"
            if ch not in self._alphabet:
                return f"{where}“{ch}”不是这个世界会用到的字"
        return ""

    def _parser_for(self, text: str) -> tuple[_TextParser | None, str]:
        reason = self._check_text(text)
        return (None, reason) if reason else (_TextParser(text + _END), "")

    def _check_prefix(self, prefix: str) -> str:
        if prefix:
            reason = self._check_text(prefix)
            if reason:
                raise ValueError(f"prefix is not the start of a story: {reason}")
        return prefix

    def _prefix_enumerator(self, script: tuple[int, ...], prefix: str) -> _TextEnumerator:
        return _TextEnumerator(script, prefix)

    def enumerate_stories(self, max_stories: int = 100_000, prefix: str = "") -> list[Story]:
        """Every story of this world with its probability, optionally only those with a prefix.

        The prefix is compared character by character. Raises ValueError if there are more
        than max_stories such stories.
        """
        return super().enumerate_stories(max_stories, prefix)

    def _build_vocabulary(self) -> frozenset[str]:
        """Every word and fixed phrase the story program can write (without placeholders)."""
        tables = [self._openers, self._heroes, self._places_at, self._intro_verbs, self._measures,
                  self._adjs, self._place_ending, *self._nouns_by_measure.values(),
                  *self._mention_tables.values(), *self._genders.values(),
                  *self._emotions.values(), *self._actions.values()]
        words = {t for tb in tables for opt in tb.options for t in opt if not t.startswith("$")}
        for _, toks, _ in _EVENTS:
            words.update(t for t in toks if not t.startswith("$"))
        words.update(t for toks, _ in _CONNECTIVES for t in toks)
        words.update(["她", "他", "那", "送给了", _STOP, *self.places, *_PLACES.values(),
                      *self._measure_of.values()])
        return frozenset(words)

    # ---- explanations for is_valid -----------------------------------------------------------

    def _word_at(self, text: str, pos: int) -> str:
        """The longest word of this world at pos, else the text up to the next punctuation."""
        for word in self._words_longest_first:
            if text.startswith(word, pos):
                return word
        m = re.match(r"[^，。\n]{1,6}", text[pos:])
        return m.group(0) if m else text[pos : pos + 1]

    def _name_at(self, text: str, start: int, pos: int) -> str | None:
        """A name written from start on that reaches pos (where the text went wrong)."""
        for j in range(pos, start - 1, -1):
            name = next((n for n in self._names if text.startswith(n, j)), None)
            if name is not None:
                return name if j + len(name) > pos else None
        return None

    def _adj_at(self, text: str, pos: int) -> str | None:
        return next((a for a in self._adjs_longest_first if text.startswith(a, pos)), None)

    def _noun_at(self, text: str, pos: int) -> str | None:
        return next((n for n in _NOUNS_LONGEST_FIRST if text.startswith(n, pos)), None)

    def _explain(self, run: _TextParser, err: _Mismatch) -> str:
        """Turn a parse failure into a sentence, in Chinese, saying what is wrong."""
        w, text, start, k = run.world, run.text, run.pos, run.sentence
        # Point at the first character that no option can explain.
        depths = []
        for option in err.expected:
            d = 0
            while d < len(option) and start + d < len(text) and text[start + d] == option[d]:
                d += 1
            depths.append(d)
        depth = max(depths)
        closest = [e for e, d in zip(err.expected, depths, strict=True) if d == depth]
        pos = min(start + depth, len(text) - 1)
        at = f"第{k}句"
        expected = "、".join(f"“{e.rstrip(_END)}”" if e != _END else "故事结束"
                            for e in closest[:6])
        if len(closest) > 6:
            expected += "等"
        if text[pos] == _END:
            if err.role == "sentence start":
                return f"故事只有{k - 1}句；一个故事至少要有{self.min_sentences}句"
            return f"{at}没有写完：后面应是{expected}，但故事结束了"
        found = self._word_at(text, pos)
        if err.role == "sentence start" and err.expected == [_END]:
            return (f"故事在第{self.max_sentences}句之后还在继续；一个故事最多有"
                    f"{self.max_sentences}句")
        if err.role == "opener":
            return f"第1句应以开场白开头，例如“从前，”或“有一天，”；这里却是“{found}”"
        name = self._name_at(text, start, pos)
        introduced = {p.name for p in (w.hero, w.friend) if p is not None}
        if name and name not in introduced and err.role not in ("hero", "friend name"):
            return f"{at}提到了“{name}”，但这个人物从没出现过"
        s = run.subject
        if s is not None and name == s.name and err.role in ("event", "other"):
            return f"{at}：{s.name}不能和自己做这件事；这里应是{expected}"
        if err.role == "feeling" and s is not None:
            feeling = next((e for es in _EMOTIONS.values() for e in es
                            if text.startswith(e, start)), found)
            fitting = "、".join(f"“{e.rstrip(_STOP)}”" for e in err.expected)
            return (f"{at}说{s.name}觉得“{feeling}”，这和{s.name}到目前为止的经历不相符；"
                    f"应是{fitting}之一")
        if err.role in ("sentence start", "subject"):
            problem = self._subject_problem(run, start)
            if problem:
                return f"{at}{problem}"
        if err.role == "event" and s is not None:
            problem = self._event_problem(run, s, start)
            if problem:
                return f"{at}：{problem}"
        if err.role == "object" and s is not None:
            problem = self._object_problem(run, s, start)
            if problem:
                return f"{at}{problem}"
        if err.role in ("measure word", "noun"):
            problem = self._measure_problem(text, start)
            if problem:
                return f"{at}{problem}"
        if err.role == "new place" and (text.startswith(w.place + _STOP, start)
                                        or text.startswith(_PLACES[w.place] + _STOP, start)):
            return f"{at}：{s.name}已经在{_PLACES[w.place]}了，不能再去那里"
        if err.role == "place ending" and text.startswith("在", start):
            said = next((p for p in sorted(_PLACES, key=len, reverse=True)
                         if text.startswith(p, start + 1)), None)
            if said is not None:
                if said == w.place:
                    return f"{at}：这个世界里要说“在{_PLACES[said]}”"
                return f"{at}说在{said}玩，但故事现在在{_PLACES[w.place]}"
        if err.role == "friend name" and name is not None:
            if name == w.hero.name:
                return f"{at}：朋友不能和主人公同名（{name}）"
            girl = text[start - 5 : start] == "女孩，名叫"
            return f"{at}：“{name}”在这个世界里不是{'女孩' if girl else '男孩'}的名字"
        return f"{at}：这里应是{expected}，但写的是“{found}”"

    def _subject_problem(self, run: _TextParser, pos: int) -> str:
        """Why the subject at pos is wrong (a pronoun, or the object); '' if unknown."""
        w, text = run.world, run.text
        ch = text[pos]
        if ch in "她他":
            if w.last is None:
                return f"以“{ch}”开头，但上一句说的不是人，不清楚“{ch}”指谁"
            if w.friend is not None and w.friend.girl == w.hero.girl:
                kind = "女孩" if w.hero.girl else "男孩"
                return (f"用了“{ch}”，但{w.hero.name}和{w.friend.name}都是{kind}，"
                        "指代不明；请用名字")
            if (ch == "她") != w.last.girl:
                return (f"用“{ch}”指{w.last.name}，但{w.last.name}是"
                        f"{'女孩' if w.last.girl else '男孩'}")
        if ch == "那" and w.noun:
            thing = self._thing_problem(run, pos + 1)
            if thing:
                return thing
            if w.holder is None:
                return f"让{w.noun}自己做了些什么，但{w.noun}已经丢了"
        return ""

    def _thing_problem(self, run: _TextParser, pos: int, measure: bool = True) -> str:
        """If the words at pos (after 那, or after 的 when measure=False) name the object
        wrongly, say how; '' otherwise."""
        w, text = run.world, run.text
        mw = self._measure_of[w.noun]
        intro = f"一{mw}{w.adj}{w.noun}"
        used = text[pos] if measure else mw
        if measure:
            pos += 1
        adj = self._adj_at(text, pos)
        if adj is not None:
            if adj != w.adj:
                return f"把{w.noun}说成了“{adj}”，但它最初是“{intro}”"
            pos += len(adj)
        noun = self._noun_at(text, pos)
        if noun is not None and noun != w.noun:
            return f"提到了“{noun}”，但故事讲的是“{intro}”"
        if noun == w.noun and used != mw:
            return f"用“{used}”作“{noun}”的量词，但“{noun}”要用“{mw}”（{intro}）"
        return ""

    def _object_problem(self, run: _TextParser, s: _Person, pos: int) -> str:
        """Why the object named at pos is wrong; '' if unknown."""
        w, text = run.world, run.text
        if text.startswith("自己", pos) and w.holder is not s:
            where = "已经丢了" if w.holder is None else f"在{w.holder.name}那里"
            return f"说的是{s.name}“自己的”{w.noun}，但{w.noun}现在{where}"
        if text.startswith("自己的", pos):
            return self._thing_problem(run, pos + 3, measure=False)
        for lead in ("自己那", "那"):
            if text.startswith(lead, pos):
                return self._thing_problem(run, pos + len(lead))
        return ""

    def _measure_problem(self, text: str, start: int) -> str:
        """A measure word missing, or not the one the noun after it takes (first sentence)."""
        back = text.rfind("一", 0, start + 1)
        if back < 0:
            return ""
        pos = back + 1
        if self._adj_at(text, pos) or self._noun_at(text, pos):
            return "的“一”后面少了量词，例如“一只”“一个”"
        used = text[pos]
        pos += 1
        adj = self._adj_at(text, pos)
        noun = self._noun_at(text, pos + len(adj or ""))
        if noun is None:
            return ""
        if noun not in self._measure_of:
            return f"提到了“{noun}”，但这个世界里没有{noun}"
        mw = self._measure_of[noun]
        if used != mw:
            return f"用“{used}”作“{noun}”的量词，但“{noun}”要用“{mw}”（一{mw}{noun}）"
        return ""

    def _event_problem(self, run: _TextParser, s: _Person, pos: int) -> str:
        """Why person s cannot do the event written at pos at this point; '' if unknown."""
        w, text = run.world, run.text
        event, longest = None, 0
        for e, toks, _ in _EVENTS:
            lead = ""
            for t in toks:
                if t.startswith("$"):
                    break
                lead += t
            if len(lead) > longest and text.startswith(lead, pos):
                event, longest = e, len(lead)
        if event is None:
            return ""
        noun = w.noun
        if event in _PAIR_EVENTS and w.friend is None:
            return f"{s.name}还没有遇到别人，不能{_PAIR_NEEDS[event]}"
        if event in _HOLDER_EVENTS:
            if w.holder is None:
                return f"这一句要用到{noun}，但{noun}已经丢了"
            if w.holder is not s:
                return f"这一句要用到{noun}，但{noun}现在在{w.holder.name}那里"
        if event in ("look", "find") and w.holder is not None:
            return f"{s.name}在找{noun}，但{noun}并没有丢"
        if event == "meet":
            if w.friend is not None:
                return (f"{s.name}又遇到了新朋友，但{w.friend.name}已经出现过了；"
                        "一个故事只有一个朋友")
            return f"只有主人公会遇到新朋友，{s.name}不会"
        if event == "thank":
            return f"{s.name}向别人道谢，但没有人送给{s.name}东西"
        if event == "ask":
            if w.holder is None:
                return f"{s.name}想借{noun}，但{noun}已经丢了"
            return f"{s.name}想借{noun}，但{noun}本来就在{s.name}手里"
        return ""


def tiny_tales_zh_text(n_stories: int, seed: int) -> str:
    """A Chinese TinyTales corpus: n stories of the default world, each followed by a newline."""
    return "".join(s.text + "\n" for s in TinyTalesZh().sample(n_stories, seed))
