"""``oncopipe serve`` left running while the user browses: hostile requests and bombs.

The server runs as users run it, ``oncopipe serve --port <free port>`` in its own process,
with the project's default limits; requests are written by hand (``http.client``) so that
the ``Host``, ``Origin`` and ``Referer`` headers are whatever another site could make a
browser send. Each hostile request gets a 4xx, the server's peak memory (``VmHWM``) grows by
less than 100 MB over all of them, nothing stays in its temporary directory, and the next
normal prediction works. The bombs are built streaming, a few MB on disk each.
"""

from __future__ import annotations

import functools
import gzip
import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from serve_project import build

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
ZEROS = 16 << 20  # the bombs' repeated unit: 16 MiB of zeros


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


# --------------------------------------------------------------------------------------------
# Bombs, built streaming
# --------------------------------------------------------------------------------------------


def _deflate_zeros(head: bytes, n_zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``head`` + ``n_zeros`` zero bytes (a multiple of 16 MiB),
    and its CRC-32, without ever holding more than 16 MiB: after a full flush the
    compressor starts afresh, so every 16 MiB of zeros compresses to the same bytes."""
    assert n_zeros % ZEROS == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(ZEROS)
    crc = zlib.crc32(head)
    for _ in range(n_zeros // ZEROS):
        crc = zlib.crc32(zeros, crc)
    return first + _zeros_unit() * (n_zeros // ZEROS) + comp.flush(), crc


@functools.cache
def _zeros_unit() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp.flush(zlib.Z_FULL_FLUSH)
    unit = comp.compress(bytes(ZEROS)) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(bytes(ZEROS)) + comp.flush(zlib.Z_FULL_FLUSH) == unit
    return unit


def zip_of_zeros(entries: dict[str, int], declared: int | None = None) -> bytes:
    """A zip whose entries inflate to the given numbers of zero bytes; their headers
    declare ``declared`` bytes each (default: the truth)."""
    local_part, central_part = b"", b""
    for name, n_zeros in entries.items():
        data, crc = _deflate_zeros(b"", n_zeros)
        size = n_zeros if declared is None else declared
        raw = name.encode()
        central_part += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc,
                                    len(data), size, len(raw), 0, 0, 0, 0, 0,
                                    len(local_part)) + raw
        local_part += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data),
                                  size, len(raw), 0) + raw + data
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                      len(central_part), len(local_part), 0)
    return local_part + central_part + end


def nifti_gz_bomb() -> bytes:
    """A valid NIfTI-1 header declaring a 1024^3 int16 volume (2 GiB), the zeros after it,
    gzipped: about 2 MB."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.int16)
    header.set_zooms((1.0, 1.0, 1.0))
    header["vox_offset"] = 352
    head = header.binaryblock + b"\x00" * 4  # no extensions
    assert len(head) == 352
    body, crc = _deflate_zeros(head, 2 * GIB)
    trailer = struct.pack("<2I", crc, (len(head) + 2 * GIB) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + trailer


def huge_tiff(width: int = 30_000, height: int = 30_000) -> bytes:
    """A little-endian TIFF whose header declares ``width`` x ``height`` 8-bit grey pixels
    in one strip, followed by 4 KiB of them."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, None), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    data_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, value in entries:
        value = data_at if value is None else value
        out += struct.pack("<HHIH2x" if kind == 3 else "<HHII", tag, kind, 1, value)
    return bytes(out + struct.pack("<I", 0) + bytes(4096))


# --------------------------------------------------------------------------------------------
# The server, as users run it
# --------------------------------------------------------------------------------------------


class Server:
    def __init__(self, root: Path, tmpdir: Path, log: Path):
        self.port = _free_port()
        self.tmpdir, self.log = tmpdir, log
        exe = Path(sys.executable).with_name("oncopipe")
        cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "oncopipe.cli"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)}
        self.proc = subprocess.Popen([*cmd, "serve", "--port", str(self.port), "--root",
                                      str(root)], env=env, stdout=log.open("wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.request("GET", "/")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)

    @property
    def own(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body or None,
                         headers={"Host": self.own, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def upload(self, path: str, name: str, data: bytes, point: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict]:
        boundary = "oncopipe-test-boundary"
        parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                  f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                  ).encode() + data + b"\r\n"]
        if point is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="point"'
                         f'\r\n\r\n{point}\r\n'.encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, text = self.request("POST", path, body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})
        return status, json.loads(text) if text else {}

    def peak_rss(self) -> int:
        """The server's peak resident memory so far, bytes."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines()
                   if line.startswith("VmHWM:"))
        return int(kib) << 10

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = build(tmp_path_factory.mktemp("hostile"), pipeline=False)
    params = yaml.safe_load(project.params.read_text())
    params.pop("limits", None)  # the defaults, as a user has them
    project.params.write_text(yaml.safe_dump(params, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def uploads_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server-tmp")
    # what servers killed mid-request left, and one of a server still running
    (folder / f"oncopipe-serve-{_dead_pid()}-k1ll3d00" / "unpacked").mkdir(parents=True)
    (folder / "oncopipe-serve-a0ld4b2c").mkdir()  # from before pids were in the name
    (folder / f"oncopipe-serve-{os.getppid()}-l1v3s0n0").mkdir()
    return folder


@pytest.fixture(scope="module")
def server(project, uploads_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("server-log") / "serve.log"
    server = Server(project.root, uploads_dir, log)
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def baseline(project, server):
    """The peak memory after one normal prediction (the model and decoders loaded)."""
    status, answer = server.upload("/api/predict/pcam", "patch.tif",
                                   project.pcam_image.read_bytes())
    assert status == 200, answer
    return server.peak_rss()


# --------------------------------------------------------------------------------------------


def test_start_sweeps_uploads_left_by_killed_servers(server, uploads_dir):
    left = sorted(p.name for p in uploads_dir.iterdir())
    assert left == [f"oncopipe-serve-{os.getppid()}-l1v3s0n0"]  # only the live server's


def test_head_of_the_page_is_answered(server):
    assert server.request("HEAD", "/")[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io",
                                  "localhost.evil.example", "", "[::1"])
def test_a_foreign_host_gets_nothing(server, baseline, project, host):
    status, body = server.request("GET", "/api/datasets", headers={"Host": host})
    assert status in (400, 421) and b"pcam" not in body
    status, _ = server.request("GET", "/api/pipeline/pcam", headers={"Host": host})
    assert status in (400, 421)
    status, answer = server.upload("/api/predict/pcam", "patch.tif",
                                   project.pcam_image.read_bytes(), headers={"Host": host})
    assert status in (400, 421) and "probabilities" not in answer


def test_loopback_names_are_answered(server, baseline):
    for host in ("127.0.0.1", "localhost", f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert server.request("GET", "/api/datasets", headers={"Host": host})[0] == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # a sandboxed frame, or a page with no-referrer
    {"Origin": "http://127.0.0.1:1"},  # another local port is another origin
    {"Referer": "http://evil.example/page.html"},
    {"Sec-Fetch-Site": "cross-site"},
], ids=["origin", "null-origin", "other-port", "referer", "sec-fetch-site"])
def test_a_post_from_another_origin_is_refused(server, baseline, project, headers, uploads_dir):
    status, answer = server.upload("/api/predict/pcam", "patch.tif",
                                   project.pcam_image.read_bytes(), headers=headers)
    assert status == 403 and "cross-origin" in answer["error"]


def test_a_post_from_the_app_s_own_page_or_no_page_is_processed(server, baseline, project):
    data = project.pcam_image.read_bytes()
    own = f"http://{server.own}"
    for headers in ({"Origin": own}, {"Referer": own + "/"}, {"Sec-Fetch-Site": "same-origin"},
                    {}):
        status, answer = server.upload("/api/predict/pcam", "patch.tif", data,
                                       headers=headers)
        assert status == 200 and "probabilities" in answer, answer


ROUTES = ["predict", "upload"]  # a prediction's upload, and an upload kept for the viewer


@pytest.mark.parametrize("route", ROUTES)
def test_a_zip_entry_declaring_1_5_gib_is_refused(server, baseline, project, route):
    bomb = zip_of_zeros({"series/1.dcm": 1536 << 20})
    assert len(bomb) < 4 << 20
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        assert zf.infolist()[0].file_size == 1536 << 20  # a well-formed zip
    status, answer = server.upload(f"/api/{route}/lidc", "series.zip", bomb, "0 0 0")
    assert status == 413 and "per entry" in answer["error"]
    lying = zip_of_zeros({"series/1.dcm": 1536 << 20}, declared=1000)  # caught while inflating
    status, answer = server.upload(f"/api/{route}/lidc", "series.zip", lying, "0 0 0")
    assert status in (413, 422), answer


@pytest.mark.parametrize("route", ROUTES)
def test_a_tiff_declaring_30000_by_30000_is_refused(server, baseline, route):
    status, answer = server.upload(f"/api/{route}/pcam", "patch.tif", huge_tiff())
    assert status in (413, 422), answer


@pytest.mark.parametrize("route", ROUTES)
def test_a_nii_gz_inflating_to_2_gib_is_refused(server, baseline, route):
    bomb = nifti_gz_bomb()
    assert len(bomb) < 4 << 20
    with gzip.open(io.BytesIO(bomb)) as fh:  # a well-formed gzip NIfTI
        assert nib.Nifti1Header.from_fileobj(fh).get_data_shape() == (1024, 1024, 1024)
    status, answer = server.upload(f"/api/{route}/mosmed", "study.nii.gz", bomb)
    assert status == 413 and "over the limit" in answer["error"]  # from the header alone


def test_a_client_that_leaves_stops_the_work(server, baseline, uploads_dir):
    # 60 entries of 16 MiB, each within the limits: seconds of inflating
    many = zip_of_zeros({f"series/{i:03d}.dcm": ZEROS for i in range(60)})
    boundary = "b"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.zip"'
            f'\r\n\r\n').encode() + many + (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="point"\r\n\r\n0 0 0'
        f'\r\n--{boundary}--\r\n').encode()
    before = len(server.log.read_text())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall((f"POST /api/predict/lidc HTTP/1.1\r\nHost: {server.own}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        deadline = time.monotonic() + 60
        while not [p for p in uploads_dir.iterdir() if str(server.proc.pid) in p.name]:
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.01)
    deadline = time.monotonic() + 60
    while "predict lidc: status" not in server.log.read_text()[before:]:
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    assert "predict lidc: status 499" in server.log.read_text()[before:]


def test_memory_stays_flat_and_the_next_prediction_works(server, baseline, project,
                                                         uploads_dir):
    # the hostile requests above ran first (this module's tests run in file order)
    grown = server.peak_rss() - baseline
    assert grown < 100 << 20, f"peak memory grew by {grown >> 20} MiB"
    status, answer = server.upload("/api/predict/pcam", "patch.tif",
                                   project.pcam_image.read_bytes(),
                                   headers={"Origin": f"http://{server.own}"})
    assert status == 200 and "probabilities" in answer
    status, answer = server.upload("/api/predict/lidc", "series.zip",
                                   project.lidc_zip.read_bytes(),
                                   " ".join(map(str, project.lidc_point)))
    assert status == 200 and "probabilities" in answer
    ours = [p for p in uploads_dir.iterdir() if f"-{server.proc.pid}-" in p.name]
    assert ours == []  # every upload removed after its answer


def test_shutdown_sweeps_its_own_uploads(server, uploads_dir):
    planted = uploads_dir / f"oncopipe-serve-{server.proc.pid}-sh0td0wn"
    planted.mkdir()  # as if a request were cut off by the shutdown
    server.stop()
    assert server.proc.returncode == 0
    assert not planted.exists()
    assert (uploads_dir / f"oncopipe-serve-{os.getppid()}-l1v3s0n0").exists()
    log = server.log.read_text()
    assert "patch.tif" not in log and "Traceback" not in log
