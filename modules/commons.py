"""Small tensor helpers shared by the synthesizer and training (4.1 ``modules/commons.py``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def init_weights(m: torch.nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    if m.__class__.__name__.find("Conv") != -1:
        m.weight.data.normal_(mean, std)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return int((kernel_size * dilation - dilation) / 2)


def convert_pad_shape(pad_shape):
    return [item for sublist in pad_shape[::-1] for item in sublist]


def sequence_mask(length: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """``[B]`` lengths → ``[B, max_length]`` bool mask."""
    if max_length is None:
        max_length = int(length.max())
    x = torch.arange(max_length, dtype=length.dtype, device=length.device)
    return x.unsqueeze(0) < length.unsqueeze(1)


def slice_segments(x: torch.Tensor, ids_str: torch.Tensor, segment_size: int = 4) -> torch.Tensor:
    """``x [B, C, T]`` → ``[B, C, segment_size]`` starting at ``ids_str[b]``."""
    idx = ids_str.to(torch.long)[:, None] + torch.arange(segment_size, device=x.device)[None]
    return torch.gather(x, 2, idx[:, None, :].expand(x.size(0), x.size(1), segment_size))


def slice_pitch_segments(x: torch.Tensor, ids_str: torch.Tensor, segment_size: int = 4) -> torch.Tensor:
    """``x [B, T]`` → ``[B, segment_size]``."""
    return slice_segments(x[:, None], ids_str, segment_size)[:, 0]


def rand_slice_segments(x: torch.Tensor, x_lengths: torch.Tensor | None = None, segment_size: int = 4):
    """Random segment per item; the start is ``floor(U[0,1) · (len − size + 1))`` as 4.1 draws it."""
    b, d, t = x.size()
    if x_lengths is None:
        x_lengths = t
    ids_str_max = x_lengths - segment_size + 1
    ids_str = (torch.rand([b]).to(device=x.device) * ids_str_max).to(dtype=torch.long)
    return slice_segments(x, ids_str, segment_size), ids_str


def rand_slice_segments_with_pitch(x: torch.Tensor, pitch: torch.Tensor, x_lengths=None, segment_size: int = 4):
    b, d, t = x.size()
    if x_lengths is None:
        x_lengths = t
    ids_str_max = x_lengths - segment_size + 1
    ids_str = (torch.rand([b]).to(device=x.device) * ids_str_max).to(dtype=torch.long)
    return slice_segments(x, ids_str, segment_size), slice_pitch_segments(pitch, ids_str, segment_size), ids_str


@torch.jit.script
def fused_add_tanh_sigmoid_multiply(input_a: torch.Tensor, input_b: torch.Tensor, n_channels: torch.Tensor) -> torch.Tensor:
    n_channels_int = n_channels[0]
    in_act = input_a + input_b
    t_act = torch.tanh(in_act[:, :n_channels_int, :])
    s_act = torch.sigmoid(in_act[:, n_channels_int:, :])
    return t_act * s_act


def subsequent_mask(length: int) -> torch.Tensor:
    return torch.tril(torch.ones(length, length)).unsqueeze(0).unsqueeze(0)


def clip_grad_value_(parameters, clip_value: float | None, norm_type: float = 2) -> float:
    """Clip gradients by value (if ``clip_value``) and return the total gradient norm (4.1)."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    parameters = [p for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if clip_value is not None:
        clip_value = float(clip_value)
    total_norm = 0.0
    for p in parameters:
        param_norm = p.grad.data.norm(norm_type)
        total_norm += param_norm.item() ** norm_type
        if clip_value is not None:
            p.grad.data.clamp_(min=-clip_value, max=clip_value)
    return total_norm ** (1.0 / norm_type)


def repeat_expand_2d(content: torch.Tensor, target_len: int, mode: str = "left") -> torch.Tensor:
    """Stretch encoder units ``[C, N]`` to ``[C, target_len]`` frames (spec §4.3).

    ``nearest`` (4.1 default) and any other name are ``F.interpolate`` modes; ``left`` is 4.1's
    loop, reproduced index for index (it equals ``nearest`` when upsampling).
    """
    if mode == "left":
        src_len = content.shape[-1]
        # 4.1 computes these bounds as float tensors; keep the same arithmetic.
        bounds = (torch.arange(src_len + 1) * target_len / src_len).tolist()
        idx, pos = [], 0
        for i in range(target_len):
            if not i < bounds[pos + 1]:
                pos += 1
            idx.append(pos)
        index = torch.tensor(idx, device=content.device)
        return content.float()[:, index]
    return F.interpolate(content[None], size=target_len, mode=mode)[0]
