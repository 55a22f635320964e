"""Tasks from the story generator: facts, questions with one answer, instructions, splits."""

from __future__ import annotations

import pytest

from llama_edu.data import TinyTales
from llama_edu.tasks import (
    QUESTION_KINDS,
    Instruction,
    QATask,
    check_instruction,
    exact_match,
    instruction_for,
    instruction_tasks,
    qa_accuracy,
    qa_tasks,
    questions_for,
    story_facts,
)

# Written by hand; the expected facts below are read off the text, not computed.
GIVEN = ("One day, Mia found a red kite in the park. Then she met a boy named Leo. "
         "Mia gave the kite to Leo. Leo thanked Mia. He went to the beach.")
LOST = ("Long ago, Tom had a big drum at the zoo. Tom went to the lake. He ran to the farm. "
        "The drum fell into a hole.")
TWO_GO = ("One morning, Ivy got an old map by the river. Later, she walked to the castle. "
          "She met a girl named Rosa. Rosa went to the cave.")


def qa(text: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for q in questions_for(text):
        out.setdefault(q.kind, []).append((q.question, q.answer))
    return out


def test_facts_of_a_story_written_by_hand():
    f = story_facts(GIVEN)
    assert (f.hero, f.intro_verb, f.adjective, f.noun) == ("Mia", "found", "red", "kite")
    assert (f.start_place, f.friend, f.final_holder, f.final_place) == ("park", "Leo", "Leo",
                                                                        "beach")
    # "He went to the beach": the pronoun is resolved to Leo, the previous sentence's subject.
    assert f.goes == (("Leo", "beach"),)
    assert [e for _, e in f.events] == ["meet", "give", "thank", "go"]


def test_questions_and_answers_of_a_story_written_by_hand():
    assert qa(GIVEN) == {
        "colour": [("What colour was the kite?", "red")],
        "who_had": [("Who found the kite at the start of the story?", "Mia")],
        "where_start": [("Where was Mia at the start of the story?", "park")],
        "whom_met": [("Whom did Mia meet?", "Leo")],
        "where_went": [("Where did Leo go?", "beach")],
        "holder_at_end": [("Who has the kite at the end?", "Leo")],
    }


def test_only_questions_with_one_answer_are_asked():
    lost = qa(LOST)
    assert "colour" not in lost  # "big" is not a colour
    assert "whom_met" not in lost  # Tom meets nobody
    assert "where_went" not in lost  # Tom went to two places: "where did Tom go?" has no one answer
    assert lost["holder_at_end"] == [("Who has the drum at the end?", "nobody")]
    assert lost["where_start"] == [("Where was Tom at the start of the story?", "zoo")]
    two = qa(TWO_GO)
    assert two["where_went"] == [("Where did Ivy go?", "castle"), ("Where did Rosa go?", "cave")]
    assert two["holder_at_end"] == [("Who has the map at the end?", "Ivy")]


def test_every_answer_of_generated_questions_appears_in_its_story():
    tasks = qa_tasks(200, "train", seed=3)
    assert {t.kind for t in tasks} == set(QUESTION_KINDS)
    for t in tasks:
        assert t.answer == "nobody" or t.answer in t.story.replace(".", " ").split(), t


def test_splits_are_disjoint_and_seeded():
    train = {t.story for t in qa_tasks(300, "train", seed=1)}
    test = {t.story for t in qa_tasks(300, "test", seed=1)}
    assert train and test and not train & test
    assert [t.question for t in qa_tasks(20, "test", seed=5)] == \
        [t.question for t in qa_tasks(20, "test", seed=5)]
    assert {t.story for t in qa_tasks(20, "test", seed=5)} != {t.story for t in
                                                             qa_tasks(20, "test", seed=6)}


def test_test_split_leaves_out_stories_of_the_train_split():
    # A world of at most 80 one-sentence stories: 100 draws per split must overlap.
    small = TinyTales(girls=["Mia"], boys=["Leo"], adjectives=["red"], nouns=["kite"],
                      places=["park", "beach"], min_sentences=1, max_sentences=1)
    train = {t.story for t in qa_tasks(100, "train", tales=small)}
    test = [t.story for t in qa_tasks(100, "test", tales=small)]
    assert test and not train & set(test)


def test_kinds_filter_and_messages():
    tasks = qa_tasks(30, "train", kinds=["whom_met"])
    assert tasks and {t.kind for t in tasks} == {"whom_met"}
    msgs = tasks[0].messages()
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["content"].startswith(tasks[0].story) and msgs[1]["content"] == tasks[0].answer


def test_exact_match_and_accuracy():
    assert exact_match(" Leo. ", "Leo")
    assert exact_match("Leo", "Leo.")
    assert not exact_match("leo", "Leo")  # exact: case counts
    assert not exact_match("Leo and Mia", "Leo")
    tasks = [QATask("s", "q", "Leo", "whom_met"), QATask("s", "q", "park", "where_start"),
             QATask("s", "q", "Mia", "whom_met"), QATask("s", "q", "red", "colour")]
    acc = qa_accuracy(["Leo", "beach", "Mia.", "red"], tasks)
    assert acc == {"all": 0.75, "whom_met": 1.0, "where_start": 0.0, "colour": 1.0}


def test_instruction_from_a_story_and_its_check():
    ins = instruction_for(GIVEN)
    assert ins.text == "Write a story about Mia and a red kite in the park in which Mia meets Leo."
    assert check_instruction(ins, GIVEN).ok
    other = ("One day, Mia found a red kite in the park. Then she met a boy named Sam. "
             "Mia played with the kite.")
    verdict = check_instruction(ins, other)
    assert verdict.validity and not verdict.ok
    assert verdict.constraints == {"hero": True, "adjective": True, "noun": True, "place": True,
                                   "friend": False}
    no_friend = instruction_for(GIVEN, with_friend=False)
    assert no_friend.text == "Write a story about Mia and a red kite in the park."
    assert check_instruction(no_friend, other).ok
    assert Instruction("Ivy", "old", "map", "river").text == \
        "Write a story about Ivy and an old map by the river."


def test_an_invalid_reply_fails_every_constraint_with_the_reason():
    ins = instruction_for(GIVEN)
    verdict = check_instruction(ins, "One day, Mia found a red kite in the park. She flew.")
    assert not verdict.ok and not verdict.validity and not any(verdict.constraints.values())
    assert "sentence 2" in verdict.validity.reason
    assert not check_instruction(ins, 42).ok


def test_instruction_tasks_carry_their_reference_story():
    tales = TinyTales()
    for ins in instruction_tasks(50, "test", seed=2, tales=tales):
        assert check_instruction(ins, ins.reference, tales).ok
        assert ins.messages()[1]["content"] == ins.reference


@pytest.mark.parametrize("call, match", [
    (lambda: story_facts("Mia flew."), "not a TinyTales story"),
    (lambda: qa_tasks(10, "valid"), "split must be one of"),
    (lambda: qa_tasks(0), "positive integer"),
    (lambda: qa_tasks(10, kinds=["colour", "size"]), "unknown question kinds"),
    (lambda: qa_tasks(10, seed=-1), "seed must be"),
    (lambda: qa_accuracy(["a"], []), "1 predictions for 0 tasks"),
    (lambda: instruction_for(LOST, with_friend=True), "no friend"),
])
def test_bad_input_is_refused_with_a_clear_message(call, match):
    with pytest.raises(ValueError, match=match):
        call()
