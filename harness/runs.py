"""Run folders: resolved configuration, environment, log; seeding and device selection."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import subprocess
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError

log = logging.getLogger("harness")

TRACKED_PACKAGES = (
    "aigi-harness", "torch", "torchvision", "numpy", "pillow", "scikit-learn", "pandas",
    "open_clip_torch", "timm", "peft", "safetensors", "pluggy",
)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(cpus: int | None = None) -> int:
    """``eval.workers`` when it is not set: no worker processes on 2 CPUs or fewer, where a
    worker takes a core from the forward and in-process preprocessing is cheap (numpy, no
    torch ops); else half the CPUs, at most 4."""
    cpus = available_cpus() if cpus is None else cpus
    return 0 if cpus <= 2 else min(4, cpus // 2)


def thread_settings(config: dict) -> dict[str, Any]:
    """Intra-op threads of the forward: ``run.threads``, else ``$OMP_NUM_THREADS``, else the
    CPUs left over by the data-loader workers (each worker runs one thread)."""
    cpus = available_cpus()
    workers = int(config.get("eval", {}).get("workers", default_workers(cpus)))
    requested = config.get("run", {}).get("threads")
    env = os.environ.get("OMP_NUM_THREADS", "")
    if requested not in (None, "auto"):
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise HarnessError(f"run.threads must be a whole number >= 1 or \"auto\", got {requested!r}")
        threads, source = requested, "run.threads"
    elif env.isdigit() and int(env) >= 1:
        threads, source = int(env), "OMP_NUM_THREADS"
    else:
        threads, source = max(1, cpus - workers), "available CPUs less eval.workers"
    return {"intra_op": threads, "source": source, "cpus_available": cpus, "eval_workers": workers}


def apply_thread_settings(config: dict) -> dict[str, Any]:
    """Set :func:`thread_settings`' intra-op threads. Not chosen from the machine's load: the
    thread count can change the last bits of a float reduction, and a configuration must give
    the same numbers every time; on a shared, busy machine ``run.threads=1`` is often faster."""
    settings = thread_settings(config)
    torch.set_num_threads(settings["intra_op"])
    if hasattr(os, "getloadavg") and settings["source"] != "run.threads" and settings["intra_op"] > 1 \
            and os.getloadavg()[0] > settings["cpus_available"]:
        log.info("load average %.1f on %d CPUs: other processes compete for them, and %d threads may run "
                 "slower than --set run.threads=1", os.getloadavg()[0], settings["cpus_available"],
                 settings["intra_op"])
    return settings


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def select_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {requested} asked for, but CUDA is not available on this machine")
    if requested not in ("cpu",) and not requested.startswith("cuda"):
        raise HarnessError(f"unknown device '{requested}': use cpu, cuda, cuda:N or auto")
    return torch.device(requested)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU runs stay fp32 unless asked)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Same configuration and seed on CPU -> same numbers; GPU kernels may still differ.
    torch.use_deterministic_algorithms(True, warn_only=True)


def git_revision(path: Path | None = None) -> str | None:
    path = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, seed: int, threads: dict[str, Any] | None = None) -> dict[str, Any]:
    packages = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    from harness.registry import get_plugins

    plugins = {info.name: {"distribution": info.distribution, "version": info.version, "broken": info.broken}
               for info in get_plugins().info.values()}
    hardware = {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                "cpus_available": available_cpus()}
    if hasattr(os, "getloadavg"):  # timings of a run on a shared machine are read against its load
        hardware["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
        hardware["gpu_count"] = torch.cuda.device_count()
    return {
        "python": platform.python_version(),
        "packages": packages,
        "plugins": plugins,
        "git_revision": git_revision(),
        "device": str(device),
        "hardware": hardware,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "threads": threads,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# Settings that may change when a run folder is reused to resume: they steer how the work is done
# (where, with how many workers, when to checkpoint or stop), not what it computes.
RESUMABLE_KEYS = ("run.dir", "run.out", "run.device", "train.resume", "train.stop_after_steps",
                  "train.save_every_steps", "train.workers", "eval.workers")


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) and value else f"{prefix}{key}"))
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every setting (dotted keys) that differs, :data:`RESUMABLE_KEYS` aside."""
    # through JSON, so that a tuple and the list config.json holds compare equal
    a, b = (_flat(json.loads(json.dumps(c, default=str))) for c in (old, new))
    missing = object()
    return [f"{key}: {a.get(key, '(unset)')!r} -> {b.get(key, '(unset)')!r}"
            for key in sorted(set(a) | set(b))
            if key not in RESUMABLE_KEYS and a.get(key, missing) != b.get(key, missing)]


def _check_reuse(run_dir: Path, config: dict) -> None:
    """A reused run folder must hold a run of the same configuration: reuse is for resuming it."""
    stored = run_dir / "config.json"
    if not stored.exists():
        return
    try:
        old = json.loads(stored.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HarnessError(f"run.dir {run_dir}: cannot read its config.json ({exc}); pick a new folder") from None
    differences = config_differences(old, config)
    if differences:
        shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
        raise HarnessError(f"run.dir {run_dir} holds a run of another configuration ({shown}): reusing a run "
                           "folder only resumes the same configuration; pick a new folder")


@contextlib.contextmanager
def run_folder_writes(run_dir: Path):
    """A failed write in the run folder (unwritable, full disk) is one clear error, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or run_dir
        raise HarnessError(f"cannot write the run folder {run_dir}: {where}: {exc.strerror or exc}") from None


@dataclass
class Run:
    """One run's folder under ``runs/`` and what was decided for it."""

    dir: Path
    config: dict
    device: torch.device
    seed: int

    def write_json(self, name: str, payload: Any) -> Path:
        path = self.dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        with run_folder_writes(self.dir):
            tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
            tmp.replace(path)
        return path


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def start_run(config: dict, label: str, is_main_process: bool = True, outside: list[Path] = ()) -> Run:
    """Create the run folder, write the resolved configuration and environment, start the log.

    ``run.dir`` names the folder; an existing run folder is reused only for the same configuration
    (to resume it), apart from :data:`RESUMABLE_KEYS`. The folder may not lie inside any of the
    ``outside`` folders (the suites' roots: a later scan would list the run's figures as images).
    """
    run_cfg = config["run"]
    seed = int(run_cfg.get("seed", 0))
    device = select_device(str(run_cfg.get("device", "auto")))
    seed_everything(seed)
    threads = apply_thread_settings(config)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = Path(run_cfg.get("dir") or Path(run_cfg.get("out", "runs")) / f"{stamp}-{label}-{config_hash(config)}")
    run = Run(dir=run_dir, config=config, device=device, seed=seed)
    if is_main_process:
        where = run_dir.expanduser().resolve()
        for root in outside:
            if _inside(where, Path(root).resolve()):
                raise HarnessError(f"run folder {run_dir} would be inside the suite's folder {root}: a later scan "
                                   "would list the run's figures as images; pass --out (or run.dir) outside it")
        if run_cfg.get("dir"):
            _check_reuse(run_dir, config)
        with run_folder_writes(run_dir):
            if run_dir.exists() and not run_dir.is_dir():
                raise HarnessError(f"run folder {run_dir} is a file, not a folder")
            run_dir.mkdir(parents=True, exist_ok=True)
            run.write_json("config.json", config)
            run.write_json("environment.json", environment(device, seed, threads))
            handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        log.info("run folder %s, device %s, seed %d", run_dir, device, seed)
    return run
