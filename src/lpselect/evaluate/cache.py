"""Judge replies on disk, one file per request, so a rerun (or a resumed crash) sends no request twice.

The key hashes everything that decides a reply: the backend's identity (kind, endpoint, model, sampling
settings), the messages, and the attempt number (a retry after an unreadable reply is a new request). The
API key is no part of it, and nothing but the reply is stored. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lpselect.runs.io import write_json


def request_key(identity: dict[str, Any], messages: list[dict[str, str]], attempt: int) -> str:
    payload = {"v": 1, "backend": identity, "messages": messages, "attempt": attempt}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ReplyCache:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            obj = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        reply = obj.get("reply") if isinstance(obj, dict) else None
        return reply if isinstance(reply, str) else None

    def put(self, key: str, reply: str) -> None:
        write_json(self._path(key), {"reply": reply})
