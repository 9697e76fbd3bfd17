"""Tracing and channel-dependency groups (which channels must be pruned together)."""

from torchslim.graph.ops import register_op
from torchslim.graph.spaces import SpaceTable
from torchslim.graph.trace import ChannelGraph, register_module_rule, trace
from torchslim.selection import matches  # the selector rule, kept importable from here

__all__ = ["ChannelGraph", "SpaceTable", "matches", "register_module_rule", "register_op", "trace"]
