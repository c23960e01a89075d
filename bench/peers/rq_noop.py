"""The no-op job RQ's workers import (bench.py runs them with --path bench/peers)."""


def noop():
    return None
