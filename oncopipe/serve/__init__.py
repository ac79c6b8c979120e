"""``oncopipe serve``: a local web app for the trained models and what the pipeline made.

One page for all five datasets: upload an input (an image; a NIfTI study; a zipped DICOM
series plus a point, typed in mm or clicked on a slice), get the answer in words with the
per-class probabilities, the input as the model saw it and a Grad-CAM map over it, and hear
the answer through the browser's own speech synthesis. Beside it, per dataset: counts from
the manifest and the shards, the rejects and their reasons, the contact sheet, metrics with
confidence intervals, the evaluation plots and the training curves.

Why FastAPI + uvicorn + python-multipart: typed routes and multipart uploads that spool to
disk (a CT series zip does not sit in memory), a test client that runs in-process, and no
build step; the page is plain HTML, CSS and JavaScript served from the package, and the
Content-Security-Policy header forbids every origin but the app's own (nothing from a CDN).
"""

from __future__ import annotations

import ipaddress
import logging

log = logging.getLogger("oncopipe.serve")


def serve(host: str, port: int, allow_hosts: tuple[str, ...] = (), **settings) -> None:
    """Run the app with uvicorn until interrupted (models load on first use).

    Requests are answered for the loopback names, ``host`` and ``allow_hosts`` only (the
    ``Host`` header a browser sends is the name in its address bar).
    """
    import uvicorn

    from oncopipe.serve.app import Settings, create_app

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    app_settings = Settings(hosts=(host, *allow_hosts), **settings)
    if not loopback:
        log.warning("binding %s: the app has no authentication and anyone who can reach "
                    "this address can upload to it", host)
    log.info("answering requests for host names %s", ", ".join(sorted(app_settings.allowed_hosts)))
    uvicorn.run(create_app(app_settings), host=host, port=port, log_level="info",
                access_log=False)
