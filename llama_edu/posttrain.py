"""Post-training pieces: Llama 3's chat format, the supervised fine-tuning loss, and DPO.

A base model continues text. Post-training teaches it to answer: first supervised fine-tuning
(SFT) on conversations, with the loss on the answer tokens only (`masked_lm_loss`), then a
preference step such as DPO (`dpo_loss`), which raises the probability of a chosen answer over
a rejected one relative to a frozen reference model. The conversations are written in Llama 3's
chat layout (`format_chat`), whose header tokens are added to our SentencePiece tokenizer as
pieces that are never split (`chat_tokenizer`), and the model gets rows for them
(`resize_vocab`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._validate import is_number
from .model import Llama
from .tokenizer import SentencePieceTokenizer, add_special_pieces

__all__ = [
    "CHAT_ROLES",
    "CHAT_SPECIAL_PIECES",
    "answer_questions",
    "build_sft_example",
    "chat_tokenizer",
    "check_pair",
    "collate_sft",
    "dpo_loss",
    "decode_chat",
    "encode_chat",
    "follow_instructions",
    "format_chat",
    "instruction_eval",
    "instruction_examples",
    "make_preference_pairs",
    "masked_lm_loss",
    "qa_eval",
    "resize_vocab",
    "sample_stories",
    "sequence_logprobs",
    "sft",
    "sft_examples",
    "story_stats",
]

CHAT_SPECIAL_PIECES = (
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
"""Llama 3's four chat tokens: start of the text, around a role name, end of a turn."""

CHAT_ROLES = ("system", "user", "assistant")
"""The roles `format_chat` accepts. Llama 3.1's tool role "ipython" is not supported here."""

BEGIN, START_HEADER, END_HEADER, EOT = CHAT_SPECIAL_PIECES

# --------------------------------------------------------------------------------------------
# The chat format
# --------------------------------------------------------------------------------------------


def _header(role: str) -> str:
    return f"{START_HEADER}{role}{END_HEADER}\n\n"


def _check_message(k: int, message: Any) -> tuple[str, str]:
    if not isinstance(message, Mapping):
        raise TypeError(
            f"message {k} is a {type(message).__name__}; each message must be a dict such as "
            "{'role': 'user', 'content': 'Who found the ball?'}"
        )
    missing = [key for key in ("role", "content") if key not in message]
    if missing:
        raise ValueError(
            f"message {k} has no {' and no '.join(map(repr, missing))} key; each message needs "
            f"'role' (one of {', '.join(CHAT_ROLES)}) and 'content' (a str). It has the keys "
            f"{sorted(map(str, message))}."
        )
    extra = sorted(str(key) for key in message if key not in ("role", "content"))
    if extra:
        raise ValueError(
            f"message {k} has the keys {extra}, which the chat format does not use; keep only "
            "'role' and 'content' (a typo such as 'contents' would otherwise be lost silently)"
        )
    role, content = message["role"], message["content"]
    if role not in CHAT_ROLES:
        raise ValueError(
            f"message {k} has the unknown role {role!r}; use one of {', '.join(CHAT_ROLES)}"
        )
    if not isinstance(content, str):
        raise TypeError(
            f"message {k} ({role}) has content of type {type(content).__name__}; content must "
            "be a str"
        )
    for piece in CHAT_SPECIAL_PIECES:
        if piece in content:
            raise ValueError(
                f"message {k} ({role}) contains the special piece {piece!r} in its content. "
                "Text must never write the chat's own markers (that is a prompt injection: it "
                "could end a turn or fake another role); remove it from the text."
            )
    return role, content


