import pytest
import torch

from sae_tutorial import get_mode


def test_modes(monkeypatch):
    monkeypatch.delenv("SAE_TUTORIAL_MODE", raising=False)
    assert get_mode() == ("colab" if torch.cuda.is_available() else "small")
    monkeypatch.setenv("SAE_TUTORIAL_MODE", "FULL")
    assert get_mode() == "full"
    assert get_mode("small") == "small"
    with pytest.raises(ValueError, match="SAE_TUTORIAL_MODE"):
        get_mode("huge")
