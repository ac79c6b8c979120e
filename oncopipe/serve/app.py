"""The web app: JSON API and the page, as one FastAPI application (see :mod:`oncopipe.serve`).

Routes: ``GET /`` (the page), ``GET /api/datasets``, ``POST /api/predict/<ds>`` (exactly the
JSON of ``oncopipe predict <ds> --json``), ``POST /api/explain/<ds>`` (the same result plus
pictures: the input as the model saw it and a Grad-CAM map), ``POST /api/upload/<ds>`` (an input
kept under a token for a few minutes, with its volume for the viewer; predict and explain then
take ``token`` instead of ``file``, see :mod:`.sessions`), ``GET /api/examples/<ds>`` and ``POST
/api/examples/<ds>/<n>`` (demo inputs from the project's prepared data), ``GET
/api/pipeline/<ds>`` with its pictures and cards. Every error is ``{"error": "<one line>"}``
with a 4xx status (5xx when the project, not the request, is at fault; any unexpected exception
is a logged 500 whose body names only its type); nothing an upload contains (names, pixels,
DICOM values, error messages quoting them) goes to the log.

Safe to leave running while browsing other sites (:class:`_Guard`): a request whose ``Host``
is not this machine's loopback name (or a name given with ``--host``/``--allow-host``) gets
421, so a hostile site's DNS name rebound to 127.0.0.1 reads nothing; a POST whose
``Origin`` (else ``Referer``, else ``Sec-Fetch-Site``) is another site gets 403, so a
cross-origin form or ``fetch(mode: "no-cors")`` is never processed. Heavy work runs in a
worker thread that stops between steps (and between chunks while unpacking) once the client
disconnects. Worker threads come from two bounded lanes (:class:`~oncopipe.serve.state.Lanes`):
CT volumes and series in one, 2D images in the other, so a CT study never delays an image's
answer; a full lane answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from oncopipe import datasets, predict
from oncopipe.core.atomic import OUTPUT_ROOTS, sweep_orphans
from oncopipe.core.cards import CONFIG_FILE, ModelCard
from oncopipe.core.contract import DatasetSpec
from oncopipe.core.errors import InputError, LimitError, ModelError
from oncopipe.ingest import input_warnings
from oncopipe.learn.inference import MODEL_FILE
from oncopipe.serve import pipeline, sessions, uploads, viewer, views
from oncopipe.serve.state import MIB, Busy, Cache, Lanes, Misconfigured, NoModel, Settings

log = logging.getLogger("oncopipe.serve")
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
POLL_S = 0.1  # how often a running request checks whether its client is still there


def _spec(dataset: str) -> DatasetSpec:
    if dataset not in datasets.NAMES:
        raise HTTPException(404, f"unknown dataset {dataset!r} (known: "
                                 f"{', '.join(datasets.NAMES)})")
    return datasets.spec(dataset)


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
    store = sessions.Store()
    lanes = Lanes(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        left = uploads.sweep() + sweep_orphans(*(settings.root / r for r in OUTPUT_ROOTS))
        if left:
            log.info("removed %d temporary folder(s) or file(s) of processes that were killed",
                     len(left))
        store.start()
        try:
            yield
        finally:
            store.close()
            lanes.close()
            uploads.sweep(own=True)

    app = FastAPI(title="oncopipe", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.lanes = lanes
    app.add_middleware(_Guard, limit=settings.max_upload + MIB,  # + multipart framing
                       hosts=settings.allowed_hosts)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):  # Starlette logs it; the body: type only
        log.error("%s %s: %s", request.method, request.url.path, type(exc).__name__)
        return _error(500, f"internal error ({type(exc).__name__})")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                    for e in exc.errors()]
        return _error(400, "bad request: " + "; ".join(problems))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/datasets")
    def list_datasets() -> list[dict]:
        out = []
        for name in datasets.NAMES:
            spec = _spec(name).predict_input
            accept = (".zip",) if spec.kind == "series" else spec.suffixes
            card = None
            model_dir = settings.models_dir / name
            if (model_dir / CONFIG_FILE).is_file() and (model_dir / MODEL_FILE).is_file():
                try:
                    card = ModelCard.read(model_dir)
                except (OSError, InputError):  # unreadable, or written by another version
                    card = None
            out.append({"name": name, "kind": spec.kind, "accept": list(accept),
                        "expected": spec.expected, "point": spec.point,
                        "viewer": _spec(name).view is not None,
                        "classes": dict(_spec(name).class_descriptions),
                        "model": None if card is None else {
                            "model": card.architecture.model, "task": card.task,
                            "class_names": list(card.class_names),
                            "sample_shape": list(card.sample_shape),
                            "best_epoch": card.best_epoch}})
        return out

    def source(dataset: str, file: UploadFile | None, token: str | None,
               cancel: threading.Event) -> contextlib.AbstractContextManager:
        """The request's input: a kept upload named by ``token``, else the uploaded file."""
        if token:
            return store.use(token, dataset)
        if file is None:
            raise uploads.UploadError("missing file (or token of a kept upload)")
        return uploads.Upload(settings, _spec(dataset).predict_input, file,
                              cache.config(dataset).limits, cancel)

    def answer(dataset: str, file: UploadFile | None, token: str | None, point: str | None,
               explain: bool, cancel: threading.Event) -> Response:
        """The prediction (and with ``explain`` the pictures), in a worker thread."""
        spec = _spec(dataset).predict_input
        cfg = cache.config(dataset)
        try:
            held = source(dataset, file, token, cancel)
        except uploads.UploadError as exc:
            return _error(exc.status, str(exc))
        with held as up:
            try:
                p = _point(point, spec.point, dataset)
                path = up.path()  # before the model loads: a bomb must not cost its memory
                uploads.check(cancel)
                predictor = cache.model(dataset)
                with input_warnings.collecting() as warnings:
                    sample = predict.preprocess(cfg, path, p)
                uploads.check(cancel)
                notes = [up.public(w) for w in warnings]
                if not explain:
                    return JSONResponse(predict.about_input(predictor.predict(sample), up.name,
                                                            p, notes))
                found, cam, layer = predictor.explain(sample)  # one pass: answer and map
                result = predict.about_input(found, up.name, p, notes)
                note = f"Grad-CAM on {layer}"
                if not cam.any():
                    note += ": empty, nothing in the input raised this class's score"
                kept_view = up.view if isinstance(up, sessions.Session) else None
                on_scan = viewer.map_on_scan(_spec(dataset), cfg, kept_view, p, cam)
                return JSONResponse({"result": result, "words": predict.in_words(result),
                                     "views": views.sample_views(sample, cam),
                                     "model_view": viewer.model_view(sample, cam),
                                     "scan_map": on_scan, "saliency": note})
            except NoModel as exc:
                return _error(404, str(exc))
            except (InputError, OSError) as exc:
                return _refusal(exc, up)

    def kept(dataset: str, session: sessions.Session) -> Response:
        """Keep ``session`` under a token once the dataset accepts it, with its volume when
        the dataset has a view."""
        declared = _spec(dataset)
        try:
            viewer.check_and_view(session, declared, cache.config(dataset))
        except BaseException:
            shutil.rmtree(session.folder, ignore_errors=True)
            raise
        session.dataset = dataset
        store.add(session)
        view = session.view
        if view is not None:
            view = {**view, "lesions": viewer.lesions(settings.root, dataset, view["geometry"])}
        return JSONResponse({"token": session.token, "name": session.name, "view": view})

    def upload(dataset: str, file: UploadFile, cancel: threading.Event) -> Response:
        """Save, unpack and check an upload, then keep it (in a worker thread)."""
        spec = _spec(dataset).predict_input
        cfg = cache.config(dataset)
        with uploads.Upload(settings, spec, file, cfg.limits, cancel) as up:
            try:
                path = up.path()
                uploads.check(cancel)
                session = sessions.Session(token="", dataset=dataset, name=up.name,
                                           folder=up.folder, input=path,
                                           public_paths=up.keep())
                return kept(dataset, session)
            except (InputError, OSError) as exc:
                return _refusal(exc, up)

    def example(dataset: str, n: int, cancel: threading.Event) -> Response:
        """Open demo input ``n`` of the dataset as a kept upload (in a worker thread)."""
        cfg = cache.config(dataset)
        found = viewer.examples(settings.root, _spec(dataset), cfg)
        if not 0 <= n < len(found):
            return _error(404, f"no example {n} for {dataset} (the prepared data has "
                               f"{len(found)})")
        uploads.check(cancel)
        session = viewer.example_session(settings.root, found[n], sessions.new_folder())
        try:
            return kept(dataset, session)
        except (InputError, OSError) as exc:
            return _refusal(exc, session)

    async def handled(request: Request, what: str, dataset: str,
                      work: Callable[[threading.Event], Response]) -> Response:
        """Run ``work`` in a worker thread while watching the client: once it disconnects,
        ``work`` stops at its next check. Logs the status and time, never the upload."""
        started = time.perf_counter()
        cancel = threading.Event()

        async def watch() -> None:
            while not await request.is_disconnected():
                await asyncio.sleep(POLL_S)
            cancel.set()

        watcher = asyncio.ensure_future(watch())
        status = 500
        try:
            response = await lanes.of(dataset).run(work, cancel)
            status = response.status_code
            return response
        except Busy as exc:
            status = 503
            return JSONResponse({"error": str(exc)}, status_code=status,
                                headers={"Retry-After": str(exc.retry_after)})
        except HTTPException as exc:
            status = exc.status_code
            raise
        except uploads.Abandoned:
            status = 499  # nginx's "client closed request": nobody reads this answer
            return Response(status_code=status)
        except Misconfigured as exc:  # about the project, not the upload: logged
            log.error("%s", exc)
            return _error(500, str(exc))
        except Exception as exc:  # a bug; keep serving; the message may quote the upload
            log.error("%s on %s: %s (message withheld)", what, dataset, type(exc).__name__)
            return _error(500, f"internal error ({type(exc).__name__})")
        finally:
            watcher.cancel()
            log.info("%s %s: status %d in %.0f ms", what, dataset, status,
                     1000 * (time.perf_counter() - started))

    @app.post("/api/predict/{dataset}")
    async def predict_route(request: Request, dataset: str,
                            file: Annotated[UploadFile | None, File()] = None,
                            token: Annotated[str | None, Form()] = None,
                            point: Annotated[str | None, Form()] = None) -> Response:
        return await handled(request, "predict", dataset,
                             lambda cancel: answer(dataset, file, token, point, False, cancel))

    @app.post("/api/explain/{dataset}")
    async def explain_route(request: Request, dataset: str,
                            file: Annotated[UploadFile | None, File()] = None,
                            token: Annotated[str | None, Form()] = None,
                            point: Annotated[str | None, Form()] = None) -> Response:
        return await handled(request, "explain", dataset,
                             lambda cancel: answer(dataset, file, token, point, True, cancel))

    @app.post("/api/upload/{dataset}")
    async def upload_route(request: Request, dataset: str, file: Annotated[UploadFile, File()]
                           ) -> Response:
        return await handled(request, "upload", dataset,
                             lambda cancel: upload(dataset, file, cancel))

    @app.get("/api/upload/{dataset}/{token}/volume")
    def volume_route(dataset: str, token: str) -> Response:
        _spec(dataset)
        try:
            session = store.get(token, dataset)
        except uploads.UploadError as exc:
            return _error(exc.status, str(exc))
        if session.view is None:
            return _error(404, f"{dataset} inputs have no volume to view")
        return FileResponse(session.volume_path, media_type="application/octet-stream")

    @app.delete("/api/upload/{dataset}/{token}")
    def discard_route(dataset: str, token: str) -> Response:
        _spec(dataset)
        return Response(status_code=204 if store.discard(token) else 404)

    @app.get("/api/examples/{dataset}")
    def examples_route(dataset: str) -> list[dict]:
        return viewer.examples(settings.root, _spec(dataset), cache.config(dataset))

    @app.post("/api/examples/{dataset}/{n}")
    async def example_route(request: Request, dataset: str, n: int) -> Response:
        return await handled(request, "example", dataset,
                             lambda cancel: example(dataset, n, cancel))

    @app.get("/api/pipeline/{dataset}/cards")
    def cards_route(dataset: str) -> dict:
        _spec(dataset)
        return viewer.cards(settings.root, dataset)

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


