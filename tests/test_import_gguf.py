"""`lyricgen import-model`: a GGUF written from the tiny LLaMA (tests/tiny_llama.py, as
llama.cpp's converter writes one) comes back as a model dir with the same logits and token ids;
bad inputs are one-line errors (exit 2) that leave nothing behind; the real SmolLM2 import
matches its GGUF (when `make smollm2` has run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from tiny_llama import build_tiny_llama, write_gguf

from lyricgen.__main__ import main as lyricgen_main
from lyricgen.errors import LyricgenInputError
from lyricgen.llama import import_gguf as importer

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / "models/smollm2-135m"
PROMPTS = ["Eternizó las horas transitorias\nde tu vida la muerte",
           "¿Qué es la vida? Un frenesí.", "y mixto en línea estrecha"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def gguf_files(tiny, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {quant: write_gguf(tiny, root / f"tiny-{quant}.gguf", quant)
            for quant in ("F32", "Q8_0")}


def logits(model_dir_or_model, tokenizer, prompts=PROMPTS) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = model_dir_or_model
    if isinstance(model, Path):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32,
                                                     local_files_only=True)
    with torch.no_grad():
        return [model(torch.tensor([tokenizer(p)["input_ids"]])).logits for p in prompts]


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def test_f32_gguf_round_trips_the_original_model_exactly(tiny, gguf_files, tmp_path):
    out = importer.import_gguf(gguf_files["F32"], tmp_path / "imported")
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "provenance.json"} <= {p.name for p in out.iterdir()}
    original, imported = tokenizer_of(tiny), tokenizer_of(out)
    assert [imported(p)["input_ids"] for p in PROMPTS] == \
        [original(p)["input_ids"] for p in PROMPTS]
    for ours, theirs in zip(logits(out, imported), logits(tiny, original), strict=True):
        assert torch.equal(ours, theirs)
    assert not list(tmp_path.glob(".*"))  # no temp dir left beside it


def test_q8_gguf_import_equals_the_gguf_loaded_model(gguf_files, tmp_path):
    """Logit parity with transformers' own GGUF loading: exact (atol 0) in float32; the
    quantisation error against the original fp32 model is what Q8_0 rounding gives."""
    path = gguf_files["Q8_0"]
    model, tokenizer = importer.load_gguf_model(path, "float32")
    out = importer.import_gguf(path, tmp_path / "q8")
    for ours, theirs in zip(logits(out, tokenizer), logits(model, tokenizer), strict=True):
        assert torch.equal(ours, theirs)
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert provenance["source"]["sha256"] == importer.sha256_file(path)
    assert provenance["source"]["size"] == path.stat().st_size
    assert provenance["gguf"]["architecture"] == "llama" and provenance["dtype"] == "float32"
    assert provenance["gguf"]["tensor_types"]["Q8_0"] > 0
    assert provenance["versions"]["gguf"] == "0.19.0"


def test_bfloat16_import_is_saved_in_bfloat16(gguf_files, tmp_path):
    out = importer.import_gguf(gguf_files["F32"], tmp_path / "bf16", dtype="bfloat16")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["dtype"] == "bfloat16"
    size = (out / "model.safetensors").stat().st_size
    f32 = importer.import_gguf(gguf_files["F32"], tmp_path / "f32")
    assert size < 0.6 * (f32 / "model.safetensors").stat().st_size


def cli_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        lyricgen_main(["import-model", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_a_file_that_is_not_gguf_is_refused_by_its_magic(tmp_path, capsys):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a gguf")
    err = cli_error(capsys, "--gguf", str(fake), "--out", str(tmp_path / "out"))
    assert f"{fake}: gguf: not a GGUF file" in err
    assert "no such file" in cli_error(capsys, "--gguf", str(tmp_path / "nope.gguf"),
                                       "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_truncated_gguf_is_a_one_line_error(gguf_files, tmp_path, capsys):
    cut = tmp_path / "cut.gguf"
    data = gguf_files["F32"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert f"{cut}: gguf: unreadable GGUF" in cli_error(capsys, "--gguf", str(cut), "--out",
                                                        str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_unsupported_architecture_is_refused_before_dequantising(tiny, tmp_path, capsys,
                                                                    monkeypatch):
    path = write_gguf(tiny, tmp_path / "qwen.gguf", arch="qwen2")
    monkeypatch.setattr(importer, "load_gguf_model",
                        lambda *a: pytest.fail("dequantised an unsupported file"))
    err = cli_error(capsys, "--gguf", str(path), "--out", str(tmp_path / "out"))
    assert f"{path}: general.architecture: 'qwen2' is not supported" in err
    assert not (tmp_path / "out").exists()


def test_too_little_disk_is_refused_before_writing(gguf_files, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(importer.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    monkeypatch.setattr(importer, "load_gguf_model",
                        lambda *a: pytest.fail("loaded with too little disk"))
    out = tmp_path / "out"
    err = cli_error(capsys, "--gguf", str(gguf_files["F32"]), "--out", str(out))
    assert f"{out}: out: too little disk" in err and "GiB" in err
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_out_dir_is_refused_and_kept(gguf_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    err = cli_error(capsys, "--gguf", str(gguf_files["F32"]), "--out", str(out))
    assert f"{out}: out: exists and is not an empty directory" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()  # an empty dir is fine
    assert importer.import_gguf(gguf_files["F32"], out) == out


def test_a_failed_import_leaves_no_directory(gguf_files, tmp_path, monkeypatch):
    """A failure after the weights were written (here: the provenance) removes the temp dir."""
    def broken(path, obj):
        assert (Path(path).parent / "model.safetensors").is_file()
        raise OSError("disk full")

    monkeypatch.setattr(importer, "atomic_write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        importer.import_gguf(gguf_files["F32"], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_bad_dtype_is_an_input_error(gguf_files, tmp_path):
    with pytest.raises(LyricgenInputError, match="dtype: must be one of float32, bfloat16"):
        importer.import_gguf(gguf_files["F32"], tmp_path / "out", dtype="float16")


def test_make_smollm2_does_no_work_when_already_imported(tmp_path):
    """The script's idempotence check: a provenance with the pinned GGUF hash means done (no
    download, no import: the venv bin given does not even exist)."""
    script = (REPO / "scripts/smollm2.sh").read_text(encoding="utf-8")
    pinned = script.split('gguf_sha256="')[1].split('"')[0]
    out = tmp_path / "smollm2"
    out.mkdir()
    (out / "provenance.json").write_text(json.dumps({"source": {"sha256": pinned}}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(shutil.which("python3"))
    result = subprocess.run(["bash", str(REPO / "scripts/smollm2.sh"), str(tmp_path / "cache"),
                             str(out), str(bin_dir)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_real_smollm2_import_matches_its_gguf():
    """models/smollm2-135m (make smollm2) against transformers' own load of the cached GGUF
    it was imported from: identical logits (atol 0) on a few prompts."""
    if not (SMOLLM2 / "provenance.json").is_file():
        pytest.skip(f"{SMOLLM2} not imported (run `make smollm2`)")
    source = json.loads((SMOLLM2 / "provenance.json").read_text(encoding="utf-8"))["source"]
    gguf = Path(source["path"])
    if not gguf.is_file() or gguf.stat().st_size != source["size"]:
        pytest.skip(f"{gguf} (the GGUF it was imported from) is gone")
    model, tokenizer = importer.load_gguf_model(gguf, "float32")
    for ours, theirs in zip(logits(SMOLLM2, tokenizer), logits(model, tokenizer), strict=True):
        assert torch.equal(ours, theirs)
