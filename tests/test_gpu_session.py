"""The GPU session (benchmarks/gpu/session.sh) as a CPU dry run on tiny
models, its carry folder, and the diagnostic's comparison, so none of it rots before a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
SST2 = Path(os.environ.get("SPBENCH_SST2_DIR", "/nonexistent"))


def _import(name: str):
    sys.path.insert(0, str(GPU))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(GPU))


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SST-2 from $SPBENCH_SST2_DIR, else a small made-up folder of the same format."""
    if (SST2 / "train.tsv").is_file() and (SST2 / "dev.tsv").is_file():
        return SST2
    folder = tmp_path_factory.mktemp("sst2")
    rows = [("a charming and often affecting journey ", 1), ("unflinchingly bleak and desperate ", 0)] * 40
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return folder


def test_carry_folder_fits_and_loads_as_float32(tmp_path: Path, sst2_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from spbench import backbones

    prepare = _import("prepare_carry")
    size = prepare.prepare(tmp_path / "carry", sst2_dir)
    assert size == prepare.size_of(tmp_path / "carry") < 56 * 2**20  # minilm-l6 in float16 and SST-2: ~48 MiB
    assert not list(tmp_path.glob("*.partial"))
    folder = tmp_path / "carry" / "minilm-l6"
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} <= {torch.float16, torch.int64}
    monkeypatch.setenv(backbones.MINILM_ENV, str(folder))
    carried = backbones.load("minilm-l6")
    assert {p.dtype for p in carried.model.parameters()} == {torch.float32}  # trained in float32
    assert carried.tokenizer is not None
    monkeypatch.delenv(backbones.MINILM_ENV)
    original = backbones.load("minilm-l6")
    for (name, a), b in zip(carried.model.named_parameters(), original.model.parameters()):
        assert torch.equal(a, b.half().float()), name  # the weights rounded once to float16, nothing else
    monkeypatch.setenv(backbones.MINILM_ENV, str(tmp_path))
    with pytest.raises(backbones.InputError, match="no config.json"):
        backbones.minilm_path()


