"""Tests for llama_edu.tinytales_zh: TinyTales told in Chinese, with exact probabilities.

The probabilities expected here are worked out by hand from the world's documented weights
(openers 3:3:1:1:1, intro verbs 2:1:1:1, the measure word weighted by its nouns), not read from
the code under test.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from llama_edu import storyworld
from llama_edu.cli import main
from llama_edu.data import load_corpus, tiny_tales_zh_text
from llama_edu.storyworld import _Table, _TextParser
from llama_edu.tinytales_zh import TinyTalesZh
from llama_edu.tokenizer import SentencePieceTokenizer
from llama_edu.train import TrainConfig, prepare_corpus

TALES = TinyTalesZh()
STORIES = TALES.sample(10_000, seed=2024)
BASE = "从前，小美在公园里找到了一只红色的风筝。"  # a valid first sentence of the default world


def small_world(**changes: object) -> TinyTalesZh:
    args: dict[str, object] = dict(girls=["小美"], boys=["小明"], adjectives=["红色的"],
                                   nouns=["风筝"], places=["公园", "海边"], min_sentences=1,
                                   max_sentences=2)
    return TinyTalesZh(**(args | changes))


@pytest.fixture(scope="module")
def small_language() -> list[storyworld.Story]:
    return small_world().enumerate_stories(max_stories=50_000)


# ---------------------------------------------------------------------------------------------
# Sampling and exact probabilities
# ---------------------------------------------------------------------------------------------


def test_every_sampled_story_parses_back_to_exactly_its_log_prob() -> None:
    assert len(STORIES) == 10_000
    for story in STORIES:
        assert story.log_prob < 0
        assert TALES.log_prob(story.text) == story.log_prob, story.text


def test_same_seed_same_stories_and_another_seed_other_stories() -> None:
    assert TinyTalesZh().sample(300, seed=2024) == STORIES[:300]
    other = TALES.sample(300, seed=2025)
    assert sum(a.text != b.text for a, b in zip(STORIES, other, strict=False)) > 250


def test_stories_are_chinese_with_full_width_punctuation_and_no_spaces() -> None:
    for story in STORIES[:2000]:
        text = story.text
        assert re.fullmatch(r"[\u4e00-\u9fff，。]+", text), text
        assert text.endswith("。") and "。。" not in text and "，，" not in text
        n = text.count("。")
        assert TALES.min_sentences <= n <= TALES.max_sentences


def test_later_sentences_name_the_object_with_its_measure_word_and_adjective() -> None:
    seen = 0
    for story in STORIES[:2000]:
        m = re.search(r"了一(.)(.+?的)(.+?)。", story.text)  # the first sentence
        measure, adj, noun = m.groups()
        for later in re.findall(r"那(.)([^那。]*?)" + re.escape(noun), story.text):
            assert later[0] == measure, story.text
            assert later[1] in ("", adj), story.text
            seen += 1
    assert seen > 1000


def test_pronouns_only_where_unambiguous() -> None:
    for story in STORIES[:3000]:
        text = story.text
        hero = re.search(r"，(小.)在", text).group(1)
        friend = re.search(r"名叫(小.)", text)
        if friend and ("她" in text or "他" in text):
            # a pronoun before the friend appears is fine; after it, only with two genders
            after = text[text.index(friend.group(0)):]
            same = (hero in TALES.girls) == (friend.group(1) in TALES.girls)
            assert not (same and re.search(r"[。，][她他]", after)), text


def test_the_parser_sees_exactly_one_option_match_at_every_choice() -> None:
    # The prefix-free property at the level of text: at every choice made while reading a
    # story, exactly one option's text comes next.
    class Checking(_TextParser):
        def pick(self, table: _Table, role: str) -> object:
            hits = [o for o in table.options if self.text.startswith(self.spell(o), self.pos)]
            assert len(hits) == 1, (role, hits, self.text)
            return super().pick(table, role)

    for story in STORIES[:1500]:
        run = Checking(story.text + "\n")
        TALES._tell(run)
        assert run.logp == story.log_prob and run.pos == len(story.text) + 1


def test_tables_refuse_options_whose_text_is_a_prefix_of_another() -> None:
    with pytest.raises(ValueError, match="prefix"):
        _Table([(("红色",), 1.0, None), (("红色的",), 1.0, None)], joined=True)
    with pytest.raises(ValueError, match="prefix"):  # the same text, split differently
        _Table([(("一", "只"), 1.0, None), (("一只红",), 1.0, None)], joined=True)
    _Table([(("红色",), 1.0, None), (("红色的",), 1.0, None)])  # as tokens they differ
    with pytest.raises(ValueError, match="start of"):
        TinyTalesZh(girls=["小美", "小美丽"])
    with pytest.raises(ValueError, match="start of"):
        TinyTalesZh(boys=["那明"])


def test_enumeration_sums_to_one_and_matches_parsing(small_language) -> None:
    world = small_world()
    total = math.fsum(math.exp(s.log_prob) for s in small_language)
    assert total == pytest.approx(1.0, abs=1e-9)
    assert len({s.text for s in small_language}) == len(small_language)  # text decides
    for story in small_language[::97]:
        assert world.log_prob(story.text) == story.log_prob


def test_enumeration_with_a_prefix(small_language) -> None:
    world = small_world()
    prefix = "有一天，小明在海边捡到了一只红色的风筝。"
    some = world.enumerate_stories(prefix=prefix)
    assert some and all(s.text.startswith(prefix) for s in some)
    assert {s.text for s in some} == {s.text for s in small_language if s.text.startswith(prefix)}
    # opener 3/9, hero 1/2, place 1/2, intro verb 1/5; one measure word, adjective and noun
    expected = 3 / 9 * 1 / 2 * 1 / 2 * 1 / 5
    assert math.fsum(math.exp(s.log_prob) for s in some) == pytest.approx(expected, rel=1e-12)
    # a prefix that ends inside a word is compared character by character
    assert len(world.enumerate_stories(prefix="有一天，小明在海边捡到了一只红")) == len(some)


def test_measure_word_first_weighted_by_its_nouns_keeps_nouns_uniform() -> None:
    # 风筝 takes 只; 皮球 and 气球 take 个: P(只) = 1/3, P(个) = 2/3, then 1/2 for each of those
    world = small_world(nouns=["风筝", "皮球", "气球"], adjectives=["红色的", "蓝色的"],
                        max_sentences=1)
    stories = world.enumerate_stories()
    assert math.fsum(math.exp(s.log_prob) for s in stories) == pytest.approx(1.0, abs=1e-12)
    by_noun: dict[str, float] = defaultdict(float)
    for s in stories:
        by_noun[re.search(r"的(..)。$", s.text).group(1)] += math.exp(s.log_prob)
    assert by_noun == pytest.approx({"风筝": 1 / 3, "皮球": 1 / 3, "气球": 1 / 3}, rel=1e-12)
    assert all(("一只" in s.text) == ("风筝" in s.text) for s in stories)
    one = "从前，小美在公园里找到了一个蓝色的气球。"
    # opener 1/3, hero 1/2, place 1/2, 找到了 2/5, 个 2/3, adjective 1/2, 气球 1/2
    assert world.log_prob(one) == pytest.approx(
        math.log(1 / 3 * 1 / 2 * 1 / 2 * 2 / 5 * 2 / 3 * 1 / 2 * 1 / 2), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# is_valid: reasons in Chinese
# ---------------------------------------------------------------------------------------------

BROKEN = {
    "wrong pronoun": (BASE + "他很开心。小美笑了。", ["他", "小美", "女孩"]),
    "ambiguous pronoun": (BASE + "小美遇到了一个女孩，名叫小红。她很开心。", ["她", "指代不明"]),
    "never introduced": (BASE + "小红很开心。小美笑了。", ["小红", "从没出现过"]),
    "wrong measure word": ("从前，小美在公园里找到了一本红色的风筝。小美很开心。小美笑了。",
                           ["本", "风筝", "只", "量词"]),
    "wrong measure word later": (BASE + "小美拿着那个红色的风筝玩了起来。小美笑了。",
                                 ["个", "风筝", "只", "量词"]),
    "using a lost object": (BASE + "小美弄丢了那只红色的风筝。小美拿着那只风筝玩了起来。",
                            ["风筝", "已经丢了"]),
    "changed adjective": (BASE + "那只蓝色的风筝飞上了天空。小美笑了。",
                          ["蓝色的", "一只红色的风筝"]),
    "another object": (BASE + "小美拿着那个红色的皮球玩了起来。小美笑了。",
                       ["皮球", "一只红色的风筝"]),
    "English text": ("Once upon a time, Mia found a red kite in the park.", ["英文字母"]),
    "extra spaces": ("从前， 小美在公园里找到了一只红色的风筝。小美很开心。小美笑了。",
                     ["第4个字符", "空格"]),
    "half-width punctuation": ("从前,小美在公园里找到了一只红色的风筝。小美很开心。小美笑了。",
                               ["半角", "，"]),
    "too short": (BASE, ["只有1句", "至少"]),
    "feeling that does not fit": (BASE + "小美很伤心。小美笑了。", ["伤心", "不相符"]),
    "thanks for nothing": (BASE + "小美遇到了一个男孩，名叫小明。小明向小美道了谢。",
                           ["道谢", "没有人"]),
    "friend with the hero's name": (BASE + "小美遇到了一个女孩，名叫小美。小美笑了。", ["同名"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_stories_are_rejected_with_a_specific_chinese_reason(case: str) -> None:
    text, words = BROKEN[case]
    validity = TALES.is_valid(text)
    assert not validity and TALES.log_prob(text) == -math.inf
    assert re.search(r"[\u4e00-\u9fff]", validity.reason), validity.reason
    for word in words:
        assert word in validity.reason, (case, validity.reason)


def test_valid_story_and_its_repairs_are_accepted() -> None:
    for text in (BASE + "他很开心。小美笑了。", BASE + "小红很开心。小美笑了。"):
        assert not TALES.is_valid(text)
    assert TALES.is_valid(BASE + "她很开心。小美笑了。")
    assert TALES.is_valid(BASE + "小美遇到了一个女孩，名叫小红。小美很开心。")
    assert TALES.is_valid("从前，小美在公园里找到了一本红色的书。小美很开心。小美笑了。")
    assert all(TALES.is_valid(s.text) for s in STORIES[:200])


def test_reasons_name_the_sentence_where_the_story_goes_wrong() -> None:
    story = next(s.text for s in STORIES if s.text.count("。") >= 4)
    sentences = story.split("。")
    broken = "。".join(sentences[:3]) + "。Mia。"
    assert TALES.is_valid(broken).reason.startswith("第")
    wrong = "。".join([*sentences[:2], "小美哈哈大笑小美", *sentences[3:]])
    reason = TALES.is_valid(wrong).reason
    assert reason.startswith(("第3句", "第4句")) or "从没出现过" in reason, reason


# ---------------------------------------------------------------------------------------------
# The world's settings, the entropy floor, the corpus and training on it
# ---------------------------------------------------------------------------------------------


def test_constructor_checks_its_words() -> None:
    with pytest.raises(ValueError, match="unknown noun"):
        TinyTalesZh(nouns=["小马"])
    with pytest.raises(ValueError, match="的"):
        TinyTalesZh(adjectives=["红色"])
    with pytest.raises(ValueError, match="Chinese characters"):
        TinyTalesZh(girls=["Mia"])
    with pytest.raises(ValueError, match="min_sentences"):
        TinyTalesZh(min_sentences=4, max_sentences=3)
    with pytest.raises(TypeError, match="single string"):
        TinyTalesZh(places="公园")
    smaller = TinyTalesZh(nouns=["书", "钥匙"], places=["公园", "海边"])
    assert {re.search(r"了一(.)", s.text).group(1) for s in smaller.sample(200, 1)} == {"本", "把"}
    assert "书" in smaller.vocabulary and "风筝" not in smaller.vocabulary


def test_entropy_floor_is_finite_positive_and_precise() -> None:
    floor = TALES.entropy_floor(n=2000, seed=1)
    assert 0.3 < floor.bits_per_char < 2.0 and math.isfinite(floor.bits_per_char)
    assert 0 < floor.stderr < 0.01
    # the same ratio, counted from the stories directly
    stories = TALES.sample(2000, 1)
    bits = math.fsum(-s.log_prob / math.log(2) for s in stories)
    assert floor.bits_per_char == pytest.approx(bits / sum(len(s.text) + 1 for s in stories))


def test_the_same_world_as_english_every_plot_has_the_same_probability(small_language) -> None:
    # The Chinese world tells the English plots: in matching small worlds, the stories of the
    # two languages have the same probabilities, one for one (sorted, as the orders differ).
    from llama_edu.tinytales import TinyTales

    english = TinyTales(girls=["Mia"], boys=["Leo"], adjectives=["red"], nouns=["kite"],
                        places=["park", "beach"], min_sentences=1, max_sentences=2)
    en = sorted(s.log_prob for s in english.enumerate_stories(max_stories=50_000))
    zh = sorted(s.log_prob for s in small_language)
    assert len(en) == len(zh)
    assert max(abs(a - b) for a, b in zip(en, zh, strict=True)) < 1e-12
    # and with three nouns of two measure words, whose first sentences differ in choice order
    english = TinyTales(girls=["Mia"], boys=["Leo"], adjectives=["red", "blue"],
                        nouns=["kite", "ball", "balloon"], places=["park", "beach"],
                        min_sentences=1, max_sentences=1)
    chinese = small_world(nouns=["风筝", "皮球", "气球"], adjectives=["红色的", "蓝色的"],
                          max_sentences=1)
    en = sorted(s.log_prob for s in english.enumerate_stories())
    zh = sorted(s.log_prob for s in chinese.enumerate_stories())
    assert len(en) == len(zh) and max(abs(a - b) for a, b in zip(en, zh, strict=True)) < 1e-12
    # and after the object is lost (looking for it, finding it), from a prefix
    english = TinyTales(girls=["Mia"], boys=["Leo"], adjectives=["red"], nouns=["kite"],
                        places=["park", "beach"], min_sentences=1, max_sentences=3)
    chinese = small_world(max_sentences=3)
    en = sorted(s.log_prob for s in english.enumerate_stories(
        prefix="Once upon a time, Mia found a red kite in the park. Mia lost the red kite."))
    zh = sorted(s.log_prob for s in chinese.enumerate_stories(
        prefix="从前，小美在公园里找到了一只红色的风筝。小美弄丢了那只红色的风筝。"))
    assert len(en) == len(zh) and max(abs(a - b) for a, b in zip(en, zh, strict=True)) < 1e-12
    # the same information in fewer characters
    assert statistics.fmean(len(s.text) for s in STORIES) < 100


def test_load_corpus_gives_the_default_number_of_valid_stories() -> None:
    text = load_corpus("tiny-tales-zh")
    lines = text.split("\n")
    assert text.endswith("\n") and lines[-1] == "" and len(lines) - 1 == 10_000
    digest = hashlib.sha256(text.encode()).hexdigest()  # no slow diff of long texts on failure
    assert digest == hashlib.sha256(tiny_tales_zh_text(10_000, seed=0).encode()).hexdigest()
    assert digest != hashlib.sha256(tiny_tales_zh_text(10_000, seed=1).encode()).hexdigest()
    assert " " not in text and all(TALES.is_valid(line) for line in lines[:300])


def test_prepare_corpus_gives_every_character_a_piece_and_the_exact_floor(tmp_path: Path) -> None:
    cfg = TrainConfig(corpus="tiny-tales-zh", n_stories=1000, vocab_size=1024)
    corpus = prepare_corpus(cfg, tmp_path)
    train_texts = [s.text for s in TALES.sample(1000, seed=0)]
    tok = corpus.tokenizer
    for ch in set("".join(train_texts)):
        assert tok.piece_to_id(ch) != tok.unk_id, ch
    ids = corpus.train.tolist()
    assert tok.unk_id not in ids and not any(tok.is_byte(i) for i in set(ids))
    val = TALES.sample(200, seed=10**6)
    assert corpus.val_texts == [s.text for s in val]
    floor = math.fsum(s.bits for s in val) / sum(s.n_chars for s in val)
    assert corpus.baselines["floor_bpc"] == pytest.approx(floor, rel=1e-12)
    assert floor < corpus.baselines["bigram_bpc"] < corpus.baselines["unigram_bpc"]


def test_prepare_corpus_explains_a_vocabulary_too_small_for_the_characters(
        tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size=1024"):
        prepare_corpus(TrainConfig(corpus="tiny-tales-zh", n_stories=300), tmp_path)


def test_cli_trains_on_tiny_tales_zh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(["train", "--corpus", "tiny-tales-zh", "--out", str(out), "--max-steps", "3",
                 "--n-stories", "400", "--seq-len", "32", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    found = config["train"]
    assert found["corpus"] == "tiny-tales-zh" and found["vocab_size"] == 1024
    assert SentencePieceTokenizer(out / "tokenizer.model").vocab_size == 1024
    printed = capsys.readouterr().out
    assert "floor" in printed and "after 3 steps" in printed
    # without --prompt, sampling starts a Chinese story
    assert main(["sample", "--checkpoint", str(out), "--max-new-tokens", "3", "-n", "1"]) == 0
    assert capsys.readouterr().out.startswith("\u4ece\u524d\uff0c")
