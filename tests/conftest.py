import os

# A hub lookup must fail in seconds here (no network), not after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Two cores: keep tests from oversubscribing when several run at once.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
