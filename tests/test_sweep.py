"""``spbench sweep`` end to end on a tiny backbone and a tiny SST-2 folder, in real processes:
two local workers on the default journal file run every (configuration, seed) exactly once; a
worker killed with SIGKILL mid-trial is replaced and its trial runs again; a sweep stopped by
SIGINT, or killed outright, resumes with the same command and finishes. The same against a real
PostgreSQL server when ``SPBENCH_TEST_POSTGRES_URL`` names one (``.ci/run`` starts one).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

POSTGRES_ENV = "SPBENCH_TEST_POSTGRES_URL"
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 2-layer BERT (d=32) with minilm-l6's tokenizer, and an SST-2 folder of 48 + 16 rows."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from spbench.backbones import minilm_path

    root = tmp_path_factory.mktemp("sweep")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    rng = random.Random(0)
    words = {1: ["great", "wonderful", "moving", "warm"], 0: ["dull", "awful", "boring", "flat"]}
    lines = ["sentence\tlabel"] + [f"a {' '.join(rng.choices(words[y], k=rng.randint(1, 6)))} film\t{y}"
                                   for y in [0, 1] * 32]
    (root / "sst2").mkdir()
    (root / "sst2" / "train.tsv").write_text("\n".join(lines[:49]) + "\n")
    (root / "sst2" / "dev.tsv").write_text("\n".join([lines[0], *lines[49:]]) + "\n")
    return {"backbone": str(root / "tiny"), "sst2": str(root / "sst2")}


def command(tiny: dict[str, str], out: Path, *extra: str, study: str = "t") -> list[str]:
    return [sys.executable, "-m", "spbench.cli", "sweep", "--method", "lora", "--backbone", tiny["backbone"],
            "--batch-size", "4", "--seq-len", "16", "--sst2-dir", tiny["sst2"], "--out", str(out),
            "--study", study, *extra]


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env())


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def load(storage: str, study: str = "t") -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" not in storage:
        storage = optuna.storages.JournalStorage(JournalFileBackend(storage))
    return optuna.load_study(study_name=study, storage=storage)


def results_by_unit(study: Any) -> dict[str, list[int]]:
    """Unit (configuration + seed) -> the trials that trained it (hold a result)."""
    from spbench.sweep.trials import ATTR_RESULT, ATTR_UNIT

    out: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        if ATTR_RESULT in t.user_attrs:
            out.setdefault(t.user_attrs[ATTR_UNIT], []).append(t.number)
    return out


def assert_each_once(study: Any, units: int) -> None:
    by_unit = results_by_unit(study)
    assert len(by_unit) == units, by_unit
    assert all(len(trials) == 1 for trials in by_unit.values()), f"a unit trained twice: {by_unit}"
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.get_trials(deepcopy=False))


def wait_for_running(storage: str, study: str, proc: subprocess.Popen[str], timeout: float = 300) -> Any:
    """The first running trial that has claimed its unit (it is past setup, training or about to)."""
    from spbench.sweep.trials import ATTR_CLAIM, ATTR_OWNER

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            trials = load(storage, study).get_trials(deepcopy=False)
        except KeyError:  # the study does not exist yet
            trials = []
        for t in trials:
            if t.state.name == "RUNNING" and t.user_attrs.get(ATTR_CLAIM) == t.number \
                    and (t.user_attrs.get(ATTR_OWNER) or {}).get("trial") == t.number:
                return t
        time.sleep(0.05)
    raise AssertionError("no trial started")


def two_workers_one_killed(tiny: dict[str, str], out: Path, storage: str, study: str, *extra: str) -> None:
    """Two workers on a 3 x 2 grid of (learning rate, seed); the worker running the first trial
    is killed with SIGKILL. The sweep must finish by itself with every unit trained exactly once
    (the killed trial again, in a retry), write its results, and a second run must train nothing."""
    grid = ("--grid", "lr=1e-3,2e-3,3e-3", "--seeds", "0,1", "--budget", "steps=300")
    proc = subprocess.Popen(command(tiny, out, *grid, "--workers", "2", *extra, study=study),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(), "OMP_NUM_THREADS": "2"})  # two threads to share
    try:
        victim = wait_for_running(storage, study, proc)
        os.kill(int(victim.user_attrs["spbench_owner"]["worker"].split(":")[1]), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert "was killed (SIGKILL)" in stdout + stderr
    done = load(storage, study)
    assert_each_once(done, units=6)
    killed = done.trials[victim.number]
    assert killed.state.name == "FAIL" and "spbench_result" not in killed.user_attrs
    assert any(victim.number in t.system_attrs.get("retry_history", []) and "spbench_result" in t.user_attrs
               for t in done.trials)
    doc = json.loads((out / f"{study}.json").read_text())
    runs = [b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["device"] == "cpu"]
    assert len(runs) == 6 and {r["train_config"]["seed"] for r in runs} == {0, 1}
    assert {r["method_config"]["lr"] for r in runs} == {1e-3, 2e-3, 3e-3}
    assert all(r["train_steps"] == 300 and r["train_config"]["group_by_length"] for r in runs)
    assert "best on validation: lora (lr=" in stdout and "(2)" in stdout  # mean ± std over 2 seeds
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["worker-0.log", "worker-1.log"]
    for log in (out / "logs").iterdir():  # each worker a share of the two threads, not both
        assert "torch threads 1\n" in log.read_text()
    again = run(command(tiny, out, *grid, *extra, study=study))
    assert again.returncode == 0 and "6 finished" in again.stdout
    assert "trial" not in again.stdout.split("runs;")[1].split("configuration")[0]  # nothing trained
    assert_each_once(load(storage, study), units=6)


@pytest.mark.slow
def test_two_workers_one_killed_run_every_configuration_and_seed_once(tiny: dict[str, str], tmp_path: Path) -> None:
    two_workers_one_killed(tiny, tmp_path, str(tmp_path / "sweep.journal"), "t")


@pytest.mark.slow
def test_interrupted_or_killed_sweep_resumes_and_finishes(tiny: dict[str, str], tmp_path: Path) -> None:
    from spbench.sweep.trials import ATTR_INTERRUPTED

    cmd = command(tiny, tmp_path, "--grid", "lr=1e-3,2e-3,3e-3", "--budget", "steps=400")
    journal = str(tmp_path / "sweep.journal")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    interrupted = wait_for_running(journal, "t", proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 130 and "run the same command again to resume" in stderr, stdout + stderr
    assert load(journal).trials[interrupted.number].user_attrs.get(ATTR_INTERRUPTED) == interrupted.number

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    killed = wait_for_running(journal, "t", proc)
    proc.kill()  # SIGKILL: no chance to record anything
    proc.communicate(timeout=TIMEOUT_S)
    assert load(journal).trials[killed.number].state.name == "RUNNING"

    done = run(cmd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "its worker is gone; queued again" in done.stdout
    study = load(journal)
    assert_each_once(study, units=3)
    for number in (interrupted.number, killed.number):
        assert any(number in t.system_attrs.get("retry_history", []) and "spbench_result" in t.user_attrs
                   for t in study.trials)


@pytest.mark.slow
def test_two_workers_one_killed_against_postgresql(tiny: dict[str, str], tmp_path: Path) -> None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"needs a PostgreSQL server: set {POSTGRES_ENV}=postgresql://USER@HOST:PORT/DB "
                    "(.ci/run starts one with .ci/postgres and sets it)")
    # Optuna's heartbeat (every 2 s, stale after 4 s) fails the killed worker's trial; it is queued again.
    two_workers_one_killed(tiny, tmp_path, url, f"t-{uuid.uuid4().hex[:8]}", "--storage", url, "--heartbeat", "2")
    assert not (tmp_path / "sweep.journal").exists()


def pruned_sweep(tiny: dict[str, str], out: Path, storage: str, study: str, *extra: str) -> None:
    """A pruned search in two runs of one study: two learning rates that learn the tiny task,
    then four more that do not, with two workers. Every configuration is trained once; the weak
    ones stop at a cheaper rung (status "pruned", a result saying where), the two good ones
    reach the full budget; the report gives the cost against a plain grid."""
    base = ("--method", "full_ft", "--budget", "steps=192", "--pruner", "halving")
    for grid in ("lr=3e-3,1e-2", "lr=1e-7,1e-6,1e-5,3e-5,3e-3,1e-2"):
        proc = subprocess.run(command(tiny, out, *base, "--grid", grid, "--workers", "2", *extra, study=study),
                              capture_output=True, text=True, timeout=TIMEOUT_S, env={**_env(), "OMP_NUM_THREADS": "2"})
        assert proc.returncode == 0, proc.stdout + proc.stderr
    done = load(storage, study)
    assert_each_once(done, units=6)
    trained = [t for t in done.trials if "spbench_result" in t.user_attrs]
    pruned = [t for t in trained if t.state.name == "PRUNED"]
    complete = [t for t in trained if t.state.name == "COMPLETE"]
    assert pruned and len(complete) >= 2, [(t.params, t.state.name, t.intermediate_values) for t in trained]
    for t in pruned:
        info = t.user_attrs["spbench_result"]
        assert info["status"] == "pruned" and "pruned at" in info["reason"] and info["train_steps"] < 192
        assert "sst2_accuracy" not in info and "val_accuracy" in info  # dev is scored only at the end
    for t in complete:
        assert t.user_attrs["spbench_result"]["train_steps"] == 192 and sorted(t.intermediate_values) == [1, 2, 4, 8]
    report = subprocess.run([sys.executable, "-m", "spbench.cli", "report", str(out / f"{study}.json")],
                            capture_output=True, text=True, timeout=TIMEOUT_S, env=_env())
    assert report.returncode == 0 and "pruned search:" in report.stdout and "% of it)" in report.stdout, report.stderr


@pytest.mark.slow
def test_pruned_search_with_two_workers_on_the_journal(tiny: dict[str, str], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pruned_sweep(tiny, tmp_path, str(tmp_path / "sweep.journal"), "p")
    seeds_of_the_best(tiny, tmp_path, str(tmp_path / "sweep.journal"), "p", capsys)


def seeds_of_the_best(tiny: dict[str, str], out: Path, storage: str, search: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--best-from`` the pruned search: seed 0 of the chosen rate is the search's own full-budget
    run, taken over, not trained again; seed 1 trains. ``--retrain`` trains seed 0 anyway, and it
    comes out the same run (validation, dev, every dev prediction), so taking it over is sound
    (the loss curves are compared in tests/test_train.py)."""
    base = ("--method", "full_ft", "--budget", "steps=192", "--best-from", search, "--seeds", "0,1")
    proc = run(command(tiny, out, *base, study="best"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best = load(storage, "best")
    assert_each_once(best, units=2)
    adopted = [t for t in best.trials if "adopted_from" in t.user_attrs["spbench_result"]["sweep"]]
    assert len(adopted) == 1 and adopted[0].user_attrs["seed"] == 0
    origin = adopted[0].user_attrs["spbench_result"]["sweep"]["adopted_from"]
    assert origin["study"] == search and f"seed 0 taken from {search}'s trial {origin['trial']}" in proc.stdout
    assert proc.stdout.count("seed 1 ...") == 1 and "seed 0 ..." not in proc.stdout  # only seed 1 trained
    doc = json.loads((out / "best.json").read_text())
    runs = {r["train_config"]["seed"]: r for r in (b["extra_info"] for b in doc["benchmarks"])
            if r["device"] == "cpu"}
    assert sorted(runs) == [0, 1] and runs[0]["sweep"]["study"] == "best"
    from spbench.cli import main

    capsys.readouterr()
    assert main(command(tiny, out, *base, "--status", study="nope")[3:]) == 2  # in this process: no start-up
    assert "--status: no study 'nope' in this storage" in capsys.readouterr().err
    with pytest.raises(KeyError):
        load(storage, "nope")  # --status made nothing
    assert main(command(tiny, out, *base, "--retrain", study="best")[3:]) == 2
    assert "give the retrained seeds their own --study" in capsys.readouterr().err
    again = run(command(tiny, out, *base[:-1], "0", "--retrain", study="best-retrained"))  # seed 0 only
    assert again.returncode == 0 and "taken from" not in again.stdout and "seed 0 ..." in again.stdout, again.stdout
    retrained = {r["train_config"]["seed"]: r for r in (b["extra_info"] for b in json.loads(
        (out / "best-retrained.json").read_text())["benchmarks"]) if r["device"] == "cpu"}
    for key in ("val_accuracy", "sst2_accuracy", "sst2_f1", "predictions", "method_config", "train_config"):
        assert retrained[0][key] == runs[0][key], key


@pytest.mark.slow
def test_pruned_search_with_two_workers_on_postgresql(tiny: dict[str, str], tmp_path: Path) -> None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"needs a PostgreSQL server: set {POSTGRES_ENV} (.ci/run starts one)")
    pruned_sweep(tiny, tmp_path, url, f"p-{uuid.uuid4().hex[:8]}", "--storage", url)


@pytest.mark.slow
def test_pareto_sweep_with_nsga2_starts_from_the_defaults_and_reports_the_front(
        tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spbench.cli import main

    code = main(command(tiny, tmp_path, "--space", "lr", "--space", "r", "--trials", "3", "--pareto",
                        "--budget", "steps=400")[3:])  # long enough not to end on one class
    out = capsys.readouterr().out
    assert code == 0 and "nsga2 over lr: " in out and "Pareto front (predicted peak ↓, accuracy ↑): lora (" in out
    study = load(str(tmp_path / "sweep.journal"))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3 and all(len(t.values) == 2 and t.values[1] > 0 for t in done)
    assert done[0].params == {"lr": 5e-4, "r": 8}  # lora's defaults, queued first
    doc = json.loads((tmp_path / "t.json").read_text())
    assert sum(b["extra_info"]["device"] == "predicted-cuda" for b in doc["benchmarks"]) == len({
        (t.params["lr"], t.params["r"]) for t in done})


def test_a_sweep_whose_every_trial_failed_exits_non_zero(tiny: dict[str, str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from spbench.cli import main

    code = main(command(tiny, tmp_path, "--grid", "lr=1e-4,3e-4", "--set", "targets=no_such_module",
                        "--budget", "steps=2")[3:])
    out, err = capsys.readouterr()
    assert out.count(": failed: ") == 2  # each trial says why
    assert code == 1 and "every trial failed (2 of 2)" in err, (out, err)
