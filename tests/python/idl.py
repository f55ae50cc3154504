"""The IDL in thrift/, loaded by thriftpy2 from the .thrift files alone, as
any Python client would: the one place the test scripts here find it."""

import os

import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.rpc import make_client
from thriftpy2.transport import TBufferedTransportFactory

THRIFT_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "thrift"))
diststore = thriftpy2.load(
    os.path.join(THRIFT_DIR, "diststore.thrift"),
    module_name="diststore_thrift",
    include_dirs=[THRIFT_DIR],
)


def connect(node, timeout_ms):
    """A `diststore.Store` client of `node` (host, port): binary protocol,
    buffered transport, as the 2009 clients spoke."""
    host, port = node
    return make_client(
        diststore.Store,
        host,
        port,
        proto_factory=TBinaryProtocolFactory(),
        trans_factory=TBufferedTransportFactory(),
        timeout=timeout_ms,
    )
