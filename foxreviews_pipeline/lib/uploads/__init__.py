"""Staff uploads (docs/uploads.md), without Dagster: checks, readers, validation, the import and
the upload folder's lifecycle. The sensor and the asset in `defs/uploads` only call these."""

from foxreviews_pipeline.lib.uploads.folder import FOLDERS, UploadPaths
from foxreviews_pipeline.lib.uploads.importer import (
    UploadBusy,
    UploadNotFound,
    close_lost_uploads,
    import_upload,
    upload_lock,
)
from foxreviews_pipeline.lib.uploads.intake import (
    DEFAULT_QUIET_SECONDS,
    Registration,
    Scan,
    content_hash,
    partition_key_for,
    pending_in_processing,
    register,
    scan_incoming,
)
from foxreviews_pipeline.lib.uploads.model import (
    ERROR,
    MAX_BYTES,
    MAX_ROWS,
    PARTIAL,
    PENDING,
    PROCESSING,
    SUCCESS,
    FileRejected,
    ImportOutcome,
    RowError,
)
from foxreviews_pipeline.lib.uploads.specs import SPECS

__all__ = [
    "DEFAULT_QUIET_SECONDS",
    "ERROR",
    "FOLDERS",
    "MAX_BYTES",
    "MAX_ROWS",
    "PARTIAL",
    "PENDING",
    "PROCESSING",
    "SPECS",
    "SUCCESS",
    "FileRejected",
    "ImportOutcome",
    "Registration",
    "RowError",
    "Scan",
    "UploadBusy",
    "UploadNotFound",
    "UploadPaths",
    "close_lost_uploads",
    "content_hash",
    "import_upload",
    "partition_key_for",
    "pending_in_processing",
    "register",
    "scan_incoming",
    "upload_lock",
]
