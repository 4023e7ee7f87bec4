"""The one result shape: made from a Case, one flat JSON object, read back unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from spbench.case import Case
from spbench.result import CASE_FIELDS, IDENTITY_KEYS, PREDICTED, SCHEMA_VERSION, Result


def test_identity_is_the_case_fields() -> None:
    names = [f.name for f in dataclasses.fields(Case)]
    assert list(CASE_FIELDS) == [n for n in names if n not in ("device", "overrides")]
    assert set(CASE_FIELDS) < set(IDENTITY_KEYS)


def test_result_of_a_case_round_trips_through_json() -> None:
    case = Case("lora", "tiny-bert", 4, 32, dtype="bfloat16", overrides=(("r", "16"),))
    result = Result.of(case, PREDICTED, metrics={"params_total": 10}, notes={"mlm_head_untrained": True},
                       train_config={"seed": 1}, stages=[{"method": "lora"}], best_step=3)
    info = result.to_extra_info()
    assert {k: info[k] for k in CASE_FIELDS} == {k: getattr(case, k) for k in CASE_FIELDS}
    assert info["method_config"]["r"] == 16 and info["device"] == PREDICTED
    assert info["case_id"] == case.id == "lora-tiny-bert-b4-s32-bf16-r=16"
    assert info["schema_version"] == SCHEMA_VERSION and info["mlm_head_untrained"] is True
    back = Result.from_extra_info(info)
    assert back.to_extra_info() == info
    assert back.train_config == {"seed": 1} and back.stages == [{"method": "lora"}] and back.best_step == 3
    with pytest.raises(KeyError, match="undeclared metric"):
        Result.of(case, metrics={"peak_mb": 1})


def test_an_older_record_without_newer_fields_loads_with_defaults() -> None:
    old = {"method": "lora", "backbone": "tiny-bert", "batch_size": "4", "seq_len": 32, "device": "cpu",
           "schema_version": SCHEMA_VERSION}
    result = Result.from_extra_info(old, name="test_step[lora-tiny-bert-b4-s32]")
    assert result.case == Case("lora", "tiny-bert", 4, 32)
    assert result.case_id == "test_step[lora-tiny-bert-b4-s32]" and result.status == "ok"


def test_a_new_case_field_reaches_the_case_id() -> None:
    @dataclasses.dataclass(frozen=True)
    class Wider(Case):
        offload: bool = False

    assert Wider("lora", "tiny-bert").id == "lora-tiny-bert-b16-s128"
    assert Wider("lora", "tiny-bert", offload=True).id == "lora-tiny-bert-b16-s128-offload=True"


def test_a_case_that_fails_on_its_configuration_is_still_a_result() -> None:
    result = Result.of(Case("lora", "tiny-bert", overrides=(("rank", "4"),)), status="failed", reason="no rank")
    assert result.method_config == {} and result.to_extra_info()["reason"] == "no rank"
