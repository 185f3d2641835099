#!/bin/sh
# Interop test (issue 4, point 7): the reconnection flow driven by Debian's
# python3-grpcio against the real daemon; see interop.py. `make check` sets
# AP_SRCDIR, AP_BUILDDIR, PYTHON_PROTO and PROTO_INCLUDE.
: "${AP_SRCDIR:?run through make check}"
: "${AP_BUILDDIR:?run through make check}"
exec "${PYTHON_PROTO:-/usr/bin/python3}" "$AP_SRCDIR/tests/integration/interop.py"
