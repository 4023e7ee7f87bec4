"""Batches: synthetic ones for memory / speed cases, and SST-2 for accuracy cases.

Synthetic batches are padded like real ones: each row's length is drawn between half and all
of ``seq_len`` so the attention mask is never all ones (a model may drop an all-ones mask,
which would change what is measured).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from spbench import anatomy
from spbench.errors import InputError


def max_seq_len(config: Any) -> int | None:
    """The longest sequence a backbone's position embeddings allow (None: no such limit)."""
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos is None:
        return None
    return int(max_pos) - anatomy.position_offset(config)


def synthetic_batch(config: Any, batch_size: int, seq_len: int, seed: int = 0,
                    num_labels: int = 2) -> dict[str, torch.Tensor]:
    """Random token ids, a right-padded attention mask and labels; deterministic in ``seed``."""
    if batch_size < 1 or seq_len < 2:
        raise InputError(f"impossible shape: batch size {batch_size}, sequence length {seq_len}")
    limit = max_seq_len(config)
    if limit is not None and seq_len > limit:
        raise InputError(f"sequence length {seq_len} exceeds the backbone's {limit} positions")
    gen = torch.Generator().manual_seed(seed)
    vocab = int(config.vocab_size)
    pad = getattr(config, "pad_token_id", 0) or 0
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=gen)
    lengths = torch.randint(max(1, seq_len // 2), seq_len + 1, (batch_size,), generator=gen)
    lengths[0] = seq_len - 1  # at least one padded position
    positions = torch.arange(seq_len).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    ids = ids.masked_fill(mask == 0, pad)
    labels = torch.randint(0, num_labels, (batch_size,), generator=gen)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --- SST-2 -----------------------------------------------------------------------------------
#
# SST-2 (Socher et al. 2013, GLUE: Wang et al. 2018): 67,349 training phrases and an
# 872-sentence dev split with binary sentiment labels (1 = positive). Read from a local folder
# (``--sst2-dir`` / ``$SPBENCH_SST2_DIR``) holding train and dev files with ``sentence`` and
# ``label`` columns, else from the hub (``glue``/``sst2``). Every problem with a folder is
# raised here, naming the file and what is wrong, before ``datasets`` can fail deep inside.
# Without ``datasets`` (a minimal GPU image, say) a folder's TSV / CSV / JSON-lines splits are
# read by the standard library instead (``Rows``; ``$SPBENCH_SST2_READER``).

SST2_ENV = "SPBENCH_SST2_DIR"
# "datasets" | "plain" | "auto" (default): ``datasets`` when it is importable, else the plain
# reader (a machine without it still reads a local folder).
SST2_READER_ENV = "SPBENCH_SST2_READER"
SST2_COLUMNS = ("sentence", "label")
# File stems per split, and the ``datasets`` builder (and its options) per file extension.
_SPLIT_STEMS = {"train": ("train",), "dev": ("dev", "validation")}
_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    # SST-2's TSVs hold no quoting: a stray '"' must stay text, and "null"/"nan" are words.
    ".tsv": ("csv", {"delimiter": "\t", "quoting": 3, "keep_default_na": False}),
    ".csv": ("csv", {"keep_default_na": False}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
}


def sst2_dir(explicit: str | None = None) -> str | None:
    """The SST-2 folder to read: ``explicit`` (``--sst2-dir``) wins over ``$SPBENCH_SST2_DIR``;
    None means "use the hub"."""
    return explicit or os.environ.get(SST2_ENV) or None


def find_split_file(folder: Path, split: str) -> Path:
    """``train.tsv`` / ``dev.tsv`` (or ``validation.*``, csv, jsonl, parquet) inside ``folder``."""
    for stem in _SPLIT_STEMS[split]:
        for ext in _FORMATS:
            path = folder / f"{stem}{ext}"
            if path.is_file():
                return path
    wanted = ", ".join(f"{s}{e}" for s in _SPLIT_STEMS[split] for e in (".tsv", ".csv", ".jsonl", ".parquet"))
    present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise FileNotFoundError(f"SST-2 folder {folder} has no {split} split: expected one of {wanted}; found {present}")


def sst2_reader(reader: str | None = None) -> str:
    """Which reader loads a local folder: ``reader``, else ``$SPBENCH_SST2_READER``, else
    "auto": "datasets" when that package is importable, otherwise "plain"."""
    import importlib.util

    choice = (reader or os.environ.get(SST2_READER_ENV) or "auto").strip().lower()
    if choice not in ("auto", "datasets", "plain"):
        raise InputError(f"SST-2 reader {choice!r} (from ${SST2_READER_ENV}): choose auto, datasets or plain")
    if choice == "auto":
        choice = "datasets" if importlib.util.find_spec("datasets") is not None else "plain"
    return choice


class Rows:
    """A split read without ``datasets``: the few ``datasets.Dataset`` calls spbench makes
    (``column_names``, ``len``, ``rows[column]``, ``select``, ``select_columns``)."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = columns

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns[column]

    def select(self, indices: Any) -> "Rows":
        keep = list(indices)
        return Rows({k: [v[i] for i in keep] for k, v in self.columns.items()})

    def select_columns(self, names: list[str]) -> "Rows":
        return Rows({k: self.columns[k] for k in names})


def _read_plain(path: Path) -> Rows:
    """A TSV / CSV / JSON-lines split with the standard library (already scanned: well formed,
    labels 0 or 1 in a table), the same rows and types ``datasets`` gives."""
    import csv
    import io
    import json

    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in _text(path).splitlines() if line.strip()]
        names = list(dict.fromkeys(k for r in records for k in r))
        return Rows({k: [r.get(k) for r in records] for k in names})
    if path.suffix not in (".tsv", ".csv"):
        raise InputError(f"SST-2 file {path}: {path.suffix} needs the `datasets` package "
                         f"(pip install datasets), or use train.tsv / dev.tsv")
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if path.suffix == ".tsv" else {}
    table = [row for row in csv.reader(io.StringIO(_text(path), newline=""), **dialect) if row]
    header, body = table[0], table[1:]
    columns: dict[str, list[Any]] = {name: [row[i] for row in body] for i, name in enumerate(header)}
    if "label" in columns:
        columns["label"] = [int(v.strip()) for v in columns["label"]]
    return Rows(columns)


def _read_split(path: Path, reader: str = "datasets") -> Any:
    if path.suffix in (".tsv", ".csv"):
        scan_table(path)
    elif path.suffix == ".jsonl":
        scan_jsonl(path)
    if reader == "plain":
        return validate_split(_read_plain(path), str(path))
    import datasets

    builder, options = _FORMATS[path.suffix]
    try:
        ds = datasets.load_dataset(builder, data_files={"data": str(path)}, split="data", **options)
    except Exception as exc:  # a parser error deep in datasets: say which file, and its real cause
        raise InputError(f"cannot read SST-2 file {path}: {root_cause(exc)}") from exc
    return validate_split(ds, str(path))


def root_cause(exc: BaseException) -> str:
    """``Type: message`` of the innermost exception behind ``exc``: datasets wraps a parser's
    error ("Expected 2 fields in line 202, saw 3") in a bare "An error occurred"."""
    seen = [exc]
    while (inner := seen[-1].__cause__ or seen[-1].__context__) is not None and inner not in seen:
        seen.append(inner)
    # The first inner error that is not datasets' own wrapper says what is wrong.
    cause = next((e for e in seen[1:] if not type(e).__module__.startswith("datasets")), exc)
    text = (str(cause).strip().splitlines() or [""])[0][:300]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _text(path: Path) -> str:
    """The file as UTF-8 text, or a ValueError naming the line and column of the first bad byte."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise InputError(f"SST-2 file {path}, line {line}: byte 0x{raw[exc.start]:02x} at column {column} "
                         "is not UTF-8 (save the file as UTF-8)") from None
    if not text.strip():
        raise InputError(f"SST-2 file {path} is empty: it needs rows with a sentence and a label")
    return text.removeprefix("\ufeff")


def scan_jsonl(path: Path) -> None:
    """Check a JSON-lines split line by line: each non-blank line one JSON object."""
    import json

    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"SST-2 file {path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})") \
                from None
        if not isinstance(row, dict):
            raise InputError(f"SST-2 file {path}, line {number}: expected a JSON object, got {type(row).__name__}")