def _refusal(exc: InputError | OSError, up: uploads.Upload | sessions.Session) -> JSONResponse:
    """The answer to an upload that cannot be used: its one line, the client's names only.

    413 for a size over a limit, 422 for what does not belong or cannot be decoded, 500 (the
    model or the server's disk, not the upload; logged) for the rest.
    """
    if isinstance(exc, uploads.UploadError):
        return _error(exc.status, up.public(exc))
    if isinstance(exc, LimitError):
        return _error(413, up.public(exc))
    if isinstance(exc, ModelError):
        log.error("model: %s", type(exc).__name__)
        return _error(500, up.public(exc))
    if isinstance(exc, InputError):
        return _error(422, up.public(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("no space left for uploads in the temporary directory")
        return _error(507, "no space left on the server for this upload")
    log.error("reading an upload: %s (message withheld)", type(exc).__name__)
    return _error(500, f"internal error ({type(exc).__name__})")


def host_name(host: str | None) -> str | None:
    """The name in a ``Host`` header, lower case, without port or IPv6 brackets; ``None`` if
    it is missing or malformed."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1:]
        if end < 0 or (rest and not re.fullmatch(r":\d+", rest)):
            return None
        return host[1:end]
    name, _, port = host.partition(":")
    if ":" in port or (port and not port.isdigit()) or not name:
        return None
    return name


def same_origin(headers: Headers) -> bool:
    """Whether a state-changing request comes from this app's own page (or from no page at
    all, as from ``curl``): ``Origin``, else ``Referer``, else ``Sec-Fetch-Site`` decides."""
    own = f"http://{headers.get('host', '')}".lower()
    origin = headers.get("origin")
    if origin is not None:
        return origin.strip().lower() == own
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer.strip())
        return f"{parts.scheme}://{parts.netloc}".lower() == own
    return headers.get("sec-fetch-site", "none").lower() in ("same-origin", "none")


class _Guard:
    """ASGI middleware in front of every route: 421 for a foreign ``Host``, 403 for a
    state-changing request from another origin, 413 for a request body over ``limit`` (by
    its Content-Length before reading anything, or while it streams in), and the security
    headers on every answer."""

    def __init__(self, app, limit: int, hosts: frozenset[str]):
        self.app, self.limit, self.hosts = app, limit, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"content-security-policy", CSP.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"x-frame-options", b"DENY"),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)

        headers = Headers(scope=scope)
        name = host_name(headers.get("host"))
        refusal = None
        if name is None:
            refusal = _error(400, "request without a valid Host header")
        elif name not in self.hosts:
            log.warning("refused a request for another host name (DNS rebinding?)")
            refusal = _error(421, "this server answers only to "
                                  f"{', '.join(sorted(self.hosts))}; open it by one of those")
        elif scope["method"] not in SAFE_METHODS and not same_origin(headers):
            log.warning("refused a %s from another origin", scope["method"])
            refusal = _error(403, "cross-origin request refused: only this app's own page "
                                  "may send it")
        length = headers.get("content-length", "")
        too_large = f"upload larger than the limit of {self.limit - MIB} bytes"
        if refusal is None and length.isdigit() and int(length) > self.limit:
            refusal = _error(413, too_large)
        if refusal is not None:
            return await refusal(scope, receive, with_headers)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI passes an HTTPException raised here through
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted, with_headers)
