"""A bilingual (English and simplified Chinese) glossary of the terms used in the workbook.

Each `Term` has the English term, the Chinese term that Chinese machine-learning texts use, a
one-sentence definition in each language, and the chapter that introduces it. `lookup` searches
the terms, and `glossary_table` renders them as an HTML table for a notebook (chapter 13).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

__all__ = ["TERMS", "Term", "glossary_table", "lookup"]


@dataclass(frozen=True)
class Term:
    """One glossary entry."""

    english: str
    chinese: str
    definition: str
    definition_zh: str
    chapter: int  # the notebook that introduces the term: 2 for 02_tokenization.ipynb


def _t(english: str, chinese: str, chapter: int, definition: str, definition_zh: str) -> Term:
    return Term(english, chinese, definition, definition_zh, chapter)


TERMS: tuple[Term, ...] = (
    # --- 00 welcome ---------------------------------------------------------------------------
    _t("Language model", "语言模型", 0,
       "A model that gives the probability of the next token from the tokens before it, and so "
       "the probability of a whole text.",
       "根据前面的词元给出下一个词元的概率、从而给出整段文本概率的模型。"),
    _t("Large language model (LLM)", "大语言模型", 0,
       "A language model with billions of parameters, trained on a very large amount of text.",
       "参数量达到数十亿、在海量文本上训练的语言模型。"),
    _t("LLaMA", "LLaMA 模型系列", 0,
       "Meta AI's family of decoder-only language models, whose name stands for Large Language "
       "Model Meta AI.",
       "Meta AI 发布的仅解码器语言模型系列，名称是 Large Language Model Meta AI 的缩写。"),
    _t("Transformer", "Transformer 架构", 0,
       "A neural network made of attention and feed-forward layers with residual connections, "
       "introduced by Vaswani et al. in 2017.",
       "由注意力层、前馈层和残差连接构成的神经网络结构，由 Vaswani 等人于 2017 年提出。"),
    _t("Decoder-only", "仅解码器架构", 0,
       "A Transformer made only of blocks with causal self-attention and no encoder, the design "
       "of every LLaMA text model.",
       "只由带因果自注意力的块组成、没有编码器的 Transformer，所有 LLaMA 文本模型都采用这种结构。"),
    _t("Softmax", "Softmax 函数（归一化指数函数）", 0,
       "The function that turns scores into probabilities: take the exponential of each score "
       "and divide by their sum.",
       "把一组分数变成概率的函数：对每个分数取指数，再除以它们的总和。"),
    _t("Logit", "未归一化对数概率（logit）", 0,
       "The raw score that a model gives one vocabulary entry, before the softmax.",
       "模型在 softmax 之前给词表中某个条目的原始分数。"),
    # --- 01 PyTorch primer -------------------------------------------------------------------
    _t("Tensor", "张量", 1,
       "A grid of numbers of one type with any number of axes, the data structure that "
       "PyTorch computes with.",
       "由同一类型的数构成、可以有任意多个轴的数组，是 PyTorch 进行计算的基本数据结构。"),
    _t("Shape", "形状", 1,
       "The size of each axis of a tensor, such as (batch, seq, dim) = (2, 4, 8).",
       "张量每个轴的长度，例如 (batch, seq, dim) = (2, 4, 8)。"),
    _t("Broadcasting", "广播", 1,
       "The rule that lets an operation combine tensors of different shapes by lining the "
       "shapes up on the right and repeating axes of size 1.",
       "让不同形状的张量也能逐元素运算的规则：把形状从右侧对齐，并重复长度为 1 的轴。"),
    _t("Gradient", "梯度", 1,
       "The derivative of a loss with respect to each number of a tensor, which says how the "
       "loss changes when that number changes.",
       "损失对张量中每个数的导数，表示这个数改变时损失如何变化。"),
    _t("Autograd", "自动求导", 1,
       "PyTorch's system that records the operations on tensors and computes all gradients "
       "with one call to backward().",
       "PyTorch 记录张量上的运算、并通过一次 backward() 调用算出所有梯度的机制。"),
    _t("Module (nn.Module)", "模块", 1,
       "A PyTorch building block that owns its parameters and computes its output in forward.",
       "PyTorch 中拥有自己的参数、并在 forward 方法中计算输出的构件。"),
    _t("Parameter", "参数", 1,
       "One number inside the model that training changes, such as one entry of a weight "
       "matrix.",
       "模型中由训练来调整的一个数，例如权重矩阵中的一个元素。"),
    _t("Gradient descent", "梯度下降", 1,
       "Moving every parameter a small step against its gradient, so that the loss goes down.",
       "把每个参数沿梯度的反方向移动一小步，使损失下降。"),
    _t("Batch", "批次", 1,
       "The group of sequences used together in one training step.",
       "一次训练更新中一起使用的一组序列。"),
    _t("Learning rate", "学习率", 1,
       "The factor that sets the size of each update step.",
       "决定每一步更新幅度的系数。"),
    # --- 02 tokenization ----------------------------------------------------------------------
    _t("Token", "词元", 2,
       "One unit of text (a word, a piece of a word, a character or a byte) that the model "
       "reads as one integer id.",
       "模型读取的一个文本单位（词、子词、字符或字节），对应一个整数编号。"),
    _t("Tokenizer", "分词器", 2,
       "The program that splits text into tokens and maps them to ids, and maps ids back to "
       "text.",
       "把文本切分成词元并映射为编号、也能把编号还原成文本的程序。"),
    _t("Tokenization", "分词（词元化）", 2,
       "The step that turns a text into a list of token ids.",
       "把一段文本变成词元编号序列的过程。"),
    _t("Token id", "词元编号", 2,
       "The integer that stands for one token of the vocabulary.",
       "词表中代表某个词元的整数。"),
    _t("Vocabulary", "词表", 2,
       "The fixed list of all the tokens that a tokenizer can produce.",
       "分词器能够产生的全部词元的固定列表。"),
    _t("Vocabulary size", "词表大小", 2,
       "The number of entries in the vocabulary: 32000 for LLaMA 1 and 2, 128256 for Llama 3.",
       "词表中的条目数：LLaMA 1 和 2 为 32000，Llama 3 为 128256。"),
    _t("Byte-pair encoding (BPE)", "字节对编码", 2,
       "A way to build a vocabulary by merging the most frequent pair of neighbouring symbols "
       "into a new symbol, again and again.",
       "反复把出现最多的相邻符号对合并成一个新符号来构建词表的方法。"),
    _t("Merge rule", "合并规则", 2,
       "One learned BPE step that says which pair of symbols becomes one new symbol.",
       "BPE 学到的一条规则，规定哪一对符号合并成一个新符号。"),
    _t("SentencePiece", "SentencePiece 分词库", 2,
       "Google's open-source tokenizer library, which LLaMA 1 and Llama 2 use for their BPE "
       "tokenizer.",
       "谷歌开源的分词工具库，LLaMA 1 和 Llama 2 用它实现 BPE 分词器。"),
    _t("UTF-8", "UTF-8 编码", 2,
       "The standard way to store text as bytes: one byte for an ASCII letter, three bytes for "
       "most Chinese characters.",
       "把文本存成字节的标准编码：一个 ASCII 字母占 1 个字节，大多数汉字占 3 个字节。"),
    _t("Byte fallback", "字节回退", 2,
       "A tokenizer rule that writes a character missing from the vocabulary as its UTF-8 "
       "bytes, so that no text is unknown.",
       "分词器的一条规则：词表里没有的字符用它的 UTF-8 字节表示，因此不会出现未知文本。"),
    _t("Special token", "特殊词元", 2,
       "A token with a fixed role, such as marking the start or the end of a text, that is not "
       "ordinary text.",
       "有固定作用（例如标记文本的开始或结束）、不代表普通文本的词元。"),
    _t("Beginning-of-sequence token (BOS)", "序列开始标记", 2,
       "The special token <s> put in front of a text, so that the model knows where the text "
       "starts.",
       "放在文本最前面的特殊词元 <s>，让模型知道文本从哪里开始。"),
    _t("End-of-sequence token (EOS)", "序列结束标记", 2,
       "The special token </s> that marks the end of a text; generation stops when the model "
       "produces it.",
       "标记文本结束的特殊词元 </s>；模型生成它时就停止生成。"),
    # --- 03 embeddings ------------------------------------------------------------------------
    _t("Embedding", "嵌入（词嵌入）", 3,
       "The vector that a model looks up for one token id.",
       "模型为一个词元编号查到的向量。"),
    _t("Embedding matrix", "嵌入矩阵", 3,
       "The learned table of shape (vocabulary size, model width) whose row i is the embedding "
       "of token i.",
       "形状为（词表大小，模型宽度）的可学习表格，第 i 行是词元 i 的嵌入向量。"),
    _t("One-hot vector", "独热向量", 3,
       "A vector of zeros with a single 1 at the index of one token.",
       "只在某个词元的位置上为 1、其余位置都为 0 的向量。"),
    _t("Tied embeddings", "输入输出嵌入共享（权重绑定）", 3,
       "Using one matrix for both the input embeddings and the output layer, as Llama 3.2 1B "
       "and 3B do.",
       "输入嵌入和输出层使用同一个矩阵，Llama 3.2 的 1B 和 3B 模型就是这样做的。"),
    _t("Cosine similarity", "余弦相似度", 3,
       "The cosine of the angle between two vectors: 1 when they point the same way, 0 when "
       "they are at a right angle.",
       "两个向量夹角的余弦：方向相同时为 1，互相垂直时为 0。"),
    # --- 04 attention -------------------------------------------------------------------------
    _t("Attention", "注意力机制", 4,
       "The operation that builds the output of each position as a weighted average of the "
       "value vectors of positions.",
       "把各个位置的值向量加权平均，作为每个位置输出的运算。"),
    _t("Self-attention", "自注意力", 4,
       "Attention in which the queries, keys and values all come from the same sequence.",
       "查询、键和值都来自同一个序列的注意力。"),
    _t("Query", "查询向量", 4,
       "The vector with which a position asks which other positions matter to it.",
       "某个位置用来“询问”哪些位置与它相关的向量。"),
    _t("Key", "键向量", 4,
       "The vector of a position that a query is compared with to give a score.",
       "与查询向量比较、用来得到注意力分数的向量。"),
    _t("Value", "值向量", 4,
       "The vector of a position that goes into the output, weighted by the attention weights.",
       "按注意力权重加权后进入输出的向量。"),
    _t("Scaled dot-product attention", "缩放点积注意力", 4,
       "The formula softmax(Q K^T / sqrt(d)) V, where d is the width of one head.",
       "公式 softmax(QK^T/√d)V，其中 d 是一个注意力头的宽度。"),
    _t("Attention weights", "注意力权重", 4,
       "The softmax of the scores: for each query, numbers over the keys that are never "
       "negative and sum to 1.",
       "分数经过 softmax 的结果：对每个查询，它们在各个键上非负，且总和为 1。"),
    _t("Causal mask", "因果掩码", 4,
       "The mask that adds minus infinity to the scores of later positions, so that no "
       "position can see the future.",
       "给后面位置的分数加上负无穷的掩码，使任何位置都看不到之后的词元。"),
    _t("Multi-head attention", "多头注意力", 4,
       "Several attention heads run side by side on different slices of the features, with "
       "their outputs joined.",
       "在特征的不同切片上并行运行多个注意力头，再把它们的输出拼接起来。"),
    _t("Attention head", "注意力头", 4,
       "One independent attention computation with its own queries, keys and values.",
       "拥有自己的查询、键和值的一路独立注意力计算。"),
    _t("Head dimension", "头维度", 4,
       "The width of the query, key and value vectors of one head: the model width divided by "
       "the number of heads, 128 in most Llama models.",
       "一个注意力头的查询、键、值向量的宽度，等于模型宽度除以头数，大多数 Llama 模型为 128。"),
    _t("Grouped-query attention (GQA)", "分组查询注意力", 4,
       "Attention in which several query heads share one key/value head, which makes the KV "
       "cache smaller.",
       "多个查询头共享同一组键/值头的注意力，可以减小键值缓存。"),
    _t("KV cache", "键值缓存", 4,
       "The stored keys and values of earlier positions, reused for each new generated token "
       "instead of being computed again.",
       "保存下来的之前各位置的键和值，生成每个新词元时直接复用，而不是重新计算。"),
    _t("Encoder-decoder", "编码器-解码器架构", 4,
       "A Transformer whose decoder reads the output of a separate encoder through "
       "cross-attention, like the 2017 translation model; LLaMA is not one.",
       "解码器通过交叉注意力读取独立编码器输出的 Transformer，例如 2017 年的翻译模型；"
       "LLaMA 不是这种结构。"),
    _t("Cross-attention", "交叉注意力", 4,
       "Attention whose queries come from one sequence and whose keys and values come from "
       "another; a decoder-only model has none.",
       "查询来自一个序列、键和值来自另一个序列的注意力；仅解码器模型没有这种层。"),
    # --- 05 positions -------------------------------------------------------------------------
    _t("Positional encoding", "位置编码", 5,
       "Any way of telling a model the order of the tokens.",
       "让模型获得词元顺序信息的任何方法。"),
    _t("Sinusoidal positional encoding", "正弦位置编码", 5,
       "The original Transformer's position vectors, with sin on the even and cos on the odd "
       "dimensions, added to the embeddings.",
       "原始 Transformer 的位置向量：偶数维用 sin，奇数维用 cos，并加到词嵌入上。"),
    _t("Rotary position embedding (RoPE)", "旋转位置编码", 5,
       "Llama's way of encoding positions: turn each pair of features of the queries and keys "
       "by an angle that grows with the position.",
       "Llama 编码位置的方法：把查询和键的每一对特征旋转一个随位置增大的角度。"),
    _t("Relative position", "相对位置", 5,
       "The distance between two tokens; with RoPE an attention score depends on it and not on "
       "the absolute positions.",
       "两个词元之间的距离；使用 RoPE 时，注意力分数只取决于它，而与绝对位置无关。"),
    _t("RoPE base (theta)", "RoPE 基频（θ）", 5,
       "The constant that sets how slowly the slowest pairs turn: 10000 in LLaMA 1 and 2, "
       "500000 in Llama 3.",
       "决定最慢的特征对旋转得有多慢的常数：LLaMA 1 和 2 为 10000，Llama 3 为 500000。"),
    _t("Context length", "上下文长度", 5,
       "The largest number of tokens a model reads at once: 2048 for LLaMA 1, 4096 for Llama 2, "
       "8192 for Llama 3, 131072 for Llama 3.1.",
       "模型一次能读取的最多词元数：LLaMA 1 为 2048，Llama 2 为 4096，Llama 3 为 8192，"
       "Llama 3.1 为 131072。"),
    _t("RoPE scaling", "RoPE 缩放（上下文扩展）", 5,
       "Slowing down the slow RoPE pairs for texts longer than a model was first trained on; "
       "Llama 3.1 combines it with continued pre-training on longer and longer texts to reach "
       "128K tokens.",
       "对超过最初训练长度的文本放慢 RoPE 中慢速特征对的旋转；"
       "Llama 3.1 把它与在越来越长的文本上继续预训练结合起来，达到 128K 词元。"),
    # --- 06 feed-forward ----------------------------------------------------------------------
    _t("Feed-forward network (FFN)", "前馈网络", 6,
       "The small network inside each block that transforms every position on its own.",
       "每个块里对每个位置单独做变换的小型网络。"),
    _t("Activation function", "激活函数", 6,
       "A non-linear function applied to each feature on its own, such as ReLU, GELU or SiLU.",
       "逐个特征作用的非线性函数，例如 ReLU、GELU 或 SiLU。"),
    _t("ReLU", "ReLU 激活函数（线性整流函数）", 6,
       "The activation max(0, x).",
       "激活函数 max(0, x)。"),
    _t("GELU", "GELU 激活函数（高斯误差线性单元）", 6,
       "The activation x times the standard normal distribution function at x, used by GPT-2 "
       "and BERT.",
       "激活函数 x·Φ(x)，其中 Φ 是标准正态分布函数，GPT-2 和 BERT 使用它。"),
    _t("SiLU (Swish)", "SiLU 激活函数（Swish）", 6,
       "The activation x times sigmoid(x).",
       "激活函数 x·sigmoid(x)。"),
    _t("Gated linear unit (GLU)", "门控线性单元", 6,
       "A layer whose output is one linear projection multiplied, feature by feature, by a "
       "second projection that went through an activation.",
       "输出为一个线性投影与另一个经过激活函数的线性投影逐元素相乘的层。"),
    _t("SwiGLU", "SwiGLU 前馈层", 6,
       "Llama's feed-forward, w2(silu(w1 x) * w3 x): three matrices and no biases.",
       "Llama 的前馈层 w2(silu(w1 x) * w3 x)：三个矩阵，没有偏置。"),
    _t("Hidden dimension", "隐藏层维度", 6,
       "The width inside the feed-forward network: in Llama 8/3 of the model width before "
       "ffn_dim_multiplier and rounding (11008 for Llama 2 7B, 14336 for Llama 3 8B).",
       "前馈网络内部的宽度：在 Llama 中，乘以 ffn_dim_multiplier 并取整之前为模型宽度的 8/3"
       "（Llama 2 7B 为 11008，Llama 3 8B 为 14336）。"),
    # --- 07 normalization ---------------------------------------------------------------------
    _t("Layer normalization (LayerNorm)", "层归一化", 7,
       "A norm that subtracts the mean of a vector, divides by its standard deviation, then "
       "applies a learned gain and bias.",
       "先减去向量的均值、再除以标准差，然后乘以可学习增益并加上偏置的归一化方法。"),
    _t("RMSNorm", "均方根归一化", 7,
       "The norm that Llama uses: divide a vector by its root mean square and multiply by a "
       "learned gain, with no mean and no bias.",
       "Llama 使用的归一化：把向量除以它的均方根再乘以可学习增益，不减均值，也没有偏置。"),
    _t("Pre-norm", "前置归一化", 7,
       "Putting the norm at the input of each sub-layer and adding the result to the "
       "un-normalised stream, as Llama does.",
       "把归一化放在每个子层的输入处，并把子层的结果加回未归一化的残差流，Llama 就是这样做的。"),
    _t("Post-norm", "后置归一化", 7,
       "Putting the norm after the residual addition, as the original Transformer of 2017 did.",
       "把归一化放在残差相加之后，2017 年的原始 Transformer 就是这样做的。"),
    _t("Residual connection", "残差连接", 7,
       "Adding the input of a sub-layer to its output, so that each sub-layer only adds a "
       "correction.",
       "把子层的输入加到它的输出上，使每个子层只在原有表示上做修正。"),
    _t("Residual stream", "残差流", 7,
       "The running vector at each position that every block reads from and adds its result "
       "to.",
       "每个位置上贯穿所有块的向量，每个块都从中读取，并把结果加回去。"),
    _t("Gain (norm weight)", "增益（缩放权重）", 7,
       "The learned factor, one per feature, that a norm multiplies its output by.",
       "归一化层给输出的每个特征所乘的可学习系数。"),
    _t("Epsilon (eps)", "数值稳定常数（eps）", 7,
       "A small number added inside the square root of a norm, so that it never divides by "
       "zero.",
       "加在归一化平方根里的一个小常数，用来防止除以零。"),
    _t("float16 (half precision)", "半精度浮点数（float16）", 7,
       "A 16-bit number format with a small range: its largest number is 65504, and values "
       "from 65520 up become infinity.",
       "16 位浮点格式，数值范围小：最大的数是 65504，大于等于 65520 的值会变成无穷大。"),
    _t("bfloat16", "bfloat16 浮点格式（脑浮点数）", 7,
       "A 16-bit number format with the range of float32 but fewer digits, widely used to "
       "train large models such as Llama.",
       "16 位浮点格式，数值范围与 float32 相同但有效位数更少，广泛用于训练 Llama 等大模型。"),
    # --- 08 the full model --------------------------------------------------------------------
    _t("Transformer block", "Transformer 块（解码器层）", 8,
       "One layer of the model: attention, then feed-forward, each with its own RMSNorm and "
       "residual connection.",
       "模型中的一层：先是注意力，然后是前馈网络，两者各有自己的 RMSNorm 和残差连接。"),
    _t("Causality", "因果性", 8,
       "The property that the output at a position never depends on later tokens.",
       "某个位置的输出永远不依赖后面词元的性质。"),
    _t("Parameter count", "参数量", 8,
       "The total number of parameters of a model, for example 6,738,415,616 for Llama 2 7B.",
       "模型参数的总数，例如 Llama 2 7B 有 6,738,415,616 个参数。"),
    _t("State dict", "状态字典", 8,
       "PyTorch's dictionary from parameter names to weight tensors, used to save and load a "
       "model.",
       "PyTorch 中从参数名到权重张量的字典，用来保存和加载模型。"),
    # --- 09 training --------------------------------------------------------------------------
    _t("Next-token prediction", "下一个词元预测", 9,
       "The pretraining task of a language model: predict each token from the tokens before it.",
       "语言模型的预训练任务：根据前面的词元预测每一个词元。"),
    _t("Cross-entropy loss", "交叉熵损失", 9,
       "Minus the log-probability that the model gives the correct next token, averaged over "
       "the positions.",
       "模型给正确的下一个词元的概率取对数再取负，并在各个位置上求平均。"),
    _t("Bits per character", "每字符比特数", 9,
       "A loss in bits divided by the number of characters, so that models with different "
       "tokenizers can be compared.",
       "以比特为单位、按字符数平均的损失，可以用来比较使用不同分词器的模型。"),
    _t("Entropy floor", "熵下界", 9,
       "The lowest average loss that any model can reach on a source of text, set by the "
       "randomness of the source itself.",
       "任何模型在某个文本来源上能达到的最低平均损失，由该来源本身的随机性决定。"),
    _t("Bigram model", "二元语法模型", 9,
       "A simple model that predicts each symbol from the one symbol just before it.",
       "只根据前一个符号预测下一个符号的简单模型。"),
    _t("Excess over the floor", "超出熵下界的部分", 9,
       "A model's bits per character minus the exact entropy of the same text: what the model "
       "still loses against a perfect model.",
       "模型的每字符比特数减去同一文本的精确熵：模型与完美模型相比仍然多付出的部分。"),
    _t("Gap closed", "已缩小的差距", 9,
       "The share of the distance from the bigram baseline down to the entropy floor that a "
       "model has covered: (bigram - model) / (bigram - floor).",
       "模型在从二元语法基线到熵下界的距离中已走过的比例：(二元 - 模型) / (二元 - 下界)。"),
    _t("Reference band", "参考区间", 9,
       "The range of loss curves of one recommended training run over several seeds, drawn behind "
       "a learner's own curve to show whether it is normal.",
       "同一推荐训练配置在多个随机种子下的损失曲线范围，画在学习者自己的曲线后面，用来判断是否正常。"),
    _t("Perplexity", "困惑度", 9,
       "The exponential of the loss in nats, e^loss: the number of equally likely choices that "
       "would leave the model as uncertain as it is.",
       "以奈特为单位的损失的指数 e^loss：让模型同样不确定的等可能选项的个数。"),
    _t("Pretraining", "预训练", 9,
       "The first and largest training stage: next-token prediction on a large amount of text "
       "without labels.",
       "第一个也是规模最大的训练阶段：在大量无标注文本上做下一个词元预测。"),
    _t("Learning-rate warm-up", "学习率预热", 9,
       "Raising the learning rate from zero during the first steps of training (2000 steps for "
       "LLaMA 1).",
       "在训练最初的若干步里把学习率从零逐渐升高（LLaMA 1 为 2000 步）。"),
    _t("Cosine decay", "余弦衰减", 9,
       "Lowering the learning rate along half a cosine wave, from its peak to a final value "
       "(10% of the peak for LLaMA 1).",
       "让学习率沿半个余弦波从峰值降到最终值（LLaMA 1 为峰值的 10%）。"),
    _t("AdamW", "AdamW 优化器", 9,
       "Adam with decoupled weight decay; LLaMA 1 used beta1 0.9, beta2 0.95 and weight decay "
       "0.1.",
       "带解耦权重衰减的 Adam 优化器；LLaMA 1 使用 beta1=0.9、beta2=0.95、权重衰减 0.1。"),
    _t("Weight decay", "权重衰减", 9,
       "Shrinking the weights a little at every step, which keeps them small.",
       "每一步都把权重稍微缩小一点，使它们保持较小的数值。"),
    _t("Gradient clipping", "梯度裁剪", 9,
       "Scaling the gradient down when its norm is above a limit (1.0 for LLaMA 1), so that one "
       "bad batch cannot ruin training.",
       "当梯度的范数超过上限（LLaMA 1 为 1.0）时按比例缩小梯度，防止个别批次破坏训练。"),
    _t("Validation set", "验证集", 9,
       "Held-out data that is never trained on, used to measure the loss honestly.",
       "不参与训练、用来如实衡量损失的保留数据。"),
    _t("Overfitting", "过拟合", 9,
       "A model fitting its training data better and better while it gets worse on new data.",
       "模型在训练数据上越来越好、在新数据上却越来越差的现象。"),
    _t("Checkpoint", "检查点", 9,
       "A saved copy of the weights and the training state, from which training or use can "
       "go on.",
       "保存下来的权重和训练状态，可以据此继续训练或直接使用模型。"),
    _t("Temperature", "温度", 10,
       "The number that the logits are divided by before sampling: below 1 sharpens the "
       "distribution, above 1 flattens it.",
       "采样前用来除 logits 的数：小于 1 使分布更尖锐，大于 1 使分布更平坦。"),
    _t("Greedy decoding", "贪心解码", 10,
       "Generating text by always taking the most likely next token.",
       "每一步都选概率最大的下一个词元来生成文本。"),
    _t("Sampling", "采样", 10,
       "Generating text by drawing each next token at random from the model's probabilities.",
       "按模型给出的概率随机抽取下一个词元来生成文本。"),
    _t("Top-k sampling", "Top-k 采样", 10,
       "Sampling only among the k most likely next tokens, after setting all other logits to "
       "minus infinity.",
       "把其余 logits 设为负无穷后，只在概率最高的 k 个词元中采样。"),
    _t("Top-p (nucleus) sampling", "Top-p 采样（核采样）", 10,
       "Sampling only among the smallest set of most likely tokens whose probabilities add up "
       "to at least p, renormalised.",
       "只在概率之和至少达到 p 的最小高概率词元集合中按重新归一化后的概率采样。"),
    _t("Beam search", "束搜索", 10,
       "Decoding that keeps the few most likely partial sequences at every step instead of "
       "only one.",
       "每一步保留若干条概率最高的部分序列、而不是只保留一条的解码方法。"),
    _t("Autoregressive generation", "自回归生成", 10,
       "Writing text one token at a time, each new token chosen from the model's prediction "
       "given all tokens so far.",
       "一次生成一个词元、每个新词元都根据已有全部词元的预测来选择的文本生成方式。"),
    _t("Copy head", "复制头", 11,
       "An attention head that looks back at an earlier token and raises the probability of "
       "that same token coming next.",
       "回看前面某个词元、并提高该词元作为下一个词元概率的注意力头。"),
    _t("Ablation", "消融", 11,
       "Switching a part of a trained model off (for example one attention head) to measure "
       "what that part does.",
       "关闭训练好的模型中的一部分（例如一个注意力头）来测量这部分作用的方法。"),
    _t("Logit lens", "Logit 透镜", 11,
       "Decoding the residual stream after any layer through the final norm and the output "
       "layer, to see what the model predicts at that depth.",
       "把任意一层之后的残差流经过最终归一化和输出层解码，以观察模型在该深度的预测。"),
    _t("Principal component analysis (PCA)", "主成分分析", 11,
       "Projecting vectors onto the few directions along which they vary most, for example to "
       "draw embeddings on a 2-D map.",
       "把向量投影到变化最大的少数几个方向上，例如把嵌入画在二维平面上。"),
    _t("Induction head", "归纳头", 11,
       "An attention head that, at a token seen before, attends to the token that followed its "
       "earlier occurrence and so predicts it again; measured on repeated random tokens.",
       "在之前出现过的词元处，关注其上一次出现之后的那个词元，从而再次预测它的注意力头；"
       "用重复的随机词元序列来测量。"),
    _t("Direct logit attribution", "直接 logit 归因", 11,
       "Splitting a logit into the shares that the embedding, each attention head and each "
       "feed-forward layer write into the final residual stream, with the final norm's scale "
       "frozen so that the shares add up exactly.",
       "在冻结最终归一化缩放系数的前提下，把一个 logit 拆分为嵌入、每个注意力头和每个前馈层"
       "写入最终残差流的份额，这些份额之和恰好等于该 logit。"),
    _t("Activation patching", "激活修补", 11,
       "Running a model on a corrupted input while putting back one activation (for example one "
       "head's output at one position) from the run on the clean input, to measure how much of "
       "the clean prediction it restores.",
       "在损坏的输入上运行模型，同时放回干净输入运行中的某个激活（例如某个头在某个位置的输出），"
       "以测量它能恢复多少干净的预测。"),
    # --- 12 ablation lab ----------------------------------------------------------------------
    _t("Ablation study", "消融实验", 12,
       "Training the same model several times, changing one design choice at a time, to "
       "measure what that choice is worth.",
       "多次训练同一个模型，每次只改变一个设计选择，以测量这个选择带来的差别。"),
    _t("Seed spread", "随机种子波动", 12,
       "The range of a result over runs that differ only in their random seed; a difference "
       "smaller than it has not been shown to be real.",
       "只改变随机种子的多次运行之间结果的波动范围；小于它的差别不能算已被证实。"),
    # --- 13 myths and facts -------------------------------------------------------------------
    _t("Log-likelihood", "对数似然", 13,
       "The sum of the log-probabilities that a model gives the tokens of a text; higher means "
       "the text looks more likely to the model.",
       "模型给一段文本中各个词元的对数概率之和；数值越高，模型认为这段文本越可能出现。"),
    _t("AUC (area under the ROC curve)", "AUC（ROC 曲线下面积）", 13,
       "The probability that a random positive example scores higher than a random negative "
       "one, with ties counting one half.",
       "随机取一个正例和一个负例时，正例得分更高的概率，得分相同时计一半。"),
    _t("Knowledge distillation", "知识蒸馏", 13,
       "Training a small model to match the output probabilities of a larger model.",
       "训练小模型去拟合大模型输出概率的方法。"),
    _t("Generative adversarial network (GAN)", "生成对抗网络", 13,
       "A generator and a discriminator trained against each other; LLaMA is not trained this "
       "way.",
       "生成器和判别器互相对抗、共同训练的模型；LLaMA 不是这样训练的。"),
    _t("Fine-tuning", "微调", 13,
       "Training a pretrained model further on a smaller, targeted data set, such as the "
       "dialogue data of Llama 2-Chat.",
       "在较小的、有针对性的数据集上继续训练预训练模型，例如 Llama 2-Chat 使用的对话数据。"),
    _t("Reinforcement learning from human feedback (RLHF)", "基于人类反馈的强化学习", 13,
       "Fine-tuning with reward models learned from human preferences, as done for Llama "
       "2-Chat with two reward models, one for helpfulness and one for safety.",
       "用从人类偏好中学到的奖励模型来微调模型，Llama 2-Chat 就这样做了，"
       "它用了两个奖励模型：一个衡量有用性，一个衡量安全性。"),
    _t("Multimodal model", "多模态模型", 13,
       "A model that takes more than one kind of input, such as text and images; the LLaMA, "
       "Llama 2 and Llama 3 text models are not.",
       "能接收多种输入（例如文本和图像）的模型；LLaMA、Llama 2 和 Llama 3 文本模型都不是。"),
    _t("Foundation model", "基础模型", 13,
       "A model pretrained on broad data and then adapted to many tasks, a phrase in the title "
       "of the LLaMA paper.",
       "在广泛数据上预训练、再适配到多种任务的模型，LLaMA 论文的标题里就用了这个词。"),
    _t("Open weights", "开放权重", 13,
       "Publishing the trained parameters so that others can download and run the model, as "
       "Meta does for Llama under its own licence.",
       "公开训练好的参数，让他人可以下载并运行模型，Meta 按自己的许可协议这样发布 Llama。"),
    # --- 14 post-training ----------------------------------------------------------------------
    _t("Post-training", "后训练", 14,
       "Everything done to a pretrained model to make it an assistant, such as supervised "
       "fine-tuning, rejection sampling and preference optimisation.",
       "把预训练模型变成助手所做的一切训练，例如监督微调、拒绝采样和偏好优化。"),
    _t("Chat format", "对话格式", 14,
       "The text layout of a conversation, with marker tokens around each message's role and "
       "content, such as Llama 3's <|start_header_id|> and <|eot_id|>.",
       "对话的文本排版：用标记词元包住每条消息的角色和内容，例如 Llama 3 的 "
       "<|start_header_id|> 和 <|eot_id|>。"),
    _t("Supervised fine-tuning (SFT)", "监督微调", 14,
       "Next-token training on example conversations, with the loss counted on the answers only.",
       "在示范对话上做下一个词元预测的训练，只在回答部分计算损失。"),
    _t("Masked loss", "掩码损失", 14,
       "A loss averaged only over the positions a mask marks, such as the answer tokens in "
       "supervised fine-tuning.",
       "只在掩码标出的位置上求平均的损失，例如监督微调中只算回答的词元。"),
    _t("LoRA (low-rank adaptation)", "低秩适配（LoRA）", 14,
       "Fine-tuning that freezes a weight matrix W and trains two thin matrices B and A beside "
       "it, so that the layer computes Wx + (alpha / r) BAx.",
       "冻结权重矩阵 W、只在旁边训练两个细长矩阵 B 和 A 的微调方法，"
       "该层计算 Wx + (alpha / r) BAx。"),
    _t("Merging an adapter", "合并适配器", 14,
       "Adding a trained LoRA update (alpha / r) BA into the weight it adapts, so that the model "
       "is a plain model again and costs nothing extra to run.",
       "把训练好的 LoRA 更新量 (alpha / r) BA 加回它所适配的权重，"
       "使模型重新成为普通模型、运行时没有额外开销。"),
    _t("Rejection sampling", "拒绝采样", 14,
       "Sampling several outputs, keeping those a judge accepts and fine-tuning on them.",
       "采样多个输出，只保留评判者认可的那些，再用它们微调模型。"),
    _t("Direct preference optimisation (DPO)", "直接偏好优化", 14,
       "Training on pairs of a chosen and a rejected output to raise the chosen one's "
       "probability relative to the rejected one's, measured against a frozen reference model.",
       "在“被选中/被拒绝”的输出对上训练，相对于冻结的参考模型，"
       "提高被选中输出相对被拒绝输出的概率。"),
    _t("Reference model", "参考模型", 14,
       "A frozen copy of the starting model against which DPO measures how far the trained "
       "model's probabilities have moved.",
       "起始模型的冻结副本，DPO 用它来衡量训练中模型的概率移动了多少。"),
    _t("Verifier", "验证器", 14,
       "A program that decides exactly whether an output is correct, such as TinyTales.is_valid; "
       "with one, no human or model judge is needed.",
       "能准确判定输出是否正确的程序，例如 TinyTales.is_valid；有了它就不需要人类或模型来评判。"),
    _t("Quantization", "量化", 15,
       "Storing weights as small integers plus a scale that turns them back into numbers, so "
       "that they take fewer bits; the error it adds must be measured.",
       "把权重存成小整数加一个缩放因子（用它还原成数值），从而占用更少的比特；"
       "它带来的误差需要实测。"),
    _t("Block quantization (Q8_0, Q4_0)", "分块量化（Q8_0、Q4_0）", 15,
       "The formats of llama.cpp: blocks of 32 weights, each with its own 16-bit scale, stored "
       "in 8 or 4 bits per weight (8.5 and 4.5 bits with the scale).",
       "llama.cpp 的格式：每 32 个权重为一块，每块有自己的 16 位缩放因子，"
       "每个权重用 8 或 4 比特存储（加上缩放因子分别为 8.5 和 4.5 比特）。"),
    _t("Speculative decoding", "投机解码", 15,
       "A cheap draft model proposes several tokens and the large model checks them in one "
       "forward pass; the accept/reject rule keeps the large model's output exactly.",
       "由廉价的草稿模型提出若干词元，大模型在一次前向计算中一起验证；"
       "接受/拒绝规则使输出与大模型完全一致。"),
    _t("GGUF", "GGUF 文件格式", 15,
       "The single-file format of llama.cpp and Ollama: metadata, the tokenizer and every tensor, "
       "in float or in a block-quantized format.",
       "llama.cpp 和 Ollama 使用的单文件格式：包含元数据、分词器和全部张量，"
       "张量可以是浮点或分块量化格式。"),
)


def lookup(query: str) -> list[Term]:
    """Every term whose English or Chinese name contains `query` (case-insensitive), in order."""
    if not isinstance(query, str):
        raise TypeError(f"lookup expects a str, got {type(query).__name__}.")
    needle = query.strip().casefold()
    if not needle:
        raise ValueError(
            "lookup needs a non-empty query, e.g. lookup('norm') or lookup('注意力'); "
            "glossary_table() shows every term."
        )
    return [t for t in TERMS if needle in t.english.casefold() or needle in t.chinese.casefold()]


_HEADER = ("English", "中文", "Definition", "定义", "Chapter")


def glossary_table(query: str = "") -> str:
    """An HTML table of the terms matching `query` (all terms for an empty query), escaped."""
    if not isinstance(query, str):
        raise TypeError(f"glossary_table expects a str, got {type(query).__name__}.")
    terms = list(TERMS) if not query.strip() else lookup(query)
    esc = html.escape
    shown = f"{len(terms)} of {len(TERMS)} terms"
    if query.strip():
        shown += f" matching “{esc(query.strip())}”"
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in _HEADER)
    rows = [
        "<tr>"
        f"<td><b>{esc(t.english)}</b></td><td><b>{esc(t.chinese)}</b></td>"
        f"<td>{esc(t.definition)}</td><td>{esc(t.definition_zh)}</td>"
        f"<td>{t.chapter:02d}</td>"
        "</tr>"
        for t in terms
    ]
    if not terms:
        rows = [f"<tr><td colspan='{len(_HEADER)}'>No term matches. Try a shorter word.</td></tr>"]
    return (
        f"<table>\n<caption>{shown}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )
