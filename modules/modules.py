"""Synthesizer building blocks (4.1 ``modules/modules.py``) and the weight-norm helpers.

Weight norm: 4.1 used the legacy ``torch.nn.utils.weight_norm``, so its files store ``weight_g``
(magnitude) and ``weight_v`` (direction).  Current PyTorch deprecates that API; we use
``torch.nn.utils.parametrizations.weight_norm`` (which already converts ``weight_g``/``weight_v``
when loading) and add a state-dict hook that writes the legacy names back, so files are
interchangeable with 4.1 in both directions.  Parameter order per layer stays bias, g, v.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _parametrized_weight_norm

from modules.commons import fused_add_tanh_sigmoid_multiply

__all__ = [
    "LRELU_SLOPE", "Conv1dAs2d", "CouplingLayer", "DepthwiseSeparableConv1d", "Flip", "LayerNorm", "WN",
    "convs_to_2d", "fold_weight_norm", "has_weight_norm", "remove_weight_norm", "weight_norm", "wn_conv",
]


def _legacy_weight_norm_names(module: nn.Module, state_dict, prefix: str, local_metadata) -> None:
    """State-dict hook: ``parametrizations.weight.original{0,1}`` → ``weight_g`` / ``weight_v``."""
    g_key = prefix + "parametrizations.weight.original0"
    v_key = prefix + "parametrizations.weight.original1"
    if g_key in state_dict and v_key in state_dict:
        # This module's entries are the last ones in the dict when the hook runs, so pop +
        # re-insert keeps 4.1's order (bias, weight_g, weight_v).
        state_dict[prefix + "weight_g"] = state_dict.pop(g_key)
        state_dict[prefix + "weight_v"] = state_dict.pop(v_key)


def weight_norm(module: nn.Module, dim: int = 0) -> nn.Module:
    """Weight-normalise ``module.weight`` (norm over every dim except ``dim``), 4.1 file names."""
    _parametrized_weight_norm(module, "weight", dim)
    module.register_state_dict_post_hook(_legacy_weight_norm_names)
    return module


def has_weight_norm(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight")


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Replace g·v/‖v‖ by a plain ``weight`` parameter holding its current value (no-op if plain)."""
    if has_weight_norm(module):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return module


def inference_copy(root: nn.Module, replace: Mapping[nn.Module, nn.Module] | None = None) -> nn.Module:
    """A copy of ``root`` for building an inference-ready model, leaving ``root`` unchanged.

    Module objects are new; tensors are not copied: each parameter becomes a new, gradient-free
    ``Parameter`` on the same storage, buffers are shared. The copy may then be folded, converted
    to the 2-D layout or cast (all of which make new tensors), but must not be changed in place
    numerically (no ``.data.mul_()``), which would show through to ``root``. ``replace`` maps
    submodules of ``root`` to the objects the copy holds instead (not walked, not copied).
    """
    memo: dict[int, object] = {id(old): new for old, new in (replace or {}).items()}
    for p in root.parameters():
        memo[id(p)] = nn.Parameter(p.detach(), requires_grad=False)
    for b in root.buffers():
        memo[id(b)] = b
    replica = copy.deepcopy(root, memo)
    for m in replica.modules():
        if parametrize.is_parametrized(m):
            # A parametrized module's class is made per module by torch and holds the ``weight``
            # property; removing the parametrization deletes that property from the class, so the
            # copy needs a class of its own or folding it would break the original.
            cls = type(m)
            m.__class__ = type(cls.__name__, cls.__bases__,
                               {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")})
    return replica


def fold_weight_norm(root: nn.Module) -> nn.Module:
    """Fold every weight-normed layer under ``root`` (for inference: computes each weight once)."""
    for m in list(root.modules()):
        remove_weight_norm(m)
    return root


# --- building blocks --------------------------------------------------------------------------

LRELU_SLOPE = 0.1


class LayerNorm(nn.Module):
    """Layer norm over the channel axis of ``[B, C, T]`` (parameters ``gamma``/``beta``, eps 1e-5)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class DepthwiseSeparableConv1d(nn.Module):
    """Depthwise Conv1d(C→C, k, groups=C) then pointwise Conv1d(C→out, 1) (4.1 ``DSConv``).

    State-dict names ``depth_conv.*`` / ``point_conv.*``; :func:`wn_conv` weight-normalises both.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.depth_conv = nn.Conv1d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                    dilation=dilation, groups=in_channels, bias=bias)
        self.point_conv = nn.Conv1d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


def wn_conv(module: nn.Module) -> nn.Module:
    """Weight-normalise a conv, or both halves of a :class:`DepthwiseSeparableConv1d`."""
    if isinstance(module, DepthwiseSeparableConv1d):
        weight_norm(module.depth_conv)
        weight_norm(module.point_conv)
        return module
    return weight_norm(module)


class WN(nn.Module):
    """WaveNet-style gated residual stack (4.1 ``modules.WN``), used by ``enc_q`` and the flow.

    ``forward(x [B, H, T], x_mask [B, 1, T], g [B, gin, 1 or T] | None) -> [B, H, T]``.
    """

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int = 0, p_dropout: float = 0.0, *, depthwise: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"WN kernel_size must be odd, got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.n_layers = n_layers
        self.gin_channels = gin_channels
        self.p_dropout = p_dropout

        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels != 0:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1))
        conv_cls = DepthwiseSeparableConv1d if depthwise else nn.Conv1d
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = int((kernel_size * dilation - dilation) / 2)
            self.in_layers.append(wn_conv(conv_cls(hidden_channels, 2 * hidden_channels, kernel_size,
                                                   dilation=dilation, padding=padding)))
            # The last layer only feeds the skip output, so it needs half the channels.
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1)))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        output = torch.zeros_like(x)
        n_channels = torch.IntTensor([self.hidden_channels])
        h = self.hidden_channels
        if g is not None:
            g = self.cond_layer(g)
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            if g is not None:
                g_l = g[:, i * 2 * h:(i + 1) * 2 * h, :]
            else:
                g_l = torch.zeros_like(x_in)
            acts = fused_add_tanh_sigmoid_multiply(x_in, g_l, n_channels)
            acts = self.drop(acts)
            res_skip_acts = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = (x + res_skip_acts[:, :h, :]) * x_mask
                output = output + res_skip_acts[:, h:, :]
            else:
                output = output + res_skip_acts
        return output * x_mask


