"""The chat format, the chat tokenizer, resize_vocab and the post-training losses."""

from __future__ import annotations

import math
import re

import pytest
import torch

from llama_edu.model import Llama, ModelArgs
from llama_edu.posttrain import (
    CHAT_SPECIAL_PIECES,
    build_sft_example,
    chat_tokenizer,
    check_pair,
    collate_sft,
    decode_chat,
    dpo_loss,
    encode_chat,
    format_chat,
    make_preference_pairs,
    masked_lm_loss,
    resize_vocab,
    sequence_logprobs,
)
from llama_edu.tokenizer import SentencePieceTokenizer, add_special_pieces
from llama_edu.train import PRETRAINED_DIR

SOURCE_MODEL = PRETRAINED_DIR / "tokenizer.model"


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [msg("user", "Who found the ball?")],
    [msg("system", "You answer questions about stories."), msg("user", "Who found the ball?")],
    [
        msg("system", "  Be brief.\n"),
        msg("user", "\tWhere did Mia go? "),
        msg("assistant", " She went to the park.\n\n"),
        msg("user", "Whom did she meet?"),
    ],
    [msg("user", "Write a story about a red kite."), msg("assistant", "Once upon a time...")],
    [msg("user", ""), msg("assistant", "   ")],
]

# ------------------------------------------------------------------------------ format_chat


def test_format_chat_layout_written_out_by_hand():
    text = format_chat([msg("system", " S "), msg("user", "Hi\n")], add_generation_prompt=True)
    assert text == (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert format_chat([msg("assistant", "A")]) == (
        "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
    )


# Llama 3's chat template, written from its documented behaviour: the bos token once, then per
# message a header with the role, two newlines, the trimmed content and <|eot_id|>; with
# add_generation_prompt an open assistant header at the end.
LLAMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for m in messages -%}"
    "{{- '<|start_header_id|>' ~ m['role'] ~ '<|end_header_id|>' ~ '\n\n' -}}"
    "{{- m['content'] | trim -}}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}"
    "{%- endif -%}"
)


@pytest.fixture(scope="module")
def hf_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{p: i + 1 for i, p in enumerate(CHAT_SPECIAL_PIECES)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        unk_token="<unk>",
        chat_template=LLAMA3_TEMPLATE,
    )


@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_format_chat_equals_transformers_apply_chat_template(hf_tokenizer, k, generation_prompt):
    messages = CONVERSATIONS[k]
    want = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    assert format_chat(messages, add_generation_prompt=generation_prompt) == want


@pytest.mark.parametrize(
    ("messages", "error", "words"),
    [
        ([], ValueError, ["empty"]),
        ("hello", TypeError, ["list of dicts"]),
        ({"role": "user", "content": "x"}, TypeError, ["list of dicts"]),
        ([msg("robot", "hi")], ValueError, ["unknown role 'robot'", "system, user, assistant"]),
        ([msg("ipython", "{}")], ValueError, ["unknown role"]),
        ([{"role": "user"}], ValueError, ["no 'content'"]),
        ([{"content": "hi"}], ValueError, ["no 'role'"]),
        ([{"role": "user", "contents": "hi"}], ValueError, ["no 'content'", "contents"]),
        ([{"role": "user", "content": "hi", "name": "x"}], ValueError, ["'name'"]),
        ([msg("user", 3)], TypeError, ["content of type int"]),
        ([msg("user", None)], TypeError, ["content of type NoneType"]),
        (["user: hi"], TypeError, ["message 0 is a str"]),
        ([msg("user", "hi"), msg("user", "a<|eot_id|>b")], ValueError, ["message 1", "injection"]),
        ([msg("user", "<|start_header_id|>system")], ValueError, ["'<|start_header_id|>'"]),
        ([msg("user", "x<|begin_of_text|>")], ValueError, ["injection"]),
        ([msg("user", "<|end_header_id|>")], ValueError, ["injection"]),
    ],
)
def test_format_chat_refuses_bad_input(messages, error, words):
    with pytest.raises(error) as info:
        format_chat(messages)
    for word in words:
        assert word in str(info.value)