def scan_table(path: Path) -> None:
    """Check a TSV / CSV split line by line before ``datasets`` parses it, so an error names the
    file, the line and what is wrong: not UTF-8, empty, no rows, a row whose number of fields
    differs from the header's, a label other than 0 or 1. Reads with the builder's own rules
    (TSV: tab-separated, no quoting; CSV: the csv module's defaults); blank lines are skipped,
    as pandas does."""
    import csv
    import io

    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if path.suffix == ".tsv" else {}
    reader = csv.reader(io.StringIO(_text(path), newline=""), **dialect)
    try:
        header = next(row for row in reader if row)
        label = header.index("label") if "label" in header else None
        rows = 0
        for row in reader:
            if not row:
                continue
            rows += 1
            if len(row) != len(header):
                raise InputError(f"SST-2 file {path}, line {reader.line_num}: expected {len(header)} fields "
                                 f"({', '.join(header)}), saw {len(row)}")
            if label is not None and row[label].strip() not in ("0", "1"):
                raise InputError(f"SST-2 file {path} has labels outside {{0, 1}}: {row[label]!r} "
                                 f"on line {reader.line_num}")
    except csv.Error as exc:
        raise InputError(f"SST-2 file {path}, line {reader.line_num}: {exc}") from None
    if not rows:
        raise InputError(f"SST-2 file {path} has a header ({', '.join(header)}) but no rows")


