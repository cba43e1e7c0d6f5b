"""Checkpoints are plain data loaded with ``torch.load(weights_only=True)`` (``algo/checkpoint.py``):
a crafted pickle is refused with ``ArtifactError`` naming the file, and its payload never runs."""

import pickle

import pytest
import torch

from attnforge.algo.checkpoint import load_checkpoint_file, read_plain, save_checkpoint_file
from attnforge.cli import EXIT_BAD_INPUT, main
from attnforge.errors import ArtifactError, MissingArtifactError


class Payload:
    """Unpickling this opens (creates) ``marker``: what a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_files(tmp_path):
    """(file, marker) pairs: a torch zip checkpoint and a bare pickle, each with a payload."""
    out = []
    for n, how in enumerate(("torch", "pickle")):
        marker = tmp_path / f"pwned{n}"
        path = tmp_path / f"evil{n}.pt"
        payload = {"format": "attnforge.linear_lm/1", "config": Payload(marker)}
        if how == "torch":
            torch.save(payload, path)
        else:
            path.write_bytes(pickle.dumps(payload))
        out.append((path, marker))
    return out


def _junk_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 7)
    return [tmp_path / "empty.pt", tmp_path / "random.pt"]


def test_payload_refused_and_not_run(tmp_path):
    for path, marker in _evil_files(tmp_path):
        with pytest.raises(ArtifactError, match=str(path)):
            load_checkpoint_file(path, kind="test checkpoint")
        assert not marker.exists()


def test_junk_and_missing_files_name_the_file(tmp_path):
    for path in _junk_files(tmp_path):
        with pytest.raises(ArtifactError, match=str(path)):
            read_plain(path, kind="test checkpoint")
    with pytest.raises(MissingArtifactError, match="nothing.pt"):
        read_plain(tmp_path / "nothing.pt", kind="test checkpoint")
    with pytest.raises(ArtifactError, match="is a folder"):
        read_plain(tmp_path, kind="test checkpoint")


def test_foreign_plain_data_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"format": "other/1"}, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="a list"):
        load_checkpoint_file(tmp_path / "list.pt", kind="test checkpoint")
    with pytest.raises(ArtifactError, match="'other/1'"):
        load_checkpoint_file(tmp_path / "other.pt", kind="test checkpoint", format="mine/1")


def test_plain_round_trip_is_atomic(tmp_path):
    ck = {"format": "mine/1", "cfg": {"a": 1, "b": [1.5, True, None]}, "w": torch.arange(4), "log": [(1, 0.5)]}
    path = save_checkpoint_file(tmp_path / "sub" / "c.pt", ck)
    back = load_checkpoint_file(path, kind="test checkpoint", format="mine/1")
    assert back["cfg"] == ck["cfg"] and torch.equal(back["w"], ck["w"]) and back["log"] == ck["log"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]      # no temporary file left


def _cli_loaders(path):
    """Every command that loads a checkpoint, given ``path``."""
    return [["vitcod", "eval", "--checkpoint", str(path)],
            ["vitcod", "finetune", "--checkpoint", str(path), "--masks", str(path)],
            ["linear", "eval", str(path)],
            ["tickets", "export", str(path)],
            ["tickets", "draw", str(path), "--pattern", "nm", "--level", "2:4"]]


def test_cli_loaders_refuse_payloads_with_exit_2(tmp_path, capsys):
    for path, marker in _evil_files(tmp_path) + [(p, None) for p in _junk_files(tmp_path)]:
        for argv in _cli_loaders(path):
            assert main(argv) == EXIT_BAD_INPUT, argv
            err = capsys.readouterr().err
            assert str(path) in err and err.count("\n") == 1, (argv, err)
            assert marker is None or not marker.exists()


def test_library_loaders_refuse_payloads(tmp_path):
    from attnforge.algo.linear.train import load_checkpoint as linear_load
    from attnforge.algo.tickets.train import load_checkpoint as tickets_load
    from attnforge.algo.vitcod.prepare import peek_config
    from attnforge.algo.vitcod.train import load_checkpoint as vitcod_load, load_model

    for path, marker in _evil_files(tmp_path):
        for load in (linear_load, tickets_load, vitcod_load, load_model, peek_config):
            with pytest.raises(ArtifactError, match=str(path)):
                load(path)
        assert not marker.exists()