def test_format_chat_does_not_change_its_input():
    messages = [msg("user", "  hi  ")]
    format_chat(messages, add_generation_prompt=True)
    assert messages == [msg("user", "  hi  ")]


# --------------------------------------------------------------------------- chat tokenizer


@pytest.fixture(scope="module")
def base_tok():
    return SentencePieceTokenizer(SOURCE_MODEL)


@pytest.fixture(scope="module")
def chat_tok(base_tok, tmp_path_factory):
    return chat_tokenizer(base_tok, tmp_path_factory.mktemp("chat") / "tokenizer.model")


ORDINARY = [
    "Once upon a time, Mia found a red ball in the park.",
    "Tom went to the garden.\nHe met a dog. The end.",
    "  two  spaces, digits 123, and <s> and </s> written as text; <|eot_id without its end",
    "überall 猫 \u2581",
]


def test_chat_pieces_get_new_ids_and_old_ids_keep_their_pieces(base_tok, chat_tok):
    old = base_tok.vocab_size
    assert chat_tok.vocab_size == old + 4
    for k, piece in enumerate(CHAT_SPECIAL_PIECES):
        assert chat_tok.piece_to_id(piece) == old + k
        assert chat_tok.id_to_piece(old + k) == piece
    for i in range(old):
        assert chat_tok.id_to_piece(i) == base_tok.id_to_piece(i)
        assert chat_tok.sp.GetScore(i) == base_tok.sp.GetScore(i)
    assert (chat_tok.bos_id, chat_tok.eos_id, chat_tok.unk_id) == (
        base_tok.bos_id,
        base_tok.eos_id,
        base_tok.unk_id,
    )


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_encodes_as_before(base_tok, chat_tok, text):
    assert chat_tok.encode(text, bos=True, eos=True) == base_tok.encode(text, bos=True, eos=True)
    ids = base_tok.encode(text)
    assert chat_tok.decode(ids) == base_tok.decode(ids)


def test_the_text_s_stays_ordinary_text_but_chat_pieces_are_matched(chat_tok):
    # <s> is a control piece: encode never makes it from text. The chat pieces are user-defined
    # pieces: SentencePiece matches them inside the text, before splitting the rest.
    assert chat_tok.bos_id not in chat_tok.encode("<s>Hi")
    assert chat_tok.encode("<|eot_id|>")[-1] == chat_tok.piece_to_id("<|eot_id|>")


@pytest.mark.parametrize("piece", CHAT_SPECIAL_PIECES)
@pytest.mark.parametrize(
    "template", ["{p}", "a{p}b", "word{p}word", " {p} ", "{p}{p}", "x\n\n{p}\n\nx", "猫{p}1"]
)
def test_each_chat_piece_is_one_id_wherever_it_stands(chat_tok, piece, template):
    text = template.format(p=piece)
    pid = chat_tok.piece_to_id(piece)
    ids = chat_tok.encode(text)
    assert ids.count(pid) == text.count(piece)
    # the rest of the text is encoded from the other characters only: no piece of the marker
    # is split into bytes or letters
    assert chat_tok.decode(ids) == text
    rest = [i for i in ids if i != pid]
    assert "|" not in chat_tok.decode(rest)


def test_source_model_file_is_never_changed(base_tok, tmp_path):
    before = SOURCE_MODEL.read_bytes()
    with pytest.raises(ValueError, match="own model file"):
        add_special_pieces(base_tok, ["<|x|>"], SOURCE_MODEL)
    add_special_pieces(base_tok, ["<|x|>"], tmp_path / "t.model")
    assert SOURCE_MODEL.read_bytes() == before
    assert base_tok.vocab_size == 512


