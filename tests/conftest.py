"""Shared fixtures: tiny cases only, so the whole suite runs in seconds per module."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
warnings.filterwarnings("ignore", category=UserWarning, module="torch")
