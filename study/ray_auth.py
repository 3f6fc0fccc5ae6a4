"""Ray token authentication for the studies this machine runs: on by default, the token in a 0600 file.

Ray 2.60 reads the token from ``RAY_AUTH_TOKEN``, then the file ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token`` (which ``ray.init`` writes with the process umask, usually world-readable). A local
study uses its own per-machine file instead, created with mode 0600 in a 0700 folder; the token is never
printed or logged. A cluster study (``--address``) uses whatever token the user gave Ray for that cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from record import HOME

TOKEN_ENV = "OCR_STUDY_RAY_TOKEN_FILE"  # where the per-machine token lives (default: under ~/.ocr-study)
_PRIVATE = stat.S_IRWXG | stat.S_IRWXO


def token_file() -> Path:
    """The per-machine token file of local studies (``$OCR_STUDY_RAY_TOKEN_FILE`` overrides it)."""
    custom = os.environ.get(TOKEN_ENV)
    return Path(custom).expanduser() if custom else Path.home() / HOME / "ray_auth_token"


def ensure_token(path: Path) -> Path:
    """``path`` holding a token that only its owner can read: made (0600, 256 bits) if missing, empty or
    readable by others (a token others could read is no secret any more: a new one replaces it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    missing = False
    try:
        st = path.stat()
        if st.st_mode & _PRIVATE == 0 and st.st_size > 0:
            return path
    except FileNotFoundError:
        missing = True
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode())
    finally:
        os.close(fd)
    if missing:  # first use: of two studies starting at once, the first link wins and both use its token
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
        return path
    os.replace(tmp, path)  # atomic: a concurrent study reads the old token or the new one, never half
    return path


class MissingTokenError(ValueError):
    """Token auth is on for a cluster study but no token was given (bad input: the CLI exits 2)."""


def configure(local: bool) -> None:
    """Token auth on unless the user turned it off (``RAY_AUTH_MODE=disabled``); a local Ray gets the
    per-machine token unless ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` names one; a cluster study
    needs the cluster's token (:class:`MissingTokenError` if none is anywhere Ray looks)."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] != "token":
        return
    given = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if local and not given:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(ensure_token(token_file()))
    elif not local and not given and not (Path.home() / ".ray" / "auth_token").is_file():
        raise MissingTokenError("Ray token authentication is on (RAY_AUTH_MODE=token) but no token for the "
                                "cluster was given: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's "
                                "token, or RAY_AUTH_MODE=disabled for a cluster started without authentication")


def refresh_loaded_ray() -> None:
    """Make an already imported Ray see the mode and token set by :func:`configure` (Ray caches its config
    when first used; another thread of the driver may have imported it before). The same refresh Ray's own
    ``ray.init`` does when it turns token auth on."""
    import sys

    if "ray._raylet" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
