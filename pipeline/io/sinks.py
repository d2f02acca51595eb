"""Where a run's records go besides the images: the Parquet report, the dead letters of failed units
and the NST loss curves, each written by Beam's own sinks (temporary files, then a rename)."""
from __future__ import annotations

import json

import apache_beam as beam

from pipeline.errors import dead_letter_json
from pipeline.io import storage
from pipeline.reporting.schema import REPORT_SCHEMA


class WriteReport(beam.PTransform):
    """The rows as a Parquet dataset under OUTPUT/report/, with the one REPORT_SCHEMA."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, rows):
        return rows | "Parquet" >> beam.io.WriteToParquet(
            storage.join_uri(self._output, "report", "part"),
            schema=REPORT_SCHEMA,
            file_name_suffix=".parquet",
        )


class WriteJsonLines(beam.PTransform):
    """Records as JSON lines in OUTPUT/<folder>/<folder>-*.jsonl."""

    def __init__(self, output: str, folder: str, to_json):
        super().__init__()
        self._prefix = storage.join_uri(output, folder, folder)
        self._to_json = to_json

    def expand(self, records):
        return (
            records
            | "Json" >> beam.Map(self._to_json)
            | "Text" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")
        )


class WriteLossCurves(WriteJsonLines):
    """NST loss curves under OUTPUT/curves/: {content_id, style_id, step_every, losses} (the contact
    sheet plots them)."""

    def __init__(self, output: str):
        super().__init__(output, "curves", json.dumps)


class WriteDeadLetters(WriteJsonLines):
    """Dead-letter records under OUTPUT/errors/ (one empty file when there are none).

    Each line has the failed unit's content `id` and `uri` (so the file is itself a JSONL manifest),
    `error_type`, `error`, and the original `manifest_row` (and `style_manifest_row` for styled methods)."""

    def __init__(self, output: str):
        super().__init__(output, "errors", dead_letter_json)
