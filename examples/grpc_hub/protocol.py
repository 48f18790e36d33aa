"""The hub's messages and stubs, compiled from hub.proto when imported.

grpc.protos_and_services() runs grpcio-tools' compiler in process, so the
code always matches the installed grpcio and protobuf.  To write the modules
to disk instead (for an IDE, say):

    python -m grpc_tools.protoc -I examples/grpc_hub \\
        --python_out=examples/grpc_hub --grpc_python_out=examples/grpc_hub hub.proto
"""

from __future__ import annotations

import os
import sys

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

pb, rpc = grpc.protos_and_services("hub.proto")

#: Bytes per Output message: big enough to amortise a message, well under
#: gRPC's 4 MB default limit.
CHUNK = 64 * 1024
