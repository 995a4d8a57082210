"""Training loop: resume equals an uninterrupted run, nothing good is overwritten, bad input is refused, DDP runs."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seresnet import create_model
from seresnet.evaluate import evaluate
from seresnet.pretrained import load_into, load_model
from seresnet.train import TrainConfig, load_checkpoint, lr_at, main, parse_overrides, train


def tiny_cfg(root: Path, out: Path | None, **kw) -> TrainConfig:
    base = dict(model="se_resnet20", epochs=3, batch_size=32, lr=0.05, data=str(root), out=str(out) if out else None,
                threads=1, warmup_epochs=1.0)
    base.update(kw)
    return TrainConfig(**base)


class Interrupt(Exception):
    pass


def test_resume_continues_to_the_same_result(tiny_folder: Path, tmp_path: Path) -> None:
    full = train(tiny_cfg(tiny_folder, tmp_path / "full"), progress=False)

    def stop_after_first(history: list) -> None:
        if len(history) == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_cfg(tiny_folder, tmp_path / "cut"), progress=False, on_epoch_end=stop_after_first)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = train(tiny_cfg(tiny_folder, tmp_path / "cut"), resume=True, progress=False)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["test_acc"] for r in full.history] == [r["test_acc"] for r in resumed.history]
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    hist = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    # the final weights load back into the same model
    reloaded = load_model(tmp_path / "cut")
    assert torch.equal(reloaded.fc.weight, resumed.model.fc.weight)


def test_existing_run_is_never_overwritten(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)
    with pytest.raises(ValueError, match="different recipe: model was .se_resnet20., now .resnet20."):
        train(tiny_cfg(tiny_folder, out, model="resnet20"), resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    saved: dict[str, bytes] = {}

    def poison(history: list) -> None:
        saved["ckpt"] = (out / "checkpoint.pt").read_bytes()
        with torch.no_grad():
            for p in model_ref[0].parameters():
                p.fill_(float("nan"))

    model_ref: list = []
    import seresnet.train as tr

    real_create = tr.create_model

    def capture_model(*a, **kw):
        m = real_create(*a, **kw)
        model_ref.append(m)
        return m

    tr.create_model = capture_model
    try:
        with pytest.raises(FloatingPointError, match="last good checkpoint"):
            train(tiny_cfg(tiny_folder, out), progress=False, on_epoch_end=poison)
    finally:
        tr.create_model = real_create
    assert (out / "checkpoint.pt").read_bytes() == saved["ckpt"]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert not (out / "model.safetensors").exists()


def test_damaged_or_wrong_checkpoints_get_clear_errors(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(tiny_folder, out, epochs=1), progress=False)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"not a readable seresnet checkpoint \(truncated, corrupted"):
        train(tiny_cfg(tiny_folder, out, epochs=2), resume=True, progress=False)
    with pytest.raises(ValueError, match="mis-shaped"):
        load_into(create_model("se_resnet20", num_classes=5), create_model("se_resnet20").state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        load_into(create_model("se_resnet20"), create_model("resnet20").state_dict())
    # damaged metadata: named, not a bare KeyError or a JSON error without the file
    meta = out / "metadata.json"
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="metadata.json is not valid JSON"):
        load_model(out)
    meta.write_text('{"model": "se_resnet20"}')
    with pytest.raises(ValueError, match="has no 'model_config'"):
        load_model(out)
    meta.unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        load_model(out / "model.safetensors")
    # not a checkpoint at all: the error must not pass on torch's advice to load it with weights_only=False
    ckpt.write_text("garbage")
    with pytest.raises(ValueError, match="not a readable seresnet checkpoint") as err:
        load_model(ckpt)
    assert "weights_only` set to `False" not in str(err.value)


def test_bad_settings_fail_before_writing(tiny_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch size 1000 is larger than the 120 images"):
        train(tiny_cfg(tiny_folder, tmp_path / "a", batch_size=1000), progress=False)
    with pytest.raises(ValueError, match="unknown model 'se_resnet21'.*se_resnet20"):
        train(tiny_cfg(tiny_folder, tmp_path / "b", model="se_resnet21"), progress=False)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 was not found"):
        train(tiny_cfg(tmp_path / "no-data", tmp_path / "c"), progress=False)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_command_line(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert parse_overrides(["reduction=8", "gate=tanh", "se_stages=2,3", "zero_init_last=true"]) == {
        "reduction": 8, "gate": "tanh", "se_stages": (2, 3), "zero_init_last": True}
    out = tmp_path / "cli"
    args = ["--model", "se_resnet20", "--set", "reduction=8", "--epochs", "1", "--batch-size", "40", "--data",
            str(tiny_folder), "--out", str(out), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model_config"]["reduction"] == 8 and meta["epochs"] == 1
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(args[:2] + ["--set", "reduction=0", "--data", str(tiny_folder)]) == 2
    assert "reduction ratio must be a positive integer" in capsys.readouterr().err


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = [lr_at(s, 100, 10, 0.1) for s in range(100)]
    assert lrs[9] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3


def test_evaluate_confusion_matrix() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (50,))
    res = evaluate(model, x, y, batch_size=16)
    from seresnet.data import normalize

    with torch.no_grad():
        preds = model(normalize(x)).argmax(1)
    assert torch.equal(res.predictions, preds)
    assert res.accuracy == pytest.approx((preds == y).float().mean().item())
    for t in range(10):
        for p in range(10):
            assert res.confusion[t, p] == ((y == t) & (preds == p)).sum()


def test_flip_test_time_augmentation_averages_image_and_mirror() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (20,))
    from seresnet.data import normalize
    from seresnet.evaluate import predict_logits

    with torch.no_grad():
        expected = (model(normalize(x)) + model(normalize(x.flip(3)))) / 2
    torch.testing.assert_close(predict_logits(model, x, batch_size=8, flip_tta=True), expected)
    assert torch.equal(evaluate(model, x, y, flip_tta=True).predictions, expected.argmax(1))


def _proc_address(hexaddr: str) -> str:
    """An address from /proc/net/tcp{,6}: the bytes of each 32-bit word are in host byte order."""
    raw = bytes.fromhex(hexaddr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def listening_sockets(root_pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by ``root_pid`` or a descendant (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    pids, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        pids.add(pid)
        todo += children.get(pid, [])
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN; field 9: the socket's inode
                address, port = fields[1].split(":")
                found.add((_proc_address(address), int(port, 16)))
    return found


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


needs_proc_net = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc")


@needs_proc_net
def test_loopback_store_listens_on_loopback_only() -> None:
    """torch's own TCPStore server listens on all interfaces (``*:port``) whatever host it is given (torch 2.14);
    seresnet.launch's listens on the loopback address only, and clients reach it as usual."""
    import torch.distributed as dist

    from seresnet.launch import LoopbackTCPStore

    for use_libuv in (True, False):
        store = LoopbackTCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, use_libuv=use_libuv)
        assert {a for a, p in listening_sockets(os.getpid()) if p == store.port} == {"127.0.0.1"}
        store.set("key", "value")
        assert dist.TCPStore("127.0.0.1", store.port, is_master=False).get("key") == b"value"
        del store


