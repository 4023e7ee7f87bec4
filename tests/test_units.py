"""Byte sizes a person types and reads: binary and decimal units, written out by hand."""

from __future__ import annotations

import pytest

from spbench.units import format_bytes, parse_bytes


@pytest.mark.parametrize("text, n", [
    ("8GiB", 8 * 1024 * 1024 * 1024), ("512MiB", 512 * 1024 * 1024), ("1.5KiB", 1536), ("1TiB", 1024 ** 4),
    ("2GB", 2_000_000_000), ("512MB", 512_000_000), ("3kb", 3000), ("1TB", 10 ** 12),
    ("4096", 4096), ("100B", 100), (" 8 gib ", 8 * 1024 ** 3),
])
def test_parse_bytes(text: str, n: int) -> None:
    assert parse_bytes(text) == n


@pytest.mark.parametrize("bad", ["lots", "8 GiBs", "-1GiB", "GiB", ""])
def test_parse_bytes_refuses_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        parse_bytes(bad)


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1234567, "1.18 MiB"),
    (3 * 1024 ** 3 // 2, "1.50 GiB"), (5 * 1024 ** 5, "5120.00 TiB"),
])
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
