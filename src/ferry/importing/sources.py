"""Which format a model file is in, and the gate every file that can run code goes through.

Pickles (scikit-learn, joblib, pickled LightGBM/XGBoost/torch objects) execute code while they
load, so they are loaded only with ``--trust`` and a ``--sha256`` that matches the file's bytes:
the user vouches for exactly this file. The bytes are read once, hashed, and loaded from memory,
so the file cannot change between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydantic import ValidationError

from ferry.core.signature import InputSpec
from ferry.errors import DataError, ExportError

FORMATS = ("onnx", "sklearn", "lightgbm", "xgboost", "torch")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_BY_SUFFIX = {
    ".onnx": "onnx",
    ".txt": "lightgbm",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".pt": "torch",
    ".pth": "torch",
    **{suffix: "sklearn" for suffix in PICKLE_SUFFIXES},
}
HASH_HELP = (
    "compute it with `sha256sum FILE` (macOS: `shasum -a 256 FILE`) and compare it with the "
    "hash published by whoever made the file before you pass it"
)


@dataclass(frozen=True)
class ModelFile:
    path: Path
    format: str  # one of FORMATS
    data: bytes
    sha256: str

    @property
    def is_pickle(self) -> bool:
        return self.path.suffix.lower() in PICKLE_SUFFIXES

    def is_torchscript(self) -> bool:
        """TorchScript archives hold their code as text under ``code/``; a ``torch.save`` of a
        module holds only a pickle, which runs code on load."""
        try:
            names = zipfile.ZipFile(BytesIO(self.data)).namelist()
        except zipfile.BadZipFile:
            return False
        return any("/code/" in name for name in names)

    @property
    def stream(self) -> BytesIO:
        return BytesIO(self.data)


def detect_format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise ExportError(f"--format {given!r} is not one of {list(FORMATS)}")
        return given
    found = _BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise ExportError(
            f"cannot tell the format of {path.name!r} from its suffix; known suffixes are "
            f"{sorted(_BY_SUFFIX)}: rename the file or pass --format one of {list(FORMATS)}"
        )
    return found


def read_model_file(path: Path, given_format: str | None, sha256: str | None) -> ModelFile:
    if not path.is_file():
        raise ExportError(f"model file {str(path)!r} does not exist; check the MODEL argument")
    fmt = detect_format(path, given_format)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and sha256.strip().lower() != digest:
        raise ExportError(
            f"--sha256 does not match {path.name!r}: expected {sha256.strip().lower()}, the file "
            f"has {digest}; this is not the file you vetted: get it again from its source"
        )
    return ModelFile(path, fmt, data, digest)


def require_trust(model: ModelFile, what: str, *, trust: bool, sha256: str | None) -> None:
    """Refuse to unpickle unless the user passed --trust and the file's --sha256."""
    if trust and sha256 is not None:
        return  # read_model_file already compared the hash with the bytes in hand
    missing = "--trust and --sha256 HEX" if not trust else "--sha256 HEX"
    raise ExportError(
        f"{model.path.name!r} is {what}: loading it runs any code it contains, so Ferry loads "
        f"it only with {missing} (the file's sha256, so that only the file you vetted loads); "
        f"{HASH_HELP}. Formats that carry no code need neither: ONNX, a LightGBM .txt, an "
        "XGBoost .json/.ubj, TorchScript"
    )


def read_signature(path: Path) -> list[InputSpec]:
    """Inputs from ``--signature``: ``{"inputs": [{"name": ..., "dtype": ..., "kind": ...}]}``
    (Ferry's signature; ``outputs`` may be present and are replaced by the bundle's own)."""
    try:
        raw = json.loads(path.read_text())
        specs = [InputSpec.model_validate(item) for item in raw["inputs"]]
    except FileNotFoundError:
        raise DataError(f"--signature file {str(path)!r} does not exist") from None
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise DataError(
            f"--signature {path.name!r} is not a signature: {str(exc).splitlines()[0]}; expected "
            '{"inputs": [{"name": "amount", "dtype": "float32", "kind": "numeric"}, ...]}'
        ) from exc
    if not specs:
        raise DataError(f"--signature {path.name!r} lists no inputs")
    return specs
