"""Resume only from a complete checkpoint (train/checkpoints.py) on fake checkpoint folders."""

from __future__ import annotations

import pytest

from train.checkpoints import is_complete, last_complete, set_aside_incomplete

COMPLETE = ("trainer_state.json", "model.safetensors", "optimizer.pt")


def ckpt(output_dir, step, files=COMPLETE, ds_folder=False):
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text("{}" if name.endswith(".json") else "x")
    if ds_folder:  # DeepSpeed: states in global_stepN/, named by `latest`
        (folder / f"global_step{step}").mkdir()
    return folder


@pytest.mark.parametrize("files, complete", [
    (COMPLETE, True),
    (("trainer_state.json", "model.safetensors.index.json", "optimizer.pt"), True),   # sharded weights
    (("trainer_state.json", "pytorch_model.bin", "optimizer.pt"), True),
    (("trainer_state.json", "model.safetensors", "latest"), True),                     # DeepSpeed
    (("model.safetensors", "optimizer.pt"), False),                                    # killed before the state
    (("trainer_state.json", "optimizer.pt"), False),                                   # no weights
    (("trainer_state.json", "model.safetensors"), False),                              # save_only_model: cannot resume
    ((), False),
], ids=["plain", "sharded", "bin", "deepspeed-latest", "no-trainer-state", "no-weights", "no-optimizer", "empty"])
def test_is_complete(tmp_path, files, complete):
    assert is_complete(ckpt(tmp_path, 4, files, ds_folder="latest" in files)) is complete


def test_a_trainer_state_cut_short_is_incomplete(tmp_path):
    """Killed while the trainer state was written: LLaMA-Factory would fail on it at every resume."""
    folder = ckpt(tmp_path, 4)
    (folder / "trainer_state.json").write_text('{"global_step": 4, "log_history": [{"loss": 6.0')
    assert not is_complete(folder)
    assert last_complete(tmp_path) is None


def test_incomplete_checkpoints_are_set_aside_and_complete_ones_kept(tmp_path):
    ckpt(tmp_path, 4)
    ckpt(tmp_path, 8, ("model.safetensors",))
    logged = []
    moved = set_aside_incomplete(tmp_path, log=logged.append)
    assert [p.name for p in moved] == ["incomplete-checkpoint-8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "incomplete-checkpoint-8"]
    assert (tmp_path / "incomplete-checkpoint-8" / "model.safetensors").read_text() == "x"   # moved, not deleted
    assert "checkpoint-8 is incomplete" in logged[0]


def test_killed_twice_at_the_same_step_gets_a_fresh_name(tmp_path):
    """A second kill while saving the same step used to crash: rename onto a non-empty folder."""
    ckpt(tmp_path, 8, ("model.safetensors",))
    set_aside_incomplete(tmp_path, log=lambda m: None)
    ckpt(tmp_path, 8, ("optimizer.pt",))
    set_aside_incomplete(tmp_path, log=lambda m: None)
    ckpt(tmp_path, 8, ())
    moved = set_aside_incomplete(tmp_path, log=lambda m: None)
    assert [p.name for p in moved] == ["incomplete-checkpoint-8.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "incomplete-checkpoint-8", "incomplete-checkpoint-8.1", "incomplete-checkpoint-8.2"]
    assert (tmp_path / "incomplete-checkpoint-8" / "model.safetensors").exists()
    assert (tmp_path / "incomplete-checkpoint-8.1" / "optimizer.pt").exists()


def test_last_complete_is_the_highest_complete_step(tmp_path):
    assert last_complete(tmp_path) is None
    ckpt(tmp_path, 9)
    ckpt(tmp_path, 10)       # numeric order: 10 after 9
    ckpt(tmp_path, 12, ("trainer_state.json",))
    (tmp_path / "checkpoint-x").mkdir()          # not a checkpoint name
    (tmp_path / "incomplete-checkpoint-20").mkdir()
    assert last_complete(tmp_path).name == "checkpoint-10"
