"""Test-session settings.

Toy-model tensors are tiny, and on a loaded 2-core machine torch's intra-op threading makes them
far slower (measured ~100x on 20k-element ops), so the suite runs torch single-threaded.
"""

import torch

torch.set_num_threads(1)
