"""Open Inference Protocol (V2) gRPC messages and stubs, generated from grpc_predict_v2.proto.

Regenerate with ``generate.sh``; never edit the ``*_pb2*`` modules by hand.
"""
