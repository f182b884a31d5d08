"""Shared fixtures: small random-weight models of several architectures, and the default model
(SmolLM2-135M-Instruct from its PyPI wheel), each loaded once per test session."""

import os

import pytest

from headscope.probes import load_model

ARCHS = ["llama", "gpt2", "qwen2", "gemma3"]
# The engine's oracle tests also run on a GPU machine with HEADSCOPE_TEST_DEVICE=cuda.
DEVICE = os.environ.get("HEADSCOPE_TEST_DEVICE", "cpu")
PROMPTS = ["The Eiffel Tower is located in the city of", "A small cat", "2 + 3 = 5 and 4 + 1 ="]


@pytest.fixture(scope="session", params=ARCHS)
def tiny(request):
    return load_model(f"random:{request.param}", device=DEVICE)


@pytest.fixture(scope="session")
def tiny_llama():
    return load_model("random:llama", device=DEVICE)


@pytest.fixture(scope="session")
def smol():
    return load_model("default", device=DEVICE)
