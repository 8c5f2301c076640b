"""Reusable causal building blocks."""

from darm.nn.attention import CausalSelfAttention, KVCache
from darm.nn.causal_conv import CausalConv1d, ConvQueue
from darm.nn.dropout import Dropout

__all__ = ["CausalConv1d", "ConvQueue", "CausalSelfAttention", "Dropout", "KVCache"]
