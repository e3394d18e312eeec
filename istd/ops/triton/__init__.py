"""Triton kernels for the selective scan on CUDA tensors (imported only when triton is)."""
