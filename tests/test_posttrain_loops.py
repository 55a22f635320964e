"""Fine-tuning loops of llama_edu.posttrain: SFT learns answers, LoRA keeps the base, samples."""

from __future__ import annotations

import pytest
import torch

from llama_edu.lora import add_lora
from llama_edu.model import Llama, ModelArgs
from llama_edu.posttrain import (
    answer_questions,
    chat_tokenizer,
    qa_eval,
    sample_stories,
    sft,
    sft_examples,
    story_stats,
)
from llama_edu.tasks import QATask
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
