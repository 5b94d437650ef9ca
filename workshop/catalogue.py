"""
The workshop's exercises in the learning path's order: for each, its chapter, the project's code it mirrors,
its hints and its check, with the known mistakes the check recognises by name.

Each exercise's blank is workshop/exercises/NN_name.py; its check and the wrong variants of its part (each a
small function or class, named for what it gets wrong) are in workshop/checks/<name>.py.
"""

from __future__ import annotations

from workshop.checks import (
    attention,
    block,
    counting,
    cross_entropy,
    gpt,
    heads,
    kv_cache,
    mlp,
    rmsnorm,
    rope,
    sampling,
    swiglu,
    training_step,
)
from workshop.tutor import Exercise, Mistake

EXERCISES: tuple[Exercise, ...] = (
    Exercise(1, "counting", "Counting: the bigram table and its cross-entropy", "docs/learn/01-counting.md",
             ("experiments/ladder.py:count_baselines", "experiments/ladder.py:counted_val_loss",
              "tokenizer.py:bits_per_char"),
             ("np.bincount(ids, minlength=vocab_size) counts every token; np.add.at(pairs, (ids[:-1], ids[1:]), 1) "
              "counts every pair",
              "add one to every count before dividing, then divide each row by its own total",
              "the loss scores val_ids[1:], each given the token before it"),
             counting.check, counting.MISTAKES),
    Exercise(2, "cross_entropy", "Cross-entropy from logits, stable and with ignore_index",
             "docs/learn/02-bigram.md", ("model.py:GPT.forward",),
             ("log_softmax(z) = z - m - log(sum(exp(z - m))) with m the row's maximum: no exp is ever above 1",
              "keep = targets != ignore_index picks the rows that count; index the kept rows only",
              "the mean is over the kept rows"),
             cross_entropy.check, cross_entropy.MISTAKES),
    Exercise(3, "attention", "One head of causal self-attention", "docs/learn/03-attention.md",
             ("model.py:attention", "model.py:causal_mask"),
             ("scores = q @ k.transpose(-2, -1), shape (B, nh, T, Tk), scaled by 1 / sqrt(q.size(-1))",
              "the causal mask is torch.arange(Tk) <= torch.arange(T)[:, None]; masked_fill the forbidden "
              "scores with -inf",
              "softmax over the keys (dim -1), dropout on the weights if given, then weights @ v"),
             attention.check, attention.MISTAKES),
    Exercise(4, "heads", "Several heads: multi-head causal self-attention", "docs/learn/04-heads.md",
             ("model.py:CausalSelfAttention",),
             ("q, k, v = self.c_attn(x).split(C, dim=2); each is (B, T, C)",
              "view(B, T, n_head, C // n_head).transpose(1, 2) gives (B, nh, T, hs): head h owns a block of channels",
              "after attention: y.transpose(1, 2).contiguous().view(B, T, C), then c_proj and resid_dropout"),
             heads.check, heads.MISTAKES),
    Exercise(5, "mlp", "The feed-forward network", "docs/learn/05-ffn.md", ("model.py:MLP", "model.py:Dropout"),
             ("c_fc widens to config.ffn_hidden, c_proj narrows back to n_embd",
              "act = nn.ReLU() if config.mlp == 'relu' else nn.GELU()",
              "nn.Dropout(config.dropout) already does both: identity in eval mode, 1/(1-p) scaling in training"),
             mlp.check, mlp.MISTAKES),
    Exercise(6, "block", "LayerNorm and the pre-norm residual block", "docs/learn/07-norm.md",
             ("model.py:make_norm", "model.py:Block"),
             ("mean = x.mean(-1, keepdim=True); var = ((x - mean) ** 2).mean(-1, keepdim=True)",
              "eps goes inside the square root: (x - mean) / torch.sqrt(var + eps)",
              "Block.forward is two lines: x = x + self.attn(self.ln_1(x), rope, kv_cache), "
              "then x = x + self.mlp(self.ln_2(x))"),
             block.check, block.MISTAKES),
    Exercise(7, "gpt", "The whole GPT and GPT-2's initialisation", "docs/learn/08-stack.md",
             ("model.py:GPT", "model.py:GPT.init_weights"),
             ("positions = torch.arange(T); x = wte(idx) + wpe(positions), then drop, the blocks, ln_f, lm_head",
              "tie the head with self.lm_head.weight = self.transformer.wte.weight: one Parameter, two uses",
              "in init_weights, name.endswith('c_proj') picks the residual projections: std 0.02 / sqrt(2 * n_layer)"),
             gpt.check, gpt.MISTAKES),
    Exercise(8, "training_step", "The training step: schedule, clipping, AdamW", "docs/learn/12-what-goes-wrong.md",
             ("train.py:get_lr", "train.py:train_step", "train.py:make_optimizer"),
             ("get_lr: check the warmup at step 0 (lr / warmup_iters) and the end (min_lr at max_iters)",
              "clip: total = torch.stack([p.grad.norm() for p in parameters]).norm(); one scale for every grad",
              "adamw_step: decay param first, then the two moments, then the bias-corrected step"),
             training_step.check, training_step.MISTAKES),
    Exercise(9, "rmsnorm", "RMSNorm", "docs/learn/09-modern.md", ("model.py:RMSNorm",),
             ("mean square: x.pow(2).mean(-1, keepdim=True); eps inside the root: torch.rsqrt(ms + eps)",
              "no mean subtracted, no bias: only the gain, self.weight"),
             rmsnorm.check, rmsnorm.MISTAKES),
    Exercise(10, "swiglu", "SwiGLU", "docs/learn/09-modern.md", ("model.py:SwiGLU",),
             ("gate, up = self.w_gate_up(x).chunk(2, dim=-1): the gate's rows come first",
              "F.silu(gate) * up, then c_proj and dropout"),
             swiglu.check, swiglu.MISTAKES),
    Exercise(11, "rope", "RoPE: rotary position embeddings", "docs/learn/09-modern.md",
             ("model.py:rope_tables", "model.py:apply_rotary_emb"),
             ("inv_freq = 1 / theta ** (torch.arange(0, head_dim, 2) / head_dim); angles = torch.outer(positions, "
              "inv_freq)",
              "x1, x2 = x[..., :hs // 2], x[..., hs // 2:]: channel i is paired with channel i + hs/2",
              "cos and sin (T, hs/2) broadcast over (B, nh, T, hs/2); cast them to x.dtype"),
             rope.check, rope.MISTAKES),
    Exercise(12, "kv_cache", "The KV cache", "docs/learn/10-kv-cache.md",
             ("model.py:KVCache", "model.py:causal_mask"),
             ("causal_mask: torch.arange(n_key) <= positions[:, None]",
              "update: self.k[layer].index_copy_(2, self.positions(T), k) writes the new keys at their positions",
              "update never changes pos: GPT.forward adds T after the last layer"),
             kv_cache.check, kv_cache.MISTAKES),
    Exercise(13, "sampling", "Sampling: temperature, top-k, top-p", "docs/learn/11-sampling.md",
             ("generate.py:filter_logits", "generate.py:sample_next"),
             ("temperature first: logits / temperature; at 0 keep only the argmax",
              "top-k: torch.sort(..., descending=True).indices[:, :top_k] are the tokens to keep",
              "top-p: before = probs.cumsum(-1) - probs; drop the sorted tokens where before >= top_p"),
             sampling.check, sampling.MISTAKES),
)

MISTAKES: tuple[Mistake, ...] = tuple(m for exercise in EXERCISES for m in exercise.mistakes)
