"""The weights registry and store: downloads against a real HTTP server on 127.0.0.1 that the
test starts (Range support, a mode that cuts the connection mid-file), import, verify, path."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest
import torch

from harness import weights
from harness.cli import main
from harness.errors import HarnessError
from harness.weights import Checkpoint

_HERE = Path(__file__).resolve()
FIXTURE = next((p for p in (_HERE.parents[2] / "shared", Path("/work/shared"))
                if (p / "fixtures/univfd/fc_weights.pth").is_file()), _HERE.parents[2] / "shared") \
    / "fixtures" / "univfd" / "fc_weights.pth"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        path = urllib.parse.unquote(self.path)
        server.requests.append((path, self.headers.get("Range")))
        data = server.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cuts > 0:  # promise the whole body, send a third of it, drop the connection
            server.cuts -= 1
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.cuts = {}, [], 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A private cache, downloads allowed (conftest sets HF_HUB_OFFLINE for the rest), no mirror."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    return tmp_path / "cache" / "weights"


def _with_entries(monkeypatch, *entries: Checkpoint) -> None:
    monkeypatch.setattr(weights, "BACKBONES", weights.BACKBONES + tuple(entries))


def _url_entry(server, sha=PAYLOAD_SHA, name="test:blob", path="/files/blob.bin") -> Checkpoint:
    server.files[path] = PAYLOAD
    return Checkpoint(name=name, host="url", filename="blob.bin", url=server.base + path, sha256=sha)


def test_full_pull_stores_the_file_once(server, store, monkeypatch):
    _with_entries(monkeypatch, _url_entry(server))
    first = weights.pull("test:blob")
    assert first.read_bytes() == PAYLOAD
    assert first == store / "test" / "blob" / "blob.bin"
    assert not first.with_name("blob.part.bin").exists()
    assert weights.path("test:blob") == first
    seen = len(server.requests)
    assert weights.pull("test:blob") == first  # nothing downloaded twice
    assert len(server.requests) == seen == 1


def test_a_cut_download_resumes_with_a_range_request(server, store, monkeypatch):
    _with_entries(monkeypatch, _url_entry(server))
    server.cuts = 1
    got = weights.pull("test:blob")
    assert got.read_bytes() == PAYLOAD
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(PAYLOAD) // 3}-"  # only the missing bytes asked for


def test_a_pull_cut_every_time_keeps_the_part_and_the_next_pull_finishes_it(server, store, monkeypatch):
    _with_entries(monkeypatch, _url_entry(server))
    server.cuts = 100
    with pytest.raises(HarnessError, match="run the pull again to resume"):
        weights.pull("test:blob")
    part = store / "test" / "blob" / "blob.part.bin"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    assert weights.stored_path(weights.get("test:blob")) is None
    server.cuts = 0
    assert weights.pull("test:blob").read_bytes() == PAYLOAD
    assert server.requests[-1][1] == f"bytes={kept}-"


def test_a_hash_mismatch_deletes_the_file_and_says_so(server, store, monkeypatch):
    _with_entries(monkeypatch, _url_entry(server, sha="0" * 64))
    with pytest.raises(HarnessError, match=f"sha256 mismatch.*got {PAYLOAD_SHA}.*deleted"):
        weights.pull("test:blob")
    assert not any(p.is_file() for p in (store / "test" / "blob").rglob("*"))
    with pytest.raises(HarnessError, match="not in the store"):
        weights.path("test:blob")


def test_a_404_is_one_clear_error(server, store, monkeypatch):
    _with_entries(monkeypatch, Checkpoint(name="test:gone", host="url", filename="x.pth",
                                          url=server.base + "/nothing/x.pth"))
    with pytest.raises(HarnessError, match="HTTP 404"):
        weights.pull("test:gone")


def test_the_mirror_replaces_every_host(server, store, monkeypatch):
    dead = f"http://127.0.0.1:{_closed_port()}/blob.bin"  # the original host is unreachable
    _with_entries(monkeypatch,
                  Checkpoint(name="test:blob", host="url", filename="blob.bin", url=dead, sha256=PAYLOAD_SHA),
                  Checkpoint(name="test:hub", host="huggingface", repo="org/repo", filename="sub/w.bin",
                             sha256=PAYLOAD_SHA))
    server.files["/mirror/test:blob/blob.bin"] = PAYLOAD
    server.files["/mirror/test:hub/sub/w.bin"] = PAYLOAD
    monkeypatch.setenv(weights.MIRROR_ENV, server.base + "/mirror/")
    assert weights.pull("test:blob").read_bytes() == PAYLOAD
    assert weights.pull("test:hub").read_bytes() == PAYLOAD  # no huggingface_hub call: plain HTTP
    assert [p for p, _ in server.requests] == ["/mirror/test:blob/blob.bin", "/mirror/test:hub/sub/w.bin"]


def test_the_mirror_hash_check_still_applies(server, store, monkeypatch):
    _with_entries(monkeypatch, Checkpoint(name="test:blob", host="url", filename="blob.bin",
                                          url="http://127.0.0.1:9/blob.bin", sha256=PAYLOAD_SHA))
    server.files["/test:blob/blob.bin"] = PAYLOAD[:-1] + b"x"
    monkeypatch.setenv(weights.MIRROR_ENV, server.base)
    with pytest.raises(HarnessError, match="sha256 mismatch"):
        weights.pull("test:blob")


@pytest.mark.parametrize("host", ["url", "huggingface"])
def test_offline_fails_at_once_naming_the_import_command(server, store, monkeypatch, host):
    entry = _url_entry(server) if host == "url" else Checkpoint(
        name="test:blob", host="huggingface", repo="org/repo", filename="blob.bin")
    _with_entries(monkeypatch, entry)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match=r"offline \(HF_HUB_OFFLINE is set\).*harness weights import FILE "
                                           r"--as test:blob") as info:
        weights.pull("test:blob")
    assert "\n" not in str(info.value)
    assert server.requests == []


def test_no_route_to_the_host_is_offline_without_retries(store, monkeypatch):
    _with_entries(monkeypatch, Checkpoint(name="test:blob", host="url", filename="blob.bin",
                                          url=f"http://127.0.0.1:{_closed_port()}/blob.bin"))
    with pytest.raises(HarnessError, match="offline .*cannot be reached.*harness weights import FILE --as test:blob"):
        weights.pull("test:blob")


def _torch_bytes(tmp_path, state) -> bytes:
    torch.save(state, tmp_path / "state.pth")
    return (tmp_path / "state.pth").read_bytes()


def test_an_entry_without_a_hash_is_trusted_on_first_use(server, store, monkeypatch, caplog, tmp_path):
    data = _torch_bytes(tmp_path, {"w": torch.arange(2.0)})
    server.files["/w.pth"] = data
    _with_entries(monkeypatch, Checkpoint(name="test:w", host="url", filename="w.pth", url=server.base + "/w.pth",
                                          keys={"w": (2,)}))
    got = weights.pull("test:w")
    sha = hashlib.sha256(data).hexdigest()
    assert "recorded" in caplog.text and sha in caplog.text
    record = weights.stored_record(weights.get("test:w"))
    assert record["sha256"] == sha and record["trust"] == "first-use"
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, other)  # the right layout, another file
    with pytest.raises(HarnessError, match="the file first stored for it"):
        weights.import_file(other, "test:w")
    assert got.read_bytes() == data
    assert weights.path("test:w") == got
    got.write_bytes(other.read_bytes())  # the stored file changed behind the store's back
    with pytest.raises(HarnessError, match="it changed; pull or import it again"):
        weights.path("test:w")
    got.unlink()  # deleting the file does not reset trust on first use
    with pytest.raises(HarnessError, match="the file first stored for it"):
        weights.import_file(other, "test:w")


def test_a_download_without_a_hash_that_is_no_checkpoint_is_deleted(server, store, monkeypatch, tmp_path):
    server.files["/w.pth"] = b"<html>moved</html>"  # a host's error page, or a Git LFS pointer
    _with_entries(monkeypatch, Checkpoint(name="test:w", host="url", filename="w.pth", url=server.base + "/w.pth",
                                          keys={"w": (2,)}))
    with pytest.raises(HarnessError, match="is not its checkpoint and was deleted"):
        weights.pull("test:w")
    assert not any(p.is_file() for p in (store / "test" / "w").rglob("*"))
    assert weights.stored_record(weights.get("test:w")) is None


def test_a_manual_entry_names_its_page_and_the_import_command(store, monkeypatch):
    _with_entries(monkeypatch, Checkpoint(name="test:drive", host="manual", url="https://drive.example/abc"))
    with pytest.raises(HarnessError, match=r"by hand from https://drive.example/abc.*harness weights import FILE "
                                           r"--as test:drive"):
        weights.pull("test:drive")


def test_every_builtin_detector_has_an_entry_with_a_paper():
    from harness.registry import get_plugins

    from harness.registry import BUILTIN

    entries = weights.registry()
    plugins = get_plugins()
    for name in plugins.registry["detector"]:
        # PPL's ablation baseline is no published detector; detectors other tests add are no built-ins
        if name == "naive" or plugins.owner("detector", name).distribution != BUILTIN:
            continue
        own = [e for e in entries.values() if e.detector == name]
        assert own, name
        assert all(e.paper for e in own), name
    assert {"clip:vit-l-14-openai", "dinov2:vit-l-14", "resnet50:imagenet1k-v1"} <= set(entries)


# -- import / verify / path ---------------------------------------------------------------------
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason="shared fixtures not found")


@needs_fixture
def test_verify_names_the_univfd_entry(capsys):
    assert main(["weights", "verify", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "'univfd:progan'" in out and "matches the registry" in out


@needs_fixture
def test_import_checks_the_hash_and_path_finds_the_file(store, tmp_path):
    assert weights.entry_dir(weights.get("univfd:progan")) == store / "univfd" / "progan"
    stored = weights.import_file(FIXTURE, "univfd:progan")
    assert stored.read_bytes() == FIXTURE.read_bytes()
    assert weights.path("univfd:progan") == stored
    assert weights.stored_record(weights.get("univfd:progan"))["trust"] == "registry"
    wrong = tmp_path / "wrong.pth"
    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, wrong)
    with pytest.raises(HarnessError, match="is not 'univfd:progan'.*the registry says 4771"):
        weights.import_file(wrong, "univfd:progan")


def _npr_file(tmp_path) -> Path:
    from harness.registry import get_detector

    torch.manual_seed(0)
    path = tmp_path / "NPR.pth"
    torch.save({f"module.{k}": v for k, v in get_detector("npr")().state_dict().items()}, path)
    return path


def test_import_without_a_hash_runs_the_detector_adapter(store, tmp_path, caplog):
    good = _npr_file(tmp_path)
    stored = weights.import_file(good, "npr:npr-pth")
    assert "trusting" in caplog.text
    assert weights.stored_record(weights.get("npr:npr-pth"))["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert stored.name == "NPR.pth"
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(HarnessError, match="missing keys"):
        weights.import_file(bad, "npr:progan-4class")
    assert weights.stored_path(weights.get("npr:progan-4class")) is None


def test_verify_by_layout_names_the_closest_entry_and_what_differs(store, tmp_path):
    good = _npr_file(tmp_path)
    assert "has the key layout of 'npr:" in weights.verify(good)
    half = tmp_path / "half.pth"
    torch.save({"netC": {"group1.hpf.weight": torch.zeros(30, 1, 5, 5), "fc2.weight": torch.zeros(2, 32)}}, half)
    text = weights.verify(half)
    assert "closest layout 'patchcraft:" in text and "fc2.weight [2, 32] != [1, 32]" in text


def test_path_of_an_entry_not_pulled_says_how_to_get_it(store):
    with pytest.raises(HarnessError, match="not in the store.*harness weights pull npr:progan-4class"):
        weights.path("npr:progan-4class")
    with pytest.raises(HarnessError, match="unknown checkpoint 'npr:progan4'.*npr:progan-4class"):
        weights.path("npr:progan4")


def test_a_backbone_file_without_a_hash_is_checked_by_its_key_layout(store, tmp_path, monkeypatch):
    half = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, half)
    with pytest.raises(HarnessError, match=r"does not look like 'resnet50:imagenet1k-v1': missing keys \['fc.weight'\]"):
        weights.import_file(half, "resnet50:imagenet1k-v1")
    _with_entries(monkeypatch, Checkpoint(name="test:nothing-known", host="url", url="http://127.0.0.1:9/x",
                                          filename="x.pth"))
    with pytest.raises(HarnessError, match="neither a published sha256 nor a known key layout"):
        weights.import_file(half, "test:nothing-known")


def test_a_safetensors_download_without_a_hash_is_read_as_safetensors(server, store, monkeypatch, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.arange(2.0)}, str(tmp_path / "m.safetensors"))
    server.files["/test:st/sub/m.safetensors"] = (tmp_path / "m.safetensors").read_bytes()
    _with_entries(monkeypatch, Checkpoint(name="test:st", host="huggingface", repo="org/r",
                                          filename="sub/m.safetensors", keys={"w": (2,)}))
    monkeypatch.setenv(weights.MIRROR_ENV, server.base)
    assert weights.pull("test:st") == store / "test" / "st" / "sub" / "m.safetensors"


def test_a_file_mirror_is_read_without_probing_a_host(store, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "test:blob").mkdir(parents=True)
    (mirror / "test:blob" / "blob.bin").write_bytes(PAYLOAD)
    _with_entries(monkeypatch, Checkpoint(name="test:blob", host="url", filename="blob.bin",
                                          url=f"http://127.0.0.1:{_closed_port()}/blob.bin", sha256=PAYLOAD_SHA))
    monkeypatch.setenv(weights.MIRROR_ENV, mirror.as_uri())
    assert weights.offline_reason(mirror.as_uri()) is None
    assert weights.pull("test:blob").read_bytes() == PAYLOAD