def validate_split(ds: Any, where: str) -> Any:
    """Check the columns and labels of one split; return it with only ``sentence`` and ``label``."""
    missing = [c for c in SST2_COLUMNS if c not in ds.column_names]
    if missing:
        raise InputError(f"SST-2 file {where} lacks column(s) {', '.join(missing)}: it has "
                         f"{', '.join(ds.column_names) or 'none'}; need sentence and label")
    if len(ds) == 0:
        raise InputError(f"SST-2 file {where} has no rows")
    labels = ds["label"]
    bad = sorted({repr(v) for v in labels if v not in (0, 1) or isinstance(v, bool)})
    if bad:
        raise InputError(f"SST-2 file {where} has labels outside {{0, 1}}: {', '.join(bad[:5])}")
    if any(not isinstance(s, str) for s in ds["sentence"]):
        raise InputError(f"SST-2 file {where} has empty or non-text sentences")
    return ds.select_columns(list(SST2_COLUMNS))


def load_sst2(folder: str | None = None, reader: str | None = None) -> dict[str, Any]:
    """SST-2 as ``{"train": Dataset, "dev": Dataset}`` with columns ``sentence`` and ``label``.

    Args:
        folder: the local folder (``--sst2-dir``); None reads ``$SPBENCH_SST2_DIR``, and with
            neither set, the hub's ``glue``/``sst2`` (train / validation).
        reader: for a folder, "datasets", "plain" (the standard library: :class:`Rows`) or
            "auto"; None reads ``$SPBENCH_SST2_READER`` (see :func:`sst2_reader`).
    """
    folder = sst2_dir(folder)
    if folder is None:
        return _load_sst2_hub()
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"SST-2 folder {path} does not exist (from --sst2-dir or ${SST2_ENV})")
    if not path.is_dir():
        raise NotADirectoryError(f"SST-2 path {path} is not a folder (from --sst2-dir or ${SST2_ENV})")
    how = sst2_reader(reader)
    return {split: _read_split(find_split_file(path, split), how) for split in _SPLIT_STEMS}


def _load_sst2_hub() -> dict[str, Any]:
    import datasets

    try:
        ds = datasets.load_dataset("glue", "sst2")
    except Exception as exc:  # offline, or no such dataset: the fix is a local folder
        raise FileNotFoundError(
            f"SST-2 is not available: no --sst2-dir or ${SST2_ENV} was given and the hub's glue/sst2 "
            f"could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Point "
            f"--sst2-dir or ${SST2_ENV} at a folder holding train.tsv and dev.tsv."
        ) from None
    return {"train": validate_split(ds["train"], "glue/sst2 train"),
            "dev": validate_split(ds["validation"], "glue/sst2 validation")}


