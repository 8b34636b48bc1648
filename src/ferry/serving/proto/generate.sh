#!/usr/bin/env sh
# Regenerate the Python modules from grpc_predict_v2.proto (grpcio-tools is a dev dependency):
#   sh src/ferry/serving/proto/generate.sh [path/to/python]
# The generated files are committed and excluded from ruff and mypy. Two edits follow protoc:
# - the _grpc module imports its _pb2 package-relatively, so `ferry.serving.proto` works;
# - the _pb2 module builds its descriptors in a private pool instead of the process-wide
#   default one. The wire names must be `inference.*` (that is what clients call), and
#   tritonclient and kserve register the same names in the default pool: sharing it makes
#   `import ferry.serving.grpc` and `import tritonclient.grpc` in one process fail with
#   "duplicate symbol 'inference.ServerLiveRequest'".
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-python}
cd "$here"
"$python" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
  grpc_predict_v2.proto
sed -i.bak 's/^import grpc_predict_v2_pb2 as /from . import grpc_predict_v2_pb2 as /' \
  grpc_predict_v2_pb2_grpc.py
sed -i.bak 's/^DESCRIPTOR = _descriptor_pool\.Default()\.AddSerializedFile(/DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(/' \
  grpc_predict_v2_pb2.py
rm -f grpc_predict_v2_pb2_grpc.py.bak grpc_predict_v2_pb2.py.bak
grep -q '^from \. import grpc_predict_v2_pb2' grpc_predict_v2_pb2_grpc.py
grep -q '^DESCRIPTOR = _descriptor_pool\.DescriptorPool()' grpc_predict_v2_pb2.py
