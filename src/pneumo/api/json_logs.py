"""JSON log lines for a log shipper (``PNEUMO_LOG_FORMAT=json``), one object per record:
python-json-logger's formatter, plus uvicorn's access fields, which its text formatter derives
from the record's arguments and a JSON formatter would otherwise leave out."""

from __future__ import annotations

from pythonjsonlogger.json import JsonFormatter


class AccessJsonFormatter(JsonFormatter):
    """uvicorn's access records as JSON with ``client_addr``, ``request_line`` and
    ``status_code`` fields (the record's arguments, as uvicorn's ``AccessFormatter`` reads them)."""

    def add_fields(self, log_data, record, message_dict) -> None:
        super().add_fields(log_data, record, message_dict)
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            log_data["client_addr"] = client
            log_data["request_line"] = f"{method} {path} HTTP/{version}"
            log_data["status_code"] = status
