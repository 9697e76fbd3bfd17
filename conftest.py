"""Settings for the whole test run (tests/ and the doctests in src/).

The default ``round_to`` of pruning is the CPU's vector width (16 on AVX-512, 8 on AVX2), so
channel counts after pruning would depend on the machine the tests run on. The run pins it to 1
here (subprocesses inherit it); the tests of the default itself set the variable themselves.
"""

import os
import tempfile

os.environ["TORCHSLIM_VECTOR_FLOATS"] = "1"

# The latency look-up tables the tests time go to a throw-away folder, not ~/.cache.
os.environ["TORCHSLIM_CACHE"] = tempfile.mkdtemp(prefix="torchslim-test-cache-")