def encode_sst2(split: Any, tokenizer: Any, objective: Any, max_len: int = 64,
                limit: int | None = None) -> list[dict[str, Any]]:
    """Tokenise one split for ``objective``: rows of unpadded ``input_ids`` (and any other
    per-token fields) plus ``labels``; padding happens per batch (``collate``).

    ``objective.encode`` tokenises (the "prompt" objective wraps each sentence in its template),
    so this file does not depend on how a template works.
    """
    if tokenizer is None:
        raise InputError("this backbone has no tokenizer: SST-2 needs a pretrained backbone such as minilm-l6")
    if max_len < 2:
        raise InputError(f"max_len must be at least 2, not {max_len}")
    rows = split if limit is None else split.select(range(min(limit, len(split))))
    sentences, labels = list(rows["sentence"]), [int(v) for v in rows["label"]]
    return _as_rows(objective.encode(tokenizer, sentences, labels, max_len), labels)


def _as_rows(encoded: Any, labels: list[int]) -> list[dict[str, Any]]:
    """A dict of columns (``BatchEncoding``) or a list of row dicts -> row dicts with labels."""
    if isinstance(encoded, list):
        rows = [dict(r) for r in encoded]
    else:
        columns = {k: list(v) for k, v in dict(encoded).items()}
        n = len(columns["input_ids"])
        rows = [{k: v[i] for k, v in columns.items()} for i in range(n)]
    for row, label in zip(rows, labels):
        row.setdefault("labels", label)
        row.pop("label", None)
    return rows


def collate(rows: list[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its own longest row (dynamic padding): ``input_ids`` with
    ``pad_id``, other per-token fields with 0; ``attention_mask`` marks the real tokens."""
    width = max(len(r["input_ids"]) for r in rows)
    out: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], (list, tuple)):
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.tensor([list(v) + [fill] * (width - len(v)) for v in values], dtype=torch.long)
        else:
            out[key] = torch.tensor(values)
    if "attention_mask" not in out:
        out["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                              for r in rows], dtype=torch.long)
    out.pop("token_type_ids", None)  # one segment: the model's default is the same
    return out


# --- the selection split ----------------------------------------------------------------------
#
# Choosing a configuration (a learning rate, a checkpoint, a pruned trial) on the split that is
# then reported makes the reported figure optimistic. The selection split is carved from SST-2
# *train*, fixed and seeded, stratified by label, and never trained on; dev is scored once per
# finished run and reported. Its size, seed and a hash of its row indices go into every result.

VALIDATION_SIZE = 872  # as large as dev: a selection as noisy as the report would be pointless
VALIDATION_SEED = 0


def carve_validation(train: Any, size: int = VALIDATION_SIZE, seed: int = VALIDATION_SEED
                     ) -> tuple[list[int], list[int], dict[str, Any]]:
    """Split SST-2 train into (rows to train on, selection rows) by index, stratified by label.

    Each label keeps its share of the split (rounded; the sizes add up to ``size``). A train
    split with fewer than four times ``size`` rows (a test fixture) gives a quarter of its rows
    instead, and the record says so by its ``size``. Returns the two sorted index lists and
    ``{"size", "seed", "sha256"}`` (of the selection indices) for the results.
    """
    import hashlib

    import numpy as np

    labels = np.asarray([int(v) for v in train["label"]])
    if size < 1:
        raise InputError(f"validation size must be at least 1, not {size}")
    size = min(size, len(labels) // 4)
    if size < 1:
        raise InputError(f"SST-2 train has {len(labels)} rows: too few to carve a validation split from")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * size).astype(int)
    quota[np.argsort(-(counts / counts.sum() * size - quota))[: size - quota.sum()]] += 1  # largest remainders
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)])
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[picked] = True
    val = np.flatnonzero(chosen).tolist()
    digest = hashlib.sha256(",".join(map(str, val)).encode()).hexdigest()[:16]
    return np.flatnonzero(~chosen).tolist(), val, {"size": len(val), "seed": seed, "sha256": digest}


def examples_digest(split: Any) -> str:
    """A short hash of a split's sentences and labels: two runs' per-example predictions are
    compared only when they scored the same examples in the same order."""
    import hashlib

    h = hashlib.sha256()
    for sentence, label in zip(split["sentence"], split["label"]):
        h.update(f"{sentence}\t{int(label)}\n".encode())
    return h.hexdigest()[:16]
