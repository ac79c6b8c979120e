"""Uploads kept for a few minutes under a random token, so a series is sent only once.

The page uploads an input once (``POST /api/upload/<ds>``): it is saved and unpacked with
every check of :class:`oncopipe.serve.uploads.Upload`, its volume (for datasets with a view)
is written beside it as raw int16 for the browser to slice, and the folder is kept here under
a token of 128 random bits. Predictions then name the token instead of sending the file
again. A kept upload is removed when the page says it is done with it (``DELETE``, sent when
another input is chosen or the page is left), :data:`TTL_S` after its last use, when more
than :data:`MAX_SESSIONS` uploads or :data:`MAX_BYTES` bytes are kept (least recently used
first, never one in use), and at shutdown. The folders carry the server's pid like every
upload folder, so a killed server's are swept at the next start.

An example (``POST /api/examples/<ds>/<n>``) is a session whose input is a file of the
project's demo data: nothing is copied, and removing the session removes only its folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from oncopipe.serve.uploads import PREFIX, UploadError

TTL_S = 300.0  # a kept upload is removed this long after its last use
MAX_SESSIONS = 8
MAX_BYTES = 3 << 30  # on disk, all kept uploads together (one real CT series is <= 1 GiB)
SWEEP_S = 15.0  # how often expired uploads are looked for
VOLUME_FILE = "volume.raw"
TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass
class Session:
    """One kept upload: its private folder, the input in it (or in the demo data) and, for
    datasets with a view, the volume the browser slices."""

    token: str
    dataset: str
    name: str  # the client's file name, for answers only
    folder: Path  # private; removed with the session
    input: Path
    public_paths: dict[str, str] = field(default_factory=dict)  # private path -> shown name
    view: dict | None = None  # {"shape", "dtype", "geometry"} when a volume was written
    size: int = 0
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0

    @property
    def volume_path(self) -> Path:
        return self.folder / VOLUME_FILE

    def path(self) -> Path:
        """The input as ``preprocess_one`` takes it (the interface of ``Upload``)."""
        return self.input

    def public(self, exc: BaseException | str) -> str:
        """``exc``'s first line with private paths replaced by the names the client knows."""
        text = (str(exc) or type(exc).__name__).strip().splitlines()[0]
        for private, shown in sorted(self.public_paths.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(private, shown)
        return text


def new_folder() -> Path:
    """A private folder named like every upload folder of this server (swept if killed)."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Store:
    """The kept uploads, bounded in number, bytes and time; safe across worker threads."""

    def __init__(self, ttl_s: float = TTL_S, max_sessions: int = MAX_SESSIONS,
                 max_bytes: int = MAX_BYTES):
        self.ttl_s, self.max_sessions, self.max_bytes = ttl_s, max_sessions, max_bytes
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, session: Session) -> Session:
        """Keep ``session`` (its token is set here), evicting what the bounds require."""
        session.token = secrets.token_urlsafe(16)
        session.size = _size(session.folder)
        session.last_used = time.monotonic()
        with self._lock:
            self._sessions[session.token] = session
            doomed = self._over_bounds(keep=session.token)
        self._remove(doomed)
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _over_bounds(self, keep: str) -> list[Session]:
        """Idle sessions to drop, least recently used first, until the bounds hold."""
        now = time.monotonic()
        doomed = [s for s in self._sessions.values()
                  if s.users == 0 and now - s.last_used > self.ttl_s]
        for s in doomed:
            del self._sessions[s.token]
        idle = sorted((s for s in self._sessions.values() if s.users == 0 and s.token != keep),
                      key=lambda s: s.last_used)
        while idle and (len(self._sessions) > self.max_sessions
                        or sum(s.size for s in self._sessions.values()) > self.max_bytes):
            s = idle.pop(0)
            del self._sessions[s.token]
            doomed.append(s)
        return doomed

    @staticmethod
    def _remove(sessions: list[Session]) -> None:
        for s in sessions:
            shutil.rmtree(s.folder, ignore_errors=True)

    def get(self, token: str, dataset: str) -> Session:
        """The session, touched; 404 once it has expired (or never was, or is another
        dataset's)."""
        with self._lock:
            session = self._sessions.get(token) if TOKEN.fullmatch(token or "") else None
            if session is None or session.dataset != dataset:
                raise UploadError("this upload has expired or is unknown (kept "
                                  f"{self.ttl_s / 60:g} minutes after its last use): choose "
                                  "the file again", 404)
            session.last_used = time.monotonic()
            return session

    def use(self, token: str, dataset: str) -> contextlib.AbstractContextManager[Session]:
        """The session (404 at once if there is none), not evicted while the ``with`` block
        runs."""
        session = self.get(token, dataset)
        with self._lock:
            session.users += 1

        @contextlib.contextmanager
        def held() -> Iterator[Session]:
            try:
                yield session
            finally:
                with self._lock:
                    session.users -= 1
                    session.last_used = time.monotonic()

        return held()

    def discard(self, token: str) -> bool:
        """Remove a session now (the page is done with it); whether there was one."""
        with self._lock:
            session = self._sessions.get(token)
            if session is None or session.users:
                return session is not None
            del self._sessions[token]
        self._remove([session])
        return True

    def expire(self) -> None:
        with self._lock:
            doomed = self._over_bounds(keep="")
        self._remove(doomed)

    def start(self) -> None:
        """Expire sessions every :data:`SWEEP_S` seconds in a daemon thread, until
        :meth:`close`."""
        def loop() -> None:
            while not self._stop.wait(SWEEP_S):
                self.expire()

        self._thread = threading.Thread(target=loop, name="oncopipe-sessions", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop expiring and remove every kept upload (at shutdown)."""
        self._stop.set()
        with self._lock:
            doomed = list(self._sessions.values())
            self._sessions.clear()
        self._remove(doomed)
