"""The gated activation unit of WaveNet and the gated PixelCNN (van den Oord et al., 2016)."""

import torch


def gate(h: torch.Tensor) -> torch.Tensor:
    """(B, 2C, ...) -> (B, C, ...): tanh(a) * sigmoid(b), a and b the two halves of the
    channels: tanh carries the signal, the sigmoid decides how much of it passes."""
    if h.device.type == "cpu" and h.dtype == torch.bfloat16 and not torch.compiler.is_compiling():
        return BF16Gate.apply(h)
    a, b = (dense(t) for t in h.chunk(2, dim=1))
    return torch.tanh(a) * torch.sigmoid(b)


def dense(half: torch.Tensor) -> torch.Tensor:
    """A channels-last half is a strided view (C of every 2C values), on which the CPU's tanh
    and sigmoid run slower than on a dense copy, copy included (the gated PixelCNN's maps are
    channels-last; benchmarks/gated_step_speed.py times its step with and without)."""
    if half.is_contiguous() or not half.is_contiguous(memory_format=torch.channels_last):
        return half
    return half.contiguous(memory_format=torch.channels_last)


class BF16Gate(torch.autograd.Function):
    """The gate on CPU bf16 maps (autocast training), with tanh taken in float32: the CPU's
    bf16 tanh computes in float32 too, so the result is the same to the bit, but its kernel
    is slower than the float32 one and the two casts together (the first of which is the
    dense copy anyway). The backward is autograd's for the plain expression, op for op; it
    keeps the bf16 tanh, as autograd would, not a float32 one that costs two more casts.
    Once differentiable: a second derivative raises (t and s are not in the graph), and
    torch.func transforms do not apply to it."""

    @staticmethod
    def forward(ctx, h):
        a, b = h.chunk(2, dim=1)
        # .float() of a channels-last half is a dense channels-last copy (preserve_format)
        t = a.float().tanh_().to(h.dtype)
        s = torch.sigmoid(dense(b))
        ctx.save_for_backward(t, s)
        return t * s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        t, s = ctx.saved_tensors
        grad_a = torch.ops.aten.tanh_backward(grad * s, t)
        grad_b = torch.ops.aten.sigmoid_backward(grad * t, s)
        return torch.cat([grad_a, grad_b], dim=1)
