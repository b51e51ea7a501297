"""Reusable building blocks shared by several model families (one small concept per file)."""

from .conv_bn import BasicConv2d, init_trunc_normal_, new_linear_like
from .partial_conv import PartialConv
from .polyphase import conv_relu_max_pool_2x2
from .pool import MaxPool2x2, max_pool_2x2, relu_max_pool_2x2
from .subsampling import Subsampling

__all__ = [
    "BasicConv2d",
    "MaxPool2x2",
    "PartialConv",
    "Subsampling",
    "conv_relu_max_pool_2x2",
    "init_trunc_normal_",
    "max_pool_2x2",
    "new_linear_like",
    "relu_max_pool_2x2",
]
