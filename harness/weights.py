"""The checkpoint registry and the weights store: which published files exist, and getting them.

A detector plugin declares its published checkpoints as data, a tuple of :class:`Checkpoint`
in the class attribute ``checkpoints``; the shared backbones are declared here
(:data:`BACKBONES`). ``harness weights list | pull | import | verify | path`` works on them:

- ``pull NAME`` downloads into the store (``$HARNESS_CACHE_DIR/weights/<detector>/<tag>/``):
  a ``.part`` file that a cut download resumes (HTTP Range), the sha256 checked before the
  file gets its name (a mismatch deletes it), Hugging Face files through ``huggingface_hub``;
  ``HARNESS_WEIGHTS_MIRROR=URL`` fetches every file from ``URL/<name>/<filename>`` instead.
- ``import FILE --as NAME`` copies a file fetched by hand (Google Drive, Baidu, an air-gapped
  machine) into the store, after checking its hash, or, where no hash is published, that the
  detector's checkpoint adapter accepts it; the hash seen is then recorded (trust on first
  use) and every later file for that name must have it.

Offline (``HF_HUB_OFFLINE=1``, or no route to the host) every download fails at once with
one line naming the ``import`` command; nothing retries for a minute.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.checkpoints import sha256_file
from harness.errors import HarnessError, unknown_name

log = logging.getLogger(__name__)

MIRROR_ENV = "HARNESS_WEIGHTS_MIRROR"
HOSTS = ("huggingface", "url", "modelscope", "manual", "unpublished")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*$")
#: A connection cut mid-file is resumed this many times within one pull.
RESUME_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Reported:
    """Numbers a paper or an official README reports for a checkpoint (percent)."""

    source: str  # "NPR README, AIGCDetectBenchmark table (NPR column)"
    metric: str  # "acc" or "ap", as the harness names its metrics
    values: dict[str, float]  # test generator (the harness suite's name) -> value in %
    mean: float | None = None  # the source's own average row, when it prints one
    protocol: str | None = None  # the benchmark file that reproduces it (harness/benchmarks/NAME.toml)


@dataclass(frozen=True)
class Checkpoint:
    """One published weights file. Facts only; a field that could not be verified is None.

    ``host``: ``huggingface`` (``repo`` + ``filename``), ``url`` (a direct download, GitHub raw
    or release), ``modelscope`` / ``manual`` (a page the user downloads from by hand: its
    ``url`` is shown, then ``harness weights import``) or ``unpublished`` (no public weights;
    the entry says so). ``config``: detector settings the file needs (DRCT's ``variant``).
    ``keys``: a few characteristic state-dict keys and shapes of the file as published (after
    unwrapping ``netC`` / ``model`` / ``state_dict`` and ``module.``), for ``verify``.
    """

    name: str  # "<detector or backbone>:<tag>", e.g. "npr:progan-4class"
    host: str
    filename: str | None = None
    url: str | None = None
    repo: str | None = None  # Hugging Face repo id
    revision: str | None = None  # Hugging Face revision (commit or branch)
    sha256: str | None = None
    size: int | None = None  # bytes
    licence: str | None = None
    trained_on: str | None = None
    paper: str | None = None
    reported: tuple[Reported, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: str = ""  # where the facts come from, what could not be verified
    detector: str | None = None  # filled in by the registry from the class that lists it

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"checkpoint name {self.name!r} must look like 'detector:tag' (lower case, no spaces)")
        if self.host not in HOSTS:
            raise ValueError(f"checkpoint {self.name}: host {self.host!r} is not one of {HOSTS}")
        if self.host == "huggingface" and not (self.repo and self.filename):
            raise ValueError(f"checkpoint {self.name}: a huggingface entry needs repo and filename")
        if self.host in ("url", "modelscope", "manual") and not self.url:
            raise ValueError(f"checkpoint {self.name}: a {self.host} entry needs url")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"checkpoint {self.name}: sha256 must be 64 lower-case hex digits")

    @property
    def downloadable(self) -> bool:
        return self.host in ("huggingface", "url")


# -- backbones: the pretrained towers the detectors start from ----------------------------------
_OPEN_CLIP_NOTE = ("open_clip 3.3 pretrained config of ViT-L-14 'openai' (hf_hub timm/vit_large_patch14_clip_224.openai; "
                   "original file openaipublic .../b8cca3fd.../ViT-L-14.pt, whose name is its sha256, for the .pt, "
                   "not this file). sha256 and size of the Hugging Face file not verified offline.")
BACKBONES: tuple[Checkpoint, ...] = (
    Checkpoint(
        name="clip:vit-l-14-openai", host="huggingface", repo="timm/vit_large_patch14_clip_224.openai",
        filename="open_clip_model.safetensors", licence="MIT (openai/CLIP)",
        trained_on="OpenAI WIT-400M image-text pairs (CLIP pre-training)",
        paper="Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021",
        # open_clip's ViT-L-14 state dict, whose format the Hugging Face file has
        keys={"visual.conv1.weight": (1024, 3, 14, 14), "visual.positional_embedding": (257, 1024),
              "visual.proj": (1024, 768)},
        notes=_OPEN_CLIP_NOTE + " Used by UnivFD, DRCT (clip variant) and PPL (default backbone): "
              "pass it with detector.backbone_weights=$(harness weights path clip:vit-l-14-openai), or let the "
              "backbone loader find it in the store.",
    ),
    Checkpoint(
        name="dinov2:vit-l-14", host="huggingface", repo="timm/vit_large_patch14_dinov2.lvd142m",
        filename="model.safetensors", licence="apache-2.0 (timm pretrained config)",
        trained_on="LVD-142M (DINOv2 self-supervised pre-training)",
        paper="Oquab et al., DINOv2: Learning Robust Visual Features without Supervision, 2023",
        # timm's vit_large_patch14_dinov2 state dict (518 px: a 37 x 37 grid + the class token)
        keys={"patch_embed.proj.weight": (1024, 3, 14, 14), "pos_embed": (1, 1370, 1024),
              "blocks.0.ls1.gamma": (1024,)},
        notes="timm 1.0 pretrained config vit_large_patch14_dinov2.lvd142m (hf_hub_id; original "
              "dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth). PPL's DINOv2 backbone "
              "(detector.backbone=timm:vit_large_patch14_dinov2.lvd142m). sha256 and size not verified offline.",
    ),
    Checkpoint(
        name="resnet50:imagenet1k-v1", host="url", filename="resnet50-0676ba61.pth",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth", licence="BSD-3-Clause (torchvision)",
        trained_on="ImageNet-1k (torchvision IMAGENET1K_V1)",
        paper="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
        keys={"conv1.weight": (64, 3, 7, 7), "fc.weight": (1000, 2048)},
        notes="torchvision ResNet50_Weights.IMAGENET1K_V1; the file name carries the first 8 hex digits of its "
              "sha256 (0676ba61), the full hash is not verified offline. The ImageNet init of SSP and SEP "
              "(detector.backbone_weights=PATH).",
    ),
)


# -- the registry ------------------------------------------------------------------------------
def registry() -> dict[str, Checkpoint]:
    """Every entry: the backbones and each registered detector's ``checkpoints``, by name.

    The owning detector's name is filled in; two entries with one name are an error naming both.
    """
    from harness.registry import get_plugins

    out: dict[str, Checkpoint] = {}
    owners: dict[str, str] = {}
    sources = [("harness.weights.BACKBONES", None, BACKBONES)]
    # Declared on the class itself: a subclass (PPL's naive baseline) does not inherit them.
    sources += [(f"detector '{name}'", name, cls.__dict__.get("checkpoints", ()))
                for name, cls in sorted(get_plugins().registry["detector"].items())]
    for owner, detector, entries in sources:
        for entry in entries:
            if entry.name in out:
                raise HarnessError(f"checkpoint name '{entry.name}' is declared twice: by {owners[entry.name]} "
                                   f"and by {owner}")
            out[entry.name] = dataclasses.replace(entry, detector=detector) if detector else entry
            owners[entry.name] = owner
    return out


def get(name: str) -> Checkpoint:
    entries = registry()
    if name not in entries:
        raise unknown_name("checkpoint", name, entries)
    return entries[name]


def looks_like_name(value: str) -> bool:
    """Whether ``--weights VALUE`` names a registry entry rather than a file."""
    return bool(_NAME.match(value)) and not Path(value).exists()


# -- the store -----------------------------------------------------------------------------------
def store_root() -> Path:
    """``weights/`` under the harness cache (``$HARNESS_CACHE_DIR``, else ``~/.cache/aigi-harness``)."""
    from harness.manifest import cache_root

    return cache_root() / "weights"


def entry_dir(entry: Checkpoint) -> Path:
    family, tag = entry.name.split(":", 1)
    return store_root() / family / tag


def _record_path(entry: Checkpoint) -> Path:
    return entry_dir(entry) / "record.json"


def _read_record(entry: Checkpoint) -> dict | None:
    """The store's record of an entry, whether or not its file is still there."""
    try:
        record = json.loads(_record_path(entry).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stored_record(entry: Checkpoint) -> dict | None:
    """What the store knows of an entry's file (``file``, ``sha256``, ``trust``, ``source``), or None."""
    record = _read_record(entry)
    if record is None or not (entry_dir(entry) / str(record.get("file", ""))).is_file():
        return None
    return record


def stored_path(entry: Checkpoint) -> Path | None:
    record = stored_record(entry)
    return None if record is None else entry_dir(entry) / record["file"]


def path(name: str) -> Path:
    """The stored file of ``name``; an error saying how to get it when it is not stored."""
    entry = get(name)
    found = stored_path(entry)
    if found is None:
        raise HarnessError(f"checkpoint '{name}' is not in the store ({entry_dir(entry)}): {how_to_get(entry)}")
    # The file is used under the entry's name: it must still be the one that was checked when it was stored.
    expected, origin = _expected_sha(entry)
    expected = expected or stored_record(entry).get("sha256")
    seen = sha256_file(found)
    if expected and seen != expected:
        raise HarnessError(f"the stored file of '{name}' ({found}) has sha256 {seen}, not {expected} "
                           f"({origin or 'recorded when it was stored'}): it changed; pull or import it again")
    return found


def how_to_get(entry: Checkpoint) -> str:
    if entry.host == "unpublished":
        return f"no weights are published for it ({entry.notes or 'no public release'})"
    if entry.downloadable:
        return f"run `harness weights pull {entry.name}`, or download it elsewhere and run " \
               f"`harness weights import FILE --as {entry.name}`"
    return f"download {entry.filename or 'the file'} by hand from {entry.url}, then run " \
           f"`harness weights import FILE --as {entry.name}`"


def _write_record(entry: Checkpoint, file: Path, sha: str, trust: str, source: str) -> None:
    record = {"name": entry.name, "file": file.relative_to(entry_dir(entry)).as_posix(), "sha256": sha,
              "size": file.stat().st_size, "trust": trust, "source": source,
              "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = _record_path(entry).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(_record_path(entry))


def _expected_sha(entry: Checkpoint) -> tuple[str | None, str]:
    """The hash a file for ``entry`` must have, and where it comes from: the registry, else the
    first file stored for it (trust on first use), else none."""
    if entry.sha256:
        return entry.sha256, "the registry"
    record = _read_record(entry)  # kept when the file is deleted: trust on first use is not reset by it
    if record and record.get("trust") == "first-use":
        return record["sha256"], f"the file first stored for it ({record.get('source')})"
    return None, ""


# -- offline -------------------------------------------------------------------------------------
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_reason(url: str | None = None) -> str | None:
    """Why nothing can be downloaded from ``url`` right now, or None.

    ``HF_HUB_OFFLINE`` set says so at once; otherwise a host that does not resolve or does
    not accept a connection within a few seconds is offline (one try, no retries). Behind a
    proxy (``HTTPS_PROXY`` ...) the host is not probed: the proxy decides.
    """
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:  # file:// and the like: nothing to probe
        return None
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3.0).close()
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({type(exc).__name__}: {exc})"
    return None


def offline_error(entry: Checkpoint, reason: str) -> HarnessError:
    where = entry.url or (f"https://huggingface.co/{entry.repo}" if entry.repo else "its source")
    return HarnessError(f"offline ({reason}): cannot fetch '{entry.name}'. Fetch {entry.filename or 'it'} from "
                        f"{where} on a machine with network, then `harness weights import FILE --as {entry.name}`")


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


# -- downloading ---------------------------------------------------------------------------------
def _mirror_url(entry: Checkpoint) -> str | None:
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    return f"{base.rstrip('/')}/{urllib.parse.quote(entry.name, safe=':')}/{urllib.parse.quote(entry.filename)}"


def _download(url: str, part: Path, name: str) -> None:
    """GET ``url`` into ``part``, resuming what ``part`` already holds (HTTP Range); a connection
    cut mid-file is resumed up to :data:`RESUME_ATTEMPTS` times, then the ``.part`` stays for
    the next pull. A failed connection is an error at once."""
    from tqdm.auto import tqdm

    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(RESUME_ATTEMPTS + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # the .part already holds the whole file
                return
            raise HarnessError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HarnessError(f"cannot connect to {url} ({reason}): offline? Fetch the file elsewhere, then "
                               f"`harness weights import FILE --as {name}`") from None
        with response:
            resumed = response.status == 206
            if have and not resumed:
                have = 0  # the server ignored the Range: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            try:
                with open(part, "ab" if resumed else "wb") as fh, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=name, leave=False) as bar:
                    while block := response.read(1 << 20):
                        fh.write(block)
                        bar.update(len(block))
                complete = total is None or part.stat().st_size >= total
            except (OSError, http.client.HTTPException) as exc:  # IncompleteRead: the server cut the body
                log.warning("download of %s cut at %d bytes (%s)", url, part.stat().st_size, exc)
                complete = False
        if complete:
            return
        if attempt < RESUME_ATTEMPTS:
            log.warning("resuming %s from byte %d", url, part.stat().st_size)
    raise HarnessError(f"download of {url} was cut {RESUME_ATTEMPTS + 1} times; {part.stat().st_size} bytes are "
                       f"kept in {part}: run the pull again to resume")


def _hf_download(entry: Checkpoint, folder: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(entry.repo, entry.filename, revision=entry.revision, local_dir=folder))
    except Exception as exc:  # offline, gated, moved: one line with the cause
        raise HarnessError(f"Hugging Face download of {entry.repo}/{entry.filename} failed "
                           f"({type(exc).__name__}: {exc}); or fetch it elsewhere and run "
                           f"`harness weights import FILE --as {entry.name}`") from None


def _check_sha(entry: Checkpoint, file: Path) -> str:
    """The file's sha256; a file that does not have the expected one is deleted, with an error."""
    sha = sha256_file(file)
    expected, source = _expected_sha(entry)
    if expected and sha != expected:
        file.unlink()
        raise HarnessError(f"sha256 mismatch for '{entry.name}': got {sha}, {source} says {expected}; "
                           f"the file was deleted (a corrupted download or a changed upstream file)")
    return sha


def _check_download(entry: Checkpoint, file: Path) -> str:
    """The sha256 check; where no hash is known, the layout check instead (an HTML error page or
    a Git LFS pointer must not become the trusted first file). A file that fails is deleted."""
    sha = _check_sha(entry, file)
    if _expected_sha(entry)[0] is None:
        try:
            check_layout(entry, file)
        except HarnessError as exc:
            file.unlink()
            raise HarnessError(f"the file downloaded for '{entry.name}' is not its checkpoint and was deleted: "
                               f"{exc}") from None
    return sha


def pull(name: str) -> Path:
    """Download ``name`` into the store (once) and return its path; see the module docstring."""
    entry = get(name)
    found = stored_path(entry)
    if found is not None:
        log.info("%s is already stored: %s", name, found)
        return found
    mirror = _mirror_url(entry) if entry.filename and entry.host != "unpublished" else None
    if not (entry.downloadable or mirror):
        raise HarnessError(f"'{name}' cannot be downloaded by the harness: {how_to_get(entry)}")
    folder = entry_dir(entry)
    dest = folder / entry.filename
    if mirror or entry.host == "url":
        url = mirror or entry.url
        reason = offline_reason(url)
        if reason:
            raise offline_error(entry, reason)
        # x.part.safetensors: the suffix that tells load_state the format stays last
        part = dest.with_name(f"{dest.stem}.part{dest.suffix}")
        _download(url, part, name)
        sha = _check_download(entry, part)
        part.replace(dest)
        source = url
    else:
        reason = offline_reason(hub_endpoint())
        if reason:
            raise offline_error(entry, reason)
        dest = _hf_download(entry, folder)
        sha = _check_download(entry, dest)
        source = f"huggingface:{entry.repo}/{entry.filename}@{entry.revision or 'main'}"
    trust = "registry" if entry.sha256 else "first-use"
    if trust == "first-use":
        log.warning("'%s' has no published sha256: recorded %s on first use; later files for it must match", name, sha)
    _write_record(entry, dest, sha, trust, source)
    return dest


# -- import and verify ---------------------------------------------------------------------------
def check_layout(entry: Checkpoint, file: Path) -> None:
    """Raise unless the detector's checkpoint adapter accepts ``file`` (built with random weights
    and the entry's settings, so nothing is downloaded), or, for a backbone, its ``keys``."""
    from harness.checkpoints import load_state
    from harness.registry import get_detector

    if entry.detector is None:
        if not entry.keys:
            raise HarnessError(f"'{entry.name}' has neither a published sha256 nor a known key layout: "
                               f"{file} cannot be checked")
        diff = layout_diff(entry, load_state(file))
        if diff:
            raise HarnessError(f"{file} does not look like '{entry.name}': {diff}")
        return
    cls = get_detector(entry.detector)
    config = dict(entry.config)
    if "pretrained" in cls.defaults:
        config["pretrained"] = "none"
    cls(config).load_weights(file)


def import_file(file: str | Path, name: str) -> Path:
    """Copy ``file`` into the store as ``name`` after checking it (see the module docstring)."""
    file = Path(file)
    if not file.is_file():
        raise HarnessError(f"weights file {file} does not exist")
    entry = get(name)
    sha = sha256_file(file)
    expected, source = _expected_sha(entry)
    if expected and sha != expected:
        raise HarnessError(f"{file} is not '{name}': its sha256 is {sha}, {source} says {expected}")
    if not expected:
        check_layout(entry, file)
        log.warning("'%s' has no published sha256: trusting %s on first use (sha256 %s); later files for it "
                    "must match", name, file, sha)
    folder = entry_dir(entry)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / (entry.filename or file.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(file, part)
    part.replace(dest)
    _write_record(entry, dest, sha, "registry" if entry.sha256 else "first-use", f"import {file.resolve()}")
    return dest


_WRAPPERS = ("netC", "model", "state_dict", "net")


def _flat_state(state: Any) -> dict:
    """An official file's tensors: unwrap one known wrapper level and DataParallel's ``module.``."""
    from harness.checkpoints import strip_prefix

    if not isinstance(state, dict):
        return {}
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    return strip_prefix(state, "module.")


def layout_diff(entry: Checkpoint, state: Any) -> str:
    """What differs between a loaded file and ``entry.keys`` (empty when all match)."""
    flat = _flat_state(state)
    missing = [k for k in entry.keys if k not in flat]
    wrong = [f"{k} {list(getattr(flat[k], 'shape', []))} != {list(s)}" for k, s in entry.keys.items()
             if k in flat and tuple(getattr(flat[k], "shape", ())) != tuple(s)]
    parts = ([f"missing keys {missing[:5]}"] if missing else []) + ([f"wrong shapes {wrong[:4]}"] if wrong else [])
    return "; ".join(parts)


def verify(file: str | Path) -> str:
    """Which entry ``file`` is (by sha256: the registry's or a stored first-use hash), else the
    entry whose characteristic keys it matches best, and what differs."""
    from harness.checkpoints import load_state

    file = Path(file)
    if not file.is_file():
        raise HarnessError(f"weights file {file} does not exist")
    sha = sha256_file(file)
    entries = registry()
    for entry in entries.values():
        if entry.sha256 == sha:
            return f"{file} is '{entry.name}' (sha256 {sha} matches the registry){_describe(entry)}"
    for entry in entries.values():
        record = stored_record(entry)
        if record and record.get("sha256") == sha:
            return (f"{file} is '{entry.name}' (sha256 {sha} matches the file stored for it, "
                    f"trusted on {record.get('trust')}){_describe(entry)}")
    state = load_state(file)
    flat = _flat_state(state)
    scored = []
    for entry in entries.values():
        if entry.keys:
            fits = sum(1 for k, s in entry.keys.items() if k in flat and tuple(getattr(flat[k], "shape", ())) == tuple(s))
            scored.append((fits / len(entry.keys), entry))
    scored.sort(key=lambda pair: -pair[0])
    if not scored or scored[0][0] == 0:
        return f"{file} (sha256 {sha}) matches no registry entry by hash or key layout ({len(flat)} tensors)"
    score, best = scored[0]
    if score == 1:
        return (f"{file} (sha256 {sha}) is no registry file by hash, but has the key layout of '{best.name}'; "
                f"`harness weights import {file} --as {best.name}` checks it fully")
    return (f"{file} (sha256 {sha}) matches no registry entry; closest layout '{best.name}' "
            f"({score:.0%} of its characteristic keys): {layout_diff(best, state)}")


def _describe(entry: Checkpoint) -> str:
    bits = [f"trained on {entry.trained_on}" if entry.trained_on else "", entry.paper or ""]
    text = "; ".join(b for b in bits if b)
    return f": {text}" if text else ""


def compare_reported(reported: Reported, measured: dict, tolerance: float) -> dict[str, Any]:
    """Reported numbers beside the measured ones (``harness.metrics.evaluate`` output, in %),
    and a status: within tolerance when every generator is within ``tolerance`` points, else
    off by the largest difference. The reported mean is the source's own when it prints one,
    else the mean of its values; the reproduced mean is over the same generators."""
    per_gen = measured.get("per_generator", {})
    mine = {g: 100 * per_gen[g][reported.metric] for g in reported.values
            if per_gen.get(g, {}).get(reported.metric) is not None}
    diffs = {g: mine[g] - v for g, v in reported.values.items() if g in mine}
    reported_mean = reported.mean if reported.mean is not None else \
        sum(reported.values.values()) / len(reported.values)
    reproduced_mean = sum(mine.values()) / len(mine) if len(mine) == len(reported.values) else None
    missing = [g for g in reported.values if g not in mine]
    if not diffs:
        status = "not reproduced: none of the reported generators was scored"
    else:
        worst = max(diffs, key=lambda g: abs(diffs[g]))
        if abs(diffs[worst]) <= tolerance:
            status = f"within tolerance (±{tolerance:g} points)"
        else:
            status = f"off by {diffs[worst]:+.1f} points ({worst})"
        if missing:
            status += f"; {len(missing)} reported generator(s) not scored: {', '.join(missing)}"
    return {"source": reported.source, "metric": reported.metric, "tolerance": tolerance,
            "reported": dict(reported.values), "reproduced": mine, "difference": diffs,
            "reported_mean": reported_mean, "reproduced_mean": reproduced_mean, "status": status}


def describe_rows(entries: Iterable[Checkpoint]) -> list[dict[str, Any]]:
    """One row per entry for ``harness weights list``."""
    rows = []
    for e in entries:
        reported = "; ".join(f"{r.source} ({r.metric}, mean {r.mean})" if r.mean is not None else f"{r.source} ({r.metric})"
                             for r in e.reported)
        rows.append({
            "name": e.name, "host": e.host, "trained on": e.trained_on or "?",
            "reproduces": reported or e.paper or "?", "sha256": (e.sha256[:12] + "…") if e.sha256 else "?",
            "licence": e.licence or "?", "stored": "yes" if stored_path(e) else "",
        })
    return rows