def test_add_special_pieces_refuses_bad_input_and_keeps_files(base_tok, tmp_path):
    other = tmp_path / "other.model"
    other.write_bytes(b"not mine")
    with pytest.raises(FileExistsError, match="already exists"):
        add_special_pieces(base_tok, ["<|x|>"], other)
    assert other.read_bytes() == b"not mine"
    with pytest.raises(ValueError, match="twice"):
        add_special_pieces(base_tok, ["<|x|>", "<|x|>"], tmp_path / "a.model")
    with pytest.raises(ValueError, match="already a piece"):
        add_special_pieces(base_tok, ["<s>"], tmp_path / "a.model")
    with pytest.raises(ValueError, match="whitespace"):
        add_special_pieces(base_tok, ["<| x |>"], tmp_path / "a.model")
    with pytest.raises(ValueError, match="empty"):
        add_special_pieces(base_tok, [], tmp_path / "a.model")
    with pytest.raises(TypeError, match="list or tuple"):
        add_special_pieces(base_tok, "<|x|>", tmp_path / "a.model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        add_special_pieces(base_tok, ["<|x|>"], tmp_path / "missing" / "a.model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.model"]


def test_writing_the_same_chat_tokenizer_twice_is_allowed(base_tok, tmp_path):
    first = chat_tokenizer(base_tok, tmp_path / "t.model")
    again = chat_tokenizer(base_tok, tmp_path / "t.model")
    assert again.vocab_size == first.vocab_size == 516


def test_encode_chat_starts_with_begin_of_text(chat_tok, base_tok):
    text = format_chat([msg("user", "Hi")], add_generation_prompt=True)
    ids = encode_chat(chat_tok, text)
    pieces = [chat_tok.id_to_piece(i) for i in ids]
    assert pieces[:3] == ["<|begin_of_text|>", "<|start_header_id|>", "us"] or pieces[:2] == [
        "<|begin_of_text|>",
        "<|start_header_id|>",
    ]
    assert pieces.count("<|start_header_id|>") == 2
    assert pieces.count("<|end_header_id|>") == 2
    assert pieces.count("<|eot_id|>") == 1
    assert decode_chat(chat_tok, ids) == text
    with pytest.raises(ValueError, match="chat_tokenizer"):
        encode_chat(base_tok, text)
    with pytest.raises(TypeError, match="must be a str"):
        encode_chat(chat_tok, ids)


def test_encode_chat_encodes_each_part_alone_like_metas_chat_format(chat_tok, base_tok):
    # Meta's ChatFormat: header = [start] + encode(role) + [end] + encode("\n\n"), then
    # encode(content.strip()) and [eot]. The content keeps its word-start piece, as in a story.
    start, end, eot = (chat_tok.piece_to_id(p) for p in CHAT_SPECIAL_PIECES[1:])
    newline = base_tok.piece_to_id("<0x0A>")
    text = format_chat([msg("user", "Who found the kite?"), msg("assistant", " Leo ")])
    want = [chat_tok.piece_to_id("<|begin_of_text|>")]
    for role, content in (("user", "Who found the kite?"), ("assistant", "Leo")):
        want += [start, *base_tok.encode(role), end, newline, newline]
        want += [*base_tok.encode(content), eot]
    assert encode_chat(chat_tok, text) == want
    answer = want[want.index(eot) + 1 :][-4:-1]  # the assistant's content
    assert answer == base_tok.encode("Leo") and base_tok.id_to_piece(answer[0]).startswith("\u2581")
    assert decode_chat(chat_tok, want) == text


# ------------------------------------------------------------------------------- SFT example


def test_sft_example_masks_exactly_the_answer_and_its_eot(chat_tok):
    prompt = [msg("system", "Answer briefly."), msg("user", "Who found the ball?")]
    inputs, targets, mask = build_sft_example(chat_tok, prompt, "  Mia found it. ", max_len=256)
    assert inputs.shape == targets.shape == mask.shape
    assert mask.dtype == torch.bool
    assert torch.equal(inputs[1:], targets[:-1])
    assert chat_tok.id_to_piece(int(inputs[0])) == "<|begin_of_text|>"
    # the masked targets are a contiguous tail: the answer, then <|eot_id|>
    n = int(mask.sum())
    assert mask[-n:].all() and not mask[:-n].any()
    assert chat_tok.decode(targets[mask].tolist()) == "Mia found it.<|eot_id|>"
    # the input that predicts the first answer token is the last token of the prompt
    prompt_ids = inputs[: len(inputs) - n + 1].tolist()
    assert decode_chat(chat_tok, prompt_ids) == format_chat(prompt, add_generation_prompt=True)
    whole = decode_chat(chat_tok, torch.cat([inputs[:1], targets]).tolist())
    assert whole == format_chat([*prompt, msg("assistant", "Mia found it.")])


def test_sft_example_longer_than_the_context_is_refused(chat_tok):
    prompt = [msg("user", "Tell me a story.")]
    inputs, _, _ = build_sft_example(chat_tok, prompt, "Once upon a time.", max_len=256)
    n = len(inputs)
    build_sft_example(chat_tok, prompt, "Once upon a time.", max_len=n)  # fits exactly
    with pytest.raises(ValueError) as info:
        build_sft_example(chat_tok, prompt, "Once upon a time.", max_len=n - 1)
    assert f"{n + 1} tokens long" in str(info.value)
    assert f"max_len={n - 1}" in str(info.value)
    with pytest.raises(ValueError, match="unknown role"):
        build_sft_example(chat_tok, [msg("bot", "x")], "y", max_len=256)


# ------------------------------------------------------------------------------ resize_vocab


def tiny_args(**kw):
    base = dict(dim=16, n_layers=2, n_heads=2, vocab_size=20, multiple_of=8, max_seq_len=16)
    return ModelArgs(**{**base, **kw})


@pytest.mark.parametrize("tied", [False, True])
def test_resize_vocab_keeps_old_logits_and_starts_new_rows_at_the_mean(tied):
    torch.manual_seed(0)
    model = Llama(tiny_args(tie_embeddings=tied)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grown = resize_vocab(model, 24)
    assert grown.args.vocab_size == 24 and model.args.vocab_size == 20
    assert grown.tok_embeddings.weight.shape == (24, 16)
    assert grown.output.weight.shape == (24, 16)
    for k, v in model.state_dict().items():  # the input model is unchanged
        assert torch.equal(v, before[k])
    emb = model.tok_embeddings.weight.detach()
    for row in range(20, 24):
        mean = [sum(float(emb[i, j]) for i in range(20)) / 20 for j in range(16)]
        assert torch.allclose(grown.tok_embeddings.weight[row], torch.tensor(mean), atol=1e-6)
    assert (grown.output.weight is grown.tok_embeddings.weight) == tied
    tokens = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(grown(tokens)[..., :20], model(tokens))
    assert not grown.training


def test_resize_vocab_keeps_frozen_parameters_frozen_and_the_global_rng():
    model = Llama(tiny_args())
    model.layers[0].attention.wq.weight.requires_grad_(False)
    torch.manual_seed(5)
    grown = resize_vocab(model, 22)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)
    assert not grown.layers[0].attention.wq.weight.requires_grad
    assert grown.output.weight.requires_grad and grown.layers[1].attention.wq.weight.requires_grad


def test_resize_vocab_refuses_a_model_whose_layers_were_replaced():
    model = Llama(tiny_args())
    model.layers[0].attention.wq = torch.nn.Sequential(model.layers[0].attention.wq)
    with pytest.raises(ValueError, match="before adding"):
        resize_vocab(model, 22)


def test_resize_vocab_refuses_shrinking():
    model = Llama(tiny_args())
    with pytest.raises(ValueError, match="smaller than"):
        resize_vocab(model, 19)
    with pytest.raises(TypeError, match="int"):
        resize_vocab(model, 24.0)


# ---------------------------------------------------------------------------- masked_lm_loss


def test_masked_lm_loss_against_a_hand_computation():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], [[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]]])
    targets = torch.tensor([[1, 0], [2, 1]])
    mask = torch.tensor([[True, False], [True, True]])

    def nll(row, target):
        return math.log(sum(math.exp(v) for v in row)) - row[target]

    want = (nll([1.0, 2.0, 0.5], 1) + nll([2.0, -1.0, 0.0], 2) + nll([1.0, 1.0, 1.0], 1)) / 3
    assert masked_lm_loss(logits, targets, mask).item() == pytest.approx(want, rel=1e-6)
    assert masked_lm_loss(logits, targets, mask.float()).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(
    ("logits", "targets", "mask", "error", "words"),
    [
        (torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4), ValueError,
         ["targets has shape (2, 4)", "(2, 3)"]),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2), ValueError,
         ["mask has shape (2, 2)"]),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), ValueError,
         ["False everywhere"]),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), 0.5),
         ValueError, ["only 0 and 1"]),
        (torch.zeros(3, 5), torch.zeros(3, dtype=torch.long), torch.ones(3), ValueError,
         ["(B, T, V)"]),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3), torch.ones(2, 3), TypeError, ["integer"]),
        (torch.zeros(1, 2, 5), torch.tensor([[0, 5]]), torch.ones(1, 2), ValueError,
         ["outside the vocabulary"]),
    ],
)  # fmt: skip
def test_masked_lm_loss_refuses_bad_input(logits, targets, mask, error, words):
    with pytest.raises(error) as info:
        masked_lm_loss(logits, targets, mask)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------------- sequence_logprobs


