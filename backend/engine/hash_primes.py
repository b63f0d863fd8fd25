"""Instant-NGP's spatial hash primes, shared by the PyTorch reference encoder (``hashgrid``) and the
fused Triton kernel (``hashgrid_triton``), which must index the same table rows.

A module of its own so that neither encoder module imports the other for them.
"""

# The first is 1 so coarse levels stay coherent; row = (x * P0) ^ (y * P1) ^ (z * P2) mod table size.
PRIMES = (1, 2654435761, 805459861)
