"""One partition per uploaded file content: `<first 12 hex digits of its SHA-256>-<safe name>`,
which is also the file's name in `processing/`, `archive/` or `rejected/`."""

import dagster as dg

upload_partitions = dg.DynamicPartitionsDefinition(name="uploads")
