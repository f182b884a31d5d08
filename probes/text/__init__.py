"""Text in: prompt files and the shipped passages corpus."""

from .corpus import passages
from .prompts import read_prompts, read_records

__all__ = ["passages", "read_prompts", "read_records"]
