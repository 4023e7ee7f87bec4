"""SCHEMA_VERSION follows what the figures mean.

tests/fixtures/schema-figures.json holds, per schema version, the predicted figures of a few
small deterministic cases and the metric contract (key, unit, direction). When today's figures
differ from the current version's entry, a figure changed without a bump: bump SCHEMA_VERSION
and say why in ``spbench.result.SCHEMA_CHANGES`` (a change of meaning), then record the figures
again: ``python tests/test_schema.py --record``.

Older versions whose meaning today's code can reproduce (by leaving emulation features of
``spbench.measure.cuda`` at CPU's behaviour) are measured again too, and the figures that differ
between two versions must be exactly among those the newer one says it changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from spbench.case import Case
from spbench.result import METRICS, SCHEMA_CHANGES, SCHEMA_VERSION, Result, mixed_meanings

FIXTURE = Path(__file__).parent / "fixtures" / "schema-figures.json"
CASES = (Case("lora", "tiny-bert", 4, 32), Case("lora", "tiny-bert", 4, 32, dtype="bfloat16"),
         Case("full_ft", "tiny-roberta", 2, 16))
# The CUDA emulation features a version did not have: what today's code skips to give its meaning.
SKIPPED = {1: ("dropout", "autocast"), SCHEMA_VERSION: ()}


def figures(version: int) -> dict[str, dict[str, Any]]:
    from spbench.case import build
    from spbench.measure.predict import predict_built

    out = {}
    for case in CASES:
        built = build(case, keep_backbone_copy=True, meta=True)
        out[case.id] = predict_built(built, built.plain, skip=SKIPPED[version])
    return out


def contract() -> dict[str, list[Any]]:
    return {k: [m.unit, m.higher_is_better] for k, m in METRICS.items()}


def stored() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def test_the_current_version_has_its_changelog_entry_and_its_recorded_figures() -> None:
    assert SCHEMA_VERSION == max(SCHEMA_CHANGES), "add SCHEMA_CHANGES[SCHEMA_VERSION]: what changed meaning, and why"
    assert all(SCHEMA_CHANGES[v][1] <= set(METRICS) for v in SCHEMA_CHANGES)
    assert str(SCHEMA_VERSION) in stored(), \
        f"no recorded figures of schema version {SCHEMA_VERSION}: python tests/test_schema.py --record"


def test_figures_changed_only_with_a_bump() -> None:
    entry = stored()[str(SCHEMA_VERSION)]
    # A new key is a new figure (it means what it says from its first version on); a key removed
    # or given another unit or direction changes what results say.
    assert {k: v for k, v in contract().items() if k in entry["contract"]} == entry["contract"], (
        "the metric contract changed (a key removed, or its unit or direction): bump SCHEMA_VERSION and record "
        "why in spbench.result.SCHEMA_CHANGES, then python tests/test_schema.py --record")
    now = figures(SCHEMA_VERSION)
    moved = [f"{case} {key}: {entry['figures'][case].get(key)} -> {value}"
             for case, figs in now.items() for key, value in figs.items() if entry["figures"][case].get(key) != value]
    assert not moved, ("predicted figures changed while SCHEMA_VERSION is still "
                       f"{SCHEMA_VERSION}: bump SCHEMA_VERSION and record why (spbench.result.SCHEMA_CHANGES), "
                       "then python tests/test_schema.py --record; " + "; ".join(moved))


@pytest.mark.parametrize("version", [v for v in SKIPPED if v != SCHEMA_VERSION])
def test_an_older_meaning_is_reproduced_and_its_changes_are_declared(version: int) -> None:
    entries = stored()
    assert figures(version) == entries[str(version)]["figures"]
    for newer in range(version + 1, SCHEMA_VERSION + 1):
        old, new = entries[str(newer - 1)]["figures"], entries[str(newer)]["figures"]
        differ = {k for case in new for k in new[case] if old[case].get(k) != new[case][k]}
        assert differ, f"version {newer} changed no recorded figure: a case that shows its change belongs in CASES"
        assert differ <= SCHEMA_CHANGES[newer][1], \
            f"version {newer} changed {sorted(differ - SCHEMA_CHANGES[newer][1])} without saying so in SCHEMA_CHANGES"


def test_report_and_check_compare_a_figure_only_within_one_meaning() -> None:
    case = CASES[0]
    old = Result.of(case, metrics={"sst2_accuracy": 0.9, "predicted_cuda_peak_bytes": 100})
    old.schema_version = 1
    new = Result.of(case, metrics={"sst2_accuracy": 0.91, "params_total": 10})
    assert mixed_meanings([("a.json", old), ("b.json", new)]) == ""  # accuracy kept its meaning
    new.metrics["predicted_cuda_peak_bytes"] = 90
    why = mixed_meanings([("a.json", old), ("b.json", new)])
    assert why.startswith("refusing to compare predicted_cuda_peak_bytes measured by different code "
                          f"(schema_version 1 in a.json; schema_version {SCHEMA_VERSION} in b.json)")
    assert "\n" not in why


def _write(path: Path, infos: list[dict[str, Any]]) -> str:
    path.write_text(json.dumps({"benchmarks": [{"name": f"b{i}", "extra_info": x} for i, x in enumerate(infos)]}))
    return str(path)


def test_schema_1_results_render_beside_newer_ones_where_the_meaning_held(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A committed schema-1 file (predicted figures) and a newer accuracy run report together,
    --claims included; a newer predicted figure beside a schema-1 one is refused in one line."""
    from spbench.cli import main

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "reports" / "accuracy" / "claims-matrix-distilbert-base.json").read_text())
    for bench in doc["benchmarks"]:  # as it was written before version 2
        bench["extra_info"]["schema_version"] = 1
    (tmp_path / "old").mkdir()
    old = str(tmp_path / "old" / "claims-matrix-distilbert-base.json")
    Path(old).write_text(json.dumps(doc))
    case = Case("klst", "minilm-l6", 32, 64)
    run = Result.of(case, metrics={"sst2_accuracy": 0.9, "val_accuracy": 0.9},
                    train_config={"budget": "epochs=1.0", "seed": 0, "select_on": "validation"}).to_extra_info()
    assert run["schema_version"] == SCHEMA_VERSION
    new = _write(tmp_path / "new.json", [run])
    assert main(["report", old, new, "--claims", "-o", str(tmp_path / "claims.md")]) == 0
    assert "klst" in (tmp_path / "claims.md").read_text()
    peak = Result.of(Case("lst", "distilbert-base", 16, 128), "predicted-cuda",
                     metrics={"predicted_cuda_peak_bytes": 1 << 20}).to_extra_info()
    capsys.readouterr()
    assert main(["report", old, _write(tmp_path / "peak.json", [peak])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refusing to compare predicted_cuda_peak_bytes" in err


def record() -> None:
    entries = stored() if FIXTURE.exists() else {}
    for version in SKIPPED:
        entries[str(version)] = {"contract": contract(), "figures": figures(version),
                                 "changed": SCHEMA_CHANGES[version][0]}
    FIXTURE.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE} (schema versions {', '.join(sorted(entries))})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_schema.py --record")
    record()
