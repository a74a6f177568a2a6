"""Texts recognised from stored voice messages, kept with them (``voice_transcripts`` in ``opengme.db``),
so that asking again for a message's text answers at once instead of recognising it again.

A text belongs to a message and a language; it goes when its message goes (a retention pass or a
deletion removes the message's row, and :meth:`Transcripts.get` only answers for live messages
because the server looks the message up first; :meth:`Transcripts.forget_orphans` drops the rest).
"""
from __future__ import annotations

import threading
from pathlib import Path

from opengme.db import open_database


class Transcripts:
    """The recognised texts of voice messages; safe to share between threads (one connection, a lock)."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        self._db = open_database(Path(data_dir), database_url)
        self._lock = threading.Lock()

    def get(self, file_id: str, language: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM voice_transcripts WHERE file_id = ? AND language = ?",
                                   (file_id, language)).fetchone()
        return None if row is None else str(row["text"])

    def put(self, file_id: str, language: str, text: str, now: float) -> None:
        with self._lock:
            self._db.execute("INSERT INTO voice_transcripts VALUES (?, ?, ?, ?) ON CONFLICT (file_id, language) "
                             "DO UPDATE SET text = excluded.text, created_at = excluded.created_at",
                             (file_id, language, text, now))

    def forget_orphans(self) -> int:
        """Drop the texts of messages that are gone; how many."""
        with self._lock:
            return self._db.execute("DELETE FROM voice_transcripts WHERE file_id NOT IN "
                                    "(SELECT file_id FROM voice_messages)").rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
