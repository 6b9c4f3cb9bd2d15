"""A setting whose bytes are not UTF-8 stops start-up with one line naming it.

os.environ hands undecodable bytes over as lone surrogates; kept, they failed at first use
(the webhook secret on every webhook, the API token on every call, the host at bind time).
Found by tests/fuzz/test_fuzz_settings.py.
"""

from __future__ import annotations

import pytest

from receiver.core.config import ENVIRONMENT, Settings
from receiver.core.errors import ConfigError


@pytest.mark.parametrize("name", [name for name, _, _ in ENVIRONMENT])
def test_undecodable_value_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: ") as caught:
        Settings.from_env({name: "value\udcff0123456789abcdef"})
    assert "\n" not in str(caught.value)
