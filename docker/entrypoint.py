"""Container entrypoint: make sure a model bundle exists, then serve it (or only train it).

    entrypoint.py serve [ARGS...]   bundle present? serve it. Missing? train it first (AUTO_TRAIN=1), then
                                     `exec python -m service ARGS...` (the server replaces this process)
    entrypoint.py train             train the bundle when it is missing (or always with TRAIN_FORCE=1), exit
    entrypoint.py CMD [ARGS...]     anything else is exec'd as given (`bash`, `python -m training ...`)

A bundle is present when `$ELMREC_MODEL_DIR/config.json` exists. Training writes bundles atomically
(temporary folder + rename), so a half-written bundle never looks present.

Training is serialised by an exclusive `flock` on `<parent of MODEL_DIR>/.<name>.lock`, on the shared
model volume: the `trainer` one-shot service and any number of api replicas (`--scale api=N`) may all
find the volume empty at the same time; exactly one trains, the others wait for the lock, see the bundle
and go on. Training runs with `--resume`, so a container stopped mid-training continues from
`<MODEL_DIR>.ckpt` when it starts again.

Environment (besides the service's own ELMREC_* settings):
    ELMREC_MODEL_DIR     bundle folder (default /models/beauty)
    AUTO_TRAIN           serve mode: train a missing bundle (1, default) or fail with a message (0)
    TRAIN_DATA           dataset to train on (default /app/data/beauty, the bundled Amazon Beauty data)
    TRAIN_PRESET         tiny | small | paper (default small)
    TRAIN_MAX_MINUTES    training time budget in minutes (default: the preset's own)
    TRAIN_DEVICE         auto | cpu | cuda (default: ELMREC_DEVICE, else auto)
    TRAIN_FORCE          train mode: retrain even when a bundle is present (0 default)
    TRAIN_EXTRA_ARGS     more `python -m training train` arguments, shell-quoted (e.g. "--seed 1")
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

DEFAULT_MODEL_DIR = "/models/beauty"
DEFAULT_DATA = "/app/data/beauty"
DEFAULT_PRESET = "small"
EX_CONFIG = 78  # sysexits.h EX_CONFIG: nothing to serve and not allowed to train

Runner = Callable[[list[str]], int]


def log(message: str) -> None:
    print(f"[entrypoint] {message}", file=sys.stderr, flush=True)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def has_bundle(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file()


def bundle_version(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "config.json").read_text()).get("model_version", "?"))
    except (OSError, ValueError):
        return "?"


def lock_path(model_dir: Path) -> Path:
    return model_dir.parent / f".{model_dir.name}.lock"


@contextmanager
def training_lock(model_dir: Path) -> Iterator[None]:
    """Exclusive lock shared by every container that mounts the same model volume."""
    path = lock_path(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another container is training {model_dir}; waiting for it to finish")
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log(f"lock acquired after {time.monotonic() - started:.0f} s")
        yield  # closing the file releases the lock (also if this process dies)


def train_command(model_dir: Path, env: Mapping[str, str], resume: bool = True) -> list[str]:
    """The `python -m training train ...` command line for this container's settings."""
    cmd = [
        sys.executable, "-m", "training", "train",
        "--data", env.get("TRAIN_DATA") or DEFAULT_DATA,
        "--preset", env.get("TRAIN_PRESET") or DEFAULT_PRESET,
        "--out", str(model_dir),
        "--device", env.get("TRAIN_DEVICE") or env.get("ELMREC_DEVICE") or "auto",
    ]
    if env.get("TRAIN_MAX_MINUTES"):
        cmd += ["--max-minutes", env["TRAIN_MAX_MINUTES"]]
    if resume:
        cmd.append("--resume")  # harmless without a checkpoint; continues an interrupted run
    cmd += shlex.split(env.get("TRAIN_EXTRA_ARGS", ""))
    return cmd


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run `cmd` as a child; SIGTERM/SIGINT sent to us are passed on (we may be PID 1)."""
    proc = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, like a shell


def ensure_bundle(model_dir: Path, env: Mapping[str, str], *, allow_train: bool, force: bool = False,
                  runner: Runner | None = None) -> int:
    """0 when a bundle is (now) at `model_dir`; otherwise the failing exit status.

    `runner` runs the training command (default: a child process that gets our signals).
    """
    runner = runner or run_forwarding_signals
    if has_bundle(model_dir) and not force:
        log(f"bundle present at {model_dir} (model_version {bundle_version(model_dir)})")
        return 0
    if not allow_train:
        log(f"no bundle at {model_dir} (no config.json) and AUTO_TRAIN is off: train one with "
            f"`docker compose run --rm trainer` or point ELMREC_MODEL_DIR at a bundle")
        return EX_CONFIG
    try:
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(model_dir.parent, os.W_OK):
            raise PermissionError(f"{model_dir.parent} is not writable")
    except OSError as exc:
        log(f"cannot train into {model_dir}: {exc} (the container runs as uid {os.getuid()}; "
            f"a bind-mounted folder must be writable by it)")
        return EX_CONFIG
    with training_lock(model_dir):
        if has_bundle(model_dir) and not force:  # trained by another container while we waited
            log(f"bundle present at {model_dir} (model_version {bundle_version(model_dir)})")
            return 0
        cmd = train_command(model_dir, env, resume=not force)
        log(("retraining" if force else "no bundle yet; training") + ": " + shlex.join(cmd))
        started = time.monotonic()
        rc = runner(cmd)
        if rc != 0:
            log(f"training failed with exit status {rc}")
            return rc
        if not has_bundle(model_dir):
            log(f"training finished but {model_dir / 'config.json'} is missing")
            return 1
        log(f"bundle ready at {model_dir} (model_version {bundle_version(model_dir)}) "
            f"after {(time.monotonic() - started) / 60:.1f} min")
    return 0


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else dict(env)
    mode, *rest = list(argv) or ["serve"]
    model_dir = Path(env.get("ELMREC_MODEL_DIR") or DEFAULT_MODEL_DIR)
    if mode == "train":
        return ensure_bundle(model_dir, env, allow_train=True, force=truthy(env.get("TRAIN_FORCE")))
    if mode == "serve":
        rc = ensure_bundle(model_dir, env, allow_train=truthy(env.get("AUTO_TRAIN", "1")))
        if rc != 0:
            return rc
        cmd = [sys.executable, "-m", "service", *rest]
    else:
        cmd = [mode, *rest]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)  # replaces this process: the server gets the signals directly
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
