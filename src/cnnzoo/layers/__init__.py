"""Reusable building blocks shared by several model families (one small concept per file)."""

from .conv_bn import BasicConv2d, init_trunc_normal_, new_linear_like

__all__ = ["BasicConv2d", "init_trunc_normal_", "new_linear_like"]