def test_carry_folder_over_max_mib_fails(tmp_path: Path, sst2_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare = _import("prepare_carry")
    args = ["--tiny", "--out", str(tmp_path / "carry"), "--sst2-dir", str(sst2_dir)]
    assert prepare.main([*args, "--max-mib", "0.01"]) == 1
    assert "error: over --max-mib 0.01" in capsys.readouterr().err
    assert prepare.main([*args, "--max-mib", "1000"]) == 0


def test_compare_groups_sizes_present_on_one_side_only() -> None:
    diagnose = _import("diagnose")
    real = [(1024, "cuda", "a.py:1 f"), (1024, "cuda", "a.py:1 f"), (512, "cuda", "b.py:2 g")]
    pred = [(1024, "Activation", "fw m.dense addmm"), (4096, "Temp", "bw m.dense mm"), (512, "Parameter", "held")]
    rows = diagnose.compare(real, pred)
    assert [(r["size_bytes"], r["real_count"], r["predicted_count"], r["excess_bytes"]) for r in rows] == \
        [(4096, 0, 1, 4096), (1024, 2, 1, -1024)]
    assert rows[0]["predicted_labels"] == [("Temp: bw m.dense mm", 1)] and rows[1]["real_labels"] == [("a.py:1 f", 2)]
    groups = diagnose.breakdown(pred, "module")
    assert groups[0] == {"key": "Temp | bw m.dense", "bytes": 4096, "count": 1}
    torch_dir = diagnose.TORCH_DIR
    frames = [{"filename": f"{torch_dir}optim/adamw.py", "line": 9, "name": "_multi_tensor_adamw"},
              {"filename": f"{torch_dir}optim/optimizer.py", "line": 3, "name": "wrapper"},
              {"filename": "/opt/torch/.venv/site-packages/transformers/x.py", "line": 5, "name": "forward"},
              {"filename": "/repo/spbench/methods/base.py", "line": 7, "name": "train_step"}]
    assert diagnose._frame_label(frames) == "adamw.py:9 _multi_tensor_adamw < x.py:5 forward"
    backward = [{"filename": f"{torch_dir}autograd/graph.py", "line": 8, "name": "_engine_run_backward"}]
    assert diagnose._frame_label(backward) == "no python frame (autograd engine)"
    # A trace: before the measured step (index 3 on), a block alive throughout; in the step two
    # blocks, freed at once (requested, then completed), then a larger one alone.
    f = [{"filename": "/m.py", "line": 1, "name": "f"}]
    trace = [{"action": "alloc", "addr": 1, "size": 1024, "frames": f}, {"action": "alloc", "addr": 9, "size": 8192},
             {"action": "free_requested", "addr": 9}, {"action": "segment_alloc", "addr": 0, "size": 2 << 20},
             {"action": "alloc", "addr": 2, "size": 512}, {"action": "alloc", "addr": 3, "size": 2048},
             {"action": "free_requested", "addr": 2}, {"action": "free_completed", "addr": 2},
             {"action": "free_requested", "addr": 3}, {"action": "alloc", "addr": 4, "size": 4096}]
    best, live = diagnose.replay(trace, start=3)
    assert best == 1024 + 4096 and sorted(size for size, _ in live) == [1024, 4096]
    assert diagnose.replay(trace[:6], start=3) == (1024 + 512 + 2048, [(1024, f), (512, []), (2048, [])])


@pytest.mark.slow
def test_session_dry_run_on_cpu(tmp_path: Path, sst2_dir: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    carry = tmp_path / "carry"
    prep = subprocess.run([sys.executable, str(GPU / "prepare_carry.py"), "--tiny", "--out", str(carry),
                           "--sst2-dir", str(sst2_dir)], capture_output=True, text=True, env=env, timeout=300)
    assert prep.returncode == 0, prep.stdout + prep.stderr
    assert re.search(r"MiB \(\d[\d,]* bytes\)", prep.stdout)
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(GPU / "session.sh"), str(out), "--device", "cpu", "--tiny", "--carry", str(carry),
         "--methods", "lora", "--dtypes", "float32", "--grad-checkpointing", "", "--shards", "1", "--rounds", "1",
         "--acc-methods", "mezo,lst", "--budget-s", "400"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    # What comes back: at most 8 files, one folder deep, plain names.
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and all(len(f.parts) <= 2 for f in files), files
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for f in files for part in f.parts)
    assert not list(out.rglob("*.partial"))

    diag = json.loads((out / "diag" / "diagnosis.json").read_text())
    assert diag["case"] == "lora-tiny-roberta-b4-s32"
    for side in ("real", "predicted"):  # the live set kept at the peak is the peak
        assert diag[side]["block_bytes"] == diag[side]["peak_bytes"] > 0
    assert sum(r["excess_bytes"] for r in diag["size_differences"]) == \
        diag["predicted"]["block_bytes"] - diag["real"]["block_bytes"]
    predicted = json.loads((out / "matrix" / "predicted.json").read_text())
    figures = {b["extra_info"]["case_id"]: b["extra_info"] for b in predicted["benchmarks"]}
    # The labelling tracker predicts what spbench predicts: it only adds labels.
    assert diag["predicted"]["peak_bytes"] == figures["lora-tiny-roberta-b4-s32"]["predicted_cuda_peak_bytes"]
    assert "| size B" in (out / "diag" / "diagnosis.md").read_text()

    report = (out / "matrix" / "gpu-report.md").read_text()
    assert "| lora-tiny-bert-b4-s32 " in report and "median absolute error" in report
    measured = json.loads((out / "matrix" / "measured-cpu.json").read_text())
    assert all(b["extra_info"]["status"] == "ok" for b in measured["benchmarks"])

    from spbench.reporting.results import read_json, records_of

    records = {r.result.case.method: r.result for r in records_of(read_json(out / "accuracy" / "accuracy.json"), "acc")}
    assert set(records) == {"mezo", "lst"}
    for result in records.values():
        # a few tiny steps may end on one class: "collapsed" keeps its figures
        assert result.status in ("ok", "collapsed") and 0.0 <= result.metrics["sst2_accuracy"] <= 1.0
        assert result.metrics["peak_bytes"] > 0 and result.predictions is not None
    mezo = records["mezo"]
    assert mezo.metrics["train_steps"] == 4 and mezo.notes["warm_start"]["head"] == "linear probe"
    assert "| mezo " in (out / "accuracy" / "accuracy.md").read_text()
    log = (out / "session.log").read_text()
    assert "starting lst" in log and "done in" in log
