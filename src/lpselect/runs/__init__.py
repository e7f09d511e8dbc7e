"""The run folder: its lock and manifest (``folder``), every file name it holds (``layout``), atomic writes and
the one JSONL reader (``io``), and its score and cluster tables read back as checked arrays (``tables``)."""
