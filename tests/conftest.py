"""Settings for the whole suite."""

import os

# The thread count stays fixed in the tests, as `CNNZOO_THREADS=N` fixes it for a user who wants runs that
# repeat bit for bit: cnnzoo's tuner (runtime.ThreadTuner) picks it from measured step times, so on a loaded
# machine it could change mid-run, and with it the order of the floating-point sums that tests comparing two
# runs exactly rely on. tests/test_threads.py tests the tuner itself.
os.environ.setdefault("CNNZOO_THREADS", str(os.cpu_count() or 1))
