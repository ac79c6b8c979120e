"""The web app: JSON API and the page, as one FastAPI application (see :mod:`oncopipe.serve`).

Routes: ``GET /`` (the page), ``GET /api/datasets``, ``POST /api/predict/<ds>`` (exactly the
JSON of ``oncopipe predict <ds> --json``), ``POST /api/explain/<ds>`` (the same result plus
pictures: the input as the model saw it and a Grad-CAM map), ``POST /api/scan/<ds>`` (the
slices of an uploaded CT series, to pick a point on), ``GET /api/pipeline/<ds>`` and its
pictures. Every error is ``{"error": "<one line>"}`` with a 4xx status (5xx when the project,
not the request, is at fault); nothing an upload contains (names, pixels, DICOM values, error
messages quoting them) goes to the log.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from oncopipe import datasets, predict, saliency
from oncopipe.cards import ModelCard
from oncopipe.errors import InputError
from oncopipe.serve import pipeline, uploads, views
from oncopipe.serve.state import MIB, Cache, Misconfigured, NoModel, Settings

log = logging.getLogger("oncopipe.serve")
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'")


def _spec(dataset: str) -> datasets.PredictInput:
    if dataset not in datasets.NAMES:
        raise HTTPException(404, f"unknown dataset {dataset!r} (known: "
                                 f"{', '.join(datasets.NAMES)})")
    return datasets.module(dataset, "params").PREDICT_INPUT


def _point(text: str | None, needed: bool, dataset: str) -> tuple[float, float, float] | None:
    if not text or not text.strip():
        if needed:
            raise uploads.UploadError(f"{dataset} needs a point: x, y, z in patient mm")
        return None
    if not needed:
        raise uploads.UploadError(f"{dataset} classifies the whole input; a point is not used")
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise uploads.UploadError("point must be three numbers x, y, z in mm, e.g. '-54.2, 31, "
                                  "-120.5'")
    return values  # type: ignore[return-value]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    cache = Cache(settings)
    app = FastAPI(title="oncopipe", docs_url=None, redoc_url=None, openapi_url=None)

    app.add_middleware(_Limits, limit=settings.max_upload + MIB)  # + multipart framing

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                    for e in exc.errors()]
        return _error(400, "bad request: " + "; ".join(problems))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/datasets")
    def list_datasets() -> list[dict]:
        out = []
        for name in datasets.NAMES:
            spec = _spec(name)
            accept = (".zip",) if spec.kind == "series" else spec.suffixes
            card = None
            if (settings.models_dir / name / "model.pt").is_file():
                try:
                    card = ModelCard.read(settings.models_dir / name)
                except (OSError, InputError):  # not trained yet, or by another version
                    card = None
            out.append({"name": name, "kind": spec.kind, "accept": list(accept),
                        "expected": spec.expected, "point": spec.point,
                        "model": None if card is None else {
                            "model": card.architecture.model, "task": card.task,
                            "class_names": list(card.class_names),
                            "sample_shape": list(card.sample_shape),
                            "best_epoch": card.best_epoch}})
        return out

    def run(dataset: str, file: UploadFile, point: str | None, explain: bool) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            spec = _spec(dataset)
            with uploads.Upload(settings, spec, file) as up:
                try:
                    p = _point(point, spec.point, dataset)
                    predictor, layer = cache.model(dataset)
                    sample = predict.preprocess(cache.config(dataset), up.path(), p)
                    result = predict.answer(predictor, sample, up.name, p)
                    if not explain:
                        return JSONResponse(result)
                    x = predictor.tensor(sample)
                    with predictor.lock:
                        layer = layer or saliency.feature_module(predictor.model, x)
                        target = predictor.class_names.index(result["predicted"])
                        cam = saliency.grad_cam(predictor.model, x, target, layer)
                    cache.remember_layer(dataset, layer)
                    note = f"Grad-CAM on {layer}"
                    if not cam.any():
                        note += ": empty, nothing in the input raised this class's score"
                    return JSONResponse({"result": result, "words": predict.in_words(result),
                                         "views": views.sample_views(sample, cam),
                                         "saliency": note})
                except uploads.UploadError as exc:
                    status = exc.status
                    return _error(status, up.public(exc))
                except NoModel as exc:
                    status = 404
                    return _error(status, str(exc))
                except Misconfigured as exc:  # about the project, not the upload: logged
                    status = 500
                    log.error("%s", exc)
                    return _error(status, str(exc))
                except (ValueError, OSError) as exc:  # does not belong, cannot be decoded
                    status = 422
                    return _error(status, up.public(exc))
        except HTTPException as exc:
            status = exc.status_code
            raise
        except Exception as exc:  # keep serving; the message may quote the upload: not logged
            status = 500
            log.error("%s on %s: %s (message withheld)", "explain" if explain else "predict",
                      dataset, type(exc).__name__)
            return _error(500, f"internal error ({type(exc).__name__})")
        finally:
            log.info("%s %s: status %d in %.0f ms", "explain" if explain else "predict",
                     dataset, status, 1000 * (time.perf_counter() - started))

    @app.post("/api/predict/{dataset}")
    def predict_route(dataset: str, file: Annotated[UploadFile, File()],
                      point: Annotated[str | None, Form()] = None) -> Response:
        return run(dataset, file, point, explain=False)

    @app.post("/api/explain/{dataset}")
    def explain_route(dataset: str, file: Annotated[UploadFile, File()],
                      point: Annotated[str | None, Form()] = None) -> Response:
        return run(dataset, file, point, explain=True)

    @app.post("/api/scan/{dataset}")
    def scan_route(dataset: str, file: Annotated[UploadFile, File()]) -> Response:
        spec = _spec(dataset)
        if spec.kind != "series":
            return _error(400, f"{dataset} takes a whole {spec.kind}; there is no point to "
                               "pick")
        status = 500
        with uploads.Upload(settings, spec, file) as up:
            try:
                module = datasets.module(dataset, "prepare")
                volume, geometry = module.scan_view(cache.config(dataset), up.path())
                slices = [{"index": k, "z": geometry["zs"][k], "image": url}
                          for k, url in views.slice_images(volume)]
            except uploads.UploadError as exc:
                status = exc.status
                return _error(exc.status, up.public(exc))
            except (ValueError, OSError) as exc:
                status = 422
                return _error(422, up.public(exc))
            except Exception as exc:  # keep serving; the message may quote the upload
                status = 500
                log.error("scan on %s: %s (message withheld)", dataset, type(exc).__name__)
                return _error(500, f"internal error ({type(exc).__name__})")
            else:
                status = 200
                return JSONResponse({"geometry": geometry, "slices": slices})
            finally:
                log.info("scan %s: status %d", dataset, status)

    @app.get("/api/pipeline/{dataset}")
    def pipeline_route(dataset: str) -> dict:
        _spec(dataset)
        return pipeline.summary(settings.root, dataset)

    @app.get("/api/pipeline/{dataset}/{picture}.png")
    def picture_route(dataset: str, picture: str) -> Response:
        _spec(dataset)
        if picture == "curves":
            png = pipeline.curves_png(settings.root, dataset)
            if png is None:
                raise HTTPException(404, f"no training logs for {dataset} yet")
            return Response(png, media_type="image/png")
        path = pipeline.Outputs(settings.root, dataset).image(picture)
        if path is None:
            raise HTTPException(404, f"no {picture} picture for {dataset}")
        return FileResponse(path, media_type="image/png")

    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Limits:
    """ASGI middleware: 413 for a request body over ``limit`` (by its Content-Length before
    reading anything, or while it streams in), and the security headers on every answer."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        too_large = _error(413, f"upload larger than the limit of {self.limit - MIB} bytes")
        if length.isdigit() and int(length) > self.limit:
            return await too_large(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI passes an HTTPException raised here through
                raise HTTPException(413, f"upload larger than the limit of "
                                         f"{self.limit - MIB} bytes")
            return message

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"content-security-policy", CSP.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, counted, with_headers)
