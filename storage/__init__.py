"""Where a study's and a trial's files live: a local folder or an object store, named by one URI.

:mod:`storage._store` is the store (URIs, filesystems, whole-object writes, leases, build-once), used by
``pipelines`` for the stage-1 cache shared across nodes and by ``study`` for Tune's experiment and the
record. :mod:`storage._record` is the study's side: a remote study's local mirror and its record pushed and
pulled. This package imports only :mod:`record` of the project (and pyarrow, boto3, fsspec), so both
``pipelines`` and ``study`` may use it.
"""

from storage._record import (
    MIRRORS,
    MLFLOW_ARTIFACTS,
    SHARED_CACHE,
    mirror_dir,
    mlflow_artifacts,
    pull_record,
    push_record,
    stored_studies,
)
from storage._store import (
    BUILDS_SUFFIX,
    LeaseLostError,
    StorageError,
    Store,
    StoreLease,
    compute_once,
    fetch_or_build,
    is_remote,
    join_uri,
    local_path,
    open_store,
    plain_uri,
    s3_client,
    s3_filesystem,
)

__all__ = [
    "BUILDS_SUFFIX",
    "MIRRORS",
    "MLFLOW_ARTIFACTS",
    "SHARED_CACHE",
    "LeaseLostError",
    "StorageError",
    "Store",
    "StoreLease",
    "compute_once",
    "fetch_or_build",
    "is_remote",
    "join_uri",
    "local_path",
    "mirror_dir",
    "mlflow_artifacts",
    "open_store",
    "plain_uri",
    "pull_record",
    "push_record",
    "s3_client",
    "s3_filesystem",
    "stored_studies",
]
