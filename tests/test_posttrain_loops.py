"""Fine-tuning loops of llama_edu.posttrain: SFT learns answers, LoRA keeps the base, samples."""

from __future__ import annotations

import pytest
import torch

from llama_edu.lora import add_lora
from llama_edu.model import Llama, ModelArgs
from llama_edu.posttrain import (
    answer_questions,
    chat_tokenizer,
    follow_instructions,
    instruction_eval,
    instruction_examples,
    qa_eval,
    sample_stories,
    sft,
    sft_examples,
    story_stats,
)
from llama_edu.tasks import Instruction, QATask, instruction_for
from llama_edu.tokenizer import SentencePieceTokenizer
from llama_edu.train import PRETRAINED_DIR

STORY = "One day, Mia found a red kite in the park. Then she met a boy named Leo."
TASKS = [QATask(STORY, "Whom did Mia meet?", "Leo", "whom_met"),
         QATask(STORY, "What colour was the kite?", "red", "colour")]


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    base = SentencePieceTokenizer(PRETRAINED_DIR / "tokenizer.model")
    return chat_tokenizer(base, tmp_path_factory.mktemp("chat") / "tokenizer.model")


def tiny_model(vocab_size: int) -> Llama:
    torch.manual_seed(0)
    return Llama(ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=vocab_size,
                           multiple_of=16, max_seq_len=128))


def test_sft_teaches_a_random_model_the_answers(chat_tok):
    model = tiny_model(chat_tok.vocab_size)
    examples = sft_examples(chat_tok, TASKS, max_len=128)
    assert answer_questions(model, chat_tok, TASKS) != ["Leo", "red"]
    losses = sft(model, examples, steps=60, batch_size=2, lr=1e-2)
    assert losses[-1] < 0.05 < losses[0]
    assert answer_questions(model, chat_tok, TASKS) == ["Leo", "red"]
    assert qa_eval(model, chat_tok, TASKS) == {"all": 1.0, "whom_met": 1.0, "colour": 1.0}


def test_sft_on_a_lora_model_changes_only_the_adapters(chat_tok):
    model = tiny_model(chat_tok.vocab_size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    add_lora(model, r=2, alpha=4.0, targets=["wq", "wv"])
    sft(model, sft_examples(chat_tok, TASKS, max_len=128), steps=5, batch_size=2, lr=1e-2)
    after = model.state_dict()
    for key, value in before.items():
        moved = key.replace("wq.", "wq.base.").replace("wv.", "wv.base.")
        assert torch.equal(after[moved], value), key
    assert any(not torch.equal(v, torch.zeros_like(v))
               for k, v in after.items() if k.endswith("lora_B.weight"))


def test_sampled_stories_are_seeded(chat_tok):
    base = SentencePieceTokenizer(PRETRAINED_DIR / "tokenizer.model")
    model = tiny_model(base.vocab_size)
    a = sample_stories(model, base, 3, seed=1, max_new_tokens=20)
    assert a == sample_stories(model, base, 3, seed=1, max_new_tokens=20)
    assert a != sample_stories(model, base, 3, seed=2, max_new_tokens=20)
    assert len(a) == 3 and all(isinstance(t, str) for t in a)


def test_story_stats_counted_by_hand():
    valid = ("Long ago, Tom had a big drum at the zoo. Tom went to the lake. He ran to the farm. "
             "The drum fell into a hole.")
    too_short = "One day, Leo had a big drum at the zoo."  # a story has at least 3 sentences
    texts = [valid, valid, "Mia flew.", too_short]
    assert story_stats(texts) == {"valid": 0.5, "distinct": 0.75, "n": 4}


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be a positive int"),
    ({"steps": 2, "batch_size": 0}, "batch_size must be a positive int"),
])
def test_sft_refuses_bad_settings(chat_tok, kwargs, match):
    model = tiny_model(chat_tok.vocab_size)
    with pytest.raises(ValueError, match=match):
        sft(model, sft_examples(chat_tok, TASKS, max_len=128), **kwargs)


def test_sft_refuses_no_examples_and_a_frozen_model(chat_tok):
    model = tiny_model(chat_tok.vocab_size)
    with pytest.raises(ValueError, match="no examples"):
        sft(model, [], steps=1)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        sft(model, sft_examples(chat_tok, TASKS, max_len=128), steps=1)


# --- instructions: a story on request -----------------------------------------------------

GIVEN = ("One day, Mia found a red kite in the park. Then she met a boy named Leo. "
         "Mia played with the kite.")


def test_instruction_examples_train_on_the_reference_story_and_eot_only(chat_tok):
    ins = instruction_for(GIVEN)
    [(inputs, targets, mask)] = instruction_examples(chat_tok, [ins], max_len=128)
    answer = chat_tok.decode(targets[mask].tolist())
    assert answer == GIVEN + "<|eot_id|>"
    assert chat_tok.decode(inputs[: int((~mask).sum()) + 1].tolist()).endswith(
        "assistant<|end_header_id|>\n\n")
    with pytest.raises(ValueError, match="has no reference story"):
        instruction_examples(chat_tok, [Instruction("Mia", "red", "kite", "park")], max_len=128)


def test_instruction_eval_counts_each_constraint(chat_tok, monkeypatch):
    from llama_edu import posttrain

    asked = instruction_for(GIVEN)
    other_friend = GIVEN.replace("Leo", "Sam")
    replies = [GIVEN, other_friend, "Mia flew."]
    monkeypatch.setattr(posttrain, "follow_instructions", lambda *a, **k: list(replies))
    out = instruction_eval(None, chat_tok, [asked] * 3)
    third = pytest.approx(1 / 3)
    assert out == {"ok": third, "valid": pytest.approx(2 / 3), "hero": pytest.approx(2 / 3),
                   "adjective": pytest.approx(2 / 3), "noun": pytest.approx(2 / 3),
                   "place": pytest.approx(2 / 3), "friend": third}


def test_sft_on_instructions_teaches_a_random_model_to_write_the_story(chat_tok):
    model = tiny_model(chat_tok.vocab_size)
    ins = instruction_for(GIVEN)
    assert follow_instructions(model, chat_tok, [ins], temperature=1.0) != [GIVEN]
    sft(model, instruction_examples(chat_tok, [ins], max_len=128), steps=80, batch_size=1,
        lr=1e-2)
    assert follow_instructions(model, chat_tok, [ins], temperature=0.5) == [GIVEN]
    assert instruction_eval(model, chat_tok, [ins], temperature=0.5)["ok"] == 1.0