class Flip(nn.Module):
    """Reverse the channel order (flow permutation; no parameters)."""

    def forward(self, x: torch.Tensor, *args, reverse: bool = False, **kwargs):
        x = torch.flip(x, [1])
        if not reverse:
            logdet = torch.zeros(x.size(0)).to(dtype=x.dtype, device=x.device)
            return x, logdet
        return x


class CouplingLayer(nn.Module):
    """Mean-only (or affine) coupling: ``x1 ← m(x0) + x1`` with ``m`` from an injected encoder.

    ``make_enc`` returns the conditioning network (``WN`` or ``attentions.FFT``); it is called
    between building ``pre`` and ``post`` (4.1's construction order, so a seeded build draws the
    same numbers), and may return one shared module for every layer (``flow_share_parameter``).
    ``forward(x [B, C, T], x_mask [B, 1, T], g, reverse)``: forward returns ``(x, logdet)``,
    reverse returns ``x``.
    """

    def __init__(self, channels: int, hidden_channels: int, make_enc: Callable[[], nn.Module], *,
                 mean_only: bool = False) -> None:
        if channels % 2 != 0:
            raise ValueError(f"coupling channels must be even, got {channels}")
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels
        self.half_channels = channels // 2
        self.mean_only = mean_only
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = make_enc()
        self.post = nn.Conv1d(hidden_channels, self.half_channels * (2 - mean_only), 1)
        # Zero init makes every coupling layer start as the identity.
        self.post.weight.data.zero_()
        self.post.bias.data.zero_()

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = False):
        x0, x1 = torch.split(x, [self.half_channels] * 2, 1)
        h = self.pre(x0) * x_mask
        h = self.enc(h, x_mask, g=g)
        stats = self.post(h) * x_mask
        if not self.mean_only:
            m, logs = torch.split(stats, [self.half_channels] * 2, 1)
        else:
            m = stats
            logs = torch.zeros_like(m)
        if not reverse:
            x1 = m + x1 * torch.exp(logs) * x_mask
            x = torch.cat([x0, x1], 1)
            logdet = torch.sum(logs, [1, 2])
            return x, logdet
        x1 = (x1 - m) * torch.exp(-logs) * x_mask
        return torch.cat([x0, x1], 1)


# --- fast inference layout --------------------------------------------------------------------

