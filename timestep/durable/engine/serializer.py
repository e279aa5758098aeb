"""How Timestep writes what DBOS stores for it (a step's outcome, a workflow's input and output): pickled as
DBOS's own serializer does, compressed with zlib when that saves a good part of it, as base64 text (DBOS's
columns are text, and PostgreSQL's text holds no NUL byte).

A tool's output, a model's response and the items a model call was given are mostly text and JSON, which
zlib writes in a third to a half of their size; a value too small to gain is written as DBOS writes it,
pickled. Each row names its serializer, and DBOS reads a row by that name: rows written before (DBOS's
`py_pickle`) stay readable, and every process that reads Timestep's database (`Admin`, a launched process)
is given this serializer. A version of Timestep from before it cannot read the rows it writes."""

from __future__ import annotations

import base64
import pickle
import zlib
from typing import Any

from dbos import Serializer

#: Smaller pickles are not compressed: zlib's header and the base64 of short data gain nothing.
COMPRESS_FROM = 256
#: zlib's level: 6 (its default) writes text to within a few percent of 9 at about half the time.
LEVEL = 6
#: A pickle starts with its protocol opcode (0x80); a zlib stream with 0x78. The first byte tells them apart.
_PICKLE = 0x80


class CompactSerializer(Serializer):
    """Pickle, zlib when it saves at least an eighth, base64."""

    def serialize(self, data: Any) -> str:
        raw = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
        if len(raw) >= COMPRESS_FROM:
            packed = zlib.compress(raw, LEVEL)
            if len(packed) <= len(raw) - len(raw) // 8:
                raw = packed
        return base64.b64encode(raw).decode("ascii")

    def deserialize(self, serialized_data: str) -> Any:
        raw = base64.b64decode(serialized_data)
        if raw[:1] != bytes([_PICKLE]):
            raw = zlib.decompress(raw)
        return pickle.loads(raw)

    def name(self) -> str:
        return "timestep_zpickle"


#: The one instance every DBOS and DBOSClient of the process is given (a config compared with `==` stays equal).
SERIALIZER = CompactSerializer()