@pytest.mark.parametrize("args", [["--rdzv-endpoint", "192.0.2.1:29400"], ["--nnodes", "2"],
                                  ["--local-addr", "192.0.2.1"], ["--master-addr", "192.0.2.1", "--master-port", "1"]])
def test_launch_refuses_other_machines(args: list[str]) -> None:
    from seresnet.launch import main as launch

    with pytest.raises(SystemExit, match="seresnet.launch: .*(not a loopback address|runs on one machine)"):
        launch([*args, "--nproc_per_node", "1", "-m", "seresnet.train"])


@pytest.mark.slow
@needs_proc_net
def test_distributed_data_parallel_with_gloo(tiny_folder: Path, tmp_path: Path) -> None:
    """Two processes train; while they run, every listening socket of the launcher and workers is on 127.0.0.1."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = free_loopback_port()
    cmd = [sys.executable, "-m", "seresnet.launch", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
           "--local-addr", "127.0.0.1", "--nproc_per_node", "2",
           "-m", "seresnet.train", "--model", "resnet20", "--epochs", "2", "--batch-size", "20",
           "--data", str(tiny_folder), "--out", str(out), "--no-progress", "--threads", "1"]
    log = tmp_path / "launch.log"
    listening: set[tuple[str, int]] = set()
    with open(log, "w") as log_file:  # a file, not a pipe: nobody reads a pipe while we poll
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                listening |= listening_sockets(proc.pid)
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher's own session: it and its workers only
                proc.wait()
    assert proc.returncode == 0, log.read_text()[-6000:]
    assert port in {p for _, p in listening}, f"the rendezvous store was never seen listening: {listening}"
    assert all(_is_loopback(a) for a, _ in listening), f"sockets listening beyond loopback: {sorted(listening)}"
    hist = json.loads((out / "history.json").read_text())
    # two processes each see half of the 120 images: 3 steps of 20 per process per epoch
    assert len(hist) == 2 and all(0 <= r["test_acc"] <= 1 for r in hist)
    assert load_model(out).num_classes == 10


@pytest.mark.slow
def test_compiled_training_writes_plain_checkpoints(tiny_folder: Path, tmp_path: Path) -> None:
    """``compile=True`` (the shipped recipe's ``--compile``; for se_resnet20 with the squeeze taken from the BN
    statistics, under bf16 autocast and channels_last) trains and saves weights under the model's own names."""
    out = tmp_path / "compiled"
    result = train(tiny_cfg(tiny_folder, out, epochs=1, compile=True), progress=False)
    assert len(result.history) == 1 and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert set(ckpt["model"]) == set(create_model("se_resnet20").state_dict())  # no "_orig_mod." prefixes
    assert ckpt["train_config"]["compile"] is True
    reloaded = load_model(out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), result.model.eval()(x))


def test_compile_without_a_cpp_compiler_fails_before_writing(tiny_folder: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "nocc"
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        train(tiny_cfg(tiny_folder, out, epochs=1, compile=True), progress=False)
    assert not out.exists()