class Conv1dAs2d(nn.Module):
    """Inference copy of a (weight-norm-folded) ``Conv1d``/``ConvTranspose1d`` that runs as a 2-D
    convolution on ``[B, C, 1, L]`` channels-last tensors.

    oneDNN computes channels-last convolutions without the layout reorders it needs around every
    1-D call, which makes the decoder's long, narrow convolutions about 2× faster on CPU; the
    result differs from the 1-D call only by float summation order. Weights are copied, so the
    module is for inference only (its state dict has 4-D weights, unlike 4.1 files).

    Strided convolutions run in polyphase form (``polyphase``, CPU and GPU alike): oneDNN's strided
    kernels cost ~50–180 ms *to create* for every new input length (a 5 s slice; measured with
    ``ONEDNN_VERBOSE=profile_create``), about a third of a bf16 decode, while stride-1 kernels take
    ~1 ms. The same sums in another arrangement (float summation order only):

    * transposed, stride ``u``, kernel ``k = Q·u``: output sample ``u·b + ρ`` (before cropping the
      padding) is ``Σ_q W[ρ + u·q]ᵀ x[b − q]``, i.e. a stride-1 convolution with ``u·C_out``
      output channels (residue-major) and kernel ``Q``; in channels-last memory ``[B, N, u·C_out]``
      is already ``[B, N·u, C_out]``, so interleaving the residues is a free view;
    * one input channel, stride ``s``, kernel ``k``: the input cut into rows of ``s`` samples
      (``[B, L/s, s]`` = ``s`` channels-last channels, a free view) convolved at stride 1 with
      kernel ``⌈k/s⌉``, tap ``s·q + r`` of the original kernel at channel ``r``, offset ``q``.
    """

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d, *, polyphase: bool = True) -> None:
        super().__init__()
        if has_weight_norm(conv):
            raise ValueError("fold weight norm (remove_weight_norm) before converting a conv to 2-D")
        if not isinstance(conv.padding[0], int):
            raise ValueError(f"string padding {conv.padding!r} is not supported")
        self.transposed = isinstance(conv, nn.ConvTranspose1d)
        self.stride = (1, conv.stride[0])
        self.padding = (0, conv.padding[0])
        self.dilation = (1, conv.dilation[0])
        self.groups = conv.groups
        self.output_padding = (0, conv.output_padding[0]) if self.transposed else (0, 0)
        w = conv.weight.detach()
        bias = None if conv.bias is None else conv.bias.detach().clone()
        k, u = w.shape[-1], conv.stride[0]
        plain = conv.groups != 1 or conv.dilation[0] != 1 or u == 1 or not polyphase
        self.mode = "plain"
        if not plain and self.transposed and k % u == 0 and conv.output_padding[0] == 0:
            # W [C_in, C_out, Q·u] → W'' [u·C_out, C_in, 1, Q]: W''[ρ·C_out + c, :, 0, q'] = W[:, c, ρ + u·(Q−1−q')]
            q = k // u
            c_in, c_out = w.shape[0], w.shape[1]
            taps = w.reshape(c_in, c_out, q, u).flip(2)                       # [C_in, C_out, q', ρ]
            w = taps.permute(3, 1, 0, 2).reshape(u * c_out, c_in, 1, q)
            bias = None if bias is None else bias.repeat(u)
            self.mode, self.taps = "transposed", q
        elif not plain and not self.transposed and w.shape[1] == 1:
            # w [C_out, 1, k] → W' [C_out, s, 1, Q]: W'[c, r, 0, q] = w[c, 0, s·q + r] (0 beyond k)
            q = -(-k // u)
            w = F.pad(w[:, 0], (0, q * u - k)).reshape(w.shape[0], q, u).permute(0, 2, 1).unsqueeze(2)
            self.mode, self.taps, self.kernel = "strided", q, k
        else:
            w = w.unsqueeze(2)
        self.register_buffer("weight", w.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self._transposed_polyphase(x)
        if self.mode == "strided":
            return self._strided_polyphase(x)
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                      self.groups, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def _transposed_polyphase(self, x: torch.Tensor) -> torch.Tensor:
        u, pad = self.stride[1], self.padding[1]
        batch, length = x.shape[0], x.shape[-1]
        y = F.conv2d(x, self.weight, self.bias, 1, (0, self.taps - 1))        # [B, u·C_out, 1, N] channels-last
        c_out, n = y.shape[1] // u, y.shape[-1]
        y = y.permute(0, 2, 3, 1).reshape(batch, 1, n * u, c_out).permute(0, 3, 1, 2)  # interleave (a view)
        out_len = (length - 1) * u - 2 * pad + self.taps * u
        y = y[..., pad:pad + out_len]
        return y if y.is_contiguous(memory_format=torch.channels_last) else y.contiguous(memory_format=torch.channels_last)

    def _strided_polyphase(self, x: torch.Tensor) -> torch.Tensor:
        s, pad = self.stride[1], self.padding[1]
        batch, length = x.shape[0], x.shape[-1]
        n_out = (length + 2 * pad - self.kernel) // s + 1
        rows = n_out + self.taps - 1
        # the input padded by `pad` on the left and cut or zero-padded to `rows` rows of s samples
        xp = F.pad(x.reshape(batch, length), (pad, rows * s - pad - length))
        xr = xp.reshape(batch, 1, rows, s).permute(0, 3, 1, 2)                # [B, s, 1, rows] channels-last view
        return F.conv2d(xr, self.weight, self.bias)


def convs_to_2d(root: nn.Module) -> nn.Module:
    """Replace every ``Conv1d``/``ConvTranspose1d`` under ``root`` by a :class:`Conv1dAs2d`
    (weight norm must already be folded). The caller then feeds ``[B, C, 1, L]`` channels-last
    tensors (``x.unsqueeze(2).contiguous(memory_format=torch.channels_last)``)."""
    for name, child in list(root.named_children()):
        if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)):
            setattr(root, name, Conv1dAs2d(child))
        else:
            convs_to_2d(child)
    return root
