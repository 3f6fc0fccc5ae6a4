"""Whether a study's MLflow tracking server answers, checked before anything starts.

Its own module, on the standard library alone: :mod:`study.tracking` imports Ray Tune (about 1 s), which a
driver then loads while its Ray starts instead of before.
"""

from __future__ import annotations

import urllib.error
import urllib.request


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and how to fix it."""


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail early, before any trial starts, if an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server {uri} answered {response.status} on /health")
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # reachable; authentication is MLflow's business (MLFLOW_TRACKING_USERNAME/PASSWORD)
        raise TrackingError(f"MLflow server {uri} answered HTTP {err.code} on /health") from err
    except OSError as err:
        raise TrackingError(f"MLflow tracking server {uri} cannot be reached ({err}); start it, or set "
                            "tracking.uri in the spec (empty = an SQLite file in the study folder)") from err
