"""Every option is checked up front, the same way, by every front end (spbench.options):
spbench run before it starts pytest, pytest benchmarks/ before collection, spbench estimate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spbench.errors import InputError
from spbench.options import Options, method_overrides

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("options, message", [
    (dict(dtypes="float32,fp8"), "unknown dtype 'fp8'"),
    (dict(objective="nope"), "Unknown objective 'nope'"),
    (dict(backbones="tiny-bert,tiny-bret"), "Did you mean: tiny-bert"),
    (dict(backbones="someorg/not-cached"), "cannot read the config of this hub id"),
    (dict(methods="lroa"), "Did you mean: lora"),
    (dict(shapes="16x128,16"), "--shapes wants BATCHxSEQ"),
    (dict(shapes="0x128"), "impossible shape"),
    (dict(shapes="4x600", backbones="tiny-bert"), "exceeds the backbone's 512 positions (tiny-bert)"),
    (dict(sets=("rnak=16",)), "--set rnak: no hyperparameter 'rnak' in any selected method"),
    (dict(methods="full_ft,mezo", sets=("r=16",)), "--set r: no hyperparameter 'r'"),
    (dict(methods="lora,side_lora", sets=("r=sixteen",)), "--set r=sixteen (lora): r expects int"),
    (dict(device="gpu"), "--device 'gpu' is not a device"),
])
def test_a_bad_option_is_one_line_naming_it(options: dict, message: str) -> None:
    with pytest.raises(InputError) as info:
        Options(**options).validate(["memory", "step"])
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    (dict(budget="lots"), "budget 'lots'"),
    (dict(accuracy_shape="32"), "--accuracy-shape wants BATCHxSEQ"),
    (dict(sst2_dir="/nonexistent/sst2"), "--sst2-dir /nonexistent/sst2: no such folder"),
])
def test_accuracy_options(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Options(backbones="tiny-bert", **options).validate(["accuracy"])


def test_a_key_applies_to_every_method_that_has_it() -> None:
    own = method_overrides(["full_ft", "lora", "side_lora"], ["r=16", "lr=1e-3"])
    assert own == {"full_ft": (("lr", "1e-3"),), "lora": (("r", "16"), ("lr", "1e-3")),
                   "side_lora": (("r", "16"), ("lr", "1e-3"))}
    cases = Options(methods="full_ft,lora", backbones="tiny-bert", shapes="2x8,4x16", sets=("r=16",)).cases("memory")
    assert [c.id for c in cases] == ["full_ft-tiny-bert-b2-s8", "lora-tiny-bert-b2-s8-r=16",
                                     "full_ft-tiny-bert-b4-s16", "lora-tiny-bert-b4-s16-r=16"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("matrix, single, message", [
    (["--set", "rnak=16", "--methods", "lora"], ["--set", "rnak=16"], "--set rnak: method 'lora' has no hyperparameter"),
    (["--dtypes", "fp8", "--methods", "lora"], ["--dtype", "fp8"], "unknown dtype 'fp8'"),
    # a value outside its field's declared domain: refused before any backbone loads
    (["--set", "k=4", "--methods", "klst"], ["--method", "klst", "--set", "k=4"],
     "--set k=4 (klst): k must be odd and >= 1, not 4"),
    (["--set", "r=0", "--methods", "lora"], ["--set", "r=0"], "--set r=0 (lora): r must be >= 1, not 0"),
])
@pytest.mark.slow
def test_every_front_end_refuses_before_any_work(tmp_path: Path, matrix: list[str], single: list[str],
                                                 message: str) -> None:
    run = _run("-m", "spbench.cli", "run", "--out", str(tmp_path / "out"), "--backbones", "tiny-bert", *matrix)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert "pytest" not in run.stdout and not list((tmp_path / "out").iterdir())  # nothing started
    bench = _run("-m", "pytest", "benchmarks/test_memory.py", "-p", "no:cacheprovider", "--backbones", "tiny-bert",
                 *matrix)
    assert bench.returncode == pytest.ExitCode.USAGE_ERROR and f"ERROR: {message}" in bench.stderr
    estimate = _run("-m", "spbench.cli", "estimate", "--method", "lora", "--backbone", "tiny-bert", *single)
    assert estimate.returncode == 2 and message in estimate.stderr
    assert len(run.stderr.strip().splitlines()) == len(estimate.stderr.strip().splitlines()) == 1


def test_run_checks_its_own_options_first(tmp_path: Path) -> None:
    proc = _run("-m", "spbench.cli", "run", "--format", "html", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "--format: invalid choice: 'html'" in proc.stderr
    (tmp_path / "file").write_text("")
    proc = _run("-m", "spbench.cli", "run", "--out", str(tmp_path / "file"), "--backbones", "tiny-bert")
    assert proc.returncode == 2 and f"--out {tmp_path / 'file'}: is a file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_each_run_option_is_declared_once_and_read_back_the_same_by_every_front_end() -> None:
    """RUN_OPTIONS and the Options fields agree; what `spbench run` parses, it passes on to
    pytest as arguments the plugin's parser (the same declarations) reads back unchanged."""
    import argparse
    import dataclasses
    import functools

    from spbench.cli import build_parser
    from spbench.options import RUN_OPTIONS, add_options

    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    assert {o.name: (() if o.repeat else o.default) for o in RUN_OPTIONS} == fields
    args = build_parser().parse_args(["run", "--methods", "lora,klst", "--set", "r=16", "--set", "k=3",
                                      "--dtypes", "float32,bfloat16", "--accuracy", "--seed", "2",
                                      "--eval-every", "5", "--budget", "steps=3"])
    given = Options.read(functools.partial(getattr, args))
    assert given.sets == ("r=16", "k=3") and given.seed == 2 and given.eval_every == 5
    plugin = argparse.ArgumentParser()
    add_options(plugin.add_argument)  # what benchmarks/conftest.py does with pytest's addoption
    assert Options.read(functools.partial(getattr, plugin.parse_args(given.argv(accuracy=True)))) == given
    memory_only = given.argv(accuracy=False)
    assert "--set=k=3" in memory_only and not any(a.startswith(("--seed", "--budget")) for a in memory_only)


@pytest.mark.parametrize("options, message", [
    (dict(seed=-1), "--seed must be >= 0, not -1"),
    (dict(eval_every=-5), "--eval-every must be >= 0, not -5"),
])
def test_typed_options_are_checked_against_their_domain(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Options(backbones="tiny-bert", **options).validate(["memory"])


def test_device_moves_step_and_accuracy_cases_but_never_predictions() -> None:
    opts = Options(methods="lora", backbones="tiny-bert", device="cuda")
    assert {c.device for c in opts.cases("step", validate=False)} == {"cuda"}
    assert {c.device for c in opts.cases("accuracy", validate=False)} == {"cuda"}  # trained on the GPU
    assert {c.device for c in opts.cases("memory", validate=False)} == {"cpu"}  # fake tensors
