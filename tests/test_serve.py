"""``oncopipe serve``: the JSON API against the CLI, every refusal, the limits, the page's data.

One small project (see serve_project.py) is built per module; the app runs in-process through
FastAPI's test client, so these tests need no network and no browser (test_serve_browser.py
is the real-browser test).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from serve_project import UNPACKED, build

from oncopipe import cli
from oncopipe.serve import sessions, uploads, viewer
from oncopipe.serve.app import Settings, create_app

LIMIT = 256 << 10  # upload limit of the test app: 256 KiB
FUZZ_CORPUS = Path(__file__).parent / "data" / "fuzz"
BASE = "http://127.0.0.1"  # the Host the app answers (TestClient's default is refused)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return build(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(project):
    app = create_app(Settings(root=project.root, max_upload=LIMIT))
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Uploads go under this folder (it must be empty again after every answer)."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def post(client, route, name, data, point=None):
    return client.post(route, files={"file": (name, data)},
                       data={"point": point} if point is not None else None)


def png_bytes(size=(96, 96), ext=".tif") -> bytes:
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(ext, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def cli_json(project, capsys, *argv) -> dict:
    dataset = argv[0]
    code = cli.main(["predict", *argv, "--json", "--model", str(project.root / "models" / dataset),
                     "--params", str(project.params)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


# --------------------------------------------------------------------------------------------
# The API answers what the CLI prints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["pcam", "mosmed", "lidc"])
def test_api_answers_exactly_what_the_cli_prints(project, client, capsys, dataset):
    if dataset == "lidc":
        point = project.lidc_point
        expected = cli_json(project, capsys, "lidc", str(project.lidc_folder), "--point",
                            *map(str, point))
        upload, text = project.lidc_zip, ", ".join(map(str, point))
    else:
        upload = project.pcam_image if dataset == "pcam" else project.mosmed_study
        expected = cli_json(project, capsys, dataset, str(upload))
        text = None
    response = post(client, f"/api/predict/{dataset}", upload.name, upload.read_bytes(), text)
    assert response.status_code == 200, response.text
    got = response.json()
    assert set(got) == set(expected)
    assert got["probabilities"] == expected["probabilities"]
    assert got["predicted"] == expected["predicted"]
    assert got["input"] == upload.name  # the client's file name, not a server path
    assert {k: got[k] for k in ("dataset", "task", "point") if k in got} == \
        {k: expected[k] for k in ("dataset", "task", "point") if k in expected}


def test_explain_shows_the_input_as_seen_and_a_saliency_map(project, client):
    response = post(client, "/api/explain/mosmed", project.mosmed_study.name,
                    project.mosmed_study.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"]["predicted"] in body["words"].split(", ")[0]
    assert body["saliency"].startswith("Grad-CAM on ")
    assert [v["title"].split(",")[0] for v in body["views"]] == ["axial", "coronal", "sagittal"]
    for view in body["views"]:
        for key in ("input", "saliency"):
            raw = np.frombuffer(__import__("base64").b64decode(view[key].split(",", 1)[1]),
                                np.uint8)
            img = cv2.imdecode(raw, cv2.IMREAD_COLOR)
            assert img is not None and min(img.shape[:2]) >= 192
        assert view["input"] != view["saliency"]
    # the map comes from the prediction's own forward pass: the same answer as /api/predict
    predicted = post(client, "/api/predict/mosmed", project.mosmed_study.name,
                     project.mosmed_study.read_bytes()).json()
    assert body["result"] == predicted


def test_a_series_is_uploaded_once_kept_under_a_token_and_sliced_whole(project, client, capsys,
                                                                     private_tmp):
    response = post(client, "/api/upload/lidc", "series.zip", project.lidc_zip.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    token, view = body["token"], body["view"]
    assert body["name"] == "series.zip" and len(token) == 22
    geometry = view["geometry"]
    assert view["shape"] == [16, 64, 64] and len(geometry["zs"]) == 16  # every slice
    assert geometry["zs"] == sorted(geometry["zs"])
    (x0, x1), (y0, y1), (z0, z1) = geometry["extent_mm"]
    x, y, z = project.lidc_point
    assert x0 < x < x1 and y0 < y < y1 and z0 < z < z1
    # the volume: raw little-endian int16 HU, exactly the dataset's view of the series
    raw = client.get(f"/api/upload/lidc/{token}/volume")
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    cfg = __import__("oncopipe.datasets", fromlist=["x"]).load_config("lidc", project.params)
    hu, _ = __import__("oncopipe.datasets", fromlist=["x"]).spec("lidc").view(
        cfg, project.lidc_folder)
    assert np.array_equal(np.frombuffer(raw.content, "<i2").reshape(16, 64, 64), hu)
    assert hu.min() < -500 < 0 < hu.max()  # HU, so window/level presets apply
    # predictions name the token: the same answer as the CLI, as often as asked
    point = ", ".join(map(str, project.lidc_point))
    expected = cli_json(project, capsys, "lidc", str(project.lidc_folder), "--point",
                        *map(str, project.lidc_point))
    for _ in range(2):
        got = client.post("/api/predict/lidc", data={"token": token, "point": point})
        assert got.status_code == 200, got.text
        assert got.json()["probabilities"] == expected["probabilities"]
    assert got.json()["input"] == "series.zip"
    outside = client.post("/api/predict/lidc", data={"token": token, "point": "9999 0 0"})
    error = outside.json()["error"]
    assert outside.status_code == 422 and "outside the scan" in error
    assert str(private_tmp) not in error and "oncopipe-upload" not in error
    assert list(private_tmp.iterdir())  # kept until the page is done with it
    assert client.delete(f"/api/upload/lidc/{token}").status_code == 204
    assert list(private_tmp.iterdir()) == []
    gone = client.post("/api/predict/lidc", data={"token": token, "point": point})
    assert gone.status_code == 404 and "expired" in gone.json()["error"]
    assert client.get(f"/api/upload/lidc/{token}/volume").status_code == 404


def test_an_lidc_heat_map_comes_placed_where_its_crop_lies_on_the_scan(project, client):
    view = post(client, "/api/upload/lidc", "series.zip", project.lidc_zip.read_bytes()).json()
    token, geometry = view["token"], view["view"]["geometry"]
    x, y, z = project.lidc_point
    body = client.post("/api/explain/lidc", data={"token": token, "point": f"{x}, {y}, {z}"})
    assert body.status_code == 200, body.text
    placed, seen = body.json()["scan_map"], body.json()["model_view"]
    assert placed["slice"] == int(np.abs(np.array(geometry["zs"]) - z).argmin())
    (ox, oy), (sx, sy) = geometry["origin_xy"], geometry["spacing_xy"]
    top, left, bottom, right = placed["rect"]
    assert (top + bottom) / 2 == pytest.approx((y - oy) / sy)  # centred on the point's pixel
    assert (left + right) / 2 == pytest.approx((x - ox) / sx)
    crops = __import__("oncopipe.datasets", fromlist=["x"]).load_config(
        "lidc", project.params).prepare.crops
    assert right - left == pytest.approx(crops.size_2d * crops.mm_per_px / sx)
    # the map over the scan is the model view's map (a 2D crop: the same 64 x 64 bytes)
    assert placed["shape"] == seen["shape"][1:] and placed["cam"] == seen["cam"]
    # an input predicted without being kept has no viewer to draw on
    direct = post(client, "/api/explain/lidc", "series.zip", project.lidc_zip.read_bytes(),
                  f"{x}, {y}, {z}")
    assert direct.status_code == 200 and direct.json()["scan_map"] is None
    assert client.delete(f"/api/upload/lidc/{token}").status_code == 204


def test_a_token_is_only_good_for_its_own_dataset_and_images_have_no_volume(project, client):
    body = post(client, "/api/upload/pcam", "patch.tif", project.pcam_image.read_bytes()).json()
    assert body["view"] is None
    assert client.get(f"/api/upload/pcam/{body['token']}/volume").status_code == 404
    for route, data in (("/api/predict/isic", {"token": body["token"]}),
                        ("/api/predict/pcam", {"token": "../../etc/passwd"})):
        response = client.post(route, data=data)
        assert response.status_code == 404 and "expired or is unknown" in response.json()["error"]
    assert client.post("/api/predict/pcam", data={"token": body["token"]}).status_code == 200
    assert client.delete(f"/api/upload/pcam/{body['token']}").status_code == 204


def test_an_upload_to_keep_gets_the_same_checks_and_leaves_nothing(client, private_tmp):
    evil = zip_bytes({"../../escape.dcm": b"x"})
    response = post(client, "/api/upload/lidc", "evil.zip", evil)
    assert response.status_code == 400 and "outside" in response.json()["error"]
    response = post(client, "/api/upload/mosmed", "scan.nii.gz", b"\x1f\x8b" + bytes(64))
    assert response.status_code == 422 and "gzip" in response.json()["error"]
    # unpacked fine, refused by the dataset's view: the kept folder is removed too
    response = post(client, "/api/upload/mosmed", "scan.nii.gz", gzip.compress(bytes(4096)))
    assert response.status_code == 422 and "scan.nii.gz" in response.json()["error"]
    assert str(private_tmp) not in response.json()["error"]
    assert list(private_tmp.iterdir()) == []


def test_kept_uploads_are_bounded_in_number_bytes_and_time(tmp_path):
    def session(name: str, size: int = 10) -> sessions.Session:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "input").write_bytes(bytes(size))
        return sessions.Session(token="", dataset="pcam", name=name, folder=folder,
                                input=folder / "input")

    store = sessions.Store(ttl_s=60, max_sessions=2, max_bytes=100)
    a, b = store.add(session("a")), store.add(session("b"))
    with store.use(a.token, "pcam"):  # in use: never evicted; b is then the oldest idle one
        c = store.add(session("c"))
        assert len(store) == 2 and not b.folder.exists() and a.folder.exists()
    store.add(session("d", size=95))  # over the byte bound: the least recently used goes
    assert not a.folder.exists() and not c.folder.exists() and len(store) == 1
    with pytest.raises(uploads.UploadError, match="expired"):
        store.get(a.token, "pcam")
    short = sessions.Store(ttl_s=0)
    e = short.add(session("e"))
    short.expire()
    assert not e.folder.exists() and len(short) == 0
    store.close()
    assert list(tmp_path.iterdir()) == []


def test_examples_come_from_the_prepared_data_and_run_like_an_upload(project, client, capsys):
    examples = client.get("/api/examples/pcam").json()
    assert [e["label"] for e in examples] == ["negative", "positive"]
    for e in examples:
        assert e["file"].startswith("data/demo/pcam/") and ".." not in e["file"]
        assert (project.root / e["file"]).is_file()
    opened = client.post("/api/examples/pcam/1").json()
    got = client.post("/api/explain/pcam", data={"token": opened["token"]}).json()
    expected = cli_json(project, capsys, "pcam", str(project.root / examples[1]["file"]))
    assert got["result"]["probabilities"] == expected["probabilities"]
    assert client.post("/api/examples/pcam/7").status_code == 404
    assert client.get("/api/examples/lidc").json() == []  # not prepared in this project
    assert client.delete(f"/api/upload/pcam/{opened['token']}").status_code == 204
    assert (project.root / examples[1]["file"]).is_file()  # the demo file itself stays


def test_an_example_outside_the_project_is_never_offered(project, tmp_path):
    cfg = __import__("oncopipe.datasets", fromlist=["x"]).load_config("pcam", project.params)
    inside = viewer.examples(project.root, datasets_spec("pcam"), cfg)
    assert len(inside) == 2
    assert viewer.examples(tmp_path, datasets_spec("pcam"), cfg) == []  # manifest elsewhere


def datasets_spec(name):
    return __import__("oncopipe.datasets", fromlist=["x"]).spec(name)


def test_the_prepared_lesions_of_the_uploaded_series_are_found(tmp_path):
    folder = tmp_path / "data" / "prepared" / "lidc"
    folder.mkdir(parents=True)
    pl.DataFrame({"lesion_id": ["L-N01", "L-N02"], "kind": ["nodule", "small_nodule"],
                  "series_uid": ["1.2.3", "9.9"], "x_mm": [1.0, 0.0], "y_mm": [2.0, 0.0],
                  "z_mm": [3.0, 0.0], "diameter_mm": [8.5, None]}
                 ).write_parquet(folder / "lesions.parquet")
    assert viewer.lesions(tmp_path, "lidc", {"series_uid": "1.2.3"}) == [
        {"id": "L-N01", "kind": "nodule", "point": [1.0, 2.0, 3.0], "diameter_mm": 8.5}]
    assert viewer.lesions(tmp_path, "lidc", {"series_uid": "4.5"}) == []
    assert viewer.lesions(tmp_path, "mosmed", {}) == []


def test_cards_are_shown_when_the_stages_wrote_them(project, client, tmp_path):
    assert client.get("/api/pipeline/pcam/cards").json() == {"data": None, "model": None}
    (tmp_path / "models" / "pcam").mkdir(parents=True)
    (tmp_path / "models" / "pcam" / "MODELCARD.md").write_text("# Model card\n")
    assert viewer.cards(tmp_path, "pcam") == {"data": None, "model": "# Model card\n"}


def test_head_of_the_page_is_answered_without_a_body(client):
    response = client.head("/")
    assert response.status_code == 200 and response.content == b""


def test_each_class_is_explained_in_words(client):
    listing = {d["name"]: d for d in client.get("/api/datasets").json()}
    assert "centre 32 x 32" in listing["pcam"]["classes"]["positive"]
    assert listing["lidc"]["viewer"] and listing["mosmed"]["viewer"]
    assert not listing["pcam"]["viewer"]


# --------------------------------------------------------------------------------------------
# Refusals: one line of JSON, a 4xx status, and the server keeps serving
# --------------------------------------------------------------------------------------------

BAD = [
    # (route dataset, file name, content, point, status, words in the error)
    ("pcam", "patch.tif", b"II*\x00" + b"\x00" * 200, None, 422, "unreadable"),
    ("pcam", "noise.bin", bytes(range(256)) * 4, None, 422, "not an image of a known format"),
    ("pcam", "photo.jpg", "jpeg", None, 422, "expected a 96x96 TIFF patch"),
    ("pcam", "small.tif", "small", None, 422, "wrong size"),
    ("isic", "patch.tif", "tif", None, 422, "expected a JPEG photograph"),
    ("mosmed", "scan.nii", "tif", None, 422, "expected a NIfTI CT study"),
    ("mosmed", "scan.nii.gz", b"\x1f\x8b" + b"\x00" * 64, None, 422, "gzip"),
    ("lidc", "series.zip", "series", "9999 9999 9999", 422, "outside the scan, which spans x"),
    ("lidc", "series.zip", "series", None, 400, "needs a point"),
    ("lidc", "series.zip", "series", "1, 2", 400, "three numbers"),
    ("lidc", "series.zip", "series", "nan 1 2", 400, "three numbers"),
    ("lidc", "series.zip", b"not a zip", "0 0 0", 422, "not a readable zip"),
    ("lidc", "empty.zip", "empty_zip", "0 0 0", 422, "no .dcm files"),
    ("lidc", "junk.zip", "junk_dcm", "0 0 0", 422, "expected a folder of one CT series"),
    ("lidc", "lying.zip", "negative_offset_zip", "0 0 0", 422, "cannot be unpacked"),
    ("pcam", "patch.tif", "tif", "1 2 3", 400, "a point is not used"),
    ("breakhis", "slide.png", "png", None, 404, "no model trained yet"),
    ("nosuch", "x.png", "png", None, 404, "unknown dataset"),
]


def _content(project, spec):
    if isinstance(spec, bytes):
        return spec
    return {"jpeg": lambda: png_bytes(ext=".jpg"), "tif": png_bytes,
            "png": lambda: png_bytes(ext=".png"), "small": lambda: png_bytes((64, 64)),
            "series": project.lidc_zip.read_bytes,
            "empty_zip": lambda: zip_bytes({"readme.txt": b"hello"}),
            "junk_dcm": lambda: zip_bytes({"s/1.dcm": b"junk", "s/2.dcm": b"junk"}),
            "negative_offset_zip": lambda: (FUZZ_CORPUS / "upload" /
                                            "negative-local-header-offset-1.bin").read_bytes(),
            }[spec]()


@pytest.mark.parametrize(("dataset", "name", "content", "point", "status", "words"), BAD,
                         ids=[f"{b[0]}-{b[5].split()[0]}-{i}" for i, b in enumerate(BAD)])
def test_refusals_are_one_line_of_json_and_the_server_keeps_serving(
        project, client, private_tmp, dataset, name, content, point, status, words):
    response = post(client, f"/api/predict/{dataset}", name, _content(project, content), point)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error and "\n" not in error
    assert str(private_tmp) not in error  # no server-side temporary path in the answer
    assert "oncopipe-upload" not in error  # nor the name the upload had on disk
    assert list(private_tmp.iterdir()) == []  # the upload is gone
    ok = post(client, "/api/predict/pcam", "patch.tif", project.pcam_image.read_bytes())
    assert ok.status_code == 200


def test_a_request_without_the_file_field_is_a_400(client):
    response = client.post("/api/predict/pcam", data={"point": "1 2 3"})
    assert response.status_code == 400
    assert "file" in response.json()["error"]


# --------------------------------------------------------------------------------------------
# Safe by default
# --------------------------------------------------------------------------------------------


def test_uploads_over_the_limit_get_413_by_length_and_while_streaming(project, client):
    big = png_bytes((512, 512), ".png") + b"\x00" * LIMIT
    response = post(client, "/api/predict/pcam", "big.tif", big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    # no Content-Length: the body arrives in chunks and is counted as it comes
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.tif\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
        + big + f"\r\n--{boundary}--\r\n".encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    response = client.post("/api/predict/pcam", content=chunks,
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413
    ok = post(client, "/api/predict/pcam", "patch.tif", project.pcam_image.read_bytes())
    assert ok.status_code == 200


@pytest.mark.parametrize("entry", ["../evil.dcm", "/tmp/evil.dcm", "a/../../evil.dcm",
                                   "..\\evil.dcm", "C:/evil.dcm"])
def test_zip_entries_cannot_leave_the_temporary_folder(client, private_tmp, entry):
    data = zip_bytes({"series/1.dcm": b"x", entry: b"planted"})
    response = post(client, "/api/predict/lidc", "series.zip", data, "0 0 0")
    assert response.status_code == 400
    assert "outside" in response.json()["error"]
    assert not list(private_tmp.parent.rglob("evil.dcm"))
    assert list(private_tmp.iterdir()) == []


def test_zip_with_a_symbolic_link_is_refused(client, private_tmp):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("series/link.dcm")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    response = post(client, "/api/predict/lidc", "series.zip", buf.getvalue(), "0 0 0")
    assert response.status_code == 400 and "symbolic link" in response.json()["error"]


def test_zip_and_gzip_bombs_stop_at_the_inflation_limit(client, private_tmp):
    zeros = b"\x00" * (UNPACKED + 1)
    bomb = zip_bytes({"series/1.dcm": zeros})
    gz = gzip.compress(zeros, compresslevel=9)
    assert len(bomb) < LIMIT and len(gz) < LIMIT
    response = post(client, "/api/predict/lidc", "series.zip", bomb, "0 0 0")
    assert response.status_code == 413 and "uncompressed" in response.json()["error"]
    # a zip whose header understates the size is caught while inflating
    lying = bytearray(bomb)
    central = lying.rfind(b"PK\x01\x02")
    lying[central + 24:central + 28] = (100).to_bytes(4, "little")  # uncompressed size
    response = post(client, "/api/predict/lidc", "series.zip", bytes(lying), "0 0 0")
    assert response.status_code in (413, 422)
    for name in ("study.nii.gz", "study.nii"):  # gzip inside, whatever the name says
        response = post(client, "/api/predict/mosmed", name, gz)  # its header: zeros
        assert response.status_code == 422 and "not a NIfTI file" in response.json()["error"]
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(("bomb", "status", "words"), [
    ("nii-gz-declares-2-gib.bin", 413, "over the limit"),
    ("nii-gz-declares-more-than-deflate-holds.bin", 422, "more than a 89-byte gzip file"),
    ("nii-gz-inflates-past-its-header.bin", 422, "goes on past the 18,784 bytes"),
])
def test_a_nii_gz_is_read_header_first_and_no_further_than_it_declares(client, private_tmp,
                                                                        bomb, status, words):
    """The upload goes as it came to MosMed's reader, which checks the header before
    inflating and stops after the voxels it declares (the last one is a valid study followed
    by 16 MiB of zeros in its gzip stream)."""
    data = (FUZZ_CORPUS / "upload" / bomb).read_bytes()
    response = post(client, "/api/predict/mosmed", "study.nii.gz", data)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert list(private_tmp.iterdir()) == []


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(client):
    side = (50_000).to_bytes(4, "big")
    png = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + side + side + bytes(64)
    response = post(client, "/api/predict/isic", "huge.png", png)
    assert response.status_code == 413 and "50000x50000 pixels" in response.json()["error"]


def test_logs_carry_no_upload_names_and_no_dicom_values(project, client, caplog):
    secret = "DOE_JOHN_MRN12345"
    uid = project.lidc_folder.name  # SeriesInstanceUID: a DICOM tag value
    with caplog.at_level(logging.DEBUG):
        post(client, "/api/predict/pcam", f"{secret}.tif", project.pcam_image.read_bytes())
        post(client, "/api/predict/pcam", f"{secret}.tif", b"junk")
        post(client, "/api/explain/lidc", f"{secret}.zip", project.lidc_zip.read_bytes(),
             "9999 0 0")
        post(client, "/api/upload/lidc", f"{secret}.zip", project.lidc_zip.read_bytes())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "predict pcam: status 200" in text and "status 422" in text
    assert secret not in text and uid not in text and "LIDC-IDRI" not in text


def test_security_headers_forbid_other_origins(client):
    response = client.get("/")
    assert response.status_code == 200 and "app.js" in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css", "/"):
        text = client.get(asset).text
        assert "http://" not in text and "https://" not in text  # nothing from a CDN


# --------------------------------------------------------------------------------------------
# What the pipeline made
# --------------------------------------------------------------------------------------------


def test_datasets_list_says_which_have_a_model(client):
    listing = {d["name"]: d for d in client.get("/api/datasets").json()}
    assert set(listing) == {"lidc", "mosmed", "pcam", "isic", "breakhis"}
    assert listing["breakhis"]["model"] is None
    assert listing["pcam"]["model"]["class_names"] == ["negative", "positive"]
    assert listing["lidc"]["point"] and listing["lidc"]["accept"] == [".zip"]
    assert listing["mosmed"]["accept"] == [".nii", ".nii.gz"]


def test_pipeline_summary_reads_every_output(project, client):
    s = client.get("/api/pipeline/pcam").json()
    assert s["missing"] == []
    assert s["manifest"]["samples"] == 40
    assert sum(s["manifest"]["class_counts"].values()) == 40
    assert sum(v["samples"] for v in s["splits"].values()) >= 40
    assert s["rejects"][0]["report"]["read"] == 40
    assert "low" in s["metrics"]["ci"]["accuracy"]
    assert s["images"] == {"contact_sheet": True, "evaluation": True, "curves": True}
    for picture in ("contact_sheet", "evaluation", "curves"):
        response = client.get(f"/api/pipeline/pcam/{picture}.png")
        assert response.status_code == 200
        img = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[1] > 200


def test_pipeline_summary_degrades_when_outputs_are_missing(client):
    s = client.get("/api/pipeline/isic").json()
    assert s["manifest"] is None and s["metrics"] is None and len(s["missing"]) == 4
    assert client.get("/api/pipeline/isic/contact_sheet.png").status_code == 404
    assert client.get("/api/pipeline/pcam/manifest.png").status_code == 404


# --------------------------------------------------------------------------------------------
# Models load once, lazily; concurrent requests agree
# --------------------------------------------------------------------------------------------


def test_models_load_once_and_reload_when_the_train_stage_rewrites_them(project, caplog):
    import os
    from concurrent.futures import ThreadPoolExecutor

    with TestClient(create_app(Settings(root=project.root)), base_url=BASE) as fresh, \
            caplog.at_level(logging.INFO, logger="oncopipe.serve"):
        assert not [r for r in caplog.records if "loaded" in r.getMessage()]  # lazily
        data = project.pcam_image.read_bytes()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(fresh, "/api/explain/pcam", "p.tif", data)
                                    .json()["result"], range(6)))
        assert all(a == answers[0] for a in answers)
        loads = [r for r in caplog.records if "loaded the pcam model" in r.getMessage()]
        assert len(loads) == 1
        weights = project.root / "models/pcam/model.pt"
        st = weights.stat()
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert post(fresh, "/api/predict/pcam", "p.tif", data).json() == answers[0]
        loads = [r for r in caplog.records if "loaded the pcam model" in r.getMessage()]
        assert len(loads) == 2


def test_a_ct_study_never_holds_up_an_image_and_a_full_lane_answers_503(project):
    import threading
    import time

    app = create_app(Settings(root=project.root, heavy_queue=0))
    study = project.mosmed_study.read_bytes()
    with TestClient(app, base_url=BASE) as c:
        heavy, gate = app.state.lanes.heavy, threading.Event()
        held = [c.portal.start_task_soon(heavy.run, gate.wait)  # every CT worker busy
                for _ in range(heavy.workers)]
        while heavy.held < heavy.workers:
            time.sleep(0.01)
        busy = post(c, "/api/predict/mosmed", "study.nii.gz", study)
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        assert int(busy.headers["Retry-After"]) >= 1
        image = post(c, "/api/predict/pcam", "p.tif", project.pcam_image.read_bytes())
        assert image.status_code == 200  # answered while the CT lane is still held
        assert not any(h.done() for h in held)
        gate.set()
        for h in held:
            h.result(timeout=60)
        assert post(c, "/api/predict/mosmed", "study.nii.gz", study).status_code == 200


def test_the_client_file_name_is_never_a_path(project, client, private_tmp):
    response = post(client, "/api/predict/pcam", "../../../etc/evil.tif",
                    project.pcam_image.read_bytes())
    assert response.status_code == 200 and response.json()["input"] == "evil.tif"
    assert not list(private_tmp.parent.rglob("evil.tif"))


def test_a_broken_params_file_is_the_server_s_error_not_the_upload_s(project, tmp_path):
    (tmp_path / "models").symlink_to(project.root / "models")
    (tmp_path / "params.yaml").write_text("seed: [\n")
    with TestClient(create_app(Settings(root=tmp_path)), base_url=BASE) as broken:
        response = post(broken, "/api/predict/pcam", "p.tif", project.pcam_image.read_bytes())
        assert response.status_code == 500
        assert "params.yaml" in response.json()["error"]


def test_an_unexpected_error_is_a_logged_500_without_a_traceback(project, tmp_path, caplog):
    import shutil

    import torch

    shutil.copytree(project.root / "models", tmp_path / "models")
    # weights of no network: train writes model.pt with config.json, so a bug's stand-in
    torch.save({}, tmp_path / "models/pcam/model.pt")
    (tmp_path / "params.yaml").write_text((project.root / "params.yaml").read_text())
    with TestClient(create_app(Settings(root=tmp_path)), base_url=BASE) as c, \
            caplog.at_level(logging.ERROR, logger="oncopipe.serve"):
        response = post(c, "/api/predict/pcam", "p.tif", project.pcam_image.read_bytes())
        assert response.status_code == 500
        assert response.json() == {"error": "internal error (RuntimeError)"}
        assert "predict on pcam: RuntimeError" in caplog.text
        ok = post(c, "/api/predict/isic", "p.jpg", png_bytes((300, 400), ext=".jpg"))
        assert ok.status_code == 200  # and the server keeps serving


def test_a_damaged_checkpoint_is_a_500_naming_the_model_file(project, tmp_path, caplog):
    import shutil

    shutil.copytree(project.root / "models", tmp_path / "models")
    weights = tmp_path / "models/pcam/model.pt"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    (tmp_path / "params.yaml").write_text((project.root / "params.yaml").read_text())
    with TestClient(create_app(Settings(root=tmp_path)), base_url=BASE) as c, \
            caplog.at_level(logging.ERROR, logger="oncopipe.serve"):
        response = post(c, "/api/predict/pcam", "p.tif", project.pcam_image.read_bytes())
        assert response.status_code == 500
        assert response.json()["error"].startswith(
            f"{weights}: not a readable model checkpoint: truncated, or not written by "
            "torch.save (")
        assert "model: ModelError" in caplog.text


def test_the_command_binds_this_machine_only_by_default():
    args = cli._parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 8000, 512)