def test_sequence_logprobs_sums_the_masked_next_token_log_probs():
    torch.manual_seed(0)
    model = Llama(tiny_args()).eval()
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 3:] = True
    mask[1, [1, 5]] = True
    got = sequence_logprobs(model, ids, mask)
    assert got.shape == (2,)
    with torch.no_grad():
        for b in range(2):
            want = 0.0
            for t in range(1, 7):
                if mask[b, t]:  # run the prefix alone: the last position predicts token t
                    last = model(ids[b : b + 1, :t])[0, -1].double()
                    want += float(last[ids[b, t]] - torch.logsumexp(last, 0))
            assert got[b].item() == pytest.approx(want, abs=1e-4)
    got.sum().backward()  # gradients reach the model
    assert model.output.weight.grad is not None


def test_sequence_logprobs_refuses_a_mask_on_the_first_token():
    model = Llama(tiny_args())
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"mask\[:, 0\]"):
        sequence_logprobs(model, ids, torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask has shape"):
        sequence_logprobs(model, ids, torch.ones(1, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------- dpo_loss


def test_dpo_loss_against_a_hand_computation():
    pc, pr = [-5.0, -12.0], [-7.0, -10.0]
    rc, rr = [-6.0, -11.0], [-6.5, -10.5]
    beta = 0.5
    # pair 0: margin (-5 + 6) - (-7 + 6.5) = 1.5; pair 1: (-12 + 11) - (-10 + 10.5) = -1.5
    terms = [-math.log(1 / (1 + math.exp(-beta * m))) for m in (1.5, -1.5)]
    want = sum(terms) / 2
    got = dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # at the start of DPO the policy is the reference: every margin is 0 and the loss is log 2
    same = torch.tensor([-3.0, -4.0, -5.0])
    assert dpo_loss(same, same - 1, same, same - 1, 0.1).item() == pytest.approx(math.log(2))


def test_dpo_loss_falls_when_the_chosen_log_prob_rises():
    pc = torch.tensor([-5.0, -8.0], requires_grad=True)
    pr = torch.tensor([-6.0, -7.0], requires_grad=True)
    ref = torch.tensor([-5.5, -7.5])
    loss = dpo_loss(pc, pr, ref, ref, 0.2)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    with torch.no_grad():
        assert dpo_loss(pc + 1, pr, ref, ref, 0.2) < loss
        assert dpo_loss(pc, pr + 1, ref, ref, 0.2) > loss


def test_dpo_loss_stays_finite_for_huge_margins():
    big = torch.tensor([1000.0])
    zero = torch.tensor([0.0])
    assert dpo_loss(zero, big, zero, zero, 1.0).item() == pytest.approx(1000.0)
    assert dpo_loss(big, zero, zero, zero, 1.0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("args", "beta", "error", "words"),
    [
        ((torch.zeros(2),) * 4, 0.0, ValueError, ["beta must be a finite number > 0"]),
        ((torch.zeros(2),) * 4, -0.1, ValueError, ["> 0"]),
        ((torch.zeros(2),) * 4, math.inf, ValueError, ["finite"]),
        ((torch.zeros(2),) * 4, "0.1", TypeError, ["beta must be a number"]),
        ((torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2)), 0.1, ValueError,
         ["same shape", "policy_rejected_logps"]),
        ((torch.zeros(2),) * 3 + ([0.0, 0.0],), 0.1, TypeError, ["ref_rejected_logps"]),
        ((torch.zeros(0),) * 4, 0.1, ValueError, ["no pairs"]),
    ],
)  # fmt: skip
def test_dpo_loss_refuses_bad_input(args, beta, error, words):
    with pytest.raises(error) as info:
        dpo_loss(*args, beta)
    for word in words:
        assert word in str(info.value)


def test_a_pair_with_the_same_chosen_and_rejected_answer_is_refused():
    check_pair("Mia found the ball.", "Tom found the ball.")
    check_pair([1, 2, 3], torch.tensor([1, 2, 4]))
    with pytest.raises(ValueError, match="are the same"):
        check_pair("Mia found the ball.", "Mia found the ball.")
    with pytest.raises(ValueError, match="are the same"):
        check_pair([1, 2, 3], torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="both"):
        check_pair("abc", [1, 2])
    assert make_preference_pairs(["a", "b"], ["c", "d"]) == [("a", "c"), ("b", "d")]
    with pytest.raises(ValueError, match="pair 1"):
        make_preference_pairs(["a", "b"], ["c", "b"])
    with pytest.raises(ValueError, match="2 chosen and 1 rejected"):
        make_preference_pairs(["a", "b"], ["c"])


def test_collate_sft_pads_and_agrees_with_sequence_logprobs(chat_tok):
    torch.manual_seed(0)
    model = resize_vocab(Llama(tiny_args(vocab_size=512, max_seq_len=64)), 516).eval()
    examples = [
        build_sft_example(chat_tok, [msg("user", "Who?")], "Mia.", max_len=64),
        build_sft_example(chat_tok, [msg("user", "Where did Tom go?")], "To the park.", 64),
    ]
    inputs, targets, mask = collate_sft(examples, pad_id=0)
    n0, n1 = len(examples[0][0]), len(examples[1][0])
    assert inputs.shape == (2, max(n0, n1))
    assert not mask[0, n0:].any() and (inputs[0, n0:] == 0).all()
    assert torch.equal(mask[1, :n1], examples[1][2])
    ids = torch.cat([inputs[:, :1], targets], 1)
    ids_mask = torch.cat([torch.zeros(2, 1, dtype=torch.bool), mask], 1)
    with torch.no_grad():
        logps = sequence_logprobs(model, ids, ids_mask)
        for b, (x, y, m) in enumerate(examples):  # each example alone, without padding
            alone = masked_lm_loss(model(x[None]), y[None], m[None]) * m.sum()
            assert logps[b].item() == pytest.approx(-alone.item(), rel=1e-5)
    padded = collate_sft(examples, pad_id=0, multiple_of=32)
    assert padded[0].shape == (2, 32 * math.ceil(max(n0, n1) / 32))
    for full, short in zip(padded, (inputs, targets, mask), strict=True):
        assert torch.equal(full[:, : short.shape[1]], short)
    assert not padded[2][:, max(n0, n1) :].any() and (padded[0][:, max(n0, n1) :] == 0).all()
    with pytest.raises(ValueError, match="multiple_of"):
        collate_sft(examples, pad_id=0, multiple_of=0)
    with pytest.raises(ValueError, match="triple"):
        collate_sft([(inputs[0], targets[0])], pad_id=0)
    with pytest.raises(ValueError, match="empty"):
        collate_sft([], pad_id=0)


def test_encode_chat_equals_transformers_tokenizer_from_export_hf_part_by_part(chat_tok, tmp_path):
    from transformers import AutoTokenizer

    from llama_edu.interop import export_hf

    model = Llama(tiny_args(vocab_size=chat_tok.vocab_size))
    hf = AutoTokenizer.from_pretrained(export_hf(model, tmp_path / "hf", tokenizer=chat_tok))
    newline = hf("\n", add_special_tokens=False)["input_ids"][-1:]  # the newline byte
    for messages in CONVERSATIONS:
        for generation_prompt in (False, True):
            text = format_chat(messages, add_generation_prompt=generation_prompt)
            want = []
            for part in re.split(r"(<\|[a-z_]+\|>)", text):
                rest = part.lstrip("\n")
                want += newline * (len(part) - len(rest))
                if rest:
                    want += hf(rest, add_special_tokens=False)["input_ids"]
            assert encode_chat(chat_tok, text) == want
            assert decode_chat(chat_tok, want) == text
