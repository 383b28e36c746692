import os
import tempfile

# A hub lookup must fail in seconds here (no network), not after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Manifests, score caches and built suites go to a per-session folder, not the user's home.
os.environ.setdefault("HARNESS_CACHE_DIR", tempfile.mkdtemp(prefix="harness-test-cache-"))

# Idle OpenMP threads must not spin: on a busy 2-core machine spinning made steps 10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

# Two cores: keep tests from oversubscribing when several run at once.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
