"""Masked multi-head self-attention: PyTorch's scaled_dot_product_attention, or the same
written out where that is faster (on the CPU under autocast, and with dropout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from darm.nn.dropout import Dropout, dropout


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    k, v: (B, n_head, max_len, head_dim), preallocated; positions [0, t) are filled.
    """

    def __init__(self, batch_size, n_head, max_len, head_dim, device, dtype):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.t = 0

    def reset(self) -> None:
        self.t = 0

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, nh, T, hs) at [t, t+T) and return all keys and values so far."""
        T = k.shape[2]
        if self.t + T > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; cannot add {T} more")
        self.k[:, :, self.t : self.t + T] = k
        self.v[:, :, self.t : self.t + T] = v
        self.t += T
        return self.k[:, :, : self.t], self.v[:, :, : self.t]


def attend(q, k, v, dropout_p: float = 0.0, **mask) -> torch.Tensor:
    """scaled_dot_product_attention, but written out (`attention_written_out`) on the CPU
    under autocast (darm's is bf16), and with dropout on the CPU. For a small GPT's heads
    (12, 4, 64, 32), forward + backward, SDPA took 1.9 ms in float32 and 4.9 ms in bf16, the
    written-out attention 1.4 ms in bf16 (benchmarks/bf16_speed.py, torch 2.13, 2 AVX-512
    BF16 cores). With dropout SDPA's CPU attention runs its unfused path anyway, with a
    bernoulli_ mask; the written-out one with darm's dropout is faster
    (benchmarks/dropout_speed.py)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, **mask)
    if dropout_p or torch.is_autocast_enabled("cpu"):
        return attention_written_out(q, k, v, dropout_p, **mask)
    return F.scaled_dot_product_attention(q, k, v, **mask)


def attention_written_out(q, k, v, p: float = 0.0, is_causal=False, attn_mask=None):
    """softmax(q k^T / sqrt(hs) + mask) with darm's dropout (rate p) on the weights, times v:
    what SDPA computes, as three ops (a batched matmul that adds the mask, softmax, another
    batched matmul) that run in whatever dtype autocast gives them. Only what darm's
    attention asks of SDPA: q: (B, nh, T, hs); k, v: (B, nh, S, hs); is_causal (query i sees
    keys 0..i, as SDPA's), or attn_mask (T, S) bool, True where visible; every query must
    see at least one key (a row seeing none would be nan)."""
    if is_causal and attn_mask is not None:
        raise ValueError("pass is_causal or attn_mask, not both")
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError(f"attn_mask must be bool (True where visible), got {attn_mask.dtype}")
    *batch, T, hs = q.shape
    S = k.shape[-2]
    if is_causal:
        attn_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()
    # the mask as a bias of 0 or -inf, added inside the matmul (baddbmm) with the scale
    bias = torch.zeros(T, S, dtype=q.dtype, device=q.device)  # (T, S)
    if attn_mask is not None:
        bias = bias.masked_fill(~attn_mask, float("-inf"))
    # (B, nh, T, hs) -> (B * nh, T, hs), and the same for k and v with S
    q3, k3, v3 = q.reshape(-1, T, hs), k.reshape(-1, S, hs), v.reshape(-1, S, v.shape[-1])
    scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=hs**-0.5)  # (B * nh, T, S)
    y = dropout(scores.softmax(dim=-1), p) @ v3  # (B * nh, T, hs of v)
    return y.view(*batch, T, v.shape[-1])  # (B * nh, T, hs) -> (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, E = x.shape
        q, k, v = self.qkv(x).split(E, dim=2)
        # (B, T, E) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, E // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask = {"is_causal": True}  # the whole sequence at once
        if cache is not None:
            past = cache.t
            k, v = cache.append(k, v)  # (B, nh, past+T, hs)
            # a single new query may see every cached key; a block of T new ones needs the
            # causal mask shifted by the `past` positions before it
            mask = {}
            if T > 1:
                visible = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
                mask = {"attn_mask": visible}
        drop = self.dropout if self.training else 0.0
        y = attend(q, k, v, dropout_p=drop, **mask)
        y = y.transpose(1, 2).reshape(B, T, E)  # (B, nh, T, hs) -> (B, T, E)
        return self.resid_dropout(self.proj(y))
