import pytest
import torch
from safetensors.torch import save_file

from mala.checkpoint import load_checkpoint, save_checkpoint
from mala.model.load import load_module_state, load_trained_model
from mala.errors import CheckpointError
from mala.model import MALA


def test_roundtrip_of_nested_state_with_optimizer(tmp_path, small_config):
    model = MALA(small_config.model)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.rand(1, 3, 64, 64)).mean().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optim": optimizer.state_dict(), "progress": {"stage": 1, "epoch": 3}}
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["progress"] == {"stage": 1, "epoch": 3}
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    fresh = torch.optim.AdamW(model.parameters())
    fresh.load_state_dict(loaded["optim"])
    trained = next(iter(optimizer.state_dict()["state"]))  # only parameters that got gradients have state
    assert torch.equal(fresh.state_dict()["state"][trained]["exp_avg"], optimizer.state_dict()["state"][trained]["exp_avg"])
    assert not list(tmp_path.glob("*.tmp"))


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="model.safetensors: not a safetensors checkpoint"):
        load_checkpoint(path)


def test_foreign_safetensors_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a mala checkpoint"):
        load_trained_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_trained_model(tmp_path / "nope.safetensors")


def test_weights_of_another_model_list_the_mismatch(tmp_path, small_config):
    model = MALA(small_config.model)
    state = model.state_dict()
    state.pop("norm.weight")
    state["decoder_pred.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"missing: norm.weight; wrong shape: decoder_pred.weight"):
        load_module_state(model, state, tmp_path / "x.safetensors")
