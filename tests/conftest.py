import os
import tempfile
from pathlib import Path

import pytest
import torch

# sparsify picks its decoder once, at import, from this variable; its Triton one needs a GPU. Set before any test
# imports it (a chapter executed by test_course can import it before tests/test_interop.py's fixture runs).
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _global_state():
    """Each test starts from the same global state and leaves none behind, so test order never matters: the seed,
    torch's numerics settings (threads, default dtype, deterministic algorithms, grad mode) and os.environ are
    restored after every test. A test that sets torch threads for itself (or calls st.book.setup(), which does)
    no longer changes the numbers of the tests that follow it."""
    saved = (torch.get_num_threads(), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
             torch.is_grad_enabled(), dict(os.environ))
    torch.manual_seed(0)
    yield
    threads, dtype, deterministic, grad, environ = saved
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_grad_enabled(grad)
    os.environ.clear()
    os.environ.update(environ)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for the whole session (Playwright's sync API allows one instance at a time)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run `make system` as root")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        yield context
        context.close()
