"""Runs that never corrupt, collide or crash on output paths (issue 16): writability checks, the work-dir
lock, ENOSPC during a checkpoint, stray temp files, --resume messages, SIGTERM/SIGINT and kill -9."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import detcli.engine as engine
from detcli.engine import runlock
from detcli.engine.hooks import Hook
from detcli.engine.runner import TrainingInterrupted
from detcli.errors import CheckpointError, OutputError
from detcli.fileio import atomic_output, check_writable_dir, check_writable_file, clean_temp_files
from detcli.registry import HOOKS

from engine_helpers import tiny_cfg

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


@HOOKS.register()
class StopAt4Hook(Hook):
    """Asks the runner to stop after iteration 4, as the SIGTERM handler does."""

    def after_iter(self, runner: Any) -> None:
        if runner.iter == 4:
            runner.request_stop("SIGTERM")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def a_dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- writability checks


def test_check_writable_dir_under_a_regular_file(tmp_path: Path) -> None:
    img = tmp_path / "img.jpg"
    img.write_bytes(b"x")
    with pytest.raises(OutputError, match=rf"{img}/sub: the work dir cannot be created: {img} is a file, not a folder; choose another path"):
        check_writable_dir(img / "sub", "work dir")
    with pytest.raises(OutputError, match=rf"{img}: the out dir is a file; choose another path"):
        check_writable_dir(img, "out dir")
    with pytest.raises(OutputError, match=r"results.json: the results file is a folder"):
        (tmp_path / "results.json").mkdir()
        check_writable_file(tmp_path / "results.json", "results file")
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.jpg", "results.json"]  # the probe is gone


def test_check_writable_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root may write anywhere: fake the read-only folder
    with pytest.raises(OutputError, match=rf"{tmp_path}/out: cannot write the show dir \(in {tmp_path}\): permission denied: "
                                          "choose a writable path"):
        check_writable_dir(tmp_path / "out", "show dir")


def test_check_writable_dir_read_only_mount() -> None:
    try:
        fd = os.open("/sys/.det-probe", os.O_CREAT | os.O_WRONLY)
    except OSError:
        pass
    else:
        os.close(fd)
        pytest.skip("/sys is writable here")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys")
    with pytest.raises(OutputError, match=r"/sys/det: cannot write the work dir \(in /sys\): "):
        check_writable_dir("/sys/det", "work dir")


def test_train_into_a_path_under_a_file_fails_before_any_work(tmp_path: Path) -> None:
    img = tmp_path / "img.jpg"
    img.write_bytes(b"x")
    with pytest.raises(OutputError, match=rf"{img}/run: the work dir \(--work-dir\) cannot be created: {img} is a file"):
        engine.train(tiny_cfg(), work_dir=img / "run", cfg_source="tiny.yaml")


def test_test_out_and_show_dir_are_checked_before_inference(tmp_path: Path) -> None:
    run = engine.train(tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1}), work_dir=tmp_path / "run",
                       cfg_source="tiny.yaml", validate=False)
    img = tmp_path / "img.jpg"
    img.write_bytes(b"x")
    with pytest.raises(OutputError, match=rf"{img}/r.json: cannot write the folder of the results file \(--out\)|"
                                          rf"{img}: the folder of the results file \(--out\) is a file"):
        engine.test(None, str(run.last_checkpoint), out=str(img / "r.json"))
    with pytest.raises(OutputError, match=rf"{img}/shown: the show dir \(--show-dir\) cannot be created"):
        engine.test(None, str(run.last_checkpoint), show_dir=str(img / "shown"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.jpg", "run"]


def test_test_out_is_locked_against_a_second_writer(tmp_path: Path) -> None:
    run = engine.train(tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1}), work_dir=tmp_path / "run",
                       cfg_source="tiny.yaml", validate=False)
    out = tmp_path / "res" / "r.json"
    with runlock.output_lock(out, "results file (--out)"):  # as a running `det test --out` holds it
        with pytest.raises(OutputError, match=rf"{out.parent}: the results file \(--out\) is in use by another det run "
                                              rf"\(PID {os.getpid()} on host {socket.gethostname()}"):
            engine.test(None, str(run.last_checkpoint), out=str(out))
    result = engine.test(None, str(run.last_checkpoint), out=str(out))
    assert result.out == out and json.loads(out.read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]  # the lock is gone


def test_atomic_output_enospc_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(OutputError, match=rf"{target}: cannot write the file: no space left on the device: free some "
                                          r"space .* \(the previous a.json is unchanged\)"):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# --------------------------------------------------------------------------- checkpoints: ENOSPC, stray temp files


def test_enospc_while_writing_a_checkpoint_keeps_latest_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save
    calls = {"n": 0}

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the epoch-2 checkpoint: half of it written, then the disk is full
            Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(OutputError, match=rf"checkpoint at iteration 8 not saved: {run}/epoch_2.pth: cannot write the file: "
                                          rf"no space left on the device.*; {run}/latest.pth still holds iteration 4 and "
                                          "resumes with --resume"):
        engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml", validate=False)
    ckpt = engine.load_checkpoint(run / "latest.pth")
    assert ckpt["meta"]["epoch"] == 1 and ckpt["meta"]["iter"] == 4
    names = sorted(p.name for p in run.iterdir())
    assert not [n for n in names if "tmp" in n or n.startswith(".")], names  # no temp file, no lock left
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"].startswith("failed: OutputError: checkpoint at iteration 8 not saved")


def test_stray_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    strays = [".epoch_1.pth.k2j3ab_x.tmp.pth", ".latest.pth.4242.tmp", ".manifest.json.abcdefgh.tmp.json"]
    keep = [".mine.tmp", "notes.tmp.pth", "x.pth.abcdefgh.tmp.pth"]  # not det's temp names
    for name in strays + keep:
        (run / name).write_bytes(b"x" * 10)
    assert sorted(p.name for p in clean_temp_files(run)) == sorted(strays)
    for name in strays:
        (run / name).write_bytes(b"x")
    engine.train(tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1}), work_dir=run, cfg_source="tiny.yaml",
                 validate=False)
    names = {p.name for p in run.iterdir()}
    assert not names & set(strays) and set(keep) <= names


# --------------------------------------------------------------------------- work-dir lock


def test_second_run_in_the_same_work_dir_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "2026-12-05 10:00:00",
                "argv": "det train tiny.yaml", "start_time": runlock._start_time(sleeper.pid)}
        (run / ".det.lock").write_text(json.dumps(info))
        with pytest.raises(OutputError, match=rf"{run}: the work dir is in use by another det run \(PID {sleeper.pid} on host "
                                              rf"{socket.gethostname()} since 2026-12-05 10:00:00 \(det train tiny.yaml\)\): "
                                              "wait for it to finish, stop it, or use another work dir"):
            engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml")
        assert sorted(p.name for p in run.iterdir()) == [".det.lock"]  # nothing written, the lock kept
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_of_another_host_names_the_file_to_delete(tmp_path: Path) -> None:
    (tmp_path / ".det.lock").write_text(json.dumps({"pid": 1, "host": "gpu-node-7"}))
    with pytest.raises(OutputError, match=rf"\(PID 1 on host gpu-node-7\): if that run is over, delete {tmp_path}/.det.lock"):
        runlock.acquire(tmp_path / ".det.lock")


def test_stale_lock_of_a_crashed_run_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = a_dead_pid()
    (run / ".det.lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    result = engine.train(tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1}), work_dir=run,
                          cfg_source="tiny.yaml", validate=False)
    assert result.iters == 4
    assert f"taking over the stale lock {run}/.det.lock: its run (PID {dead} on host {socket.gethostname()}) is no longer running" \
        in caplog.text
    assert not (run / ".det.lock").exists()


def test_unreadable_lock_is_stale_after_a_grace_period(tmp_path: Path) -> None:
    lock = tmp_path / ".det.lock"
    lock.write_text("")  # killed between creating and writing it
    with pytest.raises(OutputError, match="in use by another det run \\(a run that is starting\\)"):
        runlock.acquire(lock)
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert runlock.acquire(lock)["pid"] == os.getpid()
    runlock.release(lock)
    assert not lock.exists()


def test_two_processes_training_in_one_work_dir(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_TRAIN.format(root=str(ROOT), helpers=str(HERE), work_dir=str(tmp_path / "run"),
                                        marker=str(tmp_path / "started"), stop_after=0, sleep=2.0, workers=0))
    first = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(tmp_path / "started", first)
        second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"OutputError: {tmp_path / 'run'}: the work dir is in use by another det run (PID {first.pid} on host " \
               f"{socket.gethostname()}" in second.stdout
    finally:
        first.kill()
        first.wait()


# --------------------------------------------------------------------------- resume messages


def test_resume_of_a_run_killed_before_its_first_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    with pytest.raises(CheckpointError, match=rf"{run}: the run has no checkpoint yet \(it stopped before saving its first "
                                              r"one, so there is no latest.pth to resume\): start it fresh with the same "
                                              "command without --resume"):
        engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml", resume=True)
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/nowhere: no run to resume \(no such work dir"):
        engine.train(tiny_cfg(), work_dir=tmp_path / "nowhere", cfg_source="tiny.yaml", resume=True)
    assert not (tmp_path / "nowhere").exists()


def test_resume_path_with_any_suffix(tmp_path: Path) -> None:
    first = engine.train(tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1}), work_dir=tmp_path / "a",
                         cfg_source="tiny.yaml", validate=False)
    renamed = tmp_path / "snapshot.ckpt"
    os.link(first.last_checkpoint, renamed)
    result = engine.train(tiny_cfg(), work_dir=tmp_path / "a", cfg_source="tiny.yaml", resume=str(renamed), validate=False)
    assert result.resumed_from == renamed and result.epochs == 2


def test_cli_resume_takes_a_path_whatever_its_suffix(tmp_path: Path) -> None:
    from detcli.cli import normalize_argv

    ckpt = tmp_path / "snapshot.ckpt"
    ckpt.write_bytes(b"x")
    assert normalize_argv(["train", "p.yaml", "--resume", str(ckpt)]) == ["train", "p.yaml", "--resume", str(ckpt)]
    assert normalize_argv(["train", "p.yaml", "--resume", "run/iter_4"]) == ["train", "p.yaml", "--resume", "run/iter_4"]
    assert normalize_argv(["train", "p.yaml", "--resume", "x.pth"]) == ["train", "p.yaml", "--resume", "x.pth"]
    assert normalize_argv(["train", "--resume", "p.yaml"]) == ["train", "--resume", "auto", "p.yaml"]
    assert normalize_argv(["train", "--resume", "quickstart"]) == ["train", "--resume", "auto", "quickstart"]
    assert normalize_argv(["train", "p.yaml", "--resume"]) == ["train", "p.yaml", "--resume", "auto"]
    assert normalize_argv(["train", "p.yaml", "--resume", "--seed", "1"]) == ["train", "p.yaml", "--resume", "auto", "--seed", "1"]


# --------------------------------------------------------------------------- signals and kill -9 (subprocesses)

SLOW_TRAIN = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    sys.path[:0] = [{root!r}, {helpers!r}]
    import detcli.engine as engine
    from detcli.engine.hooks import Hook
    from detcli.registry import HOOKS
    from detcli.errors import DetError
    from engine_helpers import tiny_cfg

    @HOOKS.register()
    class SlowHook(Hook):
        """Writes the marker after iteration {stop_after} (0: when the run starts), then sleeps each iteration."""
        def before_run(self, runner):
            if {stop_after} == 0:
                Path({marker!r}).write_text("run")
        def after_iter(self, runner):
            if runner.iter == {stop_after}:
                Path({marker!r}).write_text(str(runner.iter))
            time.sleep({sleep} if runner.iter >= {stop_after} else 0)

    def cfg(hooks):
        c = tiny_cfg(runner={{"type": "EpochBasedRunner", "max_epochs": 3}})
        c["data"]["train"]["num_images"] = 10  # 5 iterations per epoch
        c["data"]["workers_per_gpu"] = {workers}
        c["checkpoint_config"] = {{"interval": 1}}
        c["evaluation"] = {{"interval": 2, "metric": "bbox"}}
        if hooks:
            c["custom_hooks"] = [{{"type": "SlowHook", "priority": "LOWEST"}}]
        return c

    if __name__ == "__main__":
        try:
            engine.train(cfg(True), work_dir=Path({work_dir!r}), cfg_source="tiny.yaml", resume=len(sys.argv) > 1 or None)
        except DetError as e:
            print(f"{{type(e).__name__}}: {{e}}", flush=True)
            sys.exit(1)
''')


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the training subprocess did not reach the marker"
        time.sleep(0.05)


def uninterrupted(tmp_path: Path) -> Path:
    return engine.train(_script_cfg(), work_dir=tmp_path / "full", cfg_source="tiny.yaml").work_dir / "epoch_3.pth"


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGTERM, 0), (signal.SIGINT, 0), (signal.SIGTERM, 1)])
def test_signal_mid_epoch_checkpoints_and_resume_is_bit_identical(tmp_path: Path, sig: signal.Signals, workers: int) -> None:
    """SIGTERM / Ctrl-C of a training process (with a data loader worker: the whole process group, as Slurm
    signals every process of the job step) saves a checkpoint and resumes to the uninterrupted weights."""
    full = uninterrupted(tmp_path)
    script = tmp_path / "train.py"
    run = tmp_path / "run"
    script.write_text(SLOW_TRAIN.format(root=str(ROOT), helpers=str(HERE), work_dir=str(run),
                                        marker=str(tmp_path / "at7"), stop_after=7, sleep=0.5, workers=workers))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    wait_for(tmp_path / "at7", proc)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"TrainingInterrupted: stopped by {sig.name} after iteration ") and \
        last.endswith(f"; continue with --resume (work dir {run})"), out
    stopped_at = int(last.split("after iteration ")[1].split("/")[0])
    assert 7 <= stopped_at < 10  # mid-epoch 2
    assert f"saved {run}/iter_{stopped_at}.pth" in last
    assert weights(run / "latest.pth").keys() == weights(run / f"iter_{stopped_at}.pth").keys()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"].startswith(f"interrupted: stopped by {sig.name}")
    assert not (run / ".det.lock").exists()
    # resume (without the slow hook's sleeps mattering) and compare with the uninterrupted run
    resumed = engine.train(_script_cfg(), work_dir=run, cfg_source="tiny.yaml", resume=True)
    assert resumed.iters == 15
    assert_same_weights(full, run / "epoch_3.pth")


def _script_cfg() -> dict[str, Any]:
    c = tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 3})
    c["data"]["train"]["num_images"] = 10
    c["checkpoint_config"] = {"interval": 1}
    c["evaluation"] = {"interval": 2, "metric": "bbox"}
    return c


KILL_IN_WRITE = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    sys.path[:0] = [{root!r}, {helpers!r}]
    import torch
    import detcli.engine as engine
    from engine_helpers import tiny_cfg

    real_save = torch.save
    calls = [0]

    def slow_save(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == 2:  # inside the write window of the epoch-2 checkpoint
            with open(f, "wb") as fh:
                fh.write(b"partial" * 1000)
            Path({marker!r}).write_text("writing")
            time.sleep(120)
        real_save(obj, f, *a, **k)

    torch.save = slow_save
    engine.train(tiny_cfg(), work_dir=Path({work_dir!r}), cfg_source="tiny.yaml", validate=False)
''')


def test_kill_9_during_a_checkpoint_write_keeps_latest_loadable(tmp_path: Path) -> None:
    run = tmp_path / "run"
    script = tmp_path / "kill.py"
    script.write_text(KILL_IN_WRITE.format(root=str(ROOT), helpers=str(HERE), work_dir=str(run), marker=str(tmp_path / "w")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(tmp_path / "w", proc)
    proc.kill()
    proc.wait()
    strays = [p.name for p in run.iterdir() if p.name.startswith(".epoch_2.pth.")]
    assert len(strays) == 1 and strays[0].endswith(".tmp.pth")
    ckpt = engine.load_checkpoint(run / "latest.pth")  # the previous checkpoint, whole
    assert ckpt["meta"]["epoch"] == 1
    assert not (run / "epoch_2.pth").exists()
    # the next start takes over the dead run's lock, removes the torn temp file and resumes
    result = engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml", validate=False, resume=True)
    assert result.epochs == 2
    names = {p.name for p in run.iterdir()}
    assert not [n for n in names if n.startswith(".")], names
    reference = engine.train(tiny_cfg(), work_dir=tmp_path / "ref", cfg_source="tiny.yaml", validate=False)
    assert_same_weights(reference.work_dir / "epoch_2.pth", run / "epoch_2.pth")


def test_training_interrupted_is_a_training_error() -> None:
    from detcli.errors import TrainingError

    assert issubclass(TrainingInterrupted, TrainingError)


def test_stop_that_cuts_an_iteration_short_points_at_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detcli.engine.runner import Runner

    real = Runner.run_iter

    def run_iter(self: Runner, batch: Any) -> None:
        if self.iter == 5:  # SIGTERM, then its fallout (a killed loader worker) raises inside the step
            self.request_stop("SIGTERM")
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
        real(self, batch)

    monkeypatch.setattr(Runner, "run_iter", run_iter)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=rf"^stopped by SIGTERM during iteration 6/8 \(DataLoader worker \(pid 1\) is "
                                                  rf"killed by signal: Terminated.\): continue from {run}/latest.pth \(iteration 4\) "
                                                  rf"with --resume \(work dir {run}\)$"):
        engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml", validate=False)
    assert engine.load_checkpoint(run / "latest.pth")["meta"]["iter"] == 4
    assert not list(run.glob("iter_*.pth"))


def test_stop_after_a_checkpoint_without_optimizer_saves_a_resumable_one(tmp_path: Path) -> None:
    """latest.pth must resume after a stop: a checkpoint saved without the optimizer (or a best_*.pth) does not count."""
    cfg = tiny_cfg(checkpoint_config={"interval": 2, "by_epoch": False, "save_optimizer": False},
                   custom_hooks=[{"type": "StopAt4Hook", "priority": "LOWEST"}])
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=rf"after iteration 4/8: saved {run}/iter_4.pth; continue with --resume"):
        engine.train(cfg, work_dir=run, cfg_source="tiny.yaml", validate=False)
    assert torch.load(run / "latest.pth", weights_only=True)["optimizer"] is not None


@HOOKS.register()
class StopInEvalHook(Hook):
    """Asks for a stop from inside epoch 1's after_epoch (as a SIGTERM during evaluation would)."""

    priority = "LOWEST"

    def after_epoch(self, runner: Any) -> None:
        if runner.epoch == 1:
            runner.request_stop("SIGTERM")


def test_stop_during_the_epoch_end_stops_before_the_next_epoch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(custom_hooks=[{"type": "StopInEvalHook"}])
    with pytest.raises(TrainingInterrupted, match=rf"^stopped by SIGTERM after iteration 4/8: {run}/latest.pth holds it; continue with --resume"):
        engine.train(cfg, work_dir=run, cfg_source="tiny.yaml")
    assert engine.load_checkpoint(run / "latest.pth")["meta"]["epoch"] == 1
    assert sorted(p.name for p in run.glob("*.pth")) == ["epoch_1.pth", "latest.pth"]
    resumed = engine.train(tiny_cfg(), work_dir=run, cfg_source="tiny.yaml", resume=True)
    full = engine.train(tiny_cfg(), work_dir=tmp_path / "full", cfg_source="tiny.yaml")
    assert resumed.iters == 8
    assert_same_weights(full.work_dir / "epoch_2.pth", run / "epoch_2.pth")
