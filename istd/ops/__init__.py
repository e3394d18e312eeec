"""Parameter-free tensor kernels: the selective scan (Mamba S6) and 2-D scan orders."""

from istd.ops._availability import available_backends, cpu_kernels_cached
from istd.ops._shapes import ShapeError
from istd.ops.scan_orders import SCAN_KINDS, ScanOrder, build_scan_order
from istd.ops.scan_reference import selective_scan_ref
from istd.ops.selective_scan import BACKENDS, selective_scan

__all__ = [
    "BACKENDS",
    "SCAN_KINDS",
    "ScanOrder",
    "ShapeError",
    "available_backends",
    "cpu_kernels_cached",
    "build_scan_order",
    "selective_scan",
    "selective_scan_ref",
]
