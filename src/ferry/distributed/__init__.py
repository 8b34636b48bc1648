"""Scoring files in bounded memory, and scale-out on Dask: search trials and batch scoring.

``batch`` scores a Parquet or CSV file chunk by chunk through a bundle's ONNX graph, in this
process or on a Dask cluster. Dask itself is imported only by ``cluster`` and ``search``, and
those only on the ``--dask`` path, so local scoring needs no Dask installed.
"""

from typing import Literal

# Here rather than in ``batch`` so the CLI can show them without importing Arrow and ORT.
DEFAULT_CHUNK_ROWS = 100_000
Engine = Literal["auto", "onnxruntime", "compiled"]
ENGINES: tuple[Engine, ...] = ("auto", "onnxruntime", "compiled")
