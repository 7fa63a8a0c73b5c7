"""Custom operators, compiled and loaded on first use (the first network built on CPU), never at import.

:mod:`.attention_op`: the split-attention tail (radix-weighted sum) as one fused CPU operator.
"""