def format_chat(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
    """Write `messages` in Llama 3's chat layout, optionally opening the assistant's turn.

    The text is ``<|begin_of_text|>`` followed, for each message, by
    ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``, the content with
    leading and trailing whitespace removed (as Llama 3's template does). With
    ``add_generation_prompt=True`` it ends with the header of an assistant turn, the prompt from
    which the model writes its answer. Roles are those of `CHAT_ROLES`; their order is not
    checked, as Llama 3's template does not check it either.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(
            "messages must be a list of dicts such as [{'role': 'user', 'content': 'Hi'}], got "
            f"{type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages is empty; a chat needs at least one message")
    if not isinstance(add_generation_prompt, bool):
        raise TypeError(
            f"add_generation_prompt must be True or False, got {add_generation_prompt!r}"
        )
    parts = [BEGIN]
    for k, message in enumerate(messages):
        role, content = _check_message(k, message)
        parts.append(f"{_header(role)}{content.strip()}{EOT}")
    if add_generation_prompt:
        parts.append(_header("assistant"))
    return "".join(parts)


def chat_tokenizer(
    tokenizer: SentencePieceTokenizer, path: str | os.PathLike[str]
) -> SentencePieceTokenizer:
    """`tokenizer` with the four chat pieces added (new ids vocab_size .. vocab_size + 3)."""
    return add_special_pieces(tokenizer, CHAT_SPECIAL_PIECES, path)


def _special_ids(tokenizer: SentencePieceTokenizer) -> dict[str, int]:
    ids = {}
    for piece in CHAT_SPECIAL_PIECES:
        try:
            ids[piece] = tokenizer.piece_to_id(piece)
        except KeyError:
            raise ValueError(
                f"this tokenizer has no {piece!r} piece, so the chat markers would be split into "
                "bytes; make a chat tokenizer first with chat_tokenizer(tokenizer, path)"
            ) from None
    return ids


def _split_chat(tokenizer: SentencePieceTokenizer, text: str) -> list[str]:
    """`text` cut before and after every chat marker; markers and the text between alternate."""
    specials = _special_ids(tokenizer)
    pattern = "(" + "|".join(re.escape(piece) for piece in specials) + ")"
    return [part for part in re.split(pattern, text) if part]


def _newline_ids(tokenizer: SentencePieceTokenizer, count: int) -> list[int]:
    # SentencePiece writes "\n\n" as a word-start piece and two newline bytes; the bare
    # word-start piece stands for no character here, so it is left out.
    return [i for i in tokenizer.encode("\n" * count) if tokenizer.id_to_piece(i) != "\u2581"]


def encode_chat(tokenizer: SentencePieceTokenizer, text: str) -> list[int]:
    """Encode chat text part by part, as Meta's Llama 3 code does; each marker is one id.

    Meta's ``ChatFormat`` never encodes a whole conversation at once: it encodes the role, the
    ``"\n\n"`` after the header and each message's content separately, between the markers'
    ids. Encoded alone, a content starts with SentencePiece's word-start piece (``▁Leo``), as
    the same word does inside a story; encoded as one string, the answer's first word would
    follow the newlines without it and be split into rare pieces (``L``, ``e``, ``o``), which
    costs a fine-tuned model much of its accuracy. The newlines are newline bytes.
    `decode_chat` turns the ids back into exactly `text`.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (from format_chat), got {type(text).__name__}")
    specials = _special_ids(tokenizer)
    ids: list[int] = []
    for part in _split_chat(tokenizer, text):
        if part in specials:
            ids.append(specials[part])
            continue
        rest = part.lstrip("\n")
        if len(rest) < len(part):
            ids += _newline_ids(tokenizer, len(part) - len(rest))
        if rest:
            ids += tokenizer.encode(rest)
    return ids


def decode_chat(tokenizer: SentencePieceTokenizer, ids: Sequence[int]) -> str:
    """The chat text of `ids` from `encode_chat`: markers as text, each part decoded alone."""
    specials = {i: piece for piece, i in _special_ids(tokenizer).items()}
    newline = set(_newline_ids(tokenizer, 1))
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        lead = 0
        while lead < len(run) and run[lead] in newline:
            lead += 1
        out.append("\n" * lead + tokenizer.decode(run[lead:]))
        run.clear()

    for i in ids:
        if i in specials:
            flush()
            out.append(specials[i])
        else:
            run.append(int(i))
    flush()
    return "".join(out)


def build_sft_example(
    tokenizer: SentencePieceTokenizer,
    prompt_messages: Sequence[Mapping[str, str]],
    answer: str,
    max_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SFT example: (input ids, targets, mask), each of shape (n,), n <= max_len.

    The conversation is `prompt_messages` followed by the assistant's `answer`. `targets` are
    the input ids shifted by one (position t predicts token t + 1), and `mask` is True exactly
    where the target is a token of the answer or the ``<|eot_id|>`` that ends it, so the
    model learns to write the answer and to stop, and is not trained to write the prompt.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int (the model's context), got {max_len!r}")
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    prompt_text = format_chat(prompt_messages, add_generation_prompt=True)
    full_text = format_chat([*prompt_messages, {"role": "assistant", "content": answer}])
    prompt_ids = encode_chat(tokenizer, prompt_text)
    ids = encode_chat(tokenizer, full_text)
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError(
            "the tokens of the prompt are not a prefix of the tokens of prompt + answer (a "
            "piece crosses the boundary after the assistant header); this tokenizer cannot "
            "mark the answer tokens exactly"
        )
    if len(ids) - 1 > max_len:
        raise ValueError(
            f"this example is {len(ids)} tokens long ({len(prompt_ids)} prompt, "
            f"{len(ids) - len(prompt_ids)} answer and <|eot_id|>), so the model would read "
            f"{len(ids) - 1} tokens, more than its context of max_len={max_len}. Use a shorter "
            "prompt or answer, or leave this example out."
        )
    tokens = torch.tensor(ids, dtype=torch.long)
    mask = torch.zeros(len(ids) - 1, dtype=torch.bool)
    mask[len(prompt_ids) - 1 :] = True  # targets tokens[len(prompt_ids):], the answer and eot
    return tokens[:-1], tokens[1:], mask


def collate_sft(
    examples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    pad_id: int,
    multiple_of: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack `build_sft_example` outputs into (B, T) tensors, padding on the right.

    Padding positions get `pad_id` as input and target and False in the mask, so they add
    nothing to `masked_lm_loss`; with a causal model, padding after a sequence does not change
    the logits of the sequence itself. With `multiple_of` > 1 the length is rounded up to a
    multiple of it: on a CPU with 2 threads, batches whose length changes at every step to odd
    sizes trained up to 30 times slower than the same batches padded to a multiple of 32.
    """
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a token id (an int >= 0), got {pad_id!r}")
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
        raise ValueError(f"multiple_of must be a positive int, got {multiple_of!r}")
    if not examples:
        raise ValueError("examples is empty; pass at least one (inputs, targets, mask) triple")
    for k, example in enumerate(examples):
        if len(example) != 3 or len({tuple(t.shape) for t in example}) != 1:
            raise ValueError(
                f"example {k} must be an (inputs, targets, mask) triple of equal 1-D shapes, as "
                "build_sft_example returns"
            )
    length = max(len(example[0]) for example in examples)
    length += -length % multiple_of
    batch = len(examples)
    inputs = torch.full((batch, length), pad_id, dtype=torch.long)
    targets = torch.full((batch, length), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.bool)
    for b, (x, y, m) in enumerate(examples):
        inputs[b, : len(x)], targets[b, : len(y)], mask[b, : len(m)] = x, y, m.bool()
    return inputs, targets, mask


# --------------------------------------------------------------------------------------------
# Growing the model's vocabulary
# --------------------------------------------------------------------------------------------


def resize_vocab(model: Llama, new_vocab_size: int) -> Llama:
    """A copy of `model` with rows for ids vocab_size .. new_vocab_size - 1; `model` is unchanged.

    Each new row of tok_embeddings (and of output, when it is not tied) starts as the mean of
    the existing rows. A random row could give a new token a large logit by chance and a
    zero row a logit of 0 that may be large next to the trained ones; the mean row gives the
    new tokens ordinary logits (the mean of the others) at first, so the model's predictions
    for the old tokens hardly move until fine-tuning teaches the new ones. Old rows are copied
    unchanged, so on text without new ids the logits of the old tokens are exactly the same.
    """
    if not isinstance(model, Llama):
        raise TypeError(f"resize_vocab needs a llama_edu Llama, got {type(model).__name__}")
    old = model.args.vocab_size
    if isinstance(new_vocab_size, bool) or not isinstance(new_vocab_size, int):
        raise TypeError(f"new_vocab_size must be an int, got {type(new_vocab_size).__name__}")
    if new_vocab_size < old:
        raise ValueError(
            f"new_vocab_size={new_vocab_size} is smaller than the model's vocab_size={old}; "
            "resize_vocab only adds ids (removing some would renumber the tokenizer)"
        )
    args = dataclasses.replace(model.args, vocab_size=new_vocab_size)
    weight = model.tok_embeddings.weight
    with torch.random.fork_rng(devices=[]):  # the throw-away init leaves the global RNG as is
        grown = Llama(args).to(device=weight.device, dtype=weight.dtype)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    extra = new_vocab_size - old

    def grow(rows: torch.Tensor) -> torch.Tensor:
        mean = rows.float().mean(dim=0, keepdim=True).to(rows.dtype)
        return torch.cat([rows, mean.expand(extra, -1)], dim=0)

    state["tok_embeddings.weight"] = grow(state["tok_embeddings.weight"])
    if args.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    else:
        state["output.weight"] = grow(state["output.weight"])
    try:
        grown.load_state_dict(state)  # copies in place, so tied weights stay one tensor
    except RuntimeError as err:
        raise ValueError(
            "resize_vocab works on a plain Llama, but this model's parameters do not match "
            "its ModelArgs (are LoRA adapters attached?). Resize the vocabulary before adding "
            "adapters, or merge them first."
        ) from err
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, p in grown.named_parameters():
        p.requires_grad_(name not in frozen)
    grown.train(model.training)
    return grown


# --------------------------------------------------------------------------------------------
# The SFT loss
# --------------------------------------------------------------------------------------------


def _as_bool_mask(mask: Any, shape: tuple[int, ...], fn: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{fn}: mask must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"{fn}: mask has shape {tuple(mask.shape)} but must have shape {shape}, one entry "
            "per target token"
        )
    if mask.dtype != torch.bool:
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError(
                f"{fn}: mask must be bool, or hold only 0 and 1; it holds other values. Use a "
                "bool mask (True on the tokens to score)."
            )
        mask = mask != 0
    return mask


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) over the positions where `mask` is True: the SFT loss.

    Shapes: logits (B, T, V), targets (B, T) of ids, mask (B, T), bool or 0/1. Every masked
    token counts once, whichever row it is in: the sum of their losses is divided by the number
    of masked tokens, not by the batch size nor by B * T.
    """
    fn = "masked_lm_loss"
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"{fn}: logits must be a floating-point tensor of shape (B, T, V)")
    if logits.dim() != 3:
        raise ValueError(f"{fn}: logits must have shape (B, T, V), got {tuple(logits.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{fn}: targets must be an integer tensor of token ids, shape (B, T)")
    if tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"{fn}: targets has shape {tuple(targets.shape)} but logits {tuple(logits.shape)} "
            f"needs targets of shape {tuple(logits.shape[:2])}"
        )
    keep = _as_bool_mask(mask, tuple(logits.shape[:2]), fn)
    if not keep.any():
        raise ValueError(
            f"{fn}: the mask is False everywhere, so there is no answer token to learn from "
            "(the mean over no tokens is undefined). Check that the answer was not cut off."
        )
    vocab = logits.shape[-1]
    chosen = targets[keep]
    if ((chosen < 0) | (chosen >= vocab)).any():
        raise ValueError(f"{fn}: a masked target id is outside the vocabulary 0..{vocab - 1}")
    return F.cross_entropy(logits[keep].float(), chosen.long())


def sequence_logprobs(model: Llama, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence sum of log p(ids[b, t] | ids[b, :t]) over the positions where mask is True.

    Shapes: ids (B, T), mask (B, T) aligned with ids (True on the tokens to score, typically
    the answer); the result has shape (B,) in nats. Position 0 has no prediction, so mask[:, 0]
    must be False. Gradients flow to the model; wrap the call in torch.no_grad() for the
    frozen reference model. From `build_sft_example`'s (inputs, targets, mask) (or
    `collate_sft`'s), the same tokens are ``ids = cat([inputs[:, :1], targets], 1)`` with
    ``mask = cat([zeros(B, 1), mask], 1)``.
    """
    fn = "sequence_logprobs"
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(f"{fn}: ids must be a tensor of shape (B, T)")
    if ids.shape[1] < 2:
        raise ValueError(f"{fn}: ids must hold at least 2 tokens per row, got {ids.shape[1]}")
    keep = _as_bool_mask(mask, tuple(ids.shape), fn)
    if keep[:, 0].any():
        raise ValueError(
            f"{fn}: mask[:, 0] is True, but the first token has no prediction (nothing comes "
            "before it); mark only tokens from position 1 on"
        )
    logits = model(ids[:, :-1])  # (B, T-1, V): position t predicts ids[:, t + 1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    token_logp = logp.gather(-1, ids[:, 1:, None].long()).squeeze(-1)  # (B, T-1)
    return (token_logp * keep[:, 1:]).sum(dim=1)


# --------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO's loss: the mean over pairs of -log σ(β · ((π_c − ref_c) − (π_r − ref_r))).

    Each argument holds one summed log-probability per sequence (shape (N,), see
    `sequence_logprobs`); π is the model being trained, ref the frozen reference. The loss is
    computed with logsigmoid, which stays finite for margins of any size.
    """
    fn = "dpo_loss"
    if not is_number(beta) or isinstance(beta, torch.Tensor):
        raise TypeError(f"{fn}: beta must be a number, got {type(beta).__name__}")
    if not 0 < float(beta) < math.inf:
        raise ValueError(
            f"{fn}: beta must be a finite number > 0, got {beta!r}; typical values are 0.1 to 0.5"
        )
    named = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
    }
    for name, value in named.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a floating-point tensor of shape (N,)")
    shapes = {name: tuple(value.shape) for name, value in named.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"{fn}: the four log-probability tensors must have the same shape (one entry per "
            f"pair), got {shapes}"
        )
    if policy_chosen_logps.numel() == 0:
        raise ValueError(f"{fn}: there are no pairs (the tensors are empty)")
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(float(beta) * margin).mean()


def _normalise(item: Any) -> Any:
    if isinstance(item, str):
        return item
    if isinstance(item, torch.Tensor):
        return tuple(item.reshape(-1).tolist())
    if isinstance(item, Sequence):
        return tuple(int(i) for i in item)
    raise TypeError(
        f"a preference answer must be a str or a sequence of token ids, got {type(item).__name__}"
    )


def check_pair(chosen: Any, rejected: Any) -> None:
    """Raise ValueError when a DPO pair's chosen and rejected answers are the same.

    Both are texts (str) or token ids (a list or a 1-D tensor). Identical answers give the
    margin 0 whatever the model does, so the pair teaches nothing and only dilutes the mean.
    """
    a, b = _normalise(chosen), _normalise(rejected)
    if isinstance(a, str) != isinstance(b, str):
        raise TypeError("chosen and rejected must both be texts or both be token ids")
    if a == b:
        shown = a if isinstance(a, str) else list(a)
        text = repr(shown) if len(repr(shown)) <= 60 else repr(shown)[:57] + "..."
        raise ValueError(
            f"the chosen and the rejected answer are the same ({text}); a DPO pair needs two "
            "different answers to the same prompt. Leave this pair out."
        )


def make_preference_pairs(chosen: Sequence[Any], rejected: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Zip chosen and rejected answers into pairs, refusing unequal lengths and identical pairs."""
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise TypeError("chosen and rejected must be lists of answers, not single strings")
    if len(chosen) != len(rejected):
        raise ValueError(
            f"there are {len(chosen)} chosen and {len(rejected)} rejected answers; each pair "
            "needs one of each"
        )
    pairs = []
    for k, (good, bad) in enumerate(zip(chosen, rejected, strict=True)):
        try:
            check_pair(good, bad)
        except ValueError as err:
            raise ValueError(f"pair {k}: {err}") from None
        pairs.append((good, bad))
    return pairs


# --------------------------------------------------------------------------------------------
# Fine-tuning and measuring: SFT on question answering, samples and their validity
# --------------------------------------------------------------------------------------------


def _chat_prompt(
    tokenizer: SentencePieceTokenizer, messages: Sequence[Mapping[str, str]]
) -> list[int]:
    return encode_chat(tokenizer, format_chat(messages, add_generation_prompt=True))


def answer_questions(
    model: Llama, tokenizer: SentencePieceTokenizer, tasks: Sequence[Any], max_new_tokens: int = 8
) -> list[str]:
    """The model's greedy answer to each task (a `llama_edu.tasks.QATask`), up to <|eot_id|>."""
    from .generate import generate

    eot = _special_ids(tokenizer)[EOT]
    prompts = [_chat_prompt(tokenizer, task.messages()[:1]) for task in tasks]
    was_training = model.training
    model.eval()
    try:
        outputs = generate(model, prompts, max_new_tokens, temperature=0.0, stop_ids=[eot])
    finally:
        model.train(was_training)
    return [tokenizer.decode([t for t in out if t != eot]) for out in outputs]


def qa_eval(
    model: Llama, tokenizer: SentencePieceTokenizer, tasks: Sequence[Any]
) -> dict[str, float]:
    """Exact-match accuracy of the model's greedy answers, overall ("all") and per kind."""
    from .tasks import qa_accuracy

    return qa_accuracy(answer_questions(model, tokenizer, tasks), tasks)


def sft_examples(
    tokenizer: SentencePieceTokenizer, tasks: Sequence[Any], max_len: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`build_sft_example` for each task: its user message as prompt, its answer as the target."""
    return [build_sft_example(tokenizer, task.messages()[:1], task.answer, max_len)
            for task in tasks]


def instruction_examples(
    tokenizer: SentencePieceTokenizer, instructions: Sequence[Any], max_len: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`build_sft_example` for each `tasks.Instruction`: the request as prompt, its reference
    story as the answer."""
    for k, ins in enumerate(instructions):
        if not getattr(ins, "reference", ""):
            raise ValueError(f"instruction {k} has no reference story to train on; make "
                             "instructions with tasks.instruction_tasks or instruction_for")
    return [build_sft_example(tokenizer, ins.messages()[:1], ins.reference, max_len)
            for ins in instructions]


def follow_instructions(
    model: Llama,
    tokenizer: SentencePieceTokenizer,
    instructions: Sequence[Any],
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 200,
) -> list[str]:
    """The model's reply to each instruction (a `tasks.Instruction`), sampled up to <|eot_id|>."""
    from .generate import generate

    eot = _special_ids(tokenizer)[EOT]
    prompts = [_chat_prompt(tokenizer, ins.messages()[:1]) for ins in instructions]
    if not prompts:
        raise ValueError("no instructions to follow; make some with tasks.instruction_tasks")
    limit = min(max_new_tokens, model.args.max_seq_len - max(len(p) for p in prompts))
    if limit < 1:
        raise ValueError(f"the longest prompt fills the model's context of "
                         f"{model.args.max_seq_len} tokens, leaving no room for a reply")
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        outputs = generate(model, prompts, limit, temperature=temperature, stop_ids=[eot],
                           generator=generator)
    finally:
        model.train(was_training)
    return [tokenizer.decode([t for t in out if t != eot]) for out in outputs]


def instruction_eval(
    model: Llama,
    tokenizer: SentencePieceTokenizer,
    instructions: Sequence[Any],
    temperature: float = 1.0,
    seed: int = 0,
    tales: Any = None,
) -> dict[str, float]:
    """Shares of replies that follow the instruction ("ok": a valid story meeting every
    constraint), that are valid stories ("valid"), and that meet each constraint."""
    from .tasks import check_instruction
    from .tinytales import TinyTales

    tales = tales or TinyTales()
    replies = follow_instructions(model, tokenizer, instructions, temperature, seed)
    verdicts = [check_instruction(ins, reply, tales)
                for ins, reply in zip(instructions, replies, strict=True)]
    n = len(verdicts)
    out = {"ok": sum(v.ok for v in verdicts) / n, "valid": sum(bool(v.validity)
                                                                for v in verdicts) / n}
    for name in ("hero", "adjective", "noun", "place", "friend"):
        asked = [v.constraints[name] for v in verdicts if name in v.constraints]
        if asked:
            out[name] = sum(asked) / len(asked)
    return out


def sft(
    model: Llama,
    examples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    pad_id: int = 0,
) -> list[float]:
    """Supervised fine-tuning: AdamW on `masked_lm_loss` over random batches; the step losses.

    Only parameters with requires_grad are trained (after `lora.add_lora`, only the adapters).
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not examples:
        raise ValueError("no examples to train on; make them with sft_examples(tokenizer, tasks)")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for _ in range(steps):
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        inputs, targets, mask = collate_sft([examples[i] for i in picks], pad_id, multiple_of=32)
        keep = max(model.args.max_seq_len, max(len(examples[i][0]) for i in picks))
        inputs, targets, mask = inputs[:, :keep], targets[:, :keep], mask[:, :keep]  # only padding
        loss = masked_lm_loss(model(inputs.to(device)), targets.to(device), mask.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def sample_stories(
    model: Llama,
    tokenizer: SentencePieceTokenizer,
    n: int,
    seed: int,
    temperature: float = 1.0,
    max_new_tokens: int = 200,
) -> list[str]:
    """n stories sampled from a base model (bos, then tokens until eos), in one batch."""
    from .generate import generate

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    limit = min(max_new_tokens, model.args.max_seq_len - 1)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        outputs = generate(model, [[tokenizer.bos_id]] * n, limit, temperature=temperature,
                           stop_ids=[tokenizer.eos_id], generator=generator)
    finally:
        model.train(was_training)
    return [tokenizer.decode([t for t in out if t != tokenizer.eos_id]) for out in outputs]


def story_stats(texts: Sequence[str], tales: Any = None) -> dict[str, float]:
    """Share of valid stories (TinyTales.is_valid) and share of distinct texts among `texts`."""
    from .tinytales import TinyTales

    if not texts:
        raise ValueError("no texts to judge")
    tales = tales or TinyTales()
    return {"valid": sum(bool(tales.is_valid(t)) for t in texts) / len(texts),
            "distinct": len(set(texts)) / len(texts), "n": len(texts)}
