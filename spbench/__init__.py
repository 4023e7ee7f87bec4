"""spbench: memory-and-speed benchmarks for selective parameter updating."""

__version__ = "0.1.0"
