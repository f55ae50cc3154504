"""The IDL in thrift/, loaded by thriftpy2 from the .thrift files alone, as
any Python client would: the one place the test scripts here find it."""

import os

import thriftpy2

THRIFT_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "thrift"))
diststore = thriftpy2.load(
    os.path.join(THRIFT_DIR, "diststore.thrift"),
    module_name="diststore_thrift",
    include_dirs=[THRIFT_DIR],
)
