"""Results: the one result type, where results may be written, and HTML report pages."""

from .outputs import check_output_dir, output_dir
from .result import Result, load_result

__all__ = ["Result", "check_output_dir", "load_result", "output_dir"]
