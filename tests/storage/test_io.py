import pickle

import pandas as pd
import pytest
import torch

from promptgrid.storage import files, provenance


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    files.atomic_write_text(target, "whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_table_roundtrip_with_provenance(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    meta = provenance.provenance("abc123", seed=3, backbone_revision="pypi:m==1", config={"study": "s"})
    files.write_table(df, tmp_path / "t.parquet", meta)
    pd.testing.assert_frame_equal(files.read_table(tmp_path / "t.parquet"), df)
    back = files.read_table_meta(tmp_path / "t.parquet")
    assert back["config_hash"] == "abc123" and back["seed"] == 3 and back["config"] == {"study": "s"}
    assert back["promptgrid_version"] and back["git_commit"] and "torch" in back["packages"]


def test_prompt_roundtrip_keeps_values_and_metadata(tmp_path):
    p = torch.randn(5, 7)
    files.save_prompt(tmp_path / "p.safetensors", p, {"task": "t", "seed": 2, "step": 40})
    back, meta = files.load_prompt(tmp_path / "p.safetensors", expect_dim=7, expect_length=5)
    assert torch.equal(back, p) and meta == {"task": "t", "seed": 2, "step": 40}
    with pytest.raises(ValueError, match=r"\(L, d\)"):
        files.save_prompt(tmp_path / "bad.safetensors", torch.zeros(2, 3, 4), {})


def test_checkpoint_loads_with_weights_only(tmp_path):
    files.save_torch_checkpoint(tmp_path / "c.pt", {"bank": torch.ones(2), "state": {"step": 3, "curve": [1.5]}})
    assert files.load_torch_checkpoint(tmp_path / "c.pt")["state"]["step"] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        files.load_torch_checkpoint(tmp_path / "evil.pt")
